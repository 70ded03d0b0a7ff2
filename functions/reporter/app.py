"""Reporter: one tick of Atlassian personal data reporting (see gdpr_core.reporting.run)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from gdpr_core import clock, secrets
from gdpr_core.config import Settings
from gdpr_core.registry import Registry
from gdpr_core.reporting.contract import ReportClient
from gdpr_core.reporting.run import DynamoStateStore, NoUsableCredential, ReportingRun, SqsActionSender

logger = Logger()
metrics = Metrics()
tracer = Tracer()

# Stop starting requests this long before Lambda's deadline, to leave time for the last checkpoint.
# On top of it the run starts a request only with RunPolicy.min_seconds_per_request (30 s) left, so
# the last request (client timeout 5 s connect + 20 s read) and its checkpoint end >= 20 s early.
SAFETY_MARGIN_SECONDS = 20.0
COUNT_METRICS = (
    ("AccountsReported", "accountsReported"),
    ("ReportRequests", "requests"),
    ("AccountsClosed", "closed"),
    ("AccountsUpdated", "updated"),
    ("RateLimited", "rateLimited"),
    ("AccountsQuarantined", "quarantined"),  # quarantined by this tick; `gdprctl status` has the total
    ("AccountsAtRisk", "atRisk"),  # current: accounts the last attempt could not report with any credential
)


def _tick_time(event: Any) -> datetime | None:
    """The injected "now" (operators, the sandbox), or None for real time; ValueError on other shapes."""
    if isinstance(event, dict) and event.get("source") == "gdpr.scheduler" and event.get("action") == "tick":
        return clock.parse_rfc3339(event["now"]) if event.get("now") is not None else None
    if (
        isinstance(event, dict)
        and event.get("source") == "aws.events"
        and event.get("detail-type") == "Scheduled Event"
    ):
        return None
    raise ValueError(
        'unsupported event: expected a scheduled event or {"source": "gdpr.scheduler", "action": "tick"}'
    )


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: Any) -> dict:
    injected = _tick_time(event)
    # An injected "now" holds for the whole tick, so the operator's or sandbox's time is exactly what counts.
    now = clock.now if injected is None else (lambda: injected)
    settings = Settings.from_env()
    credentials = secrets.get_secret_json(settings.atlassian_credentials_secret_arn).get("credentials") or []
    run = ReportingRun(
        registry=Registry(
            settings.registry_table, secrets.load_pseudonymizer(settings.pseudonym_key_secret_arn)
        ),
        state_store=DynamoStateStore(settings.state_table),
        sender=SqsActionSender(settings.actions_queue_url),
        client=ReportClient(settings.atlassian_api_url),
        credentials=credentials,
        now=now,
        sleep=time.sleep,
        remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000 - SAFETY_MARGIN_SECONDS,
        default_cycle_length=timedelta(days=settings.default_cycle_days),
        log=logger,
    )
    try:
        summary = run.run()
    finally:
        # Every tick, failed ones too: the overdue age is what the lateness alarm watches.
        if run.summary is not None:
            _emit(run.summary)
    if summary["stoppedBy"] == "no_credential":
        # The state is saved and the accounts stay due; failing the invocation as well makes the
        # reporter-errors alarm fire even where the AccountsAtRisk alarm is missing, and lets the
        # schedule's retry policy try again soon (a restored credential is then used at once).
        raise NoUsableCredential(
            f"every configured Atlassian credential was rejected; {summary['atRisk']} accounts at risk"
        )
    return summary


def _emit(summary: dict) -> None:
    for name, key in COUNT_METRICS:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=summary[key])
    metrics.add_metric(
        name="OldestOverdueSeconds", unit=MetricUnit.Seconds, value=summary["oldestOverdueSeconds"]
    )
