"""`python -m gdpr_sandbox up|down|serve|status`: the sandbox as background services (`make up`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

from . import paths

READY_TIMEOUT_SECONDS = 120


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running_pid(state: Path) -> int | None:
    pid_file = state / "sandbox.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().strip() or 0)
    return pid if pid and _pid_alive(pid) else None


def serve(state: Path) -> int:
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from .scheduler import Scheduler
    from .services import Sandbox

    sandbox = Sandbox.start(state)
    stop = threading.Event()
    scale = float(os.environ.get("GDPR_SANDBOX_TIME_SCALE", "1"))
    scheduler = Scheduler(sandbox.runtime, sandbox.deployment.schedules, time_scale=scale).start()

    def poll() -> None:  # the SQS event-source mappings, as Lambda's pollers would run them
        while not stop.is_set():
            busy = 0
            for source in sandbox.event_sources:
                try:
                    busy += source.poll_once()
                except Exception:  # noqa: BLE001 - keep polling, as the Lambda service does
                    logging.exception("event source poll failed")
            if not busy:
                stop.wait(1.0)

    threading.Thread(target=poll, daemon=True, name="event-sources").start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    (state / "sandbox.pid").write_text(str(os.getpid()))
    sandbox.write_endpoints()  # written last: its presence means ready
    logging.info("sandbox ready")
    stop.wait()
    scheduler.stop()
    sandbox.stop()
    for name in ("endpoints.json", "sandbox.pid"):
        (state / name).unlink(missing_ok=True)
    return 0


def up(state: Path) -> int:
    pid = _running_pid(state)
    if pid:
        print(f"sandbox already running (pid {pid}); endpoints in {state / 'endpoints.json'}")
        return 0
    from .services import parameter_overrides

    try:
        parameter_overrides()  # a typo is refused here, not found later in the child's log
    except ValueError as exc:
        print(f"sandbox not started: {exc}", file=sys.stderr)
        return 2
    (state / "endpoints.json").unlink(missing_ok=True)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    log = open(state / "logs" / "sandbox.log", "ab")  # noqa: SIM115 - handed to the child
    child = subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "gdpr_sandbox", "serve", "--state-dir", str(state)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if (state / "endpoints.json").exists():
            print(f"sandbox up (pid {child.pid}); endpoints in {state / 'endpoints.json'}")
            return 0
        if child.poll() is not None:
            print(f"sandbox failed to start; see {state / 'logs' / 'sandbox.log'}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    child.kill()
    print("sandbox did not become ready in time", file=sys.stderr)
    return 1


def down(state: Path) -> int:
    pid = _running_pid(state)
    if not pid:
        for name in ("endpoints.json", "sandbox.pid"):
            (state / name).unlink(missing_ok=True)
        print("sandbox not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _pid_alive(pid):
        try:  # reap it if it is our child (it is not when `up` ran in another shell)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    for name in ("endpoints.json", "sandbox.pid"):
        (state / name).unlink(missing_ok=True)
    print(f"sandbox down (pid {pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gdpr_sandbox")
    parser.add_argument("command", choices=["up", "down", "serve", "status"])
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    state = args.state_dir or paths.state_dir()
    state.mkdir(parents=True, exist_ok=True)
    if args.command == "serve":
        return serve(state)
    if args.command == "up":
        return up(state)
    if args.command == "down":
        return down(state)
    pid = _running_pid(state)
    print(json.dumps({"running": bool(pid), "pid": pid}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
