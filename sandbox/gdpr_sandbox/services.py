"""The sandbox as one object: start (moto server, Atlassian emulator, the stack, the HTTP API, event
sources, schedules) or attach to one already running in the background (`make up`)."""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import secrets
from pathlib import Path
from typing import Any

import boto3

from . import cfn_yaml, paths
from .event_sources import SqsEventSource
from .runtime import FunctionRuntime
from .stack import Deployment, deploy, deploy_sample_app

REGION = "eu-west-1"
STACK = "gdpr"
SAMPLE_STACK = "gdpr-sample-app"
SANDBOX_TOKEN_BYTES = 24
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox",  # noqa: S105
                    "AWS_SESSION_TOKEN": "sandbox"}

log = logging.getLogger(__name__)


def _aws_env(endpoint: str) -> dict[str, str]:
    return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}


PARAMETERS_ENV = "GDPR_SANDBOX_PARAMETERS"
_SET_BY_SANDBOX = ("AtlassianApiUrl", "ConsentHubApiUrl", "Stage")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


def parameter_overrides(text: str | None = None) -> dict[str, str]:
    """Template parameters for the sandbox's stack from GDPR_SANDBOX_PARAMETERS ("Key=Value Key=Value",
    e.g. "UninstallGraceHours=24"), checked against infra/template.yaml; ValueError names the problem."""
    text = os.environ.get(PARAMETERS_ENV, "") if text is None else text
    known = cfn_yaml.load(paths.TEMPLATE).get("Parameters", {})
    out: dict[str, str] = {}
    for pair in text.replace(",", " ").split():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{PARAMETERS_ENV}: expected Key=Value, got {pair!r}")
        if key not in known:
            raise ValueError(f"{PARAMETERS_ENV}: {key} is not a parameter of infra/template.yaml")
        if key in _SET_BY_SANDBOX:
            raise ValueError(f"{PARAMETERS_ENV}: {key} is set by the sandbox itself")
        problem = _violates(known[key], value)
        if problem:
            raise ValueError(f"{PARAMETERS_ENV}: {key} {problem}")
        out[key] = value
    return out


def _violates(spec: dict[str, Any], value: str) -> str | None:
    """What CloudFormation would refuse about `value` for this parameter (moto checks none of it)."""
    if spec.get("Type") == "Number":
        if not _NUMBER.fullmatch(value):  # float() alone also takes "1_0", " 5" and non-ASCII digits
            return "must be a number"
        number = float(value)
        if not math.isfinite(number):
            return "must be a finite number"
        if "MinValue" in spec and number < float(spec["MinValue"]):
            return f"must be at least {spec['MinValue']}"
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            return f"must be at most {spec['MaxValue']}"
    if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
        return f"must be one of {[str(v) for v in spec['AllowedValues']]}"
    if "AllowedPattern" in spec and not re.fullmatch(str(spec["AllowedPattern"]), value, re.ASCII):
        return spec.get("ConstraintDescription") or f"must match {spec['AllowedPattern']}"
    return None


class Sandbox:
    """Use `Sandbox.start()` to host everything in this process, `Sandbox.attach()` to use a running one."""

    def __init__(self, state_dir: Path, endpoints: dict[str, Any], deployment: Deployment,
                 owned: list[Any] | None = None):
        self.state_dir = state_dir
        self.endpoints = endpoints
        self.deployment = deployment
        self._owned = owned or []
        os.environ.update(_aws_env(endpoints["aws_endpoint_url"]))
        from gdpr_core.adapters import aws  # forget clients made for another endpoint

        aws.reset()
        self.session = boto3.session.Session(region_name=REGION)
        self.runtime = FunctionRuntime(deployment, _aws_env(endpoints["aws_endpoint_url"]), state_dir / "logs")
        sqs = self.session.client("sqs")
        self.event_sources = [SqsEventSource(self.runtime, sqs, m) for m in deployment.event_sources]
        self.http_api = None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, state_dir: Path | None = None, atlassian_api_url: str | None = None,
              consenthub_api_url: str | None = None, http_port: int = 0) -> Sandbox:
        from moto.server import ThreadedMotoServer

        from . import moto_patches
        from .http_api import HttpApi

        moto_patches.apply()  # a long-lived moto otherwise keeps every object copy it ever made

        state_dir = state_dir or paths.state_dir()
        (state_dir / "logs").mkdir(parents=True, exist_ok=True)
        owned: list[Any] = []
        # The emulated AWS's access log would print S3 keys (the sample app keys avatars by account
        # id): keep it quiet, as no real AWS endpoint logs into our output either.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        owned.append(moto)
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        os.environ.update(_aws_env(endpoint))
        session = boto3.session.Session(region_name=REGION)

        token = secrets.token_urlsafe(SANDBOX_TOKEN_BYTES)
        emulator = None
        atlassian_api_url = atlassian_api_url or os.environ.get("ATLASSIAN_API_URL")
        if not atlassian_api_url:
            from .atlassian_emulator import AtlassianEmulator

            emulator = AtlassianEmulator(host="127.0.0.1", port=0, tokens=[token])
            emulator.start()
            owned.append(emulator)
            atlassian_api_url = emulator.url
        consenthub_api_url = consenthub_api_url or os.environ.get("CONSENTHUB_API_URL")
        consenthub = None
        consenthub_credentials = {"email": "gdpr-sandbox@example.invalid", "apiToken": secrets.token_urlsafe(24)}
        if not consenthub_api_url:
            from .consenthub_emulator import ConsentHubEmulator

            consenthub = ConsentHubEmulator(host="127.0.0.1", port=0, email=consenthub_credentials["email"],
                                            api_token=consenthub_credentials["apiToken"]).start()
            owned.append(consenthub)
            consenthub_api_url = consenthub.url

        if paths.SAMPLE_APP_TEMPLATE.exists():
            deploy_sample_app(session, SAMPLE_STACK, {})
        deployment = deploy(session, STACK, {**parameter_overrides(), "AtlassianApiUrl": atlassian_api_url,
                                             "ConsentHubApiUrl": consenthub_api_url, "Stage": "dev"})
        sm = session.client("secretsmanager")
        sm.put_secret_value(SecretId=deployment.secrets["AtlassianCredentialsSecret"], SecretString=json.dumps(
            {"credentials": [{"id": "sandbox-3lo", "type": "oauth3lo", "token": token}], "sites": {}}))
        signing = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        sm.put_secret_value(SecretId=deployment.secrets["ConsentHubSigningSecret"],
                            SecretString=json.dumps({"current": signing, "previous": ""}))
        if consenthub:  # an external ConsentHub comes with credentials the operator puts in the secret
            sm.put_secret_value(SecretId=deployment.secrets["ConsentHubApiSecret"],
                                SecretString=json.dumps(consenthub_credentials))

        endpoints = {
            "aws_endpoint_url": endpoint,
            "region": REGION,
            "stack_name": STACK,
            "emulator_url": emulator.url if emulator else None,
            "atlassian_api_url": atlassian_api_url,
            "consenthub_api_url": consenthub_api_url,
            "consenthub_url": consenthub.url if consenthub else None,
            "webhook_signing_secret": signing,
            "stack_outputs": deployment.outputs,
            "pid": os.getpid(),
        }
        sandbox = cls(state_dir, endpoints, deployment, owned)
        sandbox.http_api = HttpApi(sandbox.runtime, deployment.routes, port=http_port,
                                   route_auth=deployment.route_auth).start()
        owned.append(sandbox.http_api)
        endpoints["webhook_base_url"] = sandbox.http_api.url
        endpoints["stack_outputs"]["ConsentWebhookUrl"] = sandbox.http_api.url + "/consenthub/events"
        (state_dir / "deployment.json").write_text(deployment.to_json())
        return sandbox

    @classmethod
    def attach(cls, state_dir: Path | None = None) -> Sandbox:
        state_dir = state_dir or paths.state_dir()
        endpoints_file = state_dir / "endpoints.json"
        if not endpoints_file.exists():
            raise RuntimeError("no sandbox is running here (no .sandbox/endpoints.json): run `make up` first")
        endpoints = json.loads(endpoints_file.read_text())
        deployment = Deployment.from_json((state_dir / "deployment.json").read_text())
        return cls(state_dir, endpoints, deployment)

    def write_endpoints(self) -> Path:
        path = self.state_dir / "endpoints.json"
        path.write_text(json.dumps(self.endpoints, indent=2, sort_keys=True))
        return path

    def stop(self) -> None:
        for thing in reversed(self._owned):
            try:
                thing.stop()
            except Exception:  # noqa: BLE001 - stop everything we can
                log.exception("stopping %s failed", type(thing).__name__)
        self.runtime.close()

    # ------------------------------------------------------------------ operations
    def env(self) -> dict[str, str]:
        """The environment CloudFormation resolved for each function, by logical id."""
        return {k: self.runtime.function_env(f) for k, f in self.deployment.functions.items()}

    def report(self, now: str | None = None) -> Any:
        event: dict[str, Any] = {"source": "gdpr.scheduler", "action": "tick"}
        if now:
            event["now"] = now
        return self.runtime.invoke("ReporterFunction", event)

    def lifecycle(self) -> Any:
        """The erasure function's lifecycle schedule event, now (as `report` runs a reporter tick)."""
        return self.runtime.invoke("ErasureFunction", {"source": "gdpr.scheduler", "action": "lifecycle"})

    def drain(self) -> dict[str, int]:
        received = {s.mapping["function"]: s.drain() for s in self.event_sources}
        return received

    def output(self, name: str) -> str:
        return self.deployment.outputs[name]

    def client(self, service: str):
        return self.session.client(service)
