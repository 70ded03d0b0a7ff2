"""ConsentHub push: one ConsentPushQueue message = one captured consent posted to ConsentHub.

Partial batch failures: a failed post fails only its item; SQS retries it (with the back-off set
here through the message's visibility) and after five receives moves it to the DLQ. The rules live in
gdpr_core.consent.push; this module wires AWS, Powertools and the secrets to them.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

from gdpr_core.adapters import aws
from gdpr_core.config import ConfigurationError, Settings
from gdpr_core.consent import capture, hub
from gdpr_core.consent.model import ValidationError
from gdpr_core.consent.push import PushFailed, PushProcessor
from gdpr_core.consent.store import ConsentStore
from gdpr_core.secrets import get_secret_json, load_pseudonymizer

logger = Logger()
metrics = Metrics()
tracer = Tracer()
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
# Must equal the queue's RedrivePolicy maxReceiveCount: the receive after which SQS gives up.
MAX_RECEIVES_ENV = "CONSENT_PUSH_MAX_RECEIVES"


def _hub(settings: Settings) -> hub.ConsentHubClient:
    arn = settings.optional("CONSENTHUB_API_SECRET_ARN")
    if not arn:
        raise ConfigurationError("environment variable CONSENTHUB_API_SECRET_ARN is not set")
    secret = get_secret_json(arn)
    try:
        credentials = hub.Credentials.from_secret(secret)
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    return hub.ConsentHubClient(settings.consenthub_api_url, credentials)


def _delay(record, seconds: int) -> None:
    """Back-off: the failed message stays invisible for `seconds` instead of the queue's default."""
    try:
        aws.client("sqs").change_message_visibility(
            QueueUrl=Settings.from_env().optional("CONSENT_PUSH_QUEUE_URL"),
            ReceiptHandle=record.receipt_handle, VisibilityTimeout=seconds)
    except Exception as error:  # noqa: BLE001 - the queue's own visibility timeout still retries it
        logger.warning("back-off not set", extra={"error": type(error).__name__})


def record_handler(record) -> str:
    settings = Settings.from_env()
    receives = int(record.attributes.approximate_receive_count or 1)
    try:
        request = capture.parse_message(record.body)
        pseudonymizer = load_pseudonymizer(settings.pseudonym_key_secret_arn)
        pusher = PushProcessor(ConsentStore(settings.consent_table, pseudonymizer, client=aws.client("dynamodb")),
                               pseudonymizer, lambda: _hub(settings),
                               max_receives=int(settings.optional(MAX_RECEIVES_ENV) or 5))
        outcome = pusher.process(request, record.message_id, receives)
    except PushFailed as failed:
        if failed.final:
            metrics.add_metric(name="ConsentPushFailed", unit=MetricUnit.Count, value=1)
        if failed.delay:
            _delay(record, failed.delay)
        logger.warning("consent push failed", extra={"reason": failed.reason, "permanent": failed.permanent,
                                                     "receives": receives})
        raise RuntimeError(str(failed)) from None
    except ValidationError as error:
        # Not one of ours (or corrupted): it can never succeed, so it walks to the DLQ.
        if receives >= int(settings.optional(MAX_RECEIVES_ENV) or 5):
            metrics.add_metric(name="ConsentPushFailed", unit=MetricUnit.Count, value=1)
        logger.warning("consent push message invalid", extra={"reason": error.reason})
        raise RuntimeError(f"invalid message: {error.reason}") from None
    except Exception as error:  # noqa: BLE001 - library errors may quote values: keep only the type
        if receives >= int(settings.optional(MAX_RECEIVES_ENV) or 5):
            metrics.add_metric(name="ConsentPushFailed", unit=MetricUnit.Count, value=1)
        reason = str(error) if isinstance(error, ConfigurationError) else type(error).__name__
        logger.warning("consent push error", extra={"error": type(error).__name__, "reason": reason})
        raise RuntimeError(f"{type(error).__name__}: {reason}") from None
    logger.info("consent push done", extra={"outcome": outcome})
    return outcome


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event, context):
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
