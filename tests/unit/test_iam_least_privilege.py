"""Least privilege, derived from what the code does rather than read off the template.

The template is deployed into the sandbox (in this process); each function runs through representative
scenarios (reporting ticks with closed/updated answers, erasures and refreshes incl. a duplicate and a
poison message, signed/forged/duplicate webhooks and a consent lookup, consent pushes that succeed
and fail) while every botocore call made *inside a function invocation* is recorded as (function,
IAM action, resource ARN). The calls are then checked against that function's role in the template
translated to plain CloudFormation, with a small IAM evaluator (action and resource wildcards, Deny
wins):

- every recorded call must be allowed (a needed action missing from the policy fails);
- every (action, resource) the policy grants must have been used by some call, or be on the short,
  commented ALLOWED_UNUSED list (so widening a policy fails);
- no role may change or delete audit records (append-only), and the audit writes seen are conditional
  creates.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import sys
import threading
import time
from collections import defaultdict
from typing import Any

import botocore.client
import pytest
import requests

from gdpr_sandbox import cfn_yaml, paths
from gdpr_sandbox.event_sources import sqs_event
from gdpr_sandbox.http_api import http_api_event
from gdpr_sandbox.sample_app import read_lines, seed
from gdpr_sandbox.services import Sandbox
from gdpr_sandbox.stack import translate

ACCOUNT = "123456789012"  # moto's account
SEEDED_ACCOUNTS = 12
WEBHOOK_ROUTE = "/consenthub/events"
LOOKUP_ROUTE = "/consent/lookup"

# Managed policies SAM attaches by itself: CloudWatch Logs writing and X-Ray segments (Lambda's own
# plumbing, not our code), and for SQS-triggered functions the event-source mapping's poller (receive,
# delete, attributes). Any other managed policy fails the test.
PLATFORM_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}
SQS_POLLER_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"

# (function, action, logical id or parameter the resource names): granted though no scenario here
# exercises it. Keep it short; every entry says why it is needed.
ALLOWED_UNUSED = {
    # Powertools idempotency deletes its in-progress record when the wrapped erasure raises; erasures
    # in the sandbox do not raise once parsed (their failure paths fail before the idempotent call).
    ("ErasureFunction", "dynamodb:DeleteItem", "IdempotencyTable"),
    # Erasure verification confirms a comment the author-index still lists with a consistent read of the
    # table; moto's indexes are never stale, so the index is empty after the scrub and the read is skipped.
    ("ErasureFunction", "dynamodb:GetItem", "CommentsTableName"),
}

# Audit records are evidence: nobody may change or remove one.
AUDIT_FORBIDDEN = (
    "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete", "dynamodb:PartiQLInsert", "dynamodb:DeleteTable", "dynamodb:UpdateTable",
    "dynamodb:RestoreTableFromBackup", "dynamodb:ImportTable",
)
_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems", "SendMessage",
           "SendMessageBatch"}


# ---------------------------------------------------------------------------------------------- recording
class Recorder:
    """botocore calls made while a function runs, with the function's logical id.

    Hooked at BaseClient._make_api_call (what botocore's `before-call` event is emitted from) so that
    clients created before this test, e.g. Powertools' cached providers, are seen too. Every invocation
    starts with empty secret caches, as a cold start does, so secret reads are not hidden by a cache
    another invocation (or the test's own seeding) filled.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._local = threading.local()

    def invoking(self, runtime: Any) -> None:
        original = runtime.invoke

        def invoke(logical_id: str, event: dict[str, Any]) -> Any:
            from aws_lambda_powertools.utilities import parameters

            parameters.clear_caches()
            self._local.function = logical_id
            try:
                return original(logical_id, event)
            finally:
                self._local.function = None

        runtime.invoke = invoke

    def wrap(self, make_api_call: Any) -> Any:
        recorder = self

        def _make_api_call(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
            function = getattr(recorder._local, "function", None)
            if function is not None:
                recorder.calls.append({"function": function, "service": client.meta.service_model.service_name,
                                       "operation": operation_name, "params": dict(api_params),
                                       "region": client.meta.region_name})
            return make_api_call(client, operation_name, api_params)

        return _make_api_call


def _queue_arn(region: str, url: str) -> str:
    return f"arn:aws:sqs:{region}:{ACCOUNT}:{url.rstrip('/').rsplit('/', 1)[1]}"


def _table_arn(region: str, name: str) -> str:
    return f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{name}"


def iam_requests(call: dict[str, Any]) -> list[tuple[str, str]]:
    """The (IAM action, resource ARN) pairs one API call needs; unknown calls fail loudly."""
    service, op, p, region = call["service"], call["operation"], call["params"], call["region"]
    if service == "dynamodb":
        if op in ("BatchWriteItem", "BatchGetItem"):
            return [(f"dynamodb:{op}", _table_arn(region, t)) for t in p["RequestItems"]]
        if op == "TransactWriteItems":
            out = []
            for item in p["TransactItems"]:
                (kind, body), = item.items()
                action = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                          "ConditionCheck": "ConditionCheckItem"}[kind]
                out.append((f"dynamodb:{action}", _table_arn(region, body["TableName"])))
            return out
        arn = _table_arn(region, p["TableName"])
        if p.get("IndexName"):
            arn += f"/index/{p['IndexName']}"
        return [(f"dynamodb:{op}", arn)]
    if service == "sqs":
        action = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage",
                  "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}.get(op, op)
        if op == "GetQueueUrl":
            return [(f"sqs:{action}", f"arn:aws:sqs:{region}:{ACCOUNT}:{p['QueueName']}")]
        return [(f"sqs:{action}", _queue_arn(region, p["QueueUrl"]))]
    if service == "secretsmanager":
        return [(f"secretsmanager:{op}", p["SecretId"])]
    if service == "s3":
        bucket = f"arn:aws:s3:::{p['Bucket']}"
        if op in ("ListObjectsV2", "ListObjects"):
            return [("s3:ListBucket", bucket)]
        if op == "ListObjectVersions":
            return [("s3:ListBucketVersions", bucket)]
        if op in ("GetObject", "HeadObject"):
            return [("s3:GetObject", f"{bucket}/{p['Key']}")]
        if op == "DeleteObject":
            return [("s3:DeleteObjectVersion" if p.get("VersionId") else "s3:DeleteObject", f"{bucket}/{p['Key']}")]
        if op == "DeleteObjects":
            return [("s3:DeleteObjectVersion" if o.get("VersionId") else "s3:DeleteObject", f"{bucket}/{o['Key']}")
                    for o in p["Delete"]["Objects"]]
        if op == "PutObject":
            return [("s3:PutObject", f"{bucket}/{p['Key']}")]
    raise AssertionError(f"{call['function']} calls {service}.{op}: map it to IAM actions in this test")


# ---------------------------------------------------------------------------------------------- template
class Resolver:
    """Intrinsic functions of the translated template, resolved against the sandbox deployment."""

    def __init__(self, template: dict[str, Any], deployment: Any, parameters: dict[str, str]):
        self.resources = template["Resources"]
        self.deployment = deployment
        self.region = deployment.region
        self.values = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
        self.values.update(parameters)
        self.values.update({"AWS::Region": self.region, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws",
                            "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": deployment.stack_name})
        self.conditions = template.get("Conditions", {})

    def physical(self, logical_id: str) -> str:
        if logical_id in self.deployment.secrets:
            return self.deployment.secrets[logical_id]
        return self.deployment.resources[logical_id]

    def ref(self, name: str) -> str:
        if name in self.values:
            return self.values[name]
        kind = self.resources[name]["Type"]
        return self.physical(name) if kind != "AWS::KMS::Key" else self.physical(name).rsplit("/", 1)[-1]

    def attr(self, logical_id: str, attribute: str) -> str:
        kind, physical = self.resources[logical_id]["Type"], self.physical(logical_id)
        if attribute == "Arn":
            return {
                "AWS::DynamoDB::Table": lambda: _table_arn(self.region, physical),
                "AWS::SQS::Queue": lambda: _queue_arn(self.region, physical),
                "AWS::KMS::Key": lambda: f"arn:aws:kms:{self.region}:{ACCOUNT}:key/{physical.rsplit('/', 1)[-1]}",
                "AWS::Lambda::Function": lambda: f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{physical}",
            }[kind]()
        if attribute == "QueueName":
            return physical.rstrip("/").rsplit("/", 1)[1]
        raise AssertionError(f"resolve {logical_id}.{attribute}")

    def condition(self, name: str) -> bool:
        return bool(self.value(self.conditions[name]))

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.value(v) for v in node]
        if not isinstance(node, dict) or len(node) != 1:
            return node
        (key, arg), = node.items()
        if key == "Ref":
            return self.ref(arg)
        if key == "Fn::GetAtt":
            return self.attr(*(arg if isinstance(arg, list) else arg.split(".", 1)))
        if key == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

            def sub(match: re.Match) -> str:
                name = match.group(1)
                if name in extra:
                    return str(self.value(extra[name]))
                if "." in name and not name.startswith("AWS::"):
                    return self.attr(*name.split(".", 1))
                return self.ref(name)

            return re.sub(r"\$\{([^}!]+)\}", sub, text)
        if key == "Fn::If":
            return self.value(arg[1] if self.condition(arg[0]) else arg[2])
        if key == "Fn::Equals":
            return self.value(arg[0]) == self.value(arg[1])
        if key == "Fn::Not":
            return not self.value(arg[0])
        if key == "Fn::Join":
            return arg[0].join(str(self.value(v)) for v in arg[1])
        if key == "Condition":
            return self.condition(arg)
        return node


def _names(node: Any) -> list[str]:
    """Logical ids and parameters a resource expression mentions (for ALLOWED_UNUSED and messages)."""
    text = json.dumps(node)
    found = re.findall(r'"Ref": "([A-Za-z0-9]+)"', text) + re.findall(r'"Fn::GetAtt": \["([A-Za-z0-9]+)"', text)
    found += [n.split(".")[0] for n in re.findall(r"\$\{([A-Za-z0-9.]+)\}", text)]
    return list(dict.fromkeys(found))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in role["Properties"].get("Policies", []) for s in _as_list(p["PolicyDocument"]["Statement"])]


def _matches(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def decision(stmts: list[dict[str, Any]], resolver: Resolver, action: str, arn: str) -> bool:
    """IAM's rule for identity policies: allowed if some Allow matches and no Deny does."""
    allowed = False
    for s in stmts:
        assert "NotAction" not in s and "NotResource" not in s, "NotAction/NotResource: extend the evaluator"
        actions = [a.lower() for a in _as_list(s["Action"])]
        if not any(_matches(a, action.lower()) for a in actions):
            continue
        if not any(_matches(r, arn) for r in _as_list(resolver.value(s["Resource"]))):
            continue
        if s["Effect"] == "Deny":
            return False
        allowed = True
    return allowed


# ---------------------------------------------------------------------------------------------- scenarios
def _sign(secret: str, webhook_id: str, body: bytes) -> dict[str, str]:
    from gdpr_core.consent.signature import sign

    ts = str(int(time.time()))
    return {"content-type": "application/json", "webhook-id": webhook_id, "webhook-timestamp": ts,
            "webhook-signature": sign(secret, webhook_id, ts, body)}


def _webhook(sandbox: Sandbox, route: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    event = http_api_event("POST", route, "", headers, raw, "203.0.113.10")
    return sandbox.runtime.invoke(sandbox.deployment.routes[f"POST {route}"], event)


def run_scenarios(sandbox: Sandbox) -> dict[str, Any]:
    """Drives every function through its paths; returns what it saw, for the sanity assertions."""
    seen: dict[str, Any] = {}
    lines = read_lines(paths.DEMO_DIR / "accounts.jsonl")
    accounts = list(dict.fromkeys(line["accountId"] for line in lines))[:SEEDED_ACCOUNTS]
    closed, updated = accounts[:3], accounts[3:5]
    emulator = sandbox.endpoints["emulator_url"]
    requests.post(f"{emulator}/_emulator/config", json={"closed": closed, "updated": updated}, timeout=10)
    erasure_env = sandbox.env()["ErasureFunction"]
    from gdpr_core.secrets import load_pseudonymizer

    seed(sandbox.session, erasure_env, [ln for ln in lines if ln["accountId"] in accounts],
         load_pseudonymizer(erasure_env["PSEUDONYM_KEY_SECRET_ARN"]))
    profile = next(ln["profile"] for ln in lines if ln["accountId"] == closed[0])

    # Consent webhooks: applied (linked to an account that will be erased), duplicate, stale, forged.
    secret = sandbox.endpoints["webhook_signing_secret"]
    body = {"type": "consent.updated", "occurredAt": "2026-11-21T03:50:00.000Z",
            "data": {"accountId": closed[0], "email": profile["email"], "locale": "US",
                     "formUrl": "https://example.com/preferences",
                     "consents": [{"key": "generalMarketingOptIn", "granted": True,
                                   "displayedText": "Yes, send me news and offers by email."}]}}
    older = {**body, "occurredAt": "2026-11-20T03:50:00.000Z"}
    raw = json.dumps(body).encode()
    statuses = [
        _webhook(sandbox, WEBHOOK_ROUTE, body, _sign(secret, "msg_iam_1", raw))["statusCode"],
        _webhook(sandbox, WEBHOOK_ROUTE, body, _sign(secret, "msg_iam_1", raw))["statusCode"],
        _webhook(sandbox, WEBHOOK_ROUTE, older, _sign(secret, "msg_iam_0", json.dumps(older).encode()))["statusCode"],
        _webhook(sandbox, WEBHOOK_ROUTE, body, _sign("whsec_" + base64.b64encode(b"f" * 32).decode(),
                                                     "msg_iam_2", raw))["statusCode"],
    ]
    if f"POST {LOOKUP_ROUTE}" in sandbox.deployment.routes:
        statuses.append(_webhook(sandbox, LOOKUP_ROUTE, {"email": profile["email"]},
                                 {"content-type": "application/json"})["statusCode"])
    seen["webhook_statuses"] = statuses

    # Reporting until the cycle is done, then the erasures/refreshes it queued, a redelivered erase
    # (idempotent) and a poison message (walks to the DLQ).
    ticks = [sandbox.report()]
    while not ticks[-1].get("complete") and len(ticks) < 10:
        ticks.append(sandbox.report())
    seen["closed"] = sum(t.get("closed", 0) for t in ticks)
    sqs = sandbox.client("sqs")
    actions_url = sandbox.deployment.outputs["ActionsQueueUrl"]
    sandbox.drain()
    duplicate = {"schema": 1, "action": "erase", "reason": "closed", "accountId": closed[0],
                 "reportedAt": "2026-12-01T00:00:00Z", "cycle": 1}
    sqs.send_message(QueueUrl=actions_url, MessageBody=json.dumps(duplicate))
    sqs.send_message(QueueUrl=actions_url, MessageBody="not json")
    sandbox.drain()

    # Consent pushes: one ConsentHub accepts, one it refuses for a while (back-off, then retried).
    push_url = sandbox.deployment.outputs.get("ConsentPushQueueUrl")
    if push_url:
        from gdpr_core.consent import capture

        request = capture.build(profile["email"], "US", [{"key": "generalMarketingOptIn", "granted": True,
                                                          "displayedText": "Yes, send me news."}],
                                provider_id=accounts[6])
        sqs.send_message(QueueUrl=push_url, MessageBody=request.to_message())
        mapping = next(m for m in sandbox.deployment.event_sources
                       if m["queue_arn"].rsplit(":", 1)[1] == push_url.rstrip("/").rsplit("/", 1)[1])
        sandbox.drain()
        hub = sandbox.endpoints.get("consenthub_url")
        if hub:
            requests.post(f"{hub}/_emulator/config", timeout=10,
                          json={"failures": {"status": 503, "count": 1, "retryAfter": 30}})
        failing = capture.build(profile["email"], "US", [{"key": "generalMarketingOptIn", "granted": False,
                                                          "displayedText": "No thanks."}])
        sqs.send_message(QueueUrl=push_url, MessageBody=failing.to_message())
        got = sqs.receive_message(QueueUrl=push_url, MaxNumberOfMessages=1, AttributeNames=["All"])["Messages"]
        sandbox.runtime.invoke(mapping["function"], sqs_event(got, mapping["queue_arn"], sandbox.deployment.region))

    # Lifecycle (gdpr_core/lifecycle): a site uninstall where one account also lives on another site and
    # one only there (set shrinks / item deleted), then the lifecycle schedule's tick (retention sweep).
    if "UNINSTALL_CHUNK_SIZE" in erasure_env:
        from gdpr_core.lifecycle.uninstall import request_message

        spare = [ln for ln in lines if ln["accountId"] not in accounts][:2]
        site = "iam-uninstall.example.net"
        extra = [{**spare[0], "site": site}, {**spare[0], "site": "iam-other.example.net"}, {**spare[1], "site": site}]
        seed(sandbox.session, erasure_env, extra, load_pseudonymizer(erasure_env["PSEUDONYM_KEY_SECRET_ARN"]))
        sqs.send_message(QueueUrl=actions_url, MessageBody=request_message(site))
        sandbox.drain()
        seen["lifecycle_tick"] = sandbox.runtime.invoke("ErasureFunction",
                                                        {"source": "gdpr.scheduler", "action": "lifecycle"})
    return seen


# ---------------------------------------------------------------------------------------------- fixture
@pytest.fixture(scope="module")
def derived(tmp_path_factory):
    """(translated template, resolver, recorded calls, scenario facts), from one sandbox run."""
    mp = pytest.MonkeyPatch()
    recorder = Recorder()
    mp.setattr(botocore.client.BaseClient, "_make_api_call", recorder.wrap(botocore.client.BaseClient._make_api_call))
    mp.setattr(sys, "stdout", sys.stdout)  # the sandbox's runtime replaces it; restored afterwards
    for name in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "ATLASSIAN_API_URL", "CONSENTHUB_API_URL"):
        mp.delenv(name, raising=False)  # the sandbox sets its own; undone after the module
    mp.setenv("GDPR_SANDBOX_DIR", str(tmp_path_factory.mktemp("iam-sandbox")))
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    sandbox = Sandbox.start(tmp_path_factory.mktemp("iam-state"))
    try:
        recorder.invoking(sandbox.runtime)
        seen = run_scenarios(sandbox)
        template = cfn_yaml.load(paths.TEMPLATE)
        code = {k: f"s3://placeholder/{k}.zip" for k, v in template["Resources"].items()
                if v["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")}
        parameters_used = {"Stage": "dev", "AtlassianApiUrl": sandbox.endpoints["atlassian_api_url"],
                           "ConsentHubApiUrl": sandbox.endpoints["consenthub_api_url"]}
        translated = translate(template, parameters_used, sandbox.deployment.region, code)
        resolver = Resolver(translated, sandbox.deployment, parameters_used)
        yield translated, resolver, list(recorder.calls), seen
    finally:
        sandbox.stop()
        parameters.clear_caches()
        from gdpr_core.adapters import aws

        aws.reset()
        mp.undo()


def _functions(translated: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Function logical id -> its role resource."""
    out = {}
    for logical_id, res in translated["Resources"].items():
        if res["Type"] == "AWS::Lambda::Function":
            role = res["Properties"]["Role"]["Fn::GetAtt"][0]
            out[logical_id] = translated["Resources"][role]
    return out


def _kms_encrypted(translated: dict[str, Any], resolver: Resolver) -> dict[str, str]:
    """ARN (or ARN prefix) of every resource encrypted with a stack key -> that key's ARN."""
    out = {}
    for logical_id, res in translated["Resources"].items():
        props = res.get("Properties", {})
        key = props.get("KmsMasterKeyId") or props.get("KmsKeyId") or props.get("SSESpecification", {}).get(
            "KMSMasterKeyId")
        if not key or res.get("Condition") and not resolver.condition(res["Condition"]):
            continue
        (key_id,) = _names(key)
        key_arn = resolver.attr(key_id, "Arn")
        if res["Type"] == "AWS::DynamoDB::Table":
            out[resolver.attr(logical_id, "Arn")] = key_arn
        elif res["Type"] == "AWS::SQS::Queue":
            out[resolver.attr(logical_id, "Arn")] = key_arn
        elif res["Type"] == "AWS::SecretsManager::Secret":
            out[resolver.physical(logical_id)] = key_arn
    return out


def needed(translated: dict[str, Any], resolver: Resolver, calls: list[dict[str, Any]]) -> dict[str, set]:
    """function -> {(action, resource)} incl. the KMS use implied by touching encrypted resources."""
    encrypted = _kms_encrypted(translated, resolver)
    out: dict[str, set] = defaultdict(set)
    for call in calls:
        for action, arn in iam_requests(call):
            out[call["function"]].add((action, arn))
            for prefix, key_arn in encrypted.items():
                if arn == prefix or arn.startswith(prefix + "/"):
                    # Reading through a service needs the key to decrypt; writing also needs new data keys.
                    out[call["function"]].add(("kms:Decrypt", key_arn))
                    if call["operation"] in _WRITES:
                        out[call["function"]].add(("kms:GenerateDataKey", key_arn))
    return out


# ---------------------------------------------------------------------------------------------- tests
def test_scenarios_exercised_every_function(derived):
    translated, _, calls, seen = derived
    assert seen["closed"] >= 1
    assert 401 in seen["webhook_statuses"] and 200 in seen["webhook_statuses"]
    called = {c["function"] for c in calls}
    missing = set(_functions(translated)) - called
    assert not missing, f"no scenario makes an AWS call through {sorted(missing)}: add one to run_scenarios"


def test_every_call_is_allowed_by_the_functions_own_role(derived):
    translated, resolver, calls, _ = derived
    roles = _functions(translated)
    denied = [(fn, action, arn) for fn, pairs in needed(translated, resolver, calls).items()
              for action, arn in sorted(pairs) if not decision(statements(roles[fn]), resolver, action, arn)]
    assert not denied, "the code needs permissions its role lacks:\n" + "\n".join(map(str, denied))


def test_every_granted_permission_is_used(derived):
    translated, resolver, calls, _ = derived
    use = needed(translated, resolver, calls)
    unused = []
    for fn, role in _functions(translated).items():
        for s in statements(role):
            assert s["Effect"] == "Allow", f"{fn}: only Allow statements are expected in function roles"
            for action in _as_list(s["Action"]):
                assert "*" not in action, f"{fn}: wildcard action {action}: name the actions the code performs"
                for resource in _as_list(s["Resource"]):
                    label = (_names(resource) or [str(resource)])[0]
                    patterns = _as_list(resolver.value(resource))
                    used = any(a == action and any(_matches(p, arn) for p in patterns) for a, arn in use[fn])
                    if not used and (fn, action, label) not in ALLOWED_UNUSED:
                        unused.append((fn, action, label))
    assert not unused, "granted but never used by any scenario:\n" + "\n".join(map(str, unused))


def test_only_platform_managed_policies(derived):
    translated, _, _, _ = derived
    sqs_triggered = {m: r for m, r in _functions(translated).items() if any(
        e["Type"] == "AWS::Lambda::EventSourceMapping" and e["Properties"]["FunctionName"] == {"Ref": m}
        for e in translated["Resources"].values())}
    for fn, role in _functions(translated).items():
        expected = PLATFORM_POLICIES | ({SQS_POLLER_POLICY} if fn in sqs_triggered else set())
        assert set(role["Properties"].get("ManagedPolicyArns", [])) == expected, fn


def test_audit_table_is_append_only_for_every_role(derived):
    translated, resolver, calls, _ = derived
    audit = resolver.attr("AuditTable", "Arn")
    for logical_id, res in translated["Resources"].items():
        if res["Type"] != "AWS::IAM::Role":
            continue
        for action in AUDIT_FORBIDDEN:
            assert not decision(statements(res), resolver, action, audit), f"{logical_id} may {action} audit records"
        for s in statements(res):
            if "dynamodb:PutItem" in _as_list(s["Action"]) and audit in _as_list(resolver.value(s["Resource"])):
                # Only the audit record's own attributes: nothing else can be smuggled into the trail.
                assert "dynamodb:Attributes" in json.dumps(s.get("Condition", {})), logical_id
    writes = [c for c in calls if c["service"] == "dynamodb" and c["operation"] == "PutItem"
              and _table_arn(c["region"], c["params"]["TableName"]) == audit]
    assert writes, "no scenario wrote an audit record"
    assert all("attribute_not_exists(recordId)" in c["params"].get("ConditionExpression", "") for c in writes)


def test_evaluator_denies_what_no_statement_grants(derived):
    """The evaluator itself: a policy check that always passes would prove nothing."""
    translated, resolver, _, _ = derived
    role = _functions(translated)["ReporterFunction"]
    accounts = resolver.attr("AccountsTable", "Arn")
    assert decision(statements(role), resolver, "dynamodb:Query", accounts + "/index/due-index")
    assert not decision(statements(role), resolver, "dynamodb:Query", accounts)
    assert not decision(statements(role), resolver, "dynamodb:DeleteItem", accounts)
    wide = [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "dynamodb:DeleteItem", "Resource": accounts}]
    assert decision(wide, resolver, "dynamodb:Scan", accounts)
    assert not decision(wide, resolver, "dynamodb:DeleteItem", accounts)
