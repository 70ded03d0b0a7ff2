"""EventBridge Scheduler, emulated: fires each schedule's target with its Input, at its rate, delayed
by a random part of its flexible time window (so ticks never land on wall-clock marks)."""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from typing import Any

from .runtime import FunctionRuntime

log = logging.getLogger(__name__)
_RATE = re.compile(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> int:
    match = _RATE.fullmatch(expression.strip())
    if not match:
        raise ValueError("the sandbox scheduler supports rate(N minutes|hours|days) expressions only")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]


class Scheduler:
    def __init__(self, runtime: FunctionRuntime, schedules: list[dict[str, Any]], time_scale: float = 1.0):
        self.runtime = runtime
        self.schedules = schedules
        self.time_scale = time_scale  # >1 runs schedules faster than real time
        self.fired: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(s,), daemon=True, name=f"schedule-{s['name']}")
                         for s in schedules]

    def event_for(self, schedule: dict[str, Any]) -> dict[str, Any]:
        return json.loads(schedule["input"]) if schedule.get("input") else {}

    def fire(self, schedule: dict[str, Any]) -> Any:
        self.fired.append(schedule["name"])
        return self.runtime.invoke(schedule["function"], self.event_for(schedule))

    def _run(self, schedule: dict[str, Any]) -> None:
        period = rate_seconds(schedule["expression"]) / self.time_scale
        window = float(schedule.get("flexible_window_minutes") or 0) * 60 / self.time_scale
        while not self._stop.wait(period + random.uniform(0, window)):
            try:
                self.fire(schedule)
            except Exception:  # noqa: BLE001 - Scheduler retries per its policy; the next tick resumes
                log.exception("scheduled invocation %s failed", schedule["name"])

    def start(self) -> Scheduler:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
