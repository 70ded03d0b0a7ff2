"""Wires the erasure engine to its stores and hooks from a function's environment: one place for
the erasure handler and for `gdprctl subject export`, so both see exactly the same stores."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..pseudonym import Pseudonymizer
from . import pdmap
from .engine import ErasureEngine


def consent_hooks(consent_store: Any, pseudonymizer: Pseudonymizer) -> dict[str, Callable[..., Any]]:
    """The personal-data map's consent hooks, keyed as the map names them."""
    return {
        "consent.erase_account": lambda account_id, now: consent_store.erase_account(
            pseudonymizer.account(account_id), now),
        "consent.export_account": lambda account_id: consent_store.export_account(
            pseudonymizer.account(account_id)),
    }


def build_engine(pd_map: pdmap.PersonalDataMap, env: Mapping[str, str], *, dynamodb: Any, s3: Any,
                 pseudonymizer: Pseudonymizer) -> ErasureEngine:
    from ..consent.store import ConsentStore  # only the consent hooks need it

    consent = ConsentStore(env["CONSENT_TABLE"], pseudonymizer, client=dynamodb)
    return ErasureEngine(pd_map, pd_map.resolve(env), dynamodb=dynamodb, s3=s3,
                         hooks=consent_hooks(consent, pseudonymizer))


def export_subject(env: Mapping[str, str], account_id: str, *, clients: Callable[[str], Any],
                   pseudonymizer: Pseudonymizer) -> dict[str, list[dict[str, Any]]]:
    """Every piece of personal data held for the account, store by store (access and portability)."""
    engine = build_engine(pdmap.load(), env, dynamodb=clients("dynamodb"), s3=clients("s3"),
                          pseudonymizer=pseudonymizer)
    return engine.export(account_id)
