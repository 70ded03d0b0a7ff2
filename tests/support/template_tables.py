"""Creates DynamoDB tables and SQS queues in moto from infra/template.yaml's own definitions.

Tests that build resources this way cannot drift from the deployed schema: a key or index renamed in
the template changes what the tests run against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "template.yaml"

# Properties CloudFormation applies but CreateTable does not take, or moto does not need.
_TABLE_SKIP = {
    "SSESpecification",
    "DeletionProtectionEnabled",
    "PointInTimeRecoverySpecification",
    "TimeToLiveSpecification",
    "Tags",
}


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns short tags (!Ref, !GetAtt, !Sub, ...) into their long JSON form."""


def _short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _short_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res.get("Type") == kind}


def table_definition(
    logical_id: str, table_name: str, template: dict[str, Any] | None = None
) -> dict[str, Any]:
    """CreateTable arguments for one AWS::DynamoDB::Table of the template."""
    template = template or load_template()
    resource = template["Resources"][logical_id]
    if resource["Type"] != "AWS::DynamoDB::Table":
        raise ValueError(f"{logical_id} is not a DynamoDB table")
    kwargs = {k: v for k, v in resource["Properties"].items() if k not in _TABLE_SKIP}
    kwargs["TableName"] = table_name
    return kwargs


def create_tables(
    dynamodb: Any, prefix: str = "test-", template: dict[str, Any] | None = None
) -> dict[str, str]:
    """Creates every table of the template; returns logical id → table name."""
    template = template or load_template()
    names = {}
    for logical_id in resources_of_type(template, "AWS::DynamoDB::Table"):
        name = prefix + logical_id
        dynamodb.create_table(**table_definition(logical_id, name, template))
        names[logical_id] = name
    return names


def create_queues(sqs: Any, prefix: str = "test-", template: dict[str, Any] | None = None) -> dict[str, str]:
    """Creates every queue of the template (dead-letter targets first); returns logical id → URL."""
    template = template or load_template()
    queues = resources_of_type(template, "AWS::SQS::Queue")
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    for logical_id, resource in queues.items():
        props = resource.get("Properties", {})
        attributes = {
            key: str(props[key])
            for key in (
                "VisibilityTimeout",
                "MessageRetentionPeriod",
                "DelaySeconds",
                "ReceiveMessageWaitTimeSeconds",
            )
            if key in props
        }
        url = sqs.create_queue(QueueName=prefix + logical_id, Attributes=attributes)["QueueUrl"]
        urls[logical_id] = url
        arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    for logical_id, resource in queues.items():
        redrive = resource.get("Properties", {}).get("RedrivePolicy")
        if not redrive:
            continue
        target = redrive["deadLetterTargetArn"]
        if isinstance(target, dict) and "Fn::GetAtt" in target:
            target = arns[target["Fn::GetAtt"][0]]
        policy = f'{{"deadLetterTargetArn": "{target}", "maxReceiveCount": "{redrive["maxReceiveCount"]}"}}'
        sqs.set_queue_attributes(QueueUrl=urls[logical_id], Attributes={"RedrivePolicy": policy})
    return urls
