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
from pathlib import Path
from typing import Any

from gdpr_core.clock import parse_rfc3339
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
        Path(args.out).write_text(out + "\n")
    else:
        print(out)


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
            "comments": result.comments, "avatars": result.avatars}
    _emit(args, data, f"seeded {data['accounts']} accounts on {data['sites']} sites ({data['lines']} retrievals, "
                      f"{data['comments']} comments, {data['avatars']} avatars)")
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
                    if not isinstance(line.get(key), str) or not line[key]:
                        raise ValueError(f"missing or empty '{key}'")
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
    return 1 if errors and not imported else 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.now:
        parse_rfc3339(args.now)
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


def cmd_status(args: argparse.Namespace) -> int:
    from boto3.dynamodb.types import TypeDeserializer

    target = resolve(args.stack)
    env = target.env()["ReporterFunction"]
    ddb = target.client("dynamodb")
    des = TypeDeserializer()
    state = ddb.get_item(TableName=env["STATE_TABLE"], Key={"pk": {"S": "reporter"}}, ConsistentRead=True).get("Item")
    counts: Counter = Counter()
    # An operator command, not a hot path: counting by status reads the registry once.
    for page in ddb.get_paginator("scan").paginate(TableName=env["REGISTRY_TABLE"], ProjectionExpression="#s",
                                                   ExpressionAttributeNames={"#s": "status"}):
        counts.update(item.get("status", {}).get("S", "unknown") for item in page["Items"])
    sqs = target.client("sqs")
    data = {
        "reporter": {k: des.deserialize(v) for k, v in (state or {}).items() if k != "pk"},
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
    _emit(args, data, text)
    return 0


def cmd_subject_export(args: argparse.Namespace) -> int:
    from gdpr_core.erasure.service import export_subject

    target = resolve(args.stack)
    data = export_subject(target.env()["ErasureFunction"], args.account_id, clients=target.client,
                          pseudonymizer=_pseudonymizer(target))
    _emit(args, data, json.dumps(data, indent=2, sort_keys=True, default=str))
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from boto3.dynamodb.types import TypeDeserializer

    target = resolve(args.stack)
    table = target.env()["ErasureFunction"]["AUDIT_TABLE"]
    since = parse_rfc3339(args.since) if args.since else None
    des = TypeDeserializer()
    records = []
    progress = _Progress("exporting")
    for page in target.client("dynamodb").get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            record = {k: des.deserialize(v) for k, v in item.items()}
            if since is None or parse_rfc3339(record["recordedAt"]) >= since:
                records.append(record)
            progress.step()
    progress.done()
    records.sort(key=lambda r: r["recordedAt"])
    if args.format == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["recordId", "recordedAt", "action", "subject", "verified", "stores"])
        for r in records:
            writer.writerow([r["recordId"], r["recordedAt"], r["action"], r["subject"], r.get("verified"),
                             json.dumps(r.get("stores"), default=str, sort_keys=True)])
        text = buf.getvalue().rstrip("\n")
    else:
        text = "\n".join(json.dumps(r, default=str, sort_keys=True) for r in records)
    if args.out:
        Path(args.out).write_text(text + "\n")
    elif text:
        print(text)
    return 0


def cmd_consent_lookup(args: argparse.Namespace) -> int:
    from gdpr_core.consent.store import ConsentStore

    target = resolve(args.stack)
    store = ConsentStore(target.env()["ConsentWebhookFunction"]["CONSENT_TABLE"], _pseudonymizer(target),
                         client=target.client("dynamodb"))
    data = store.lookup(args.email)
    _emit(args, data, json.dumps(data, indent=2, sort_keys=True, default=str))
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    target = resolve(args.stack)
    sqs = target.client("sqs")
    dlq, queue = target.output("ActionsDeadLetterQueueUrl"), target.output("ActionsQueueUrl")
    moved = 0
    while True:
        got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            break
        for m in got:  # send first, then delete: a crash in between duplicates, never loses
            sqs.send_message(QueueUrl=queue, MessageBody=m["Body"])
            sqs.delete_message(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"])
            moved += 1
    _emit(args, {"replayed": moved}, f"replayed {moved} messages from the dead-letter queue")
    return 0


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    common.add_argument("--stack", help="act on this deployed CloudFormation stack instead of the sandbox")
    parser = argparse.ArgumentParser(prog="gdprctl", description=__doc__)
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

    p = verbs.add_parser("status", parents=[common], help="cycle, position, registry and queue state")
    p.set_defaults(func=cmd_status)

    subject = verbs.add_parser("subject", help="a data subject's rights").add_subparsers(dest="sub", required=True)
    p = subject.add_parser("export", parents=[common], help="all personal data held for an account")
    p.add_argument("account_id")
    p.add_argument("--out")
    p.set_defaults(func=cmd_subject_export)

    audit = verbs.add_parser("audit", help="the deletion audit trail").add_subparsers(dest="sub", required=True)
    p = audit.add_parser("export", parents=[common], help="audit records, oldest first")
    p.add_argument("--since")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--out")
    p.set_defaults(func=cmd_audit_export)

    consent = verbs.add_parser("consent", help="marketing consent").add_subparsers(dest="sub", required=True)
    p = consent.add_parser("lookup", parents=[common], help="current consent for an email")
    p.add_argument("email")
    p.set_defaults(func=cmd_consent_lookup)

    dlq = verbs.add_parser("dlq", help="the actions dead-letter queue").add_subparsers(dest="sub", required=True)
    p = dlq.add_parser("replay", parents=[common], help="move dead letters back to the actions queue")
    p.set_defaults(func=cmd_dlq_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, RuntimeError, ValueError, OSError, KeyError) as exc:
        print(f"gdprctl: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
