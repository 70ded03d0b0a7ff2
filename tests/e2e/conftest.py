import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "events" / "demo"


def run(args, env=None, timeout=600, check=True):
    proc = subprocess.run(args, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def gdprctl(state_dir, *args, check=True):
    return run([sys.executable, "-m", "gdprctl.main", *args], env={"GDPR_SANDBOX_DIR": str(state_dir)},
               check=check)


@pytest.fixture
def sandbox(tmp_path):
    """`gdpr_sandbox up` in the test's own state directory, `down` afterwards: (state dir, endpoints)."""
    env = {"GDPR_SANDBOX_DIR": str(tmp_path)}
    run([sys.executable, "-m", "gdpr_sandbox", "up"], env=env, timeout=180)
    endpoints = json.loads((tmp_path / "endpoints.json").read_text())
    try:
        yield tmp_path, endpoints
    finally:
        run([sys.executable, "-m", "gdpr_sandbox", "down"], env=env, timeout=60)


@pytest.fixture(scope="session")
def demo_dataset():
    lines = [json.loads(x) for x in (DEMO / "accounts.jsonl").read_text().splitlines() if x.strip()]
    answers = json.loads((DEMO / "emulator.json").read_text())
    deliveries = [json.loads(x) for x in (DEMO / "consent-deliveries.jsonl").read_text().splitlines() if x]
    return {"lines": lines, "answers": answers, "deliveries": deliveries}


def personal_strings(lines, deliveries=()):
    """Every account id, email and display name the dataset uses (what must never reach a log)."""
    found = set()
    for line in lines:
        found.add(line["accountId"])
        found.add(line["profile"]["email"])
        found.add(line["profile"]["displayName"])
    for d in deliveries:
        data = d["body"]["data"]
        found.add(data["email"])
        if data.get("accountId"):
            found.add(data["accountId"])
    return found
