"""`python -m bench --smoke`: the benchmark runs end to end on moto and the emulator, and what it counts is
what the design promises (counts only, never timings)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import reporter

REPO = Path(__file__).resolve().parents[2]

# Rejections and idle invocations emit no application metric; Powertools warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    # In its own process, as `make bench` runs it: the bench invokes the handlers, and Powertools
    # loggers created here would keep this process's streams for the handler tests that follow.
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_reporter_sends_the_minimum_and_every_account_once(smoke):
    for case in smoke["reporter"].values():
        ours = case["ours"]
        n = ours["accounts"]
        assert ours["requests"] == math.ceil(n / 90)
        checked = ours["emulator"]  # what the emulator itself received
        assert checked["requests"] == ours["requests"]
        assert checked["allReported"] is True and checked["reportedTwice"] == 0
        assert checked["maxAccountsPerRequest"] <= 90
        assert ours["tally"]["calls"].get("dynamodb:Scan", 0) == 0


def test_naive_baseline_reports_site_by_site_and_writes_per_account(smoke):
    for case in smoke["reporter"].values():
        naive = case["naive"]
        n = naive["accounts"]
        assert naive["accountSitePairs"] == reporter.account_site_pairs(n) > n
        assert naive["requests"] == reporter.naive_requests(n) == naive["emulator"]["requests"]
        assert naive["tally"]["calls"]["dynamodb:UpdateItem"] == n
        assert naive["tally"]["calls"]["dynamodb:Scan"] >= 1


def test_scale_run_covers_every_account_once(smoke):
    steady = smoke["scale"]["steady"]
    assert steady["requests"] == math.ceil(smoke["scale"]["accounts"] / 90)
    assert steady["emulator"]["allReported"] is True and steady["emulator"]["reportedTwice"] == 0
    assert steady["ticks"] == reporter.TICKS_PER_CYCLE


def test_erasure_leaves_nothing_and_naive_deletes_object_by_object(smoke):
    erasure = smoke["erasure"]
    assert erasure["leftAfterwards"] == {"profiles": 0, "comments": 0, "avatarObjects": 0, "registryItems": 0}
    assert erasure["ours"]["failedItems"] == 0
    assert erasure["ours"]["byStore"]["audit"]["PutItem"] == 1
    assert erasure["naive"]["byStore"]["s3 store (avatars, versioned)"]["DeleteObject"] == 2
    assert "DeleteObject" not in erasure["ours"]["byStore"]["s3 store (avatars, versioned)"]


def test_webhook_forgeries_cost_no_aws_call_once_cached(smoke):
    ours, naive = smoke["webhook"]["ours"], smoke["webhook"]["naive"]
    assert ours["forged"]["awsCallsPerDelivery"] == 0 and ours["forged"]["statusCodes"] == [401]
    assert ours["valid"]["statusCodes"] == [200] and ours["duplicate"]["statusCodes"] == [200]
    assert naive["forged"]["calls"] == {"secretsmanager:GetSecretValue": smoke["webhook"]["deliveries"]}


def test_table_and_json_hold_no_account_ids(smoke):
    text = json.dumps(smoke)
    for i in (0, 1, smoke["reporter"]["moto"]["ours"]["accounts"] - 1):
        assert reporter.account_id(i) not in text
    assert "1. Reporter" in "\n".join(smoke["table"]) and "6. Cost" in "\n".join(smoke["table"])
    assert smoke["coldStart"]["imports"]["reporter"]["appMicroseconds"] > 0


def test_uninstall_leaves_nothing_of_the_site_and_the_other_site_as_it_was(smoke):
    u = smoke["lifecycle"]["uninstall"]
    for side in ("ours", "naive"):
        assert u[side]["leftOnSite"] == {"registry": 0, "profiles": 0, "comments": 0, "avatarVersions": 0}
        assert u[side]["otherSiteUnchanged"] is True and u[side]["auditRecords"] == 1
        # every account of the site: registry, profile, comments per site, one avatar version
        assert u[side]["itemsOnSite"] == u["accounts"] * (3 + u["commentsPerSite"])
    ours = u["ours"]
    assert ours["failedItems"] == 0 and ours["registryScans"] >= 1
    assert ours["queueMessages"] == 2  # the request and one chunk (the smoke's registry fits one page)
    assert ours["tally"]["calls"]["dynamodb:PutItem"] >= 1  # the audit record


def test_retention_purges_every_old_copy_and_only_ours_keeps_the_registry_true(smoke):
    rt = smoke["lifecycle"]["retention"]
    old = len(range(0, rt["accounts"], 10))
    assert rt["oldCopies"] == old
    for side in ("ours", "naive"):
        assert rt[side]["purged"] == old and rt[side]["oldCopiesLeft"] == 0
        assert rt[side]["recentCopiesLeft"] == rt["accounts"] - old
    assert rt["ours"]["registryItemsOfPurgedAccountsLeft"] == 0
    assert rt["naive"]["registryItemsOfPurgedAccountsLeft"] == old
    # By index, not by scanning the app's stores: the only Scan is of the state table (uninstalls due).
    assert rt["ours"]["tally"]["calls"].get("dynamodb:Scan", 0) == rt["ours"]["ticks"]
    assert "7. Uninstall" in "\n".join(smoke["table"]) and "8. Retention" in "\n".join(smoke["table"])
