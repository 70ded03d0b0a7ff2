"""Wires uninstall and retention to their stores from a function's environment (the erasure function
hosts both: uninstall messages arrive on its actions queue, the lifecycle schedule invokes its tick)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ..erasure import pdmap
from ..erasure.audit import AuditWriter
from ..erasure.service import consent_hooks
from ..pseudonym import Pseudonymizer
from .retention import RetentionSweep
from .uninstall import (
    DEFAULT_CHUNK,
    MAX_CHUNK,
    MAX_GRACE_HOURS,
    SiteEraser,
    UninstallService,
    parse_lifecycle_message,
)


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float,
            whole: bool = False) -> float:
    """A numeric setting within [low, high] (the template's MinValue/MaxValue); ConfigurationError names
    the variable and the range, so a bad deployment fails at once instead of in every message."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (low <= value <= high) or (whole and not value.is_integer()):  # NaN fails every comparison
        from ..config import ConfigurationError

        kind = "a whole number" if whole else "a number"
        raise ConfigurationError(f"environment variable {name} must be {kind} from {low:g} to {high:g}")
    return value


def _hooks(env: Mapping[str, str], dynamodb: Any, pseudonymizer: Pseudonymizer) -> dict[str, Any]:
    from ..consent.store import ConsentStore

    return consent_hooks(ConsentStore(env["CONSENT_TABLE"], pseudonymizer, client=dynamodb), pseudonymizer)


def build_uninstall(env: Mapping[str, str], *, clients: Callable[[str], Any], pseudonymizer: Pseudonymizer,
                    pd_map: pdmap.PersonalDataMap | None = None, **overrides: Any) -> UninstallService:
    pd_map = pd_map or pdmap.load()
    ddb = clients("dynamodb")
    eraser = SiteEraser(pd_map, pd_map.resolve(env), dynamodb=ddb, s3=clients("s3"),
                        hooks=_hooks(env, ddb, pseudonymizer))
    options: dict[str, Any] = {
        "grace_hours": _number(env, "UNINSTALL_GRACE_HOURS", 0, 0, MAX_GRACE_HOURS),
        "chunk_size": int(_number(env, "UNINSTALL_CHUNK_SIZE", DEFAULT_CHUNK, 1, MAX_CHUNK, whole=True)),
        **overrides,
    }
    return UninstallService(eraser=eraser, dynamodb=ddb, sqs=clients("sqs"), queue_url=env["ACTIONS_QUEUE_URL"],
                            state_table=env["STATE_TABLE"], registry_table=env["REGISTRY_TABLE"],
                            audit=AuditWriter(env["AUDIT_TABLE"], ddb), site_ref=pseudonymizer.site, **options)


def build_retention(env: Mapping[str, str], *, clients: Callable[[str], Any], pseudonymizer: Pseudonymizer,
                    pd_map: pdmap.PersonalDataMap | None = None, **overrides: Any) -> RetentionSweep:
    from ..erasure.engine import ErasureEngine

    pd_map = pd_map or pdmap.load()
    ddb = clients("dynamodb")
    engine = ErasureEngine(pd_map, pd_map.resolve(env), dynamodb=ddb, s3=clients("s3"),
                           hooks=_hooks(env, ddb, pseudonymizer))
    options = {"pages_per_tick": int(_number(env, "RETENTION_PAGES_PER_TICK", 300, 1, 100_000, whole=True)),
               **overrides}
    return RetentionSweep(engine, registry_table=env["REGISTRY_TABLE"], state_table=env["STATE_TABLE"], **options)


def handle_message(body: str, env: Mapping[str, str], *, clients: Callable[[str], Any],
                   pseudonymizer: Pseudonymizer, time_left_ms: Callable[[], int] | None = None,
                   **overrides: Any) -> dict[str, Any]:
    """One uninstall/reinstall message from the actions queue; the result holds no personal data.
    `time_left_ms` (the Lambda context's) lets a chunk stop early and hand the rest to the next message."""
    message = parse_lifecycle_message(body)
    service = build_uninstall(env, clients=clients, pseudonymizer=pseudonymizer, **overrides)
    result = service.handle(message, time_left_ms)
    return {"action": message.action, **result}


def tick(env: Mapping[str, str], *, clients: Callable[[str], Any], pseudonymizer: Pseudonymizer,
         uninstall_overrides: Mapping[str, Any] | None = None,
         retention_overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The lifecycle schedule: start uninstalls whose grace is over, then one share of the retention sweep."""
    uninstall = build_uninstall(env, clients=clients, pseudonymizer=pseudonymizer, **(uninstall_overrides or {}))
    summary: dict[str, Any] = dict(uninstall.tick())
    summary["retention"] = build_retention(env, clients=clients, pseudonymizer=pseudonymizer,
                                           **(retention_overrides or {})).run()
    return summary
