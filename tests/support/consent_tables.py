"""Builds the ConsentTable in moto from infra/template.yaml itself, so schema and template cannot drift."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "template.yaml"
# Properties moto's create_table does not take (or that only matter in a real account).
_DROPPED = ("SSESpecification", "DeletionProtectionEnabled", "PointInTimeRecoverySpecification")


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that keeps CloudFormation short-form tags (!Ref, !GetAtt, !Sub, ...) as plain data."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    name = "Ref" if suffix == "Ref" else "Fn::" + suffix
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass


def table_properties(logical_id: str = "ConsentTable", path: Path = TEMPLATE) -> dict[str, Any]:
    resource = load_template(path)["Resources"][logical_id]
    if resource["Type"] != "AWS::DynamoDB::Table":
        raise ValueError(f"{logical_id} is not a DynamoDB table")
    properties = copy.deepcopy(resource["Properties"])
    for name in _DROPPED:
        properties.pop(name, None)
    return properties


def create_consent_table(client: Any, table_name: str = "consent") -> str:
    """Creates the table with the template's keys, attributes, indexes and billing mode."""
    properties = table_properties("ConsentTable")
    client.create_table(TableName=table_name, **properties)
    client.get_waiter("table_exists").wait(TableName=table_name)
    return table_name
