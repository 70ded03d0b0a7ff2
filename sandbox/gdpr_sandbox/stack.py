"""Deploys the service's own SAM template into moto, as `sam deploy` would into AWS.

The SAM template is translated offline with the SAM translator (which needs S3 URIs for code, so each
function and layer folder is zipped into a moto bucket first), then created as a CloudFormation stack
in moto. Resources moto's CloudFormation skips are provided here from the translated definitions:
Secrets Manager secrets are created through the Secrets Manager API and their ARNs substituted into
the template; schedules and the HTTP API routes are read out for the sandbox's emulators.
"""

from __future__ import annotations

import copy
import io
import json
import secrets
import string
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
from samtranslator.translator.transform import transform

from . import alarms as cw_alarms
from . import cfn_yaml, paths

CODE_BUCKET = "gdpr-sandbox-code"
_SKIP_DIRS = {"__pycache__", ".pytest_cache"}


@dataclass
class FunctionInfo:
    logical_id: str
    name: str
    arn: str
    handler: str
    code_dir: str
    timeout: int
    environment: dict[str, str]


@dataclass
class Deployment:
    region: str
    stack_name: str
    outputs: dict[str, str]
    functions: dict[str, FunctionInfo]
    # queue ARN -> {"function": logical id, "batch_size": n, "report_batch_item_failures": bool, "queue_url": url}
    event_sources: list[dict[str, Any]]
    schedules: list[dict[str, Any]]
    routes: dict[str, str]  # "POST /consenthub/events" -> function logical id
    secrets: dict[str, str]  # logical id -> ARN
    resources: dict[str, str] = field(default_factory=dict)  # logical id -> physical id
    route_auth: dict[str, str] = field(default_factory=dict)  # "POST /consent/lookup" -> "AWS_IAM"
    # the template's queue-depth alarms, resolved (moto creates no alarms; see alarms.py)
    alarms: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        raw = json.loads(text)
        raw["functions"] = {k: FunctionInfo(**v) for k, v in raw["functions"].items()}
        return cls(**raw)


class _NoManagedPolicies:
    """The translator only needs AWS managed policy ARNs for `Policies: [Name]`; we use inline ones."""

    def load(self) -> dict[str, str]:
        return {}


def _zip_dir(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not _SKIP_DIRS.intersection(path.parts):
                zf.write(path, path.relative_to(folder))
    return buf.getvalue()


def translate(template: dict[str, Any], parameters: dict[str, Any], region: str,
              code_uris: dict[str, str]) -> dict[str, Any]:
    """SAM → plain CloudFormation, offline. `code_uris` maps logical ids to s3:// URIs."""
    sam = copy.deepcopy(template)
    for logical_id, resource in sam["Resources"].items():
        props = resource.setdefault("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            props["CodeUri"] = code_uris[logical_id]
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = code_uris[logical_id]
    return transform(sam, {"AWS::Region": region, **parameters}, _NoManagedPolicies())


def _replace_refs(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] in values:
            return values[node["Ref"]]
        return {k: _replace_refs(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_refs(v, values) for v in node]
    return node


def _generated_secret(spec: dict[str, Any]) -> str:
    length = int(spec.get("PasswordLength", 32))
    alphabet = string.ascii_letters + string.digits
    value = "".join(secrets.choice(alphabet) for _ in range(length))
    if "SecretStringTemplate" in spec:
        doc = json.loads(spec["SecretStringTemplate"])
        doc[spec["GenerateStringKey"]] = value
        return json.dumps(doc)
    return value


def _logical_of_arn_ref(node: Any) -> str | None:
    """The function logical id behind a GetAtt X.Arn or a Sub with ${X.Arn}."""
    if isinstance(node, dict):
        if "Fn::GetAtt" in node:
            return node["Fn::GetAtt"][0]
        if "Fn::Sub" in node:
            text = node["Fn::Sub"] if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"][0]
            start = text.find("${")
            while start != -1:
                name = text[start + 2:text.index("}", start)]
                if name.endswith(".Arn"):
                    return name[:-4]
                start = text.find("${", start + 2)
    return None


def deploy_sample_app(session: boto3.session.Session, stack_name: str, parameters: dict[str, str]) -> None:
    cfn = session.client("cloudformation")
    template = cfn_yaml.load(paths.SAMPLE_APP_TEMPLATE)
    cfn.create_stack(StackName=stack_name, TemplateBody=json.dumps(template),
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()])
    _apply_bucket_versioning(session, stack_name, template)


def _apply_bucket_versioning(session: boto3.session.Session, stack_name: str, template: dict[str, Any]) -> None:
    """moto's CloudFormation ignores VersioningConfiguration; apply it as CloudFormation would."""
    cfn, s3 = session.client("cloudformation"), session.client("s3")
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                for r in cfn.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]}
    for logical_id, resource in template["Resources"].items():
        status = resource.get("Properties", {}).get("VersioningConfiguration", {}).get("Status")
        if resource["Type"] == "AWS::S3::Bucket" and status:
            s3.put_bucket_versioning(Bucket=physical[logical_id], VersioningConfiguration={"Status": status})


def deploy(session: boto3.session.Session, stack_name: str, parameters: dict[str, str]) -> Deployment:
    region = session.region_name
    template = cfn_yaml.load(paths.TEMPLATE)
    s3 = session.client("s3")
    s3.create_bucket(Bucket=CODE_BUCKET, CreateBucketConfiguration={"LocationConstraint": region})

    code_dirs: dict[str, str] = {}
    code_uris: dict[str, str] = {}
    for logical_id, resource in template["Resources"].items():
        key = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}.get(
            resource["Type"])
        if key is None:
            continue
        folder = (paths.TEMPLATE.parent / resource["Properties"][key]).resolve()
        code_dirs[logical_id] = str(folder)
        s3.put_object(Bucket=CODE_BUCKET, Key=f"{logical_id}.zip", Body=_zip_dir(folder))
        code_uris[logical_id] = f"s3://{CODE_BUCKET}/{logical_id}.zip"

    cfn_template = translate(template, parameters, region, code_uris)
    resources = cfn_template["Resources"]

    # Secrets: moto's CloudFormation skips them, so create them here and substitute their ARNs.
    sm = session.client("secretsmanager")
    secret_arns: dict[str, str] = {}
    for logical_id in [k for k, v in resources.items() if v["Type"] == "AWS::SecretsManager::Secret"]:
        props = resources.pop(logical_id).get("Properties", {})
        value = props.get("SecretString")
        if value is None:
            value = _generated_secret(props.get("GenerateSecretString", {}))
        created = sm.create_secret(Name=f"{stack_name}-{logical_id}", SecretString=value)
        secret_arns[logical_id] = created["ARN"]
    cfn_template = _replace_refs(cfn_template, secret_arns)
    resources = cfn_template["Resources"]

    param_values = {k: str(v.get("Default", "")) for k, v in cfn_template.get("Parameters", {}).items()}
    param_values.update({k: str(v) for k, v in parameters.items()})

    def resolved(value: Any) -> Any:
        return param_values[value["Ref"]] if isinstance(value, dict) and "Ref" in value else value

    schedules = []
    routes: dict[str, str] = {}
    route_auth: dict[str, str] = {}
    for logical_id, resource in resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Scheduler::Schedule":
            target = props["Target"]
            schedules.append({
                "name": logical_id,
                "expression": resolved(props["ScheduleExpression"]),
                "flexible_window_minutes": int(resolved(
                    props.get("FlexibleTimeWindow", {}).get("MaximumWindowInMinutes", 0))),
                "function": _logical_of_arn_ref(target["Arn"]),
                "input": target.get("Input"),
            })
        elif resource["Type"] == "AWS::ApiGatewayV2::Api":
            schemes = props.get("Body", {}).get("components", {}).get("securitySchemes", {})
            for path, methods in props.get("Body", {}).get("paths", {}).items():
                for method, op in methods.items():
                    uri = op.get("x-amazon-apigateway-integration", {}).get("uri")
                    routes[f"{method.upper()} {path}"] = _logical_of_arn_ref(uri)
                    for requirement in op.get("security", []):
                        for name in requirement:  # SAM names the SigV4 scheme AWS_IAM
                            if schemes.get(name, {}).get("x-amazon-apigateway-authtype") == "awsSigv4":
                                route_auth[f"{method.upper()} {path}"] = "AWS_IAM"
    # The HTTP API is emulated by the sandbox (moto's CloudFormation skips AWS::ApiGatewayV2::*).
    cfn_template["Outputs"].pop("ConsentWebhookUrl", None)

    cfn = session.client("cloudformation")
    cfn.create_stack(StackName=stack_name, TemplateBody=json.dumps(cfn_template),
                     Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()],
                     Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"])
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise RuntimeError(f"sandbox stack ended in {stack['StackStatus']}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    physical = {r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
                for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack_name)
                for r in page["StackResourceSummaries"]}

    lam = session.client("lambda")
    functions: dict[str, FunctionInfo] = {}
    by_arn: dict[str, str] = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        conf = lam.get_function_configuration(FunctionName=physical[logical_id])
        env = {k: str(v) for k, v in conf.get("Environment", {}).get("Variables", {}).items()}
        functions[logical_id] = FunctionInfo(
            logical_id=logical_id, name=conf["FunctionName"], arn=conf["FunctionArn"], handler=conf["Handler"],
            code_dir=code_dirs[logical_id], timeout=int(conf.get("Timeout", 3)), environment=env)
        by_arn[conf["FunctionArn"]] = logical_id

    sqs = session.client("sqs")
    event_sources = []
    for mapping in lam.list_event_source_mappings()["EventSourceMappings"]:
        if mapping.get("State") != "Enabled":
            continue
        # moto would "invoke" on every SendMessage through Docker, receiving (and so eventually
        # dead-lettering) the messages; the sandbox's own poller takes the mapping's place.
        lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
        queue_arn = mapping["EventSourceArn"]
        queue_name = queue_arn.rsplit(":", 1)[1]
        event_sources.append({
            "function": by_arn[mapping["FunctionArn"]],
            "queue_arn": queue_arn,
            "queue_url": sqs.get_queue_url(QueueName=queue_name)["QueueUrl"],
            "batch_size": int(mapping.get("BatchSize", 10)),
            "report_batch_item_failures": "ReportBatchItemFailures" in mapping.get("FunctionResponseTypes", []),
        })

    return Deployment(region=region, stack_name=stack_name, outputs=outputs, functions=functions,
                      event_sources=event_sources, schedules=schedules, routes=routes, secrets=secret_arns,
                      resources=physical, route_auth=route_auth,
                      alarms=cw_alarms.queue_depth_alarms(resources, param_values, physical))
