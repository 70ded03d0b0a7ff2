"""The audit table is append-only: no role of the template may change or remove an audit record, and
the code only ever puts new ones (conditional on non-existence)."""

from __future__ import annotations

import copy
import fnmatch
from typing import Any

import pytest

from gdpr_core.erasure import audit
from tests.support import stacks

TABLE = "AuditTable"
# Anything that changes or removes an existing item, or the table itself.
FORBIDDEN = ("dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:PartiQLUpdate",
             "dynamodb:PartiQLDelete", "dynamodb:DeleteTable", "dynamodb:UpdateTable")
# SAM policy templates that grant writes beyond PutItem on the table they name.
WRITING_POLICY_TEMPLATES = ("DynamoDBCrudPolicy", "DynamoDBWritePolicy", "DynamoDBBackupFullAccessPolicy",
                            "DynamoDBRestoreFromBackupPolicy")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _names_table(node: Any) -> bool:
    """Whether a Resource entry covers the audit table: its ARN, a wildcard, or a Sub naming it."""
    if node == "*" or node == {"Ref": TABLE}:
        return True
    if isinstance(node, str):
        return node.endswith(":table/*") or node.endswith(":*")
    if isinstance(node, dict) and "Fn::GetAtt" in node:
        target = node["Fn::GetAtt"]
        return (target if isinstance(target, list) else target.split("."))[0] == TABLE
    if isinstance(node, dict) and "Fn::Sub" in node:
        text = node["Fn::Sub"] if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"][0]
        return f"${{{TABLE}" in text or text.endswith("table/*") or text.endswith(":*") or text == "*"
    if isinstance(node, dict) and "Fn::If" in node:
        return any(_names_table(branch) for branch in node["Fn::If"][1:])
    return False


def _grants(actions: list[str], forbidden: str) -> bool:
    return any(fnmatch.fnmatch(forbidden.lower(), pattern.lower()) for pattern in actions if isinstance(pattern, str))


def _statements(template: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where, statement or SAM policy template) for every policy any role of the template gets."""
    found: list[tuple[str, Any]] = []

    def documents(where: str, policies: Any) -> None:
        for n, policy in enumerate(_as_list(policies or [])):
            if isinstance(policy, dict) and "Statement" in policy:
                found.extend((f"{where}.Policies[{n}]", s) for s in _as_list(policy["Statement"]))
            elif isinstance(policy, dict) and "PolicyDocument" in policy:
                found.extend((f"{where}.Policies[{n}]", s) for s in _as_list(policy["PolicyDocument"]["Statement"]))
            elif isinstance(policy, dict):
                found.append((f"{where}.Policies[{n}]", {"SamPolicyTemplate": policy}))

    documents("Globals.Function", template.get("Globals", {}).get("Function", {}).get("Policies"))
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine", "AWS::IAM::Role"):
            documents(logical_id, props.get("Policies"))
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            found.extend((logical_id, s) for s in _as_list(props["PolicyDocument"]["Statement"]))
    return found


def violations(template: dict[str, Any]) -> list[str]:
    problems = []
    for where, statement in _statements(template):
        if "SamPolicyTemplate" in statement:
            for name, args in statement["SamPolicyTemplate"].items():
                table = (args or {}).get("TableName") if isinstance(args, dict) else None
                if name in WRITING_POLICY_TEMPLATES and _names_table(table if table is not None else "*"):
                    problems.append(f"{where}: {name} on {TABLE}")
            continue
        if statement.get("Effect") != "Allow":
            continue
        resources = _as_list(statement.get("Resource", "*")) if "NotResource" not in statement else ["*"]
        if not any(_names_table(r) for r in resources):
            continue
        if "NotAction" in statement:  # allows everything it does not list
            excluded = _as_list(statement["NotAction"])
            problems += [f"{where}: {a} via NotAction" for a in FORBIDDEN if not _grants(excluded, a)]
            continue
        actions = _as_list(statement.get("Action", []))
        problems += [f"{where}: {a}" for a in FORBIDDEN if _grants(actions, a)]
    return problems


def test_no_role_in_the_template_may_update_or_delete_audit_records():
    template = stacks.load_template(stacks.MAIN_TEMPLATE)
    assert _statements(template), "found no policies at all: the checker no longer reads the template"
    assert violations(template) == []


def test_the_erasure_role_may_only_put_audit_records():
    template = stacks.load_template(stacks.MAIN_TEMPLATE)
    on_audit = [s for where, s in _statements(template)
                if where.startswith("ErasureFunction") and "Action" in s
                and any(_names_table(r) for r in _as_list(s.get("Resource", [])))]
    assert on_audit, "the erasure function must be able to write audit records"
    assert {a for s in on_audit for a in _as_list(s["Action"])} == {"dynamodb:PutItem"}


def test_point_in_time_recovery_is_on_for_the_audit_table():
    props = stacks.load_template(stacks.MAIN_TEMPLATE)["Resources"][TABLE]["Properties"]
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def _with_statement(statement: dict[str, Any], function: str = "ReporterFunction") -> dict[str, Any]:
    template = copy.deepcopy(stacks.load_template(stacks.MAIN_TEMPLATE))
    template["Resources"][function]["Properties"].setdefault("Policies", []).append({"Statement": [statement]})
    return template


@pytest.mark.parametrize(
    "statement",
    [
        {"Effect": "Allow", "Action": ["dynamodb:UpdateItem"], "Resource": {"Fn::GetAtt": [TABLE, "Arn"]}},
        {"Effect": "Allow", "Action": "dynamodb:DeleteItem", "Resource": {"Fn::GetAtt": f"{TABLE}.Arn"}},
        {"Effect": "Allow", "Action": ["dynamodb:BatchWriteItem"], "Resource": {"Fn::Sub": f"${{{TABLE}.Arn}}"}},
        {"Effect": "Allow", "Action": ["dynamodb:*"], "Resource": {"Fn::GetAtt": [TABLE, "Arn"]}},
        {"Effect": "Allow", "Action": ["dynamodb:Update*"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["dynamodb:DeleteItem"],
         "Resource": {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/*"}},
        {"Effect": "Allow", "NotAction": ["s3:*"], "Resource": {"Fn::GetAtt": [TABLE, "Arn"]}},
    ],
)
def test_the_check_catches_a_policy_that_could_change_audit_records(statement):
    assert violations(_with_statement(statement))


def test_the_check_catches_sam_policy_templates_and_separate_roles():
    crud = copy.deepcopy(stacks.load_template(stacks.MAIN_TEMPLATE))
    policies = crud["Resources"]["ConsentWebhookFunction"]["Properties"]["Policies"]
    policies.append({"DynamoDBCrudPolicy": {"TableName": {"Ref": TABLE}}})
    assert violations(crud) == [f"ConsentWebhookFunction.Policies[{len(policies) - 1}]: DynamoDBCrudPolicy on {TABLE}"]
    role = copy.deepcopy(stacks.load_template(stacks.MAIN_TEMPLATE))
    role["Resources"]["OpsRole"] = {"Type": "AWS::IAM::Role", "Properties": {"Policies": [{"PolicyName": "ops",
        "PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": "dynamodb:DeleteItem",
                                          "Resource": {"Fn::GetAtt": [TABLE, "Arn"]}}]}}]}}
    assert violations(role) == ["OpsRole.Policies[0]: dynamodb:DeleteItem"]
    # Reading is fine, and so is writing other tables.
    assert not violations(_with_statement({"Effect": "Allow", "Action": ["dynamodb:Query", "dynamodb:GetItem"],
                                           "Resource": {"Fn::GetAtt": [TABLE, "Arn"]}}))
    assert not violations(_with_statement({"Effect": "Allow", "Action": ["dynamodb:DeleteItem"],
                                           "Resource": {"Fn::GetAtt": ["StateTable", "Arn"]}}))


class RecordingDynamoDB:
    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.items: dict[str, dict] = {}

    def put_item(self, **params):
        self.calls.append(("put_item", params))
        key = params["Item"]["recordId"]["S"]
        if key in self.items:
            error = Exception("ConditionalCheckFailedException")
            error.response = {"Error": {"Code": "ConditionalCheckFailedException"}}
            raise error
        self.items[key] = params["Item"]

    def __getattr__(self, name):  # any other call on the audit table is a bug
        raise AssertionError(f"the audit writer called {name}")


def test_the_audit_writer_only_puts_new_records():
    ddb = RecordingDynamoDB()
    writer = audit.AuditWriter("audit", ddb)
    record = {"recordId": "erase#" + "a" * 64, "day": "2026-12-01", "recordedAt": "2026-12-01T00:00:00.000Z"}
    assert writer.write(record) is True
    assert writer.write({**record, "recordedAt": "2026-12-02T00:00:00.000Z"}) is False  # never overwritten
    assert [name for name, _ in ddb.calls] == ["put_item", "put_item"]
    assert all(p["ConditionExpression"] == "attribute_not_exists(recordId)" for _, p in ddb.calls)
    assert ddb.items["erase#" + "a" * 64]["recordedAt"] == {"S": "2026-12-01T00:00:00.000Z"}
