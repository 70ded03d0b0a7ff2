"""Erasure Lambda: one actions-queue message = erase (closed) or refresh (updated) one account.

Partial batch failures: a malformed body or a failed/unverified erasure fails only its own item, which
SQS redelivers and after five receives moves to the DLQ. Idempotent per account + action (+ cycle),
never per message id, so a message the reporter sent twice erases and audits once.
"""

from __future__ import annotations

import functools
import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities import idempotency
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

from gdpr_core import clock
from gdpr_core.adapters import aws
from gdpr_core.config import ConfigurationError, Settings
from gdpr_core.erasure import audit, engine, pdmap, service
from gdpr_core.lifecycle import service as lifecycle
from gdpr_core.lifecycle.uninstall import UninstallRefused, is_lifecycle_message
from gdpr_core.secrets import load_pseudonymizer

logger = Logger()
metrics = Metrics()
tracer = Tracer()
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
PD_MAP = pdmap.load()  # validated at cold start: a broken map fails loudly, before any message
IDEMPOTENCY = idempotency.IdempotencyConfig(expires_after_seconds=24 * 3600)
_SAFE_ERRORS = (engine.InvalidMessage, engine.ErasureError, ConfigurationError,  # their messages carry no PD
                UninstallRefused, pdmap.PersonalDataMapError)


@functools.lru_cache(maxsize=4)
def _persistence(table_name: str, client) -> idempotency.DynamoDBPersistenceLayer:
    # Keyed by the table name read per call, so one process can serve several stacks (the sandbox).
    return idempotency.DynamoDBPersistenceLayer(table_name=table_name, boto3_client=client)


def _execute(action_key: dict, message, settings: Settings, pseudonymizer) -> dict:
    ddb = aws.client("dynamodb")
    eraser = service.build_engine(PD_MAP, os.environ, dynamodb=ddb, s3=aws.client("s3"), pseudonymizer=pseudonymizer)
    return engine.execute_action(message, engine=eraser, audit=audit.AuditWriter(settings.audit_table, ddb),
                                 subject=action_key["subject"], now=clock.now)


def _lifecycle_message(body: str, lambda_context) -> dict:
    """uninstall / reinstall of a site (gdpr_core.lifecycle.uninstall); results name the site by hash only."""
    settings = Settings.from_env()
    time_left = getattr(lambda_context, "get_remaining_time_in_millis", None)
    result = lifecycle.handle_message(body, os.environ, clients=aws.client, time_left_ms=time_left,
                                      pseudonymizer=load_pseudonymizer(settings.pseudonym_key_secret_arn))
    if result.get("outcome") == "finished":
        metrics.add_metric(name="UninstallsCompleted", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="UninstallAccountsDropped", unit=MetricUnit.Count, value=result["dropped"])
    logger.info("lifecycle message done", extra=result)
    return result


def record_handler(record, lambda_context=None) -> dict:
    try:
        if is_lifecycle_message(record.body):
            return _lifecycle_message(record.body, lambda_context)
        message = engine.parse_action_message(record.body)
        settings = Settings.from_env()
        pseudonymizer = load_pseudonymizer(settings.pseudonym_key_secret_arn)
        store = _persistence(settings.idempotency_table, aws.client("dynamodb"))
        run = idempotency.idempotent_function(_execute, data_keyword_argument="action_key",
                                              persistence_store=store, config=IDEMPOTENCY,
                                              key_prefix="gdpr-erasure")
        result = run(action_key=message.idempotency_data(pseudonymizer.account(message.account_id)),
                     message=message, settings=settings, pseudonymizer=pseudonymizer)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a failed item with a PD-free reason
        # Re-raised without the original text: library errors may echo keys or values.
        reason = str(exc) if isinstance(exc, _SAFE_ERRORS) else engine.error_code(exc)
        name = "MalformedMessages" if isinstance(exc, engine.InvalidMessage) else "ActionsFailed"
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
        # The SQS message id matches this line to its dead letter (`gdprctl dlq list` shows it).
        logger.warning("action failed", extra={"error": type(exc).__name__, "reason": reason,
                                               "messageId": record.message_id})
        raise RuntimeError(f"{type(exc).__name__}: {reason}") from None
    metrics.add_metric(name=f"{message.action.capitalize()}Completed", unit=MetricUnit.Count, value=1)
    logger.info("action done", extra={"action": message.action, **result})
    return result


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event, context):
    IDEMPOTENCY.register_lambda_context(context)
    if isinstance(event, dict) and event.get("source") == "gdpr.scheduler" and event.get("action") == "lifecycle":
        # The lifecycle schedule: due uninstalls start, stalled ones resume, one share of the retention sweep.
        settings = Settings.from_env()
        summary = lifecycle.tick(os.environ, clients=aws.client,
                                 pseudonymizer=load_pseudonymizer(settings.pseudonym_key_secret_arn))
        metrics.add_metric(name="RetentionPurged", unit=MetricUnit.Count, value=summary["retention"]["purged"])
        metrics.add_metric(name="RetentionAccountsDropped", unit=MetricUnit.Count,
                           value=summary["retention"]["accountsDropped"])
        logger.info("lifecycle tick done", extra=summary)
        return summary
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
