"""The sandbox's queue-depth alarms: read from the translated template, evaluated from queue depth."""

from __future__ import annotations

from typing import Any

from gdpr_sandbox import alarms, cfn_yaml, paths, stack

URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/"


def translated(monkeypatch) -> dict[str, Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # the translator's session wants one; offline
    template = cfn_yaml.load(paths.TEMPLATE)
    uris = {k: f"s3://code/{k}.zip" for k, v in template["Resources"].items()
            if v["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")}
    return stack.translate(template, {}, "eu-west-1", uris)


def test_the_templates_dead_letter_alarm_is_found_and_resolved(monkeypatch):
    resources = translated(monkeypatch)["Resources"]
    queues = [k for k, v in resources.items() if v["Type"] == "AWS::SQS::Queue"]
    physical = {q: URL + f"gdpr-{q}-ABC123" for q in queues}
    found = {a["name"]: a for a in alarms.queue_depth_alarms(resources, {}, physical)}
    assert found["ActionsDeadLetterAlarm"] == {
        "name": "ActionsDeadLetterAlarm", "queue_name": "gdpr-ActionsDeadLetterQueue-ABC123",
        "metric": "ApproximateNumberOfMessagesVisible", "attribute": "ApproximateNumberOfMessages",
        "comparison": "GreaterThanThreshold", "threshold": 0.0}
    # Every queue-depth alarm of the template resolves to one of its own queues.
    sqs_alarms = [k for k, v in resources.items() if v["Type"] == "AWS::CloudWatch::Alarm"
                  and v["Properties"].get("Namespace") == "AWS/SQS"]
    assert set(sqs_alarms) <= set(found)
    assert {a["queue_name"] for a in found.values()} <= {f"gdpr-{q}-ABC123" for q in queues}


def alarm(**props: Any) -> dict[str, Any]:
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": props}


def test_forms_parameters_and_what_is_left_out():
    physical = {"Q": URL + "q-1"}
    resources = {
        "Plain": alarm(Namespace="AWS/SQS", MetricName="ApproximateNumberOfMessagesVisible",
                       Dimensions=[{"Name": "QueueName", "Value": {"Fn::GetAtt": "Q.QueueName"}}],
                       ComparisonOperator="GreaterThanOrEqualToThreshold", Threshold={"Ref": "Limit"}),
        "MetricStat": alarm(Metrics=[{"Id": "m", "MetricStat": {"Metric": {
            "Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesNotVisible",
            "Dimensions": [{"Name": "QueueName", "Value": {"Ref": "QueueNameParam"}}]}}}],
            ComparisonOperator="LessThanThreshold", Threshold=1),
        "LambdaErrors": alarm(Namespace="AWS/Lambda", MetricName="Errors", ComparisonOperator="GreaterThanThreshold",
                              Threshold=0),
        "Age": alarm(Namespace="AWS/SQS", MetricName="ApproximateAgeOfOldestMessage",
                     Dimensions=[{"Name": "QueueName", "Value": "q-1"}], ComparisonOperator="GreaterThanThreshold",
                     Threshold=60),
        "Math": alarm(Metrics=[{"Id": "a", "ReturnData": False}, {"Id": "b", "ReturnData": False},
                               {"Id": "e", "Expression": "a+b"}], ComparisonOperator="GreaterThanThreshold",
                      Threshold=0),
        "Unresolvable": alarm(Namespace="AWS/SQS", MetricName="ApproximateNumberOfMessagesVisible",
                              Dimensions=[{"Name": "QueueName", "Value": {"Fn::Join": ["", ["q", "x"]]}}],
                              ComparisonOperator="GreaterThanThreshold", Threshold=0),
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {}},
    }
    found = alarms.queue_depth_alarms(resources, {"Limit": "5", "QueueNameParam": "other"}, physical)
    assert [(a["name"], a["queue_name"], a["attribute"], a["comparison"], a["threshold"]) for a in found] == [
        ("MetricStat", "other", "ApproximateNumberOfMessagesNotVisible", "LessThanThreshold", 1.0),
        ("Plain", "q-1", "ApproximateNumberOfMessages", "GreaterThanOrEqualToThreshold", 5.0),
    ]


class FakeSqs:
    def __init__(self, depths: dict[str, dict[str, int]]):
        self.depths = depths

    def get_queue_url(self, QueueName):
        return {"QueueUrl": URL + QueueName}

    def get_queue_attributes(self, QueueUrl, AttributeNames):
        name = QueueUrl.rsplit("/", 1)[1]
        return {"Attributes": {a: str(self.depths[name][a]) for a in AttributeNames}}


def test_evaluate_compares_the_queue_depth_with_the_threshold():
    defined = [
        {"name": "Dlq", "queue_name": "dlq", "attribute": "ApproximateNumberOfMessages",
         "comparison": "GreaterThanThreshold", "threshold": 0.0},
        {"name": "Backlog", "queue_name": "work", "attribute": "ApproximateNumberOfMessages",
         "comparison": "GreaterThanOrEqualToThreshold", "threshold": 100.0},
    ]
    sqs = FakeSqs({"dlq": {"ApproximateNumberOfMessages": 0}, "work": {"ApproximateNumberOfMessages": 99}})
    assert alarms.evaluate(defined, sqs) == {"Dlq": "OK", "Backlog": "OK"}
    sqs.depths = {"dlq": {"ApproximateNumberOfMessages": 1}, "work": {"ApproximateNumberOfMessages": 100}}
    assert alarms.evaluate(defined, sqs) == {"Dlq": "ALARM", "Backlog": "ALARM"}


def test_deployments_written_before_alarms_existed_still_load():
    deployment = stack.Deployment(region="eu-west-1", stack_name="s", outputs={}, functions={}, event_sources=[],
                                  schedules=[], routes={}, secrets={})
    raw = deployment.to_json().replace('"alarms": [],', "")
    assert '"alarms"' not in raw
    assert stack.Deployment.from_json(raw).alarms == []
