"""gdprctl: the operator CLI. Acts on the sandbox when `.sandbox/endpoints.json` exists, or on a
deployed stack with `--stack NAME`. `--json` gives machine-readable output on stdout; failures exit
non-zero with the reason on stderr."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gdpr_core.clock import format_rfc3339, parse_rfc3339
from gdpr_core.pseudonym import Pseudonymizer

from .target import resolve


class CliError(Exception):
    pass


def _pseudonymizer(target: Any) -> Pseudonymizer:
    arn = target.env()["ErasureFunction"]["PSEUDONYM_KEY_SECRET_ARN"]
    return Pseudonymizer(target.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])


def _emit(args: argparse.Namespace, data: Any, text: str | None = None) -> None:
    out = json.dumps(data, indent=2, sort_keys=True, default=str) if (args.json or text is None) else text
    if getattr(args, "out", None):
        _write_private(args.out, out + "\n")
    else:
        print(out)


def _write_private(path: str, text: str) -> None:
    """Exports hold personal data: readable by the owner only (0600), whatever the umask."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


class _Progress:
    """A one-line progress counter on a terminal's stderr; silent otherwise."""

    def __init__(self, label: str, total: int | None = None):
        self.label, self.total, self.n = label, total, 0
        self.tty = sys.stderr.isatty()

    def step(self, k: int = 1) -> None:
        self.n += k
        if self.tty and (self.n % 50 == 0 or self.n == self.total):
            of = f"/{self.total}" if self.total else ""
            sys.stderr.write(f"\r{self.label}: {self.n}{of}")
            sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.n:
            sys.stderr.write("\n")


# ---------------------------------------------------------------------------- verbs
def cmd_sandbox_seed(args: argparse.Namespace) -> int:
    from gdpr_sandbox.sample_app import read_lines, seed

    target = resolve(None)
    env = target.env()["ErasureFunction"]
    result = seed(target.session, env, read_lines(Path(args.file)), _pseudonymizer(target))
    data = {"lines": result.lines, "accounts": len(result.accounts), "sites": len(result.sites),
            "comments": result.comments, "avatars": result.avatars, "refused_erased": result.refused}
    refused = f"; {result.refused} lines refused: account already erased as closed" if result.refused else ""
    _emit(args, data, f"seeded {data['accounts']} accounts on {data['sites']} sites ({data['lines']} retrievals, "
                      f"{data['comments']} comments, {data['avatars']} avatars){refused}")
    return 0


def cmd_accounts_import(args: argparse.Namespace) -> int:
    from gdpr_core.ids import InvalidAccountId
    from gdpr_core.registry import AccountErased, Registry

    target = resolve(args.stack)
    registry = Registry(target.env()["ReporterFunction"]["REGISTRY_TABLE"], _pseudonymizer(target),
                        client=target.client("dynamodb"))
    imported, errors = 0, []
    progress = _Progress("importing")
    with open(args.file, encoding="utf-8") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                if not isinstance(line, dict):
                    raise ValueError("line is not a JSON object")
                for key in ("accountId", "updatedAt", "site"):
                    if key not in line or line[key] in ("", None):
                        raise ValueError(f"missing or empty '{key}'")
                    if not isinstance(line[key], str):
                        raise ValueError(f"'{key}' must be a string")
                registry.record(line["accountId"], line["site"], parse_rfc3339(line["updatedAt"]))
                imported += 1
            except json.JSONDecodeError:
                errors.append({"line": number, "reason": "not valid JSON"})
            except (ValueError, InvalidAccountId, AccountErased) as exc:
                errors.append({"line": number, "reason": str(exc)})
            progress.step()
    progress.done()
    for e in errors:
        print(f"{args.file}:{e['line']}: {e['reason']}", file=sys.stderr)
    _emit(args, {"imported": imported, "rejected": len(errors), "errors": errors},
          f"imported {imported} lines, rejected {len(errors)}")
    return 1 if errors else 0  # valid lines are imported all the same; a backfill must not lose lines silently


def cmd_report(args: argparse.Namespace) -> int:
    if args.now is not None:
        parse_rfc3339(args.now)  # "" and garbage are refused, not taken as "now"
    result = resolve(args.stack).report(args.now)
    _emit(args, result, None if args.json else json.dumps(result, indent=2, default=str))
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    result = resolve(args.stack).drain()
    _emit(args, {"received": result}, f"drained: {sum(result.values())} messages processed")
    return 0


def _queue_depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(v) for v in attrs.values())


def _alarm_states(target: Any, stack: str | None) -> dict[str, str]:
    """Alarm logical id -> state: CloudWatch's on a stack, the sandbox's own queue-depth evaluation otherwise."""
    if stack is None:
        from gdpr_sandbox.alarms import evaluate

        return evaluate(target.deployment.alarms, target.client("sqs"))
    names = {r["LogicalResourceId"]: r["PhysicalResourceId"]
             for page in target.client("cloudformation").get_paginator("list_stack_resources").paginate(StackName=stack)
             for r in page["StackResourceSummaries"] if r["ResourceType"] == "AWS::CloudWatch::Alarm"}
    cloudwatch, by_name = target.client("cloudwatch"), {v: k for k, v in names.items()}
    states: dict[str, str] = {}
    physical = sorted(by_name)
    for i in range(0, len(physical), 100):  # DescribeAlarms takes at most 100 names
        for alarm in cloudwatch.describe_alarms(AlarmNames=physical[i:i + 100])["MetricAlarms"]:
            states[by_name[alarm["AlarmName"]]] = alarm["StateValue"]
    return states


def cmd_status(args: argparse.Namespace) -> int:
    from gdpr_core.registry import count_quarantined
    from gdpr_core.reporting.status import reporter_status

    target = resolve(args.stack)
    env = target.env()["ReporterFunction"]
    ddb = target.client("dynamodb")
    state = ddb.get_item(TableName=env["STATE_TABLE"], Key={"pk": {"S": "reporter"}}, ConsistentRead=True).get("Item")
    counts: Counter = Counter()
    # An operator command, not a hot path: counting by status reads the registry once.
    for page in ddb.get_paginator("scan").paginate(TableName=env["REGISTRY_TABLE"], ProjectionExpression="#s",
                                                   ExpressionAttributeNames={"#s": "status"}):
        counts.update(item.get("status", {}).get("S", "unknown") for item in page["Items"])
    sqs = target.client("sqs")
    data = {
        # Counts and times only: the state item may hold ids of an answer being applied.
        "reporter": reporter_status(state, count_quarantined(ddb, env["REGISTRY_TABLE"])),
        "registry": {"active": counts.get("active", 0), "erasing": counts.get("erasing", 0),
                     "erased_tombstones": counts.get("erased", 0)},
        "queues": {"actions": _queue_depth(sqs, target.output("ActionsQueueUrl")),
                   "dead_letter": _queue_depth(sqs, target.output("ActionsDeadLetterQueueUrl"))},
    }
    text = "\n".join([
        f"registry   {data['registry']['active']} active, {data['registry']['erasing']} erasing, "
        f"{data['registry']['erased_tombstones']} erased (tombstones)",
        f"queues     {data['queues']['actions']} actions pending, {data['queues']['dead_letter']} dead letters",
        "reporter   " + (json.dumps(data["reporter"], default=str) if state else "has not run yet"),
    ])
    data["lifecycle"] = _lifecycle_status(target, stores=not args.no_stores)
    text += "\nlifecycle  " + (", ".join(
        f"{r['site']} {r['state']}" + (f" until {r['dueAt']}" if r["state"] == "pending"
                                       else f" ({r.get('accounts', 0)} accounts)")
        for r in data["lifecycle"]["uninstalls"]) or "no site uninstall pending")
    text += "\n" + _holdings_text(data["lifecycle"])
    data["alarms"] = _alarm_states(target, args.stack)
    text += "\nalarms     " + (", ".join(f"{k} {v}" for k, v in sorted(data["alarms"].items())) or "none")
    _emit(args, data, text)
    return 0


def cmd_subject_export(args: argparse.Namespace) -> int:
    from gdpr_core.erasure.service import export_subject

    target = resolve(args.stack)
    data = export_subject(target.env()["ErasureFunction"], args.account_id, clients=target.client,
                          pseudonymizer=_pseudonymizer(target))
    _emit(args, data, json.dumps(data, indent=2, sort_keys=True, default=str))
    return 0


AUDIT_QUERY_MAX_DAYS = 400


def _audit_pages(ddb: Any, table: str, since: Any) -> Any:
    """Audit pages: with --since, a Query on day-index per UTC day from that day to today."""
    from datetime import UTC, timedelta

    from gdpr_core.clock import format_rfc3339, now

    day = since.astimezone(UTC).date() if since is not None else None
    last = now().astimezone(UTC).date()
    # recordedAt and --since are both RFC 3339 UTC with milliseconds, so text order is time order.
    bound = {"ExpressionAttributeNames": {"#r": "recordedAt"},
             "ExpressionAttributeValues": {":since": {"S": format_rfc3339(since)}}} if since is not None else {}
    if day is None or (last - day).days > AUDIT_QUERY_MAX_DAYS:
        # Everything, or a period so long that mostly empty day queries would cost more than one read.
        yield from ddb.get_paginator("scan").paginate(
            TableName=table, **({"FilterExpression": "#r >= :since", **bound} if bound else {}))
        return
    query = ddb.get_paginator("query")
    while day <= last:
        yield from query.paginate(
            TableName=table, IndexName="day-index", KeyConditionExpression="#d = :d AND #r >= :since",
            ExpressionAttributeNames={"#d": "day", **bound["ExpressionAttributeNames"]},
            ExpressionAttributeValues={":d": {"S": day.isoformat()}, **bound["ExpressionAttributeValues"]})
        day += timedelta(days=1)


def cmd_audit_export(args: argparse.Namespace) -> int:
    from gdpr_core.erasure.engine import from_item  # numbers stay numbers (not Decimal text)

    since = parse_rfc3339(args.since) if args.since is not None else None  # "" is refused, not "everything"
    target = resolve(args.stack)
    table = target.env()["ErasureFunction"]["AUDIT_TABLE"]
    records = []
    progress = _Progress("exporting")
    for page in _audit_pages(target.client("dynamodb"), table, since):
        for item in page["Items"]:
            record = from_item(item)
            if since is None or parse_rfc3339(record["recordedAt"]) >= since:
                records.append(record)
            progress.step()
    progress.done()
    records.sort(key=lambda r: r["recordedAt"])
    if args.format == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["recordId", "recordedAt", "action", "subject", "verified", "stores", "source"])
        for r in records:  # source: an uninstall's account counts, an erasure's trigger (no personal data)
            writer.writerow([r["recordId"], r["recordedAt"], r["action"], r["subject"], json.dumps(r.get("verified")),
                             json.dumps(r.get("stores"), default=str, sort_keys=True),
                             json.dumps(r.get("source"), default=str, sort_keys=True)])
        text = buf.getvalue().rstrip("\n")
    else:
        text = "\n".join(json.dumps(r, default=str, sort_keys=True) for r in records)
    if args.out:
        Path(args.out).write_text(text + "\n")
    elif text:
        print(text)
    return 0


def cmd_consent_lookup(args: argparse.Namespace) -> int:
    from gdpr_core.consent.model import ValidationError, validate_email
    from gdpr_core.consent.store import ConsentStore

    try:
        email = validate_email(args.email, "email")  # a clear error instead of an empty answer
    except ValidationError:
        raise CliError("not an email address") from None  # never echoes what was typed
    target = resolve(args.stack)
    store = ConsentStore(target.env()["ConsentWebhookFunction"]["CONSENT_TABLE"], _pseudonymizer(target),
                         client=target.client("dynamodb"))
    data = store.lookup(email)
    _emit(args, data, json.dumps(data, indent=2, sort_keys=True, default=str))
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    target = resolve(args.stack)
    sqs = target.client("sqs")
    dlq, queue = target.output("ActionsDeadLetterQueueUrl"), target.output("ActionsQueueUrl")
    moved = 0
    # Long polling on AWS: a short-poll receive samples a few servers and may come back empty
    # while dead letters remain. The sandbox's moto answers from the whole queue at once.
    wait = 0 if args.stack is None else 2
    while True:
        got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=wait,
                                  MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            break
        for m in got:  # send first, then delete: a crash in between duplicates, never loses
            # Attributes go back as received, minus the list fields SQS reserves and refuses.
            attributes = {k: {f: v[f] for f in ("DataType", "StringValue", "BinaryValue") if f in v}
                          for k, v in m.get("MessageAttributes", {}).items()}
            extra = {"MessageAttributes": attributes} if attributes else {}
            sqs.send_message(QueueUrl=queue, MessageBody=m["Body"], **extra)
            sqs.delete_message(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"])
            moved += 1
    _emit(args, {"replayed": moved}, f"replayed {moved} messages from the dead-letter queue")
    return 0


def _dead_letters(sqs: Any, dlq: str, wait: int) -> list[dict[str, Any]]:
    """Every message in the DLQ, received (so hidden from others for a minute) until the queue is empty."""
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=wait, VisibilityTimeout=60,
                                  AttributeNames=["SentTimestamp", "ApproximateReceiveCount"]).get("Messages", [])
        if not got:
            return out
        out.extend(got)


def _put_back(sqs: Any, dlq: str, messages: list[dict[str, Any]]) -> None:
    for m in messages:
        sqs.change_message_visibility(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)


def _describe_dead_letter(m: dict[str, Any]) -> dict[str, Any]:
    """What an operator needs to decide on a dead letter: its kind, and the site of a lifecycle message
    (typed by the operator or sent by the app, as `status` shows it); never an account id."""
    from gdpr_core.clock import format_rfc3339
    from gdpr_core.erasure.engine import InvalidMessage, parse_action_message
    from gdpr_core.lifecycle.uninstall import is_lifecycle_message, parse_lifecycle_message

    attributes = m.get("Attributes", {})
    row: dict[str, Any] = {"messageId": m["MessageId"], "receives": int(attributes.get("ApproximateReceiveCount", 0))}
    if attributes.get("SentTimestamp"):
        row["sentAt"] = format_rfc3339(datetime.fromtimestamp(int(attributes["SentTimestamp"]) / 1000, UTC))
    body = m.get("Body", "")
    try:
        if is_lifecycle_message(body):
            message = parse_lifecycle_message(body)
            row.update(kind=message.action, site=message.site, requestedAt=message.requested_at)
            if message.seq is not None:
                row["chunk"] = message.seq
        else:
            action = parse_action_message(body)
            row.update(kind=action.action, cycle=action.cycle)
    except InvalidMessage as exc:  # the function's own reason for refusing it (never personal data)
        row.update(kind="malformed", reason=str(exc))
    return row


def cmd_dlq_list(args: argparse.Namespace) -> int:
    target = resolve(args.stack)
    sqs, dlq = target.client("sqs"), target.output("ActionsDeadLetterQueueUrl")
    messages = _dead_letters(sqs, dlq, 0 if args.stack is None else 2)
    try:
        rows = [_describe_dead_letter(m) for m in messages]
    finally:
        _put_back(sqs, dlq, messages)
    text = "\n".join(" ".join(f"{k}={v}" for k, v in r.items() if v is not None) for r in rows)
    _emit(args, {"deadLetters": rows}, text or "the actions dead-letter queue is empty")
    return 0


def cmd_dlq_drop(args: argparse.Namespace) -> int:
    """Deletes one dead letter the operator has decided on (by the messageId `dlq list` shows)."""
    target = resolve(args.stack)
    sqs, dlq = target.client("sqs"), target.output("ActionsDeadLetterQueueUrl")
    messages = _dead_letters(sqs, dlq, 0 if args.stack is None else 2)
    chosen = [m for m in messages if m["MessageId"] == args.message_id]
    try:
        for m in chosen:
            sqs.delete_message(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"])
    finally:
        _put_back(sqs, dlq, [m for m in messages if m not in chosen])
    if not chosen:
        raise CliError("no dead letter has that messageId (see `gdprctl dlq list`); nothing was deleted")
    _emit(args, {"dropped": args.message_id}, f"dropped dead letter {args.message_id}")
    return 0


def _lifecycle_status(target: Any, stores: bool = True) -> dict[str, Any]:
    """Sites pending or being uninstalled (site ids: what the operator typed, not personal data of users),
    the retention sweep's position, and (unless `stores` is false) the oldest copy held per store of the
    personal-data map: store names, times and counts only."""
    from gdpr_core.clock import format_rfc3339
    from gdpr_core.clock import now as clock_now
    from gdpr_core.erasure import pdmap
    from gdpr_core.lifecycle.holdings import oldest_held, retention_position
    from gdpr_core.lifecycle.uninstall import list_states, status_rows

    env = target.env()["ErasureFunction"]
    ddb = target.client("dynamodb")
    data: dict[str, Any] = {"uninstalls": status_rows(list_states(ddb, env["STATE_TABLE"])),
                            "retentionSweep": retention_position(ddb, env["STATE_TABLE"])}
    if stores:
        # The same map and environment as erasure and `subject export` (one source of truth for the stores).
        pd_map = pdmap.load()
        # The wall clock, as the retention sweep uses: not the reporter's `report --now` time, which a
        # sandbox may run ahead (ages would then count days that have not passed for the sweep).
        now = clock_now()
        data["oldestHeldAsOf"] = format_rfc3339(now)
        data["oldestHeld"] = oldest_held(pd_map, pd_map.resolve(env), dynamodb=ddb, s3=target.client("s3"), now=now)
    return data


def _holdings_text(lifecycle: dict[str, Any]) -> str:
    sweep = lifecycle.get("retentionSweep")
    lines = ["retention  " + (
        f"sweep at key {sweep['key']} ({sweep['keyIndex'] + 1} of {sweep['keys']}), saved {sweep['savedAt']}, "
        f"last full pass {sweep['lastPassCompletedAt'] or 'not yet'}" if sweep else "sweep has not run yet")]
    rows = lifecycle.get("oldestHeld")
    if rows is None:
        return "\n".join([*lines, "held       not read (--no-stores)"])
    lines.append(f"held       as of {lifecycle.get('oldestHeldAsOf')}")
    width = max((len(r["store"]) for r in rows), default=0)
    for r in rows:
        if r.get("error"):
            what = f"could not be read: {r['error']}"
        elif r["basis"] == "untimed":
            what = "no retrieval time kept (not read)"
        else:
            what = (f"oldest {r['oldestHeld']} ({r['ageDays']} days, {r['basis']})" if r["oldestHeld"]
                    else f"no readable {r['basis']}" if r["copies"] else "nothing held") + f", {r['copies']} copies"
            if r["pastMaxAge"] is not None:
                what += f", {r['pastMaxAge']} past {r['maxAgeDays']} days"
            if r["unreadable"]:
                what += f", {r['unreadable']} without a readable time"
        lines.append(" " * 11 + f"{r['store']:<{width}}  {what}")
    return "\n".join(lines)


def cmd_sites_uninstall(args: argparse.Namespace) -> int:
    """Queues the same message the app sends on its `uninstalled` callback; the erasure function runs it."""
    from gdpr_core.clock import now
    from gdpr_core.lifecycle.uninstall import MAX_FUTURE, MAX_PAST, request_message

    try:
        at = parse_rfc3339(args.at) if args.at is not None else None  # "" is refused, not taken as "now"
    except ValueError:
        raise CliError("--at is not an RFC 3339 timestamp (e.g. 2026-12-01T10:30:00Z)") from None
    if at is not None and at > now() + MAX_FUTURE:
        raise CliError("--at is in the future: an uninstall dated later would outrank every re-install until then")
    if at is not None and at < now() - MAX_PAST:
        raise CliError(f"--at is more than {MAX_PAST.days} days in the past: the erasure function refuses such a "
                       "request as an unset time")
    body = request_message(args.site, at)  # validates the site before anything is touched
    target = resolve(args.stack)
    from gdpr_core.lifecycle.service import build_uninstall

    service = build_uninstall(target.env()["ErasureFunction"], clients=target.client,
                              pseudonymizer=_pseudonymizer(target))
    newest = service.newest_event(args.site)
    dated_after = False
    if newest is not None and newest >= json.loads(body)["requestedAt"]:
        if at is not None:  # a back-dated request older than what is recorded would be ignored: say so now
            raise CliError(f"a newer event ({newest}) is already recorded for this site, so an uninstall dated "
                           "--at would be ignored; nothing was queued (leave out --at to uninstall now)")
        # A re-install dated ahead of this clock (within the allowed skew) is recorded: the operator's
        # uninstall, decided now, is dated just after it, so it is neither ignored nor refused as uncertain.
        after = parse_rfc3339(newest) + timedelta(milliseconds=1)
        if after > now() + MAX_FUTURE:
            raise CliError(f"an event dated {newest} is recorded for this site, too far ahead to date an uninstall "
                           "after it; nothing was queued")
        body, dated_after = request_message(args.site, after), True
    target.client("sqs").send_message(QueueUrl=target.output("ActionsQueueUrl"), MessageBody=body)
    grace = service.grace.total_seconds() / 3600
    data = {"queued": json.loads(body), "graceHours": grace}
    dated = (f"; dated {data['queued']['requestedAt']}, just after the re-install recorded ahead of this clock, "
             "so it is the newest event" if dated_after else "")
    due = service.due_at(data["queued"]["requestedAt"])  # the function's own rule, as if it arrived now
    if due <= now():  # the function starts it as soon as it reads it
        then = "the erasure function erases the site's data when it reads it (`gdprctl drain` processes the queue)"
    else:
        then = (f"it stays pending until about {format_rfc3339(due)} (its date or its arrival, whichever is later, "
                f"plus the grace period){', unless the site is re-installed first' if grace else ''}; "
                "then the lifecycle schedule (or `gdprctl lifecycle tick`) erases it")
    _emit(args, data, f"uninstall of {args.site} queued (grace {grace:g} h){dated}; {then}; "
                      "`gdprctl status` shows it while pending")
    return 0


def cmd_sites_reinstall(args: argparse.Namespace) -> int:
    """Cancels a pending uninstall at once (not through the queue, so the answer says whether it worked)."""
    from gdpr_core.lifecycle.service import build_uninstall
    from gdpr_core.lifecycle.uninstall import UninstallRefused, validate_site

    target = resolve(args.stack)
    service = build_uninstall(target.env()["ErasureFunction"], clients=target.client,
                              pseudonymizer=_pseudonymizer(target))
    try:
        result = service.cancel(validate_site(args.site))
    except UninstallRefused as exc:
        raise CliError(str(exc)) from None
    words = {"cancelled": "pending uninstall cancelled", "recorded": "re-install recorded (no uninstall was pending)",
             "superseded": "a newer event is already recorded for this site; nothing changed"}
    _emit(args, result, f"{args.site}: {words[result['outcome']]}")
    return 1 if result["outcome"] == "superseded" else 0  # nothing was cancelled or recorded


def cmd_lifecycle_tick(args: argparse.Namespace) -> int:
    """One run of the lifecycle schedule now: due uninstalls start, stalled ones resume, one share of the
    retention sweep (as the hourly schedule does)."""
    result = resolve(args.stack).lifecycle()
    retention = result.get("retention", {})
    _emit(args, result, f"uninstalls started {result.get('uninstallsStarted', 0)}, resumed "
                        f"{result.get('uninstallsResumed', 0)}; retention: {retention.get('candidates', 0)} "
                        f"candidates, {retention.get('purged', 0)} copies purged, "
                        f"{retention.get('accountsDropped', 0)} accounts dropped, "
                        f"{retention.get('accountsMoved', 0)} moved forward, pass "
                        f"{'completed' if retention.get('passCompleted') else 'continues at the next tick'}")
    return 0


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    # --json/--stack go before or after the verb: the verb-level copies default to SUPPRESS so that
    # they only override what was given before the verb.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output on stdout")
    common.add_argument("--stack", default=argparse.SUPPRESS,
                        help="act on this deployed CloudFormation stack instead of the sandbox")
    parser = argparse.ArgumentParser(prog="gdprctl", description=__doc__)
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument("--stack", help="act on this deployed CloudFormation stack instead of the sandbox")
    verbs = parser.add_subparsers(dest="verb", required=True)

    sandbox = verbs.add_parser("sandbox", help="sandbox-only operations").add_subparsers(dest="sub", required=True)
    p = sandbox.add_parser("seed", parents=[common], help="write the sample app's data and register it")
    p.add_argument("file")
    p.set_defaults(func=cmd_sandbox_seed)

    accounts = verbs.add_parser("accounts", help="the account registry").add_subparsers(dest="sub", required=True)
    p = accounts.add_parser("import", parents=[common], help="register accounts from JSON lines")
    p.add_argument("file")
    p.set_defaults(func=cmd_accounts_import)

    p = verbs.add_parser("report", parents=[common], help="run one reporting tick now")
    p.add_argument("--now", help="RFC 3339 time the tick should take as now")
    p.set_defaults(func=cmd_report)

    p = verbs.add_parser("drain", parents=[common], help="process the actions queue until it is empty")
    p.set_defaults(func=cmd_drain)

    p = verbs.add_parser("status", parents=[common],
                         help="cycle, position, registry, queue and lifecycle state, oldest copy held per store")
    p.add_argument("--no-stores", action="store_true",
                   help="skip the oldest copy held per store: it reads every timed store once (a full Scan of "
                        "each table with an age attribute and of the registry, a listing of each bucket), "
                        "so its cost grows with the data held")
    p.set_defaults(func=cmd_status)

    subject = verbs.add_parser("subject", help="a data subject's rights").add_subparsers(dest="sub", required=True)
    p = subject.add_parser("export", parents=[common], help="all personal data held for an account")
    p.add_argument("account_id")
    p.add_argument("--out")
    p.set_defaults(func=cmd_subject_export)

    audit = verbs.add_parser("audit", help="the deletion audit trail").add_subparsers(dest="sub", required=True)
    p = audit.add_parser("export", parents=[common], help="audit records, oldest first")
    p.add_argument("--since", help="only records from this RFC 3339 time on (e.g. 2026-12-01T00:00:00Z)")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="JSON lines (default) or CSV")
    p.add_argument("--out", help="write to this file (mode 0600) instead of stdout")
    p.set_defaults(func=cmd_audit_export)

    consent = verbs.add_parser("consent", help="marketing consent").add_subparsers(dest="sub", required=True)
    p = consent.add_parser("lookup", parents=[common], help="current consent for an email")
    p.add_argument("email")
    p.set_defaults(func=cmd_consent_lookup)

    dlq = verbs.add_parser("dlq", help="the actions dead-letter queue").add_subparsers(dest="sub", required=True)
    p = dlq.add_parser("replay", parents=[common], help="move dead letters back to the actions queue")
    p.set_defaults(func=cmd_dlq_replay)
    p = dlq.add_parser("list", parents=[common],
                       help="what is in the actions dead-letter queue (no account ids); listing receives each "
                            "message once, so its receive count goes up by one")
    p.set_defaults(func=cmd_dlq_list)
    p = dlq.add_parser("drop", parents=[common], help="delete one dead letter, by the messageId `dlq list` shows")
    p.add_argument("message_id")
    p.set_defaults(func=cmd_dlq_drop)

    sites = verbs.add_parser("sites", help="the app's installations").add_subparsers(dest="sub", required=True)
    p = sites.add_parser("uninstall", parents=[common], help="erase the data held for a site (after the grace period)")
    p.add_argument("site")
    p.add_argument("--at", help="RFC 3339 time of the uninstall (default: now; not in the future)")
    p.set_defaults(func=cmd_sites_uninstall)
    p = sites.add_parser("reinstall", parents=[common],
                         help="cancel a pending uninstall of a site (exit 1 when a newer event already stands)")
    p.add_argument("site")
    p.set_defaults(func=cmd_sites_reinstall)

    lifecycle = verbs.add_parser("lifecycle", help="uninstalls and retention").add_subparsers(dest="sub",
                                                                                              required=True)
    p = lifecycle.add_parser("tick", parents=[common],
                             help="run the lifecycle schedule now: start due uninstalls, resume stalled ones, "
                                  "one share of the retention sweep")
    p.set_defaults(func=cmd_lifecycle_tick)
    return parser


def main(argv: list[str] | None = None) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    args = build_parser().parse_args(argv)
    if args.stack == "":  # what `--stack "$STACK"` becomes with STACK unset: never the sandbox by accident
        print("gdprctl: --stack needs a stack name (leave it out to use the local sandbox)", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except ClientError as exc:  # the AWS error code and message, never a traceback
        error = exc.response.get("Error", {})
        print(f"gdprctl: AWS {error.get('Code', 'error')}: {error.get('Message', '')}", file=sys.stderr)
    except BotoCoreError as exc:  # no region, no credentials, endpoint unreachable
        from botocore.exceptions import NoRegionError

        hint = " Set AWS_REGION (or the profile's region) for --stack." if isinstance(exc, NoRegionError) else ""
        print(f"gdprctl: {exc}{hint}", file=sys.stderr)
    except (CliError, RuntimeError, ValueError, OSError, KeyError) as exc:
        print(f"gdprctl: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
