"""A whole 7-day reporting cycle in accelerated time on the sandbox, 10,090 accounts on 4 sites, judged
by the Atlassian emulator's own request log: every account exactly once per cycle, none before its
shard is due, none after `closed`, ceil(N/90) requests, through 429 storms, a 503 burst, a Retry-After
longer than a tick, odd answers and a Cycle-Period change (garbage first), then the start of the next,
shorter cycle. Ticks are 6 hours of reporter time apart (moto's index queries set the pace: ~0.15 s each
on 10,000 items, one per shard and cycle)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from gdpr_core import clock
from gdpr_core.reporting.planner import NSHARDS, report_key_for, shard_of

from .conftest import REPO, gdprctl, run

T0 = datetime(2027, 1, 4, 0, 0, tzinfo=UTC)  # ahead of the wall clock: the real schedule finds nothing
STEP = timedelta(hours=6)
WEEK = timedelta(days=7)
RETRY_AFTER = 30_000  # seconds: longer than a tick
SITES = [f"site-{i}" for i in range(4)]
N_BULK = 10_000
N_IMPORTED = 90  # one full request of new accounts: no partial batch, so requests stay ceil(N/90)


def bulk_id(i: int) -> str:
    return f"5be24ad8{i:016x}"


@pytest.fixture
def sandbox(tmp_path):
    env = {"GDPR_SANDBOX_DIR": str(tmp_path)}
    run([sys.executable, "-m", "gdpr_sandbox", "up"], env=env, timeout=180)
    endpoints = json.loads((tmp_path / "endpoints.json").read_text())
    driver = subprocess.Popen(  # noqa: S603 - our own test driver
        [sys.executable, str(Path(__file__).with_name("reporter_driver.py")), str(tmp_path)],
        cwd=REPO, env={**os.environ, **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        yield tmp_path, endpoints, driver
    finally:
        driver.stdin.close()
        driver.wait(timeout=30)
        run([sys.executable, "-m", "gdpr_sandbox", "down"], env=env, timeout=60)


class Cycle:
    """The test's side of the run: ticks through the driver, each emulator log entry tagged with the
    reporter's "now" of the tick that sent it (the emulator itself lives on the wall clock)."""

    def __init__(self, driver, emulator_url):
        self.driver, self.url = driver, emulator_url
        self.entries: list[dict] = []  # log entries + "tick"
        self.ticks: list[tuple[datetime, dict]] = []
        self.seconds = 0.0

    def command(self, line: str) -> dict:
        self.driver.stdin.write(line + "\n")
        self.driver.stdin.flush()
        return json.loads(self.driver.stdout.readline())

    def configure(self, **config) -> None:
        requests.post(self.url + "/_emulator/config", json=config, timeout=10).raise_for_status()

    def tick(self, now: datetime) -> dict:
        answer = self.command("tick " + clock.format_rfc3339(now))
        assert "summary" in answer, answer
        self.seconds += answer["seconds"]
        log = requests.get(self.url + "/_emulator/log", params={"since": len(self.entries)}, timeout=30).json()
        self.entries += [{**e, "tick": now} for e in log["requests"]]
        assert len(self.entries) == log["total"]
        self.ticks.append((now, answer["summary"]))
        return answer["summary"]

    def answered(self, start: datetime, end: datetime) -> list[dict]:
        return [e for e in self.entries if e["status"] in (200, 204) and start <= e["tick"] < end]


def shard_start(cycle_start: datetime, length: timedelta, account_id: str) -> datetime:
    return cycle_start + length * shard_of(account_id) / NSHARDS


def test_a_full_cycle_of_ten_thousand_accounts_on_the_sandbox(sandbox, tmp_path_factory):
    state, endpoints, driver = sandbox
    work = tmp_path_factory.mktemp("reporter")
    cycle = Cycle(driver, endpoints["emulator_url"])
    timings = {}

    # 10,000 accounts as the registry holds them after their first report (reportKey in their shard),
    # written in bulk: registering 10,000 through `accounts import` takes minutes on moto (measured:
    # 12,000 lines in 217 s, 18 ms a line), and their first report one registry write each (10,000 new
    # accounts: 85 s), so the import and the new-account path are exercised on 90 accounts below.
    bulk = [bulk_id(i) for i in range(N_BULK)]
    items = work / "registry.jsonl"
    items.write_text("".join(json.dumps({
        "accountId": {"S": a}, "sites": {"SS": sorted({SITES[i % 4], SITES[(i * 7) % 4]})},
        "status": {"S": "active"}, "updatedAt": {"S": "2026-11-02T08:00:00.000Z"},
        "registeredAt": {"S": "2026-11-02T08:00:00.000Z"}, "reportKey": {"S": report_key_for(a)},
    }) + "\n" for i, a in enumerate(bulk)))
    started = time.monotonic()
    assert cycle.command(f"seed {items}")["seeded"] == N_BULK
    timings["bulk_seed_seconds"] = round(time.monotonic() - started, 1)

    imported = [f"acct:{i:05d}-new" for i in range(N_IMPORTED)]
    lines = [{"accountId": a, "updatedAt": "2026-12-20T10:00:00Z", "site": SITES[i % 4]}
             for i, a in enumerate(imported)]
    lines += [{"accountId": a, "updatedAt": "2026-12-01T10:00:00Z", "site": SITES[(i + 1) % 4]}
              for i, a in enumerate(imported[:30])]  # the same accounts seen on a second site
    feed = work / "accounts.jsonl"
    feed.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"accountId": "unknown", "updatedAt": '
                    '"2026-12-01T10:00:00Z", "site": "site-0"}\nnot json\n')
    started = time.monotonic()
    result = gdprctl(state, "accounts", "import", str(feed), "--json", check=False)  # bad lines: non-zero
    timings["import_seconds"] = round(time.monotonic() - started, 1)
    timings["import_lines"] = len(lines)
    answer = json.loads(result.stdout)
    assert answer["imported"] == len(lines)
    assert [e["line"] for e in answer["errors"]] == [len(lines) + 1, len(lines) + 2]
    everyone = bulk + imported

    by_shard = sorted(bulk, key=lambda a: (shard_of(a), a))
    closed_early = set(by_shard[1000:10000:600])  # closed before their first report in the cycle
    closed_late = set(by_shard[300:2000:400])  # reported in cycle 1 (shards < 50), closed on day 3.5
    closed_late_high = set(by_shard[9000:9990:200])  # closed on day 3.5, before their cycle-1 report
    odd_target = by_shard[5000]  # named `closed` in every answer without being asked about
    cycle.configure(closed=sorted(closed_early), oddAnswers=[odd_target, "acct:stranger"],
                    rateLimit={"requests": 1, "windowSeconds": 1.0, "retryAfter": 1})

    retry_blocked_until = None
    now, i = T0, 0
    cycle_end = T0 + WEEK
    while now < cycle_end:
        if i == 2:
            cycle.configure(rateLimit=None)
        if i == 4:  # a 429 storm that fits in the tick: waited out
            cycle.configure(failures={"status": 429, "count": 3, "retryAfter": 1})
        if i == 8:  # a Retry-After longer than a tick: checkpoint, stop, and keep away until it elapses
            cycle.configure(failures={"status": 429, "count": 1, "retryAfter": RETRY_AFTER})
            retry_blocked_until = now + timedelta(seconds=RETRY_AFTER)
        if i == 12:  # a 503 burst: backed off, then the next tick resumes
            cycle.configure(failures={"status": 503, "count": 4})
        if i == 14:
            cycle.configure(closed=sorted(closed_early | closed_late | closed_late_high))
        if i == 18:
            cycle.configure(cyclePeriod="soon")  # garbage: ignored
        if i == 20:
            cycle.configure(cyclePeriod="2 Days")
        summary = cycle.tick(now)
        if i == 8:
            assert summary["stoppedBy"] == "rate_limited"
        if i == 9:
            assert summary["stoppedBy"] == "rate_limited" and summary["requests"] == 0
        if i == 12:
            assert summary["stoppedBy"] == "unavailable"
        now, i = now + STEP, i + 1
    last = cycle_end - timedelta(seconds=1)  # the cycle's last shard is due; the next cycle is not
    cycle.tick(last)

    # -- cycle 1: every account once, at or after its shard's start, in ceil(N/90) requests
    c1 = cycle.answered(T0, cycle_end)
    counts = Counter(a for e in c1 for a in e["accountIds"])
    assert set(counts) == set(everyone) and set(counts.values()) == {1}
    assert len(c1) == math.ceil(len(everyone) / 90) == 113
    assert max(e["accounts"] for e in cycle.entries) <= 90
    in_shards = set(bulk)
    for e in c1:
        assert all(e["tick"] >= shard_start(T0, WEEK, a) for a in e["accountIds"] if a in in_shards)
    assert {a for e in c1 if e["tick"] == T0 for a in e["accountIds"]} >= set(imported)  # within one tick

    # -- pacing: no request before a Retry-After elapsed, in accelerated time and in real time
    told_at = retry_blocked_until - timedelta(seconds=RETRY_AFTER)
    assert not [e for e in cycle.entries if told_at < e["tick"] < retry_blocked_until]
    waited = [(a, b) for a, b in zip(cycle.entries, cycle.entries[1:], strict=False) if a["status"] == 429
              and a["tick"] == b["tick"]]
    assert len(waited) >= 4
    for a, b in waited:
        gap = (clock.parse_rfc3339(b["time"]) - clock.parse_rfc3339(a["time"])).total_seconds()
        assert gap >= 0.995, (a["time"], b["time"])
    assert sum(s["rateLimited"] for _, s in cycle.ticks) == Counter(e["status"] for e in cycle.entries)[429]
    assert Counter(e["status"] for e in cycle.entries)[503] == 4

    # -- the Cycle-Period change: the garbage was ignored, "2 Days" waits for the boundary
    status = json.loads(gdprctl(state, "status", "--json").stdout)["reporter"]
    assert status["cycle"] == 1 and status["cycleLengthSeconds"] == WEEK.total_seconds()
    assert status["pendingCycleLengthSeconds"] == 2 * 86400
    assert status["position"]["shard"] == NSHARDS and status["position"]["cycleFraction"] == 1.0
    assert status["oldestOverdueSeconds"] == 0 and status["atRisk"] == 0 and status["quarantined"] == 0

    # -- cycle 2: two days long now; its first 18 hours (the first 96 of 256 shards)
    two_days = timedelta(days=2)
    for hours in range(0, 19, 3):
        cycle.tick(cycle_end + timedelta(hours=hours))
    c2 = cycle.answered(cycle_end, cycle_end + two_days)
    expected2 = set(everyone) - closed_early - closed_late_high
    counts2 = Counter(a for e in c2 for a in e["accountIds"])
    assert set(counts2) <= expected2 and set(counts2.values()) == {1}
    passed = {a for a in expected2 if shard_of(a) < 90}  # due >= 1.1 hours before the last tick
    assert passed <= set(counts2) and closed_late <= set(counts2)
    for e in c2:
        assert all(e["tick"] >= shard_start(cycle_end, two_days, a) for a in e["accountIds"])

    # -- closed: never in any request after the answer that said so; the odd answer changed nothing
    for account in closed_early | closed_late | closed_late_high:
        closing = min(j for j, e in enumerate(cycle.entries) if e["status"] == 200 and account in e["accountIds"]
                      and e["tick"] >= (T0 if account in closed_early else T0 + 14 * STEP))
        assert not any(account in e["accountIds"] for e in cycle.entries[closing + 1:]), "reported after closed"
    assert counts[odd_target] == 1 and counts2[odd_target] <= 1

    status = json.loads(gdprctl(state, "status", "--json").stdout)
    reporter = status["reporter"]
    assert reporter["cycle"] == 2 and reporter["cycleSource"] == "Cycle-Period P2D"
    assert reporter["cycleLengthSeconds"] == 2 * 86400 and reporter["lastError"] is None
    assert reporter["lastTickAt"] == clock.format_rfc3339(cycle_end + timedelta(hours=18))
    assert reporter["position"]["shard"] >= 90 and reporter["oldestOverdueSeconds"] < 3 * 3600
    gdprctl(state, "drain", "--json")
    registry = json.loads(gdprctl(state, "status", "--json").stdout)["registry"]
    assert registry["erasing"] + registry["erased_tombstones"] == len(closed_early | closed_late | closed_late_high)

    print(json.dumps({**timings, "accounts": len(everyone), "requests_cycle1": len(c1), "requests_cycle2": len(c2),
                      "ticks": len(cycle.ticks), "tick_seconds_total": round(cycle.seconds, 1)}))
