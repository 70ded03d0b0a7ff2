"""`make bench`: every figure next to a naive baseline measured in the same run, as ratios; prints a table
and writes `bench.json` to the sandbox state directory (`.sandbox/`, or GDPR_SANDBOX_DIR).

    python -m bench            # the full set (about 5 minutes on 2 cores)
    python -m bench --smoke    # small sizes, a few seconds of work: what the test suite runs
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import meter

FULL = {"moto": 2_000, "memory": [10_000, 100_000], "scale": 1_000_000, "erasure": 50, "webhook": 100,
        "importRuns": 5, "depsLayer": True, "motoTickMinutes": 15, "coldStartOnly": None, "uninstall": 300,
        "retention": 3_000}
SMOKE = {"moto": 200, "memory": [1_000], "scale": 3_000, "erasure": 3, "webhook": 3,
         "importRuns": 1, "depsLayer": False, "motoTickMinutes": 360, "coldStartOnly": ["reporter"], "uninstall": 10,
         "retention": 100}


def run(smoke: bool = False, moto_accounts: int | None = None, deps_layer: bool | None = None) -> dict[str, Any]:
    meter.install()  # before any client exists, so every client carries the counting hooks
    from . import coldstart, cost, erasure, lifecycle, reporter, webhook

    sizes = dict(SMOKE if smoke else FULL)
    if moto_accounts:
        sizes["moto"] = moto_accounts
    if deps_layer is not None:
        sizes["depsLayer"] = deps_layer
    started = time.perf_counter()
    results: dict[str, Any] = {
        "generatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": "smoke" if smoke else "full",
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {_cores()} cores",
        "sizes": sizes,
    }
    tick = timedelta(minutes=sizes["motoTickMinutes"])
    results["reporter"] = {"moto": reporter.bench_moto(sizes["moto"], tick=tick)}
    for n in sizes["memory"]:
        results["reporter"][f"memory{n}"] = reporter.bench_memory(n)
    results["scale"] = reporter.bench_scale(sizes["scale"])
    results["erasure"] = erasure.bench_erasure(sizes["erasure"])
    results["webhook"] = webhook.bench_webhook(sizes["webhook"])
    results["lifecycle"] = {"uninstall": lifecycle.bench_uninstall(sizes["uninstall"]),
                            "retention": lifecycle.bench_retention(sizes["retention"])}
    results["coldStart"] = coldstart.bench_coldstart(
        runs=sizes["importRuns"], deps_layer=sizes["depsLayer"], only=sizes["coldStartOnly"])
    biggest = f"memory{max(sizes['memory'])}"
    results["cost"] = {
        "prices": cost.PRICES,
        "assumptions": cost.assumptions(reporter.LATENCY),
        "reportingPerMillionAccounts": cost.reporting(
            results["scale"], results["reporter"][biggest]["naive"], max(sizes["memory"]),
            reporter.LATENCY["atlassian"], reporter.TICKS_PER_CYCLE),
        "erasing1PercentPerMillionAccounts": cost.erasure(results["erasure"]),
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def _cores() -> int:
    import os

    return os.cpu_count() or 1


# ------------------------------------------------------------------ the table
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.1:
            return f"{value:.3f}"
        return f"{value:.5f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ratio(naive: Any, ours: Any) -> str:
    if not isinstance(naive, int | float) or not isinstance(ours, int | float) or isinstance(naive, bool):
        return ""
    if ours == 0:
        return "inf" if naive else "1"
    return f"{naive / ours:.2f}x"


class Table:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.misses: list[str] = []
        self.current = ""

    def section(self, title: str) -> None:
        self.current = title.split(":")[0]
        self.lines += ["", title, "-" * len(title)]
        self.lines.append(f"{'metric':<52} {'ours':>12} {'naive':>12} {'naive/ours':>10}  target")

    def row(self, label: str, ours: Any, naive: Any = None, target: str = "", ok: bool | None = None,
            ratio: str | None = None) -> None:
        verdict = "" if ok is None else ("met" if ok else "MISSED")
        if ok is False:
            self.misses.append(f"{self.current}: {label}")
        tail = f"{target} {verdict}".strip()
        self.lines.append(f"{label:<52} {_fmt(ours):>12} {_fmt(naive):>12} {ratio or _ratio(naive, ours):>10}  {tail}")

    def text(self, line: str = "") -> None:
        self.lines.append(line)

    def render(self) -> str:
        return "\n".join(self.lines)


def _reporter_rows(t: Table, name: str, case: dict[str, Any]) -> None:
    ours, naive = case["ours"], case["naive"]
    n = ours["accounts"]
    t.section(f"1. Reporter, {n:,} accounts on {len(_sites())} sites: {case['store']}"
              f" ({int(case.get('tickMinutes', 15))}-minute ticks)")
    t.row("report requests per cycle", ours["requests"], naive["requests"],
          f"= ceil(N/90) = {ours['minimumRequests']:,}", ours["requests"] == ours["minimumRequests"])
    t.row("accounts sent (naive: account-site pairs)", ours["accountsReported"], naive["accountsReported"])
    t.row("batch fill (accounts per request / 90)", ours["batchFill"], naive["batchFill"])
    emulator = ours.get("emulator") or {}
    t.row("accounts reported more than once in the cycle", emulator.get("reportedTwice"),
          (naive.get("emulator") or {}).get("reportedTwice"), "0", emulator.get("reportedTwice") == 0)
    t.row("every registered account reported", emulator.get("allReported"), (naive.get("emulator") or {}).get(
        "allReported"), "all", bool(emulator.get("allReported")))
    t.row("DynamoDB reads (calls) per reported account", ours["readsPerAccount"], naive["readsPerAccount"])
    t.row("items read per reported account", ours["itemsReadPerAccount"], naive["itemsReadPerAccount"])
    t.row("read request units per reported account", ours["readUnitsPerAccount"], naive["readUnitsPerAccount"])
    t.row("DynamoDB writes per reported account", ours["writesPerAccount"], naive["writesPerAccount"],
          "<= 0.01", ours["writesPerAccount"] <= 0.01)
    t.row("SQS calls per cycle (0.1 % answered closed)", ours["sqsCalls"], naive["sqsCalls"])
    t.row("client CPU seconds per 10,000 accounts", ours["cpuSecondsPer10k"], naive["cpuSecondsPer10k"])
    if ours.get("peakMemoryMiB") is not None:
        t.row("peak traced memory per invocation, MiB", ours["peakMemoryMiB"], naive["peakMemoryMiB"])
    t.row("ticks in the cycle / ticks that sent requests", f"{ours['ticks']}/{ours['ticksWithRequests']}")
    if "motoCpuMillisecondsPerDynamoDBCall" in case:
        t.row("moto's own CPU per DynamoDB call, ms (excluded)", case["motoCpuMillisecondsPerDynamoDBCall"])


def _lifecycle_rows(t: Table, lc: dict[str, Any]) -> None:
    u = lc["uninstall"]
    uo, un = u["ours"], u["naive"]
    t.section(f"7. Uninstall of a site: {u['accounts']:,} accounts ({u['alsoOnOtherSite']:,} also on another site, "
              f"{u['onlyOnOtherSite']:,} more only there), {uo['itemsOnSite']:,} items of the site (handler on moto; "
              f"naive: one call per item, no verification)")
    t.row("AWS calls per account of the site", uo["awsCallsPerAccount"], un["awsCallsPerAccount"])
    t.row("AWS calls per item of the site", uo["awsCallsPerItem"], un["awsCallsPerItem"])
    t.row("write request units per account", uo["writeUnitsPerAccount"], un["writeUnitsPerAccount"])
    t.row("read request units per account", uo["readUnitsPerAccount"],
          un["readUnitsPerAccount"])
    t.row("registry Scan pages / queue messages", f"{uo['registryScans']}/{uo['queueMessages']}",
          f"{un['registryScans']}/-", f"pages of {u['chunkSize']} registry items")
    left = sum(uo["leftOnSite"].values())
    t.row("items of the site left afterwards", left, sum(un["leftOnSite"].values()), "0", left == 0)
    t.row("other site's items unchanged", uo["otherSiteUnchanged"], un["otherSiteUnchanged"], "yes",
          uo["otherSiteUnchanged"])
    t.row("audit records for the site / failed queue items", f"{uo['auditRecords']}/{uo['failedItems']}", None,
          "1/0", uo["auditRecords"] == 1 and uo["failedItems"] == 0)
    t.row("client CPU ms per account", uo["cpuMillisecondsPerAccount"], un["cpuMillisecondsPerAccount"])

    rt = lc["retention"]
    ro, rn = rt["ours"], rt["naive"]
    t.section(f"8. Retention sweep: {rt['accounts']:,} accounts, {rt['oldCopies']:,} profile copies past "
              f"{rt['maxAgeDays']} days (one pass through the lifecycle schedule on moto; naive: Scan the "
              f"profile cache, delete old copies)")
    t.row("old copies left / recent copies kept", f"{ro['oldCopiesLeft']}/{ro['recentCopiesLeft']:,}",
          f"{rn['oldCopiesLeft']}/{rn['recentCopiesLeft']:,}", "0 old left", ro["oldCopiesLeft"] == 0)
    t.row("registry items left for accounts with nothing held", ro["registryItemsOfPurgedAccountsLeft"],
          rn["registryItemsOfPurgedAccountsLeft"], "0", ro["registryItemsOfPurgedAccountsLeft"] == 0)
    t.row("ticks for one pass", ro["ticks"])
    t.row("AWS calls per purged copy", ro["awsCallsPerPurgedCopy"], rn["awsCallsPerPurgedCopy"])
    t.row("items returned per purged copy", ro["itemsReadPerPurgedCopy"], rn["itemsReadPerPurgedCopy"])
    t.row("read request units per registered account, per pass", ro["readUnitsPerRegisteredAccount"],
          rn["readUnitsPerRegisteredAccount"])


def _sites() -> tuple[str, ...]:
    from .reporter import SITES

    return SITES


def render(r: dict[str, Any]) -> tuple[str, list[str]]:
    t = Table()
    t.text(f"GDPR compliance service: make bench ({r['mode']}), {r['generatedAt']}, Python {r['python']}, "
           f"{r['machine']}")
    t.text("Every figure is measured in this run next to a naive baseline on the same data; naive/ours > 1x "
           "means ours does less. CPU is this process's client-side CPU (moto's and the in-memory stores' "
           "own work excluded; the Atlassian emulator runs on other threads).")
    for name, case in r["reporter"].items():
        _reporter_rows(t, name, case)

    s = r["scale"]
    st, bl = s["steady"], s["backlog"]
    t.section(f"5. Scale: {s['accounts']:,} accounts, the real run code, in-memory store, modelled latency "
              f"(Atlassian {s['latencySeconds']['atlassian']} s, DynamoDB {s['latencySeconds']['dynamodb']} s, "
              f"SQS {s['latencySeconds']['sqs']} s per call)")
    t.row("report requests per cycle", st["requests"], None, f"= ceil(N/90) = {st['minimumRequests']:,}",
          st["requests"] == st["minimumRequests"])
    t.row("each account reported exactly once", st["emulator"]["allReported"] and not st["emulator"]["reportedTwice"],
          None, "no account twice", bool(st["emulator"]["allReported"] and not st["emulator"]["reportedTwice"]))
    t.row("ticks per cycle / with requests", f"{st['ticks']}/{st['ticksWithRequests']}")
    t.row("requests per tick: max / mean of busy ticks", f"{st['maxRequestsPerTick']}/{st['meanRequestsPerBusyTick']}")
    t.row("longest tick, modelled seconds", st["longestTickSeconds"], None, "< 900 s Lambda limit",
          st["longestTickSeconds"] < 900)
    t.row("DynamoDB writes per reported account", st["writesPerAccount"], None, "<= 0.01",
          st["writesPerAccount"] <= 0.01)
    t.row("DynamoDB reads (calls) per reported account", st["readsPerAccount"])
    t.row("client CPU seconds per 10,000 accounts", st["cpuSecondsPer10k"])
    t.row("first cycle, all accounts new at once: ticks needed", bl["ticksToReportAllNew"])
    t.row("  longest of those ticks, modelled seconds", bl["longestTickSeconds"], None, "< 900 s",
          bl["longestTickSeconds"] < 900)

    e = r["erasure"]
    eo, en = e["ours"], e["naive"]
    t.section(f"2. Erasure: {e['accounts']} accounts, each with 1 profile, {e['perAccount']['commentItems']} "
              f"comments, {e['perAccount']['avatarVersions']} avatar versions (handler on moto; naive: one call "
              f"per item)")
    t.row("AWS calls per erased account", eo["awsCallsPerAccount"], en["awsCallsPerAccount"])
    for kind in sorted(set(eo["byStore"]) | set(en["byStore"])):
        ours_ops = eo["byStore"].get(kind, {})
        naive_ops = en["byStore"].get(kind, {})
        detail = ", ".join(f"{op} {n:g}" for op, n in ours_ops.items() if op != "total")
        t.row(f"  {kind}", ours_ops.get("total", 0.0), naive_ops.get("total", 0.0), detail[:60])
    queries = {k: v.get("Query", 0) + v.get("ListObjectVersions", 0) for k, v in eo["byStore"].items()
               if k.startswith(("dynamodb store", "s3 store"))}
    t.row("finding queries per data store (max; find + verify)", max(queries.values(), default=0), None,
          "<= 1 find per store; +1 verify", max(queries.values(), default=0) <= 2)
    t.row("write request units per account", eo["writeUnitsPerAccount"], en["writeUnitsPerAccount"])
    t.row("read request units per account", eo["readUnitsPerAccount"], en["readUnitsPerAccount"])
    t.row("client CPU ms per account", eo["cpuMillisecondsPerAccount"], en["cpuMillisecondsPerAccount"])
    left = sum(e["leftAfterwards"].values())
    t.row("personal data left afterwards (both erasers)", left, None, "0", left == 0)
    t.row("failed queue items", eo["failedItems"], None, "0", eo["failedItems"] == 0)

    w = r["webhook"]
    t.section(f"3. Webhook: {w['deliveries']} deliveries of each kind, secrets cached (handler on moto)")
    for kind in ("valid", "duplicate", "forged"):
        o, nv = w["ours"][kind], w["naive"][kind]
        target, ok = "", None
        if kind == "forged":
            target, ok = "0", o["awsCallsPerDelivery"] == 0
        t.row(f"AWS calls per {kind} delivery", o["awsCallsPerDelivery"], nv["awsCallsPerDelivery"], target, ok)
    t.row("DynamoDB writes per valid delivery", w["ours"]["valid"]["dynamodbWritesPerDelivery"],
          w["naive"]["valid"]["dynamodbWritesPerDelivery"], "<= 3",
          w["ours"]["valid"]["dynamodbWritesPerDelivery"] <= 3)
    t.row("DynamoDB writes per duplicate delivery", w["ours"]["duplicate"]["dynamodbWritesPerDelivery"],
          w["naive"]["duplicate"]["dynamodbWritesPerDelivery"])
    first = sum(w.get("oursFirstForgedCalls", {}).values())
    t.row("AWS calls for the first forgery per refresh interval", first, None,
          f"once per {w.get('secretRefreshIntervalSeconds')} s (rotation)")
    for kind in ("valid", "duplicate", "forged"):
        t.row(f"client CPU ms per {kind} delivery", w["ours"][kind]["cpuMillisecondsPerDelivery"],
              w["naive"][kind]["cpuMillisecondsPerDelivery"])

    c = r["coldStart"]
    t.section("4. Cold start: median cumulative import time (-X importtime), ours = the function's app, "
              "naive = `import boto3` alone")
    for name, imp in c["imports"].items():
        if "error" in imp:
            t.row(f"import {name}", "error", None, imp["error"][:60])
            continue
        t.row(f"import {name} (ms; ratio = app / boto3)", imp["appMicroseconds"] / 1000,
              imp["boto3Microseconds"] / 1000, f"<= {c['target']}x boto3", imp["meetsTarget"],
              ratio=f"{imp['ratio']:.2f}x*")
        top = ", ".join(f"{p} {us / 1000:.0f}" for p, us in list(imp["topPackagesMicroseconds"].items())[:4])
        t.text(f"    self time by package, ms: {top}")
    t.text("    * for imports the ratio column is app / boto3 (the target's direction)")
    for name, size in c["sizes"].items():
        if "skipped" in size:
            t.row(f"size {name}", "skipped", None, size["skipped"][:70])
        else:
            kib = f"{size['zipBytes'] / 1024:,.0f}/{size['unzippedBytes'] / 1024:,.0f}"
            limit = "250 MB unzipped limit (all layers)" if name == "layer deps" else ""
            t.row(f"size {name}: zip / unzipped KiB", kib, None, limit)
            if name == "layer deps":
                heavy = ", ".join(f"{p} {b / 2**20:.1f} MiB" for p, b in size["largestPackages"].items())
                t.text(f"    largest: {heavy}")

    cr = r["cost"]["reportingPerMillionAccounts"]
    ce = r["cost"]["erasing1PercentPerMillionAccounts"]
    t.section("6. Cost per month per 1,000,000 accounts, USD (us-east-1 on-demand; see prices below)")
    for key in ("dynamodb", "sqs", "secretsManager", "lambda", "total"):
        t.row(f"reporting: {key}", cr["oursPerMonth"][key], cr["naivePerMonth"][key])
    t.row("reporting: Atlassian requests per month", cr["atlassianRequestsPerMonth"]["ours"],
          cr["atlassianRequestsPerMonth"]["naive"])
    for key in ("dynamodb", "s3", "sqs", "secretsManager", "lambda", "total"):
        t.row(f"erasing 1 % ({ce['accountsErasedPerMonth']:,}): {key}", ce["oursPerMonth"][key],
              ce["naivePerMonth"][key])
    prices = r["cost"]["prices"]
    t.text("prices: " + ", ".join(f"{k} {v}" for k, v in prices.items() if k not in ("source", "asOf")))
    t.text(f"price source: {prices['source']}; as of {prices['asOf']}")
    for line in r["cost"]["assumptions"]:
        t.text(f"assumption: {line}")
    _lifecycle_rows(t, r["lifecycle"])
    t.text("")
    t.text(f"targets missed: {len(t.misses)}" + (": " + "; ".join(t.misses) if t.misses else ""))
    for note in _notes(r, t.misses):
        t.text(f"note: {note}")
    t.text(f"total benchmark time {r['seconds']:.0f} s")
    return t.render(), t.misses


def _notes(r: dict[str, Any], misses: list[str]) -> list[str]:
    """Why a target is missed and what would reach it, from the figures of this run."""
    notes = []
    moto = r["reporter"]["moto"]
    notes.append(
        f"the moto case has {moto['ours']['accounts']:,} accounts: moto's GSI Query reads the whole table, "
        f"{moto.get('motoCpuMillisecondsPerDynamoDBCall')} ms of moto CPU per call here, growing linearly; a "
        "cycle at 10,000 on moto was stopped unfinished after 7.5 minutes (170 s CPU) on this 2-core machine "
        "while the benchmark was built; 10,000 and "
        "100,000 run on the in-memory stores (same interface, same call counting); `--moto-accounts 10000` "
        "runs it on moto anyway")
    if any("writes per reported account" in m for m in misses):
        notes.append(
            "writes per account: the run checkpoints the state item after every answered request (one PutItem per "
            "90 accounts = 0.0111), plus roll-over and end-of-cycle checkpoints; checkpointing every second request "
            "or once per tick would reach <= 0.01, at the price of re-reporting up to that many batches after a "
            "crash (Atlassian tolerates it, but it is 'more often than once per cycle')")
    small = min(r["reporter"].values(), key=lambda c: c["ours"]["accounts"])["ours"]
    if small["readsPerAccount"] > 1:
        notes.append(
            f"reads per account grow as the registry shrinks ({small['readsPerAccount']:.1f} Query calls per account "
            f"at {small['accounts']:,}): a partial batch is held back in memory to fill the next request, so each "
            "tick re-reads the shards from the cursor; remembering a 'read up to' position in the state item (one "
            "write per tick) or reading only once >= 90 accounts are due would cut it; the cost is cents")
    notes.append(
        "the naive reporter is measured as one job per cycle (one Scan); one that finds due accounts by "
        f"scanning on every 15-minute tick would read the whole table {r['scale']['steady']['ticks']} times per "
        "cycle, multiplying its read units by that")
    imports = r["coldStart"]["imports"]
    slow = [n for n, i in imports.items() if not i.get("meetsTarget", True)]
    if slow:
        heavy = {}
        for name in slow:
            for package, us in imports[name].get("topPackagesMicroseconds", {}).items():
                heavy[package] = max(heavy.get(package, 0), us)
        top = ", ".join(f"{p} {us / 1000:.0f} ms" for p, us in sorted(heavy.items(), key=lambda kv: -kv[1])[:4])
        notes.append(
            f"import time over 1.2x boto3 for {', '.join(slow)}: largest self times {top}; Powertools' Tracer with "
            "Tracing: Active imports and patches aws_xray_sdk at import; Tracer(auto_patch=False) plus patching "
            "only botocore, importing Powertools utilities (idempotency, batch, event handler) lazily, and "
            "shipping .pyc files would bring it towards the target")
    lc = r["lifecycle"]
    if lc["uninstall"]["ours"]["awsCallsPerAccount"] > lc["uninstall"]["naive"]["awsCallsPerAccount"]:
        notes.append(
            "uninstall makes more calls per account than the one-call-per-item baseline: every store is read again "
            "to verify the site's data is gone, reads are consistent, and progress is checkpointed every 50 "
            "accounts; what it buys is an audit record that can say 'verified' and a run that resumes after a "
            "crash without counting an account twice")
    ro, rn = lc["retention"]["ours"], lc["retention"]["naive"]
    if ro["readUnitsPerRegisteredAccount"] > rn["readUnitsPerRegisteredAccount"]:
        notes.append(
            "the retention sweep reads more than a Scan of the profile cache: it walks every due-index key "
            "(new, each shard, quarantine: a Query each, even when empty), and for each candidate reads every "
            "store to decide whether the account still holds anything; the baseline leaves the registry saying "
            "data is held that is gone (those accounts would be reported to Atlassian for ever)")
    erasure = r["erasure"]
    if erasure["ours"]["awsCallsPerAccount"] > erasure["naive"]["awsCallsPerAccount"]:
        notes.append(
            "erasure makes more calls than the one-call-per-item baseline at this data size: each store is read "
            "again to verify nothing is left, and the idempotency record costs 2 writes; batching pays off from 2+ "
            "items per store (25 per BatchWriteItem, 1,000 per DeleteObjects), the verification is the point")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes: what the test suite runs")
    parser.add_argument("--moto-accounts", type=int, help="accounts for the moto reporter case (default 2,000)")
    parser.add_argument("--no-deps-layer", action="store_true", help="skip pip-installing the dependency layer")
    parser.add_argument("--out", type=Path, help="where to write the JSON (default: <state dir>/bench.json)")
    args = parser.parse_args(argv)
    results = run(smoke=args.smoke, moto_accounts=args.moto_accounts,
                  deps_layer=False if args.no_deps_layer else None)
    table, misses = render(results)
    results["table"] = table.splitlines()
    results["targetsMissed"] = misses
    if args.out is None:
        from gdpr_sandbox.paths import state_dir

        out = state_dir() / "bench.json"
    else:
        out = args.out
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table)
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
