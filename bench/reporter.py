"""Reporter benchmarks: a whole accelerated cycle of the real run code against the Atlassian emulator,
next to a naive reporter (Scan, report site by site, one write per account) on the same data.

Steady state is reached the way production reaches it: accounts are registered (items shaped exactly
as `Registry.record` writes them), a first cycle reports them as new and moves them into their
shards, and the measured cycle is the next one. Only the measured cycle is counted.
"""

from __future__ import annotations

import json
import math
import os
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gdpr_core import clock
from gdpr_core.reporting import contract
from gdpr_core.reporting.planner import NSHARDS
from gdpr_core.reporting.run import run_tick

from . import meter
from .memory import InMemoryRegistry, InMemoryStateStore

TOKEN = "bench-emulator-token"  # noqa: S105 - the local emulator's fixed test token
CREDENTIALS = [{"id": "main", "type": "oauth3lo", "token": TOKEN}]
T0 = datetime(2026, 3, 2, 9, 7, 13, tzinfo=UTC)
UPDATED_AT = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
TICK = timedelta(minutes=15)  # the template's rate(15 minutes)
CYCLE = timedelta(days=7)  # DefaultCycleDays
TICKS_PER_CYCLE = int(CYCLE / TICK)
SITES = tuple(f"site-{k}.bench.example" for k in range(4))
CLOSED_EVERY = 1000  # 0.1 % of accounts are answered `closed` in the measured cycle
LAMBDA_BUDGET_SECONDS = 900.0 - 20.0  # the reporter's timeout minus its safety margin
# Modelled latencies for the scale run (assumptions, printed with the table).
LATENCY = {"atlassian": 0.300, "dynamodb": 0.010, "sqs": 0.020}
REGION = "us-east-1"


def account_id(i: int) -> str:
    return f"5be24ad8{i:016x}"


def sites_for(i: int) -> tuple[str, ...]:
    """1 to 3 of the 4 sites, spread evenly: the naive reporter sends an account once per site."""
    n = 1 + ((i * 2654435761) >> 7) % 3
    return tuple(SITES[(i + k) % len(SITES)] for k in range(n))


def closed_ids(n: int) -> list[str]:
    return [account_id(i) for i in range(0, n, CLOSED_EVERY)]


def account_site_pairs(n: int) -> int:
    return sum(len(sites_for(i)) for i in range(n))


def naive_requests(n: int) -> int:
    per_site = Counter(site for i in range(n) for site in sites_for(i))
    return sum(math.ceil(c / contract.MAX_ACCOUNTS_PER_REQUEST) for c in per_site.values())


# ------------------------------------------------------------------ Atlassian clients
class InProcessAtlassian:
    """The real request building (validation, JSON body) without the network; answers like the
    emulator (closed for the configured ids, else 204). Used for warm-up and the scale run."""

    def __init__(self, closed: set[str] | None = None):
        self.builder = contract.ReportClient("http://127.0.0.1:9")
        self.closed = closed or set()
        self.requests = 0
        self.accounts = 0
        self.seen: Counter = Counter()
        self.track = False

    def report(self, accounts: Any, credential: Any) -> contract.ReportOutcome:
        self.builder.build_request(accounts, credential)
        self.requests += 1
        self.accounts += len(accounts)
        if self.track:
            self.seen.update(a for a, _ in accounts)
        actions = tuple((a, "closed") for a, _ in accounts if a in self.closed)
        return contract.Answered(200, actions) if actions else contract.Answered(204)


class NullSender:
    """Counts messages as the SQS adapter would send them (SendMessageBatch of 10)."""

    def send(self, messages: Any) -> int:
        tally = meter.current()
        if tally is not None:
            for _ in range(0, len(messages), 10):
                tally.record("sqs", "SendMessageBatch", resource="actions")
        return len(messages)


# ------------------------------------------------------------------ one cycle of ticks
@dataclass
class CycleResult:
    tally: meter.Tally = field(default_factory=meter.Tally)
    ticks: list[dict[str, Any]] = field(default_factory=list)
    peak_bytes: int = 0
    summaries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(s["requests"] for s in self.summaries)

    @property
    def reported(self) -> int:
        return sum(s["accountsReported"] for s in self.summaries)


def modelled_seconds(tally: meter.Tally, requests: int) -> float:
    return (
        requests * LATENCY["atlassian"]
        + tally.count("dynamodb") * LATENCY["dynamodb"]
        + tally.count("sqs") * LATENCY["sqs"]
    )


def run_ticks(
    ports: Callable[[], dict[str, Any]],
    times: list[datetime],
    manual: clock.ManualClock,
    *,
    requests_so_far: Callable[[], int],
    model_budget: bool = False,
    trace_memory: bool = False,
) -> CycleResult:
    """Runs one reporter tick at each of `times`, each measured on its own (a Lambda invocation)."""
    result = CycleResult()
    for when in times:
        manual.set(when)
        tally = meter.Tally()
        before = requests_so_far()

        def remaining(tally: meter.Tally = tally, before: int = before) -> float:
            if not model_budget:
                return LAMBDA_BUDGET_SECONDS
            return LAMBDA_BUDGET_SECONDS - modelled_seconds(tally, requests_so_far() - before)

        if trace_memory:
            tracemalloc.reset_peak()
            floor = tracemalloc.get_traced_memory()[0]
        with meter.measure(tally):
            summary = run_tick(
                **ports(), credentials=CREDENTIALS, now=manual.now, sleep=_no_sleep,
                remaining_seconds=remaining,
            )
        if trace_memory:
            result.peak_bytes = max(result.peak_bytes, tracemalloc.get_traced_memory()[1] - floor)
        sent = requests_so_far() - before
        result.summaries.append(summary)
        result.ticks.append({
            "requests": summary["requests"],
            "dynamodbCalls": tally.count("dynamodb"),
            "modelledSeconds": modelled_seconds(tally, sent),
            "stoppedBy": summary.get("stoppedBy"),
        })
        _merge(result.tally, tally)
    return result


def _no_sleep(seconds: float) -> None:
    raise AssertionError("the benchmark configures no rate limit: the reporter should never wait")


def _merge(into: meter.Tally, other: meter.Tally) -> None:
    into.calls.update(other.calls)
    into.resources.update(other.resources)
    into.items_read += other.items_read
    into.read_units += other.read_units
    into.write_units += other.write_units
    into.cpu_seconds += other.cpu_seconds


def cycle_times(start: datetime, tick: timedelta = TICK) -> list[datetime]:
    times = [start + tick * k for k in range(int(CYCLE / tick))]
    # Coarse ticks (the smoke run) still end with one after the last shard's start, as 15-minute ones do.
    last_shard_due = start + CYCLE * (NSHARDS - 1) / NSHARDS
    if times[-1] < last_shard_due:
        times.append(start + CYCLE - timedelta(minutes=1))
    return times


def warm_up(ports: Callable[[], dict[str, Any]], manual: clock.ManualClock, client: InProcessAtlassian) -> None:
    """Cycle 1: every account is reported as new and moved into its shard; then its shard walk ends
    the cycle (each account is skipped there, having been reported in this cycle already)."""
    run_ticks(ports, [T0, T0 + CYCLE - timedelta(seconds=1)], manual, requests_so_far=lambda: client.requests)


# ------------------------------------------------------------------ the naive baseline
def naive_cycle(
    scan_pages: Callable[[], Iterator[list[tuple[str, str, tuple[str, ...], str]]]],
    write_last_reported: Callable[[str, str], None],
    report: Callable[[list[tuple[str, datetime]], dict[str, Any]], contract.ReportOutcome],
    enqueue: Callable[[dict[str, Any]], None],
    now: datetime,
) -> dict[str, int]:
    """The obvious reporter: Scan everything, report each site's accounts in 90s, enqueue each answer,
    write a last-reported time per account."""
    by_site: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    active: list[str] = []
    for page in scan_pages():
        for account, updated_at, sites, status in page:
            if status != "active":
                continue
            active.append(account)
            for site in sites:
                by_site[site].append((account, clock.parse_rfc3339(updated_at)))
    requests = pairs = 0
    for site in sorted(by_site):
        accounts = by_site[site]
        pairs += len(accounts)
        for start in range(0, len(accounts), contract.MAX_ACCOUNTS_PER_REQUEST):
            outcome = report(accounts[start : start + contract.MAX_ACCOUNTS_PER_REQUEST], CREDENTIALS[0])
            requests += 1
            for account, status in getattr(outcome, "actions", ()):
                enqueue({"schema": 1, "action": "erase" if status == "closed" else "refresh",
                         "accountId": account, "reportedAt": clock.format_rfc3339(now), "cycle": 1})
    stamp = clock.format_rfc3339(now)
    for account in active:
        write_last_reported(account, stamp)
    return {"requests": requests, "accountSitePairs": pairs, "accounts": len(active)}


# ------------------------------------------------------------------ moto world
@contextmanager
def aws_env() -> Iterator[None]:
    """Fake credentials, a region, no endpoint override, and moto for every client made inside."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                             "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL",
                                             "AWS_PROFILE")}
    fake = "bench"  # moto accepts any credentials; these only keep botocore from looking for real ones
    os.environ.update(AWS_ACCESS_KEY_ID=fake, AWS_SECRET_ACCESS_KEY=fake, AWS_SESSION_TOKEN=fake,
                      AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("AWS_PROFILE", None)
    from moto import mock_aws

    from gdpr_core.adapters import aws

    try:
        with mock_aws():
            aws.reset()
            yield
    finally:
        aws.reset()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _registration_shape(ddb: Any, table: str) -> dict[str, Any]:
    """The item `Registry.record` writes for a newly registered account (read back, then removed)."""
    from gdpr_core.pseudonym import Pseudonymizer
    from gdpr_core.registry import Registry

    probe = account_id(10**12)
    Registry(table, Pseudonymizer(b"bench-pseudonym-key-0123456789"), client=ddb).record(
        probe, SITES[0], UPDATED_AT
    )
    key = {"accountId": {"S": probe}}
    item = ddb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
    ddb.delete_item(TableName=table, Key=key)
    return item


def seed_moto(ddb: Any, table: str, n: int) -> None:
    shape = _registration_shape(ddb, table)
    for start in range(0, n, 25):
        batch = []
        for i in range(start, min(n, start + 25)):
            item = dict(shape)
            item["accountId"] = {"S": account_id(i)}
            item["sites"] = {"SS": list(sites_for(i))}
            batch.append({"PutRequest": {"Item": item}})
        ddb.batch_write_item(RequestItems={table: batch})


def seed_memory(registry: InMemoryRegistry, n: int) -> None:
    for i in range(n):
        registry.seed(account_id(i), UPDATED_AT, sites_for(i))


def _emulator_check(entries: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    seen = Counter(a for e in entries for a in e["accountIds"])
    return {
        "requests": len(entries),
        "maxAccountsPerRequest": max((e["accounts"] for e in entries), default=0),
        "distinctAccounts": len(seen),
        "reportedTwice": sum(1 for c in seen.values() if c > 1),
        "allReported": len(seen) == expected,
        "statuses": dict(Counter(str(e["status"]) for e in entries)),
    }


def _summary(result: CycleResult, n: int, check: dict[str, Any] | None) -> dict[str, Any]:
    t = result.tally
    reported = result.reported
    busy = [tk for tk in result.ticks if tk["requests"]]
    return {
        "accounts": n,
        "requests": result.requests,
        "minimumRequests": math.ceil(n / contract.MAX_ACCOUNTS_PER_REQUEST),
        "accountsReported": reported,
        "batchFill": round(reported / result.requests / contract.MAX_ACCOUNTS_PER_REQUEST, 4)
        if result.requests else 0.0,
        "ticks": len(result.ticks),
        "ticksWithRequests": len(busy),
        "maxRequestsPerTick": max((tk["requests"] for tk in result.ticks), default=0),
        "readsPerAccount": round(t.ddb_reads / max(1, reported), 5),
        "itemsReadPerAccount": round(t.items_read / max(1, reported), 4),
        "writesPerAccount": round(t.ddb_writes / max(1, reported), 5),
        "readUnitsPerAccount": round(t.read_units / max(1, reported), 5),
        "writeUnitsPerAccount": round(t.write_units / max(1, reported), 5),
        "sqsCalls": t.count("sqs"),
        "cpuSecondsPer10k": round(t.cpu_seconds / max(1, reported) * 10_000, 4),
        "peakMemoryMiB": round(result.peak_bytes / 2**20, 2) if result.peak_bytes else None,
        "tally": t.as_dict(),
        "emulator": check,
    }


def _naive_summary(outcome: dict[str, int], tally: meter.Tally, n: int, peak: int = 0) -> dict[str, Any]:
    return {
        "accounts": n,
        "requests": outcome["requests"],
        "accountSitePairs": outcome["accountSitePairs"],
        "accountsReported": outcome["accountSitePairs"],
        "batchFill": round(outcome["accountSitePairs"] / max(1, outcome["requests"])
                           / contract.MAX_ACCOUNTS_PER_REQUEST, 4),
        "readsPerAccount": round(tally.ddb_reads / n, 5),
        "itemsReadPerAccount": round(tally.items_read / n, 4),
        "writesPerAccount": round(tally.ddb_writes / n, 5),
        "readUnitsPerAccount": round(tally.read_units / n, 5),
        "writeUnitsPerAccount": round(tally.write_units / n, 5),
        "sqsCalls": tally.count("sqs"),
        "cpuSecondsPer10k": round(tally.cpu_seconds / n * 10_000, 4),
        "peakMemoryMiB": round(peak / 2**20, 2) if peak else None,
        "tally": tally.as_dict(),
    }


def bench_moto(n: int, tick: timedelta = TICK) -> dict[str, Any]:
    """`n` accounts in moto tables built from the template, the real adapters, the real emulator."""
    import boto3

    from gdpr_core.pseudonym import Pseudonymizer
    from gdpr_core.registry import Registry
    from gdpr_core.reporting.run import DynamoStateStore, SqsActionSender
    from gdpr_sandbox.atlassian_emulator import AtlassianEmulator
    from tests.support.stacks import create_queues, create_tables, load_template

    manual = clock.ManualClock(T0)
    clock.install(manual)
    started = time.perf_counter()
    try:
        with aws_env(), AtlassianEmulator(tokens=[TOKEN], closed=closed_ids(n)) as emulator:
            template = load_template()
            ddb, sqs = boto3.client("dynamodb", region_name=REGION), boto3.client("sqs", region_name=REGION)
            tables = create_tables(ddb, prefix="bench-", template=template)
            queue = create_queues(sqs, prefix="bench-", template=template)["ActionsQueue"]
            registry_table, state_table = tables["AccountsTable"], tables["StateTable"]
            seed_moto(ddb, registry_table, n)
            pseudonyms = Pseudonymizer(b"bench-pseudonym-key-0123456789")
            warm_client = InProcessAtlassian()
            http_client: list[contract.ReportClient] = []

            def ports(client: Any) -> Callable[[], dict[str, Any]]:
                def make() -> dict[str, Any]:
                    # As the handler does per invocation; the boto3 clients live as long as the container.
                    return {
                        "registry": Registry(registry_table, pseudonyms, client=ddb),
                        "state_store": DynamoStateStore(state_table, client=ddb),
                        "sender": SqsActionSender(queue, client=sqs),
                        "client": client() if callable(client) else client,
                    }
                return make

            warm_up(ports(warm_client), manual, warm_client)
            seeded = time.perf_counter()

            def new_http_client() -> contract.ReportClient:
                http_client.append(contract.ReportClient(emulator.url))
                return http_client[-1]

            # The naive reporter first, while every account is still active; then ours on the same data.
            manual.set(T0 + CYCLE)
            emulator.configure({"clearLog": True})
            naive_client = contract.ReportClient(emulator.url)

            def scan_pages() -> Iterator[list[tuple[str, str, tuple[str, ...], str]]]:
                for page in ddb.get_paginator("scan").paginate(TableName=registry_table):
                    yield [(i["accountId"]["S"], i["updatedAt"]["S"], tuple(i.get("sites", {}).get("SS", ())),
                            i.get("status", {}).get("S", "")) for i in page["Items"]]

            def write_last_reported(account: str, when: str) -> None:
                ddb.update_item(TableName=registry_table, Key={"accountId": {"S": account}},
                                UpdateExpression="SET lastReportedAt = :t",
                                ExpressionAttributeValues={":t": {"S": when}})

            def enqueue(message: dict[str, Any]) -> None:
                sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(message))

            with meter.measure() as naive_tally:
                naive = naive_cycle(scan_pages, write_last_reported, naive_client.report, enqueue, T0 + CYCLE)
            naive_check = _emulator_check(emulator.requests, n)

            emulator.configure({"clearLog": True})
            emulated0 = meter.emulated_seconds()
            ours = run_ticks(ports(new_http_client), cycle_times(T0 + CYCLE, tick), manual,
                             requests_so_far=lambda: len(emulator.requests))
            ours_check = _emulator_check(emulator.requests, n)
            calls = ours.tally.count("dynamodb")
            moto_ms = round((meter.emulated_seconds() - emulated0) / max(1, calls) * 1000, 2)
    finally:
        clock.install(clock.SystemClock())
    out = {
        "store": "moto (tables from infra/template.yaml), emulator over 127.0.0.1",
        "tickMinutes": tick.total_seconds() / 60,
        "ours": _summary(ours, n, ours_check),
        "naive": {**_naive_summary(naive, naive_tally, n), "emulator": naive_check},
        "motoCpuMillisecondsPerDynamoDBCall": moto_ms,
        "setupSeconds": round(seeded - started, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return out


def bench_memory(n: int, *, use_emulator: bool = True, trace_memory: bool = True,
                 tick: timedelta = TICK) -> dict[str, Any]:
    """`n` accounts in the in-memory stand-ins (same interface as Registry/DynamoStateStore), real SQS
    on moto, the real emulator; then a second cycle with tracemalloc for peak memory."""
    import boto3

    from gdpr_core.reporting.run import SqsActionSender
    from gdpr_sandbox.atlassian_emulator import AtlassianEmulator
    from tests.support.stacks import create_queues, load_template

    manual = clock.ManualClock(T0)
    clock.install(manual)
    started = time.perf_counter()
    closed = closed_ids(n)
    try:
        with aws_env(), AtlassianEmulator(tokens=[TOKEN], closed=closed) as emulator:
            sqs = boto3.client("sqs", region_name=REGION)
            queue = create_queues(sqs, prefix="bench-", template=load_template())["ActionsQueue"]
            registry, state = InMemoryRegistry(), InMemoryStateStore()
            seed_memory(registry, n)
            warm_client = InProcessAtlassian()

            def ports(client: Any, sender: Any = None) -> Callable[[], dict[str, Any]]:
                def make() -> dict[str, Any]:
                    return {"registry": registry, "state_store": state,
                            "sender": sender or SqsActionSender(queue, client=sqs),
                            "client": client() if callable(client) else client}
                return make

            warm_up(ports(warm_client), manual, warm_client)
            # The naive reporter first, while every account is still active; then ours on the same data.
            manual.set(T0 + CYCLE)
            emulator.configure({"clearLog": True})
            naive_http = contract.ReportClient(emulator.url)

            def enqueue(message: dict[str, Any]) -> None:
                sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(message))

            report = naive_http.report if use_emulator else InProcessAtlassian(set(closed)).report
            with meter.measure() as naive_tally:
                naive = naive_cycle(registry.scan_pages, registry.write_last_reported, report, enqueue, T0 + CYCLE)
            naive_check = _emulator_check(emulator.requests, n) if use_emulator else None

            emulator.configure({"clearLog": True})
            if use_emulator:
                ours = run_ticks(ports(lambda: contract.ReportClient(emulator.url)), cycle_times(T0 + CYCLE, tick),
                                 manual, requests_so_far=lambda: len(emulator.requests))
                check = _emulator_check(emulator.requests, n)
            else:
                fast = InProcessAtlassian(set(closed))
                fast.track = True
                ours = run_ticks(ports(fast), cycle_times(T0 + CYCLE, tick), manual,
                                 requests_so_far=lambda: fast.requests)
                check = {"requests": fast.requests, "distinctAccounts": len(fast.seen),
                         "reportedTwice": sum(1 for c in fast.seen.values() if c > 1),
                         "allReported": len(fast.seen) == n}

            ours_peak = naive_peak = 0
            if trace_memory:
                # Peak memory above the resting process, per tick (each tick is one invocation), with the
                # in-process client so only the run's own allocations are traced.
                tracemalloc.start()
                try:
                    memory_client = InProcessAtlassian(set(closed))
                    memory_run = run_ticks(ports(memory_client, NullSender()), cycle_times(T0 + 2 * CYCLE, tick),
                                           manual, requests_so_far=lambda: memory_client.requests,
                                           trace_memory=True)
                    ours_peak = memory_run.peak_bytes
                    tracemalloc.reset_peak()
                    floor = tracemalloc.get_traced_memory()[0]
                    with meter.measure():
                        naive_cycle(registry.scan_pages, registry.write_last_reported,
                                    InProcessAtlassian(set(closed)).report, lambda m: None, T0 + 3 * CYCLE)
                    naive_peak = tracemalloc.get_traced_memory()[1] - floor
                finally:
                    tracemalloc.stop()
    finally:
        clock.install(clock.SystemClock())
    ours_summary = _summary(ours, n, check)
    ours_summary["peakMemoryMiB"] = round(ours_peak / 2**20, 2) if ours_peak else None
    return {
        "store": "in-memory registry and state store (same interface), SQS on moto, "
        + ("emulator over 127.0.0.1" if use_emulator else "in-process Atlassian answers"),
        "ours": ours_summary,
        "naive": {**_naive_summary(naive, naive_tally, n, naive_peak), "emulator": naive_check},
        "tickMinutes": tick.total_seconds() / 60,
        "seconds": round(time.perf_counter() - started, 1),
    }


def bench_scale(n: int) -> dict[str, Any]:
    """The real planning and run code over `n` accounts in memory, with a modelled clock: each tick's
    time is requests x Atlassian latency + DynamoDB and SQS calls x their latency, and the run is
    given that modelled remaining time, so a tick that would overrun Lambda's limit stops itself."""
    manual = clock.ManualClock(T0)
    clock.install(manual)
    started = time.perf_counter()
    try:
        registry, state = InMemoryRegistry(), InMemoryStateStore()
        seed_memory(registry, n)
        client = InProcessAtlassian()

        def ports() -> dict[str, Any]:
            return {"registry": registry, "state_store": state, "sender": NullSender(), "client": client}

        # First cycle: every account is new at once (a first deployment's backfill); ticks until done.
        backlog_ticks: list[dict[str, Any]] = []
        when = T0
        while True:
            step = run_ticks(ports, [when], manual, requests_so_far=lambda: client.requests, model_budget=True)
            backlog_ticks.extend(step.ticks)
            if not step.summaries[0].get("stoppedBy") or len(backlog_ticks) >= TICKS_PER_CYCLE:
                break
            when += TICK
        run_ticks(ports, [T0 + CYCLE - timedelta(seconds=1)], manual, requests_so_far=lambda: client.requests,
                  model_budget=True)
        client.track = True
        steady = run_ticks(ports, cycle_times(T0 + CYCLE), manual, requests_so_far=lambda: client.requests,
                           model_budget=True)
    finally:
        clock.install(clock.SystemClock())
    busy = [t for t in steady.ticks if t["requests"]]
    longest = max(steady.ticks, key=lambda t: t["modelledSeconds"])
    return {
        "accounts": n,
        "store": "in-memory registry and state store, in-process Atlassian answers, modelled latency",
        "latencySeconds": LATENCY,
        "lambdaLimitSeconds": 900,
        "budgetSeconds": LAMBDA_BUDGET_SECONDS,
        "steady": {
            **_summary(steady, n, {"distinctAccounts": len(client.seen),
                                   "reportedTwice": sum(1 for c in client.seen.values() if c > 1),
                                   "allReported": len(client.seen) == n}),
            "meanRequestsPerBusyTick": round(sum(t["requests"] for t in busy) / max(1, len(busy)), 2),
            "longestTickSeconds": round(longest["modelledSeconds"], 1),
            "longestTickRequests": longest["requests"],
            "modelledCycleSeconds": round(sum(t["modelledSeconds"] for t in steady.ticks), 1),
            "ticksStoppedByBudget": sum(1 for t in steady.ticks if t["stoppedBy"]),
        },
        "backlog": {
            "ticksToReportAllNew": len(backlog_ticks),
            "longestTickSeconds": round(max(t["modelledSeconds"] for t in backlog_ticks), 1),
            "requests": sum(t["requests"] for t in backlog_ticks),
            "stoppedByBudget": sum(1 for t in backlog_ticks if t["stoppedBy"]),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
