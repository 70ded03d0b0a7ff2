"""The reporter's state as an operator sees it (`gdprctl status`): counts and times, never an account id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .. import clock
from .planner import CycleState, describe


def reporter_status(item: dict[str, Any] | None, quarantined: int, now: datetime | None = None) -> dict[str, Any]:
    """`item` is the state item (low-level attribute values) or None before the first tick.

    Overdue is computed at `now`, but never earlier than the last tick: a sandbox driven with
    `gdprctl report --now T` lives ahead of the wall clock, and its status must not go back in time.
    """
    if not item:
        return {"started": False, "quarantined": quarantined}
    state = CycleState.from_item(item)
    moment = now or clock.now()
    if state.last_tick_at is not None and state.last_tick_at > moment:
        moment = state.last_tick_at
    return {"started": True, **describe(state, moment), "quarantined": quarantined}
