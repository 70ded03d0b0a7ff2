"""Builds moto resources from the templates themselves, so tests and templates cannot drift: the
service's tables and queues from infra/template.yaml, the sample app's stores from
sandbox/sample-app.yaml, and a function's environment as CloudFormation would resolve it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from gdpr_sandbox import cfn_yaml
from gdpr_sandbox.paths import SAMPLE_APP_TEMPLATE
from gdpr_sandbox.paths import TEMPLATE as MAIN_TEMPLATE

# Properties moto's create_table does not take, or that only matter in a real account.
_DROPPED = (
    "SSESpecification",
    "DeletionProtectionEnabled",
    "PointInTimeRecoverySpecification",
    "TimeToLiveSpecification",
    "TableName",
)
SERVICE_TABLES = ("AccountsTable", "ConsentTable", "AuditTable", "StateTable", "IdempotencyTable")


def load_template(path: Path = MAIN_TEMPLATE) -> dict[str, Any]:
    return cfn_yaml.load(path)


def parameter_defaults(template: dict[str, Any]) -> dict[str, str]:
    return {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}


def resolve(value: Any, names: dict[str, str]) -> Any:
    """Resolves Ref (parameters, logical ids) and simple Sub strings; other values as they are."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return names[value["Ref"]]
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        text = value["Fn::Sub"]
        for name, physical in names.items():
            text = text.replace("${" + name + "}", physical)
        return text
    return value


def create_resources(
    template: dict[str, Any],
    dynamodb: Any,
    s3: Any,
    names: dict[str, str],
    only: tuple[str, ...] | None = None,
) -> dict[str, str]:
    """Creates the template's tables and buckets; returns logical id -> physical name.

    `names` maps parameters and logical ids to physical names; a logical id missing from it gets
    its TableName/BucketName property (resolved) or its logical id in lower case.
    """
    names = {**parameter_defaults(template), **names}
    created: dict[str, str] = {}
    for logical_id, resource in template["Resources"].items():
        if only is not None and logical_id not in only:
            continue
        props = copy.deepcopy(resource.get("Properties", {}))
        if resource["Type"] == "AWS::DynamoDB::Table":
            name = names.get(logical_id) or resolve(props.get("TableName"), names) or logical_id.lower()
            for dropped in _DROPPED:
                props.pop(dropped, None)
            dynamodb.create_table(TableName=name, **props)
            ttl = resource["Properties"].get("TimeToLiveSpecification")
            if ttl:
                dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        elif resource["Type"] == "AWS::S3::Bucket":
            name = names.get(logical_id) or resolve(props.get("BucketName"), names) or logical_id.lower()
            s3.create_bucket(Bucket=name)
            versioning = props.get("VersioningConfiguration")
            if versioning:
                s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=versioning)
        else:
            continue
        created[logical_id] = name
    return created


def create_sample_app(dynamodb: Any, s3: Any, parameters: dict[str, str] | None = None) -> dict[str, str]:
    return create_resources(load_template(SAMPLE_APP_TEMPLATE), dynamodb, s3, dict(parameters or {}))


def create_service_tables(dynamodb: Any, prefix: str = "gdpr-") -> dict[str, str]:
    names = {logical_id: prefix + logical_id for logical_id in SERVICE_TABLES}
    return create_resources(load_template(MAIN_TEMPLATE), dynamodb, None, names, only=SERVICE_TABLES)


def function_environment(function_logical_id: str, names: dict[str, str]) -> dict[str, str]:
    """The function's environment as CloudFormation resolves it: Globals, then its own variables."""
    template = load_template(MAIN_TEMPLATE)
    names = {**parameter_defaults(template), **names}
    variables = dict(
        template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    props = template["Resources"][function_logical_id]["Properties"]
    variables.update(props.get("Environment", {}).get("Variables", {}))
    env: dict[str, str] = {}
    for key, value in variables.items():
        try:
            resolved = resolve(value, names)
        except KeyError:
            continue  # something the test does not create (e.g. a secret): the test sets it
        if not isinstance(resolved, dict):
            env[key] = str(resolved)
    return env


def create_tables(dynamodb: Any, prefix: str = "test-", template: dict[str, Any] | None = None) -> dict[str, str]:
    """Every DynamoDB table of the main template; returns logical id -> table name."""
    template = template or load_template()
    tables = tuple(k for k, v in template["Resources"].items() if v["Type"] == "AWS::DynamoDB::Table")
    return create_resources(template, dynamodb, None, {t: prefix + t for t in tables}, only=tables)


def create_consent_table(dynamodb: Any, table_name: str = "consent") -> str:
    create_resources(load_template(), dynamodb, None, {"ConsentTable": table_name}, only=("ConsentTable",))
    return table_name


def create_queues(sqs: Any, prefix: str = "test-", template: dict[str, Any] | None = None) -> dict[str, str]:
    """Every queue of the main template (dead-letter targets first); returns logical id -> URL."""
    template = template or load_template()
    queues = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::SQS::Queue"}
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    for logical_id, resource in queues.items():
        props = resource.get("Properties", {})
        attributes = {key: str(props[key]) for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds",
                                                       "ReceiveMessageWaitTimeSeconds") if key in props}
        url = sqs.create_queue(QueueName=prefix + logical_id, Attributes=attributes)["QueueUrl"]
        urls[logical_id] = url
        arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
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


def create_event_rules(events: Any, sqs: Any, queue_urls: dict[str, str],
                       template: dict[str, Any] | None = None) -> list[str]:
    """Every EventBridge rule of the main template with its SQS targets (their queues from
    create_queues), parameters at their defaults; returns the rule names."""
    import json

    template = template or load_template()
    params = parameter_defaults(template)

    def queue_arn(node: Any) -> str:
        url = queue_urls[node["Fn::GetAtt"][0]]
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def resolved(node: Any) -> Any:
        if isinstance(node, dict) and set(node) == {"Ref"}:
            return params[node["Ref"]]
        if isinstance(node, dict):
            return {k: resolved(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolved(v) for v in node]
        return node

    names = []
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Events::Rule":
            continue
        props = resolved(copy.deepcopy(resource["Properties"]))
        bus = props.get("EventBusName", "default")
        events.put_rule(Name=logical_id, EventBusName=bus, EventPattern=json.dumps(props["EventPattern"]),
                        State=props.get("State", "ENABLED"))
        targets = []
        for target in props["Targets"]:
            entry = {"Id": target["Id"], "Arn": queue_arn(target["Arn"])}
            if "DeadLetterConfig" in target:
                entry["DeadLetterConfig"] = {"Arn": queue_arn(target["DeadLetterConfig"]["Arn"])}
            if "RetryPolicy" in target:
                entry["RetryPolicy"] = target["RetryPolicy"]
            targets.append(entry)
        events.put_targets(Rule=logical_id, EventBusName=bus, Targets=targets)
        names.append(logical_id)
    return names
