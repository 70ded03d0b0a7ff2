"""Where gdprctl acts: the local sandbox (`.sandbox/endpoints.json`) or a deployed stack (`--stack`)."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3


class StackTarget:
    """A deployed CloudFormation stack, through the usual AWS credential chain."""

    def __init__(self, stack_name: str, region: str | None = None):
        self.session = boto3.session.Session(region_name=region)
        cfn = self.session.client("cloudformation")
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        lam = self.session.client("lambda")
        self._functions = {
            logical: self.outputs[f"{logical}Name"]
            for logical in ("ReporterFunction", "ErasureFunction", "ConsentWebhookFunction")
        }
        self._env = {
            logical: lam.get_function_configuration(FunctionName=name).get("Environment", {}).get("Variables", {})
            for logical, name in self._functions.items()
        }

    def env(self) -> dict[str, dict[str, str]]:
        return self._env

    def client(self, service: str):
        return self.session.client(service)

    def output(self, name: str) -> str:
        return self.outputs[name]

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        answer = self.client("lambda").invoke(FunctionName=self._functions[logical_id], Payload=json.dumps(event))
        payload = json.loads(answer["Payload"].read() or b"null")
        if answer.get("FunctionError"):
            raise RuntimeError(f"{logical_id} failed: {payload.get('errorType', 'error')}")
        return payload

    def report(self, now: str | None = None) -> Any:
        event: dict[str, Any] = {"source": "gdpr.scheduler", "action": "tick"}
        if now:
            event["now"] = now
        return self.invoke("ReporterFunction", event)

    def lifecycle(self) -> Any:
        return self.invoke("ErasureFunction", {"source": "gdpr.scheduler", "action": "lifecycle"})

    def drain(self, timeout_seconds: float = 900) -> dict[str, int]:
        """On AWS the event-source mapping drains the queue; wait until it is empty."""
        sqs = self.client("sqs")
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            attrs = sqs.get_queue_attributes(QueueUrl=self.output("ActionsQueueUrl"), AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            if not any(int(v) for v in attrs.values()):
                return {"ErasureFunction": 0}
            time.sleep(5)
        raise RuntimeError("the actions queue did not drain in time")


def resolve(stack: str | None, region: str | None = None):
    if stack:
        return StackTarget(stack, region)
    import warnings

    warnings.simplefilter("ignore")
    from gdpr_sandbox.services import Sandbox

    return Sandbox.attach()
