"""The shipped personal-data map as a document, changed one store at a time, and what parse() says of it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gdpr_core.erasure import pdmap

RAW: dict[str, Any] = json.loads(pdmap.DEFAULT_MAP_PATH.read_text())


def map_doc(store_name: str | None = None, **changes: Any) -> dict[str, Any]:
    """A deep copy of the shipped map; with a store name, that store's fields changed (None removes one)."""
    doc = copy.deepcopy(RAW)
    if store_name:
        store = next(s for s in doc["stores"] if s["name"] == store_name)
        for key, value in changes.items():
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value
    return doc


def parse_error(doc: dict[str, Any]) -> str:
    """The message of the PersonalDataMapError that parse() must raise for `doc`."""
    with pytest.raises(pdmap.PersonalDataMapError) as info:
        pdmap.parse(doc)
    return str(info.value)
