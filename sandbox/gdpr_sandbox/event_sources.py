"""SQS event-source mappings, emulated: poll, invoke the function with the real SQS event shape,
delete what succeeded, and leave failures on the queue so that the queue's own redrive policy moves
them to the DLQ after maxReceiveCount receives, as on AWS.

The sandbox runs in accelerated time: instead of waiting out the visibility timeout, a failed
message is made visible again at once (ChangeMessageVisibility 0), i.e. its retry happens next poll.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

from .runtime import FunctionRuntime

log = logging.getLogger(__name__)


def sqs_event(records: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    return {"Records": [{
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": {k: str(v) for k, v in m.get("Attributes", {}).items()},
        "messageAttributes": {
            k: {"stringValue": v.get("StringValue"), "binaryValue": v.get("BinaryValue"),
                "stringListValues": [], "binaryListValues": [], "dataType": v["DataType"]}
            for k, v in m.get("MessageAttributes", {}).items()},
        "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    } for m in records]}


class SqsEventSource:
    def __init__(self, runtime: FunctionRuntime, sqs_client: Any, mapping: dict[str, Any]):
        self.runtime = runtime
        self.sqs = sqs_client
        self.mapping = mapping
        self.stats = {"batches": 0, "succeeded": 0, "failed": 0, "errors": 0}
        self._lock = threading.Lock()

    def poll_once(self) -> int:
        """One receive → invoke → settle round. Returns how many messages were received."""
        with self._lock:
            got = self.sqs.receive_message(
                QueueUrl=self.mapping["queue_url"], MaxNumberOfMessages=min(10, self.mapping["batch_size"]),
                AttributeNames=["All"], MessageAttributeNames=["All"], WaitTimeSeconds=0,
            ).get("Messages", [])
            if not got:
                return 0
            self.stats["batches"] += 1
            event = sqs_event(got, self.mapping["queue_arn"], self.runtime.deployment.region)
            failed_ids: set[str]
            try:
                result = self.runtime.invoke(self.mapping["function"], event)
                if self.mapping["report_batch_item_failures"] and isinstance(result, dict):
                    failed_ids = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
                else:
                    failed_ids = set()
            except Exception:  # noqa: BLE001 - a function error fails the whole batch, as on AWS
                log.exception("function %s failed a whole batch", self.mapping["function"])
                self.stats["errors"] += 1
                failed_ids = {m["MessageId"] for m in got}
            done = [m for m in got if m["MessageId"] not in failed_ids]
            for i in range(0, len(done), 10):
                self.sqs.delete_message_batch(QueueUrl=self.mapping["queue_url"], Entries=[
                    {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(done[i:i + 10])])
            for m in got:
                if m["MessageId"] in failed_ids:
                    self.sqs.change_message_visibility(QueueUrl=self.mapping["queue_url"],
                                                       ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
            self.stats["succeeded"] += len(done)
            self.stats["failed"] += len(failed_ids)
            return len(got)

    def pending(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.mapping["queue_url"],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def drain(self, max_rounds: int = 100_000) -> int:
        """Polls until the queue is empty; returns messages received (retries counted again)."""
        total = 0
        for _ in range(max_rounds):
            n = self.poll_once()
            total += n
            if n == 0:
                if self.pending() == 0:
                    return total
                time.sleep(0.05)  # in flight elsewhere (another poller): wait for it to settle
        raise RuntimeError("queue did not drain")
