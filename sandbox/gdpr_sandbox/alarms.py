"""The template's CloudWatch alarms on SQS queue depth, evaluated by the sandbox on demand.

moto's CloudFormation creates no AWS::CloudWatch::Alarm and moto publishes no AWS/SQS metrics, so the
sandbox reads the alarm definitions from the translated template (`queue_depth_alarms`, at deploy)
and evaluates the ones it can see for itself: alarms on a queue's depth (AWS/SQS
ApproximateNumberOfMessages*), whose state is the queue's current depth compared with the alarm's
threshold — what CloudWatch's Maximum over the period gives while the depth holds. Alarms on other
metrics (Lambda errors, the service's custom metrics) are not evaluated here.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

# CloudWatch's AWS/SQS metric -> the queue attribute that holds the same number.
SQS_DEPTH_ATTRIBUTES = {
    "ApproximateNumberOfMessagesVisible": "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible": "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed": "ApproximateNumberOfMessagesDelayed",
}
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": operator.gt,
    "GreaterThanOrEqualToThreshold": operator.ge,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}
OK, ALARM = "OK", "ALARM"


def _value(node: Any, parameters: Mapping[str, str]) -> Any:
    if isinstance(node, dict) and set(node) == {"Ref"}:
        return parameters.get(node["Ref"])
    return node


def _single_metric(props: Mapping[str, Any]) -> tuple[Any, Any, list[dict[str, Any]]] | None:
    """(namespace, metric name, dimensions) of an alarm on one metric; None for metric math."""
    if "MetricName" in props:
        return props.get("Namespace"), props["MetricName"], list(props.get("Dimensions") or [])
    returned = [m for m in props.get("Metrics") or [] if m.get("ReturnData", True)]
    if len(returned) == 1 and "MetricStat" in returned[0]:
        metric = returned[0]["MetricStat"].get("Metric", {})
        return metric.get("Namespace"), metric.get("MetricName"), list(metric.get("Dimensions") or [])
    return None


def _queue_name(node: Any, parameters: Mapping[str, str], physical: Mapping[str, str]) -> str | None:
    node = _value(node, parameters)
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and "Fn::GetAtt" in node:
        target = node["Fn::GetAtt"]
        logical, attribute = target if isinstance(target, list) else target.split(".", 1)
        queue = physical.get(logical)
        if attribute == "QueueName" and queue:
            # A queue's physical id is its URL (…/<account>/<name>); an ARN ends in :<name>.
            return queue.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return None


def queue_depth_alarms(resources: Mapping[str, Any], parameters: Mapping[str, str],
                       physical: Mapping[str, str]) -> list[dict[str, Any]]:
    """The alarms of a translated template that watch an SQS queue's depth, with names resolved."""
    found = []
    for logical_id, resource in sorted(resources.items()):
        if resource.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        props = resource.get("Properties", {})
        metric = _single_metric(props)
        if metric is None or metric[0] != "AWS/SQS" or metric[1] not in SQS_DEPTH_ATTRIBUTES:
            continue
        queue = next((d.get("Value") for d in metric[2] if d.get("Name") == "QueueName"), None)
        queue_name = _queue_name(queue, parameters, physical)
        comparison = _value(props.get("ComparisonOperator"), parameters)
        threshold = _value(props.get("Threshold"), parameters)
        if queue_name is None or comparison not in COMPARISONS or threshold in (None, ""):
            log.warning("alarm %s watches a queue the sandbox cannot resolve; not evaluated", logical_id)
            continue
        found.append({
            "name": logical_id,
            "queue_name": queue_name,
            "metric": metric[1],
            "attribute": SQS_DEPTH_ATTRIBUTES[metric[1]],
            "comparison": comparison,
            "threshold": float(threshold),
        })
    return found


def evaluate(alarms: list[dict[str, Any]], sqs: Any) -> dict[str, str]:
    """Alarm logical id -> OK or ALARM, from each watched queue's depth right now."""
    states: dict[str, str] = {}
    for alarm in alarms:
        url = sqs.get_queue_url(QueueName=alarm["queue_name"])["QueueUrl"]
        depth = int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[alarm["attribute"]])[
            "Attributes"][alarm["attribute"]])
        states[alarm["name"]] = ALARM if COMPARISONS[alarm["comparison"]](depth, alarm["threshold"]) else OK
    return states
