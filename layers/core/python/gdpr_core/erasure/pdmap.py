"""The personal-data map: which stores hold personal data and what erasure does in each.

Loaded from gdpr_core/personal_data_map.json and validated strictly at load, so a typo fails the
cold start (and the tests) instead of silently leaving data behind. Errors name the store and the
field, never a value that could be personal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigurationError

DEFAULT_MAP_PATH = Path(__file__).resolve().parent.parent / "personal_data_map.json"

DYNAMODB, S3, HOOK, REGISTRY = "dynamodb", "s3", "hook", "registry"
KINDS = (DYNAMODB, S3, HOOK, REGISTRY)
DELETE_ITEMS, SCRUB, DELETE_OBJECTS, RUN_HOOK, TOMBSTONE, NONE = (
    "deleteItems",
    "scrub",
    "deleteObjects",
    "hook",
    "tombstone",
    "none",
)
# Which action each kind may take on each answer; anything else is a map error.
ALLOWED_ACTIONS = {
    DYNAMODB: {"closed": {DELETE_ITEMS, SCRUB}, "updated": {DELETE_ITEMS, SCRUB, NONE}},
    S3: {"closed": {DELETE_OBJECTS}, "updated": {DELETE_OBJECTS, NONE}},
    HOOK: {"closed": {RUN_HOOK}, "updated": {RUN_HOOK, NONE}},
    REGISTRY: {"closed": {TOMBSTONE}, "updated": {DELETE_ITEMS}},
}
ACCOUNT_PLACEHOLDER = "{accountId}"
_COMMON = {"name", "kind", "description", "purpose", "personalAttributes", "closed", "updated", "export"}
_FIELDS = {
    DYNAMODB: _COMMON | {"resourceEnv", "key", "sortKey", "index", "indexKey"},
    REGISTRY: _COMMON | {"resourceEnv", "key"},
    S3: _COMMON | {"resourceEnv", "prefixTemplate", "versions"},
    HOOK: _COMMON,
}


class PersonalDataMapError(ValueError):
    """The map is invalid; the message names the store and the field."""


@dataclass(frozen=True)
class Policy:
    action: str
    remove: tuple[str, ...] = ()
    set: Mapping[str, Any] = field(default_factory=dict)
    hook: str | None = None


@dataclass(frozen=True)
class Store:
    name: str
    kind: str
    personal_attributes: tuple[str, ...]
    closed: Policy
    updated: Policy
    resource_env: str | None = None
    key: str | None = None
    sort_key: str | None = None
    index: str | None = None
    index_key: str | None = None
    prefix_template: str | None = None
    versions: bool = False
    export_hook: str | None = None
    description: str = ""
    purpose: str = ""

    def policy(self, reason: str) -> Policy:
        if reason not in ("closed", "updated"):
            raise ValueError("reason must be 'closed' or 'updated'")
        return self.closed if reason == "closed" else self.updated

    @property
    def table_key(self) -> tuple[str, ...]:
        return (self.key,) if self.sort_key is None else (self.key, self.sort_key)  # type: ignore[return-value]

    @property
    def lookup_attribute(self) -> str | None:
        """The attribute that holds the account id when the store is searched."""
        return self.index_key if self.index else self.key

    def prefix(self, account_id: str) -> str:
        return (self.prefix_template or "").replace(ACCOUNT_PLACEHOLDER, account_id)


@dataclass(frozen=True)
class PersonalDataMap:
    stores: tuple[Store, ...]

    def store(self, name: str) -> Store:
        for store in self.stores:
            if store.name == name:
                return store
        raise KeyError(name)

    def resolve(self, env: Mapping[str, str]) -> dict[str, str]:
        """Store name -> table or bucket name, from the function's environment."""
        resolved: dict[str, str] = {}
        for store in self.stores:
            if store.resource_env is None:
                continue
            value = env.get(store.resource_env)
            if not value:
                raise ConfigurationError(
                    f"store '{store.name}': environment variable {store.resource_env} is not set"
                )
            resolved[store.name] = value
        return resolved

    def records_of_processing(self) -> list[dict[str, Any]]:
        """The records-of-processing list (GDPR art. 30) as the map describes it."""
        return [
            {
                "store": s.name,
                "kind": s.kind,
                "description": s.description,
                "purpose": s.purpose,
                "personalAttributes": list(s.personal_attributes),
                "onClosed": s.closed.action,
                "onUpdated": s.updated.action,
            }
            for s in self.stores
        ]


def _fail(store: str, fieldname: str, problem: str) -> PersonalDataMapError:
    return PersonalDataMapError(f"personal-data map: store '{store}': field '{fieldname}' {problem}")


def _str(raw: Mapping[str, Any], store: str, name: str, required: bool = True) -> str | None:
    value = raw.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(store, name, "must be a non-empty string")
    return value


def _str_list(value: Any, store: str, name: str, allow_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise _fail(store, name, "must be a non-empty list of strings")
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(store, name, "must contain only non-empty strings")
    if len(set(value)) != len(value):
        raise _fail(store, name, "must not repeat a name")
    return tuple(value)


def _policy(
    raw: Mapping[str, Any],
    store: str,
    kind: str,
    reason: str,
    key_attrs: tuple[str, ...],
    personal: tuple[str, ...],
) -> Policy:
    value = raw.get(reason)
    if not isinstance(value, dict):
        raise _fail(store, reason, "must be an object with an 'action'")
    action = value.get("action")
    allowed = ALLOWED_ACTIONS[kind][reason]
    if action not in allowed:
        raise _fail(store, f"{reason}.action", f"must be one of {sorted(allowed)} for kind '{kind}'")
    extra = set(value) - {"action", "remove", "set", "hook"}
    if extra:
        raise _fail(store, reason, f"has unknown fields {sorted(extra)}")
    if action == SCRUB:
        remove = _str_list(value.get("remove", []), store, f"{reason}.remove", allow_empty=True)
        to_set = value.get("set", {})
        if not isinstance(to_set, dict) or not all(isinstance(v, str | int | float) for v in to_set.values()):
            raise _fail(store, f"{reason}.set", "must map attribute names to neutral scalar values")
        if not remove and not to_set:
            raise _fail(store, reason, "scrub needs 'remove' or 'set'")
        touched = set(remove) | set(to_set)
        if touched & set(key_attrs):
            raise _fail(store, reason, "scrub cannot change the table key; use deleteItems")
        if set(remove) & set(to_set):
            raise _fail(store, reason, "an attribute cannot be both removed and set")
        if reason == "closed":
            left = [a for a in personal if a not in touched]
            if left:
                # A closed account must keep nothing personal: every personal attribute goes.
                raise _fail(store, "closed", f"scrub leaves personal attributes {left}")
        return Policy(SCRUB, remove=remove, set=dict(to_set))
    if set(value) - {"action", "hook"} or ("hook" in value and action != RUN_HOOK):
        raise _fail(store, reason, f"action '{action}' takes no other fields")
    if action == RUN_HOOK:
        return Policy(RUN_HOOK, hook=_str(value, store, "hook"))
    return Policy(action)


def _store(raw: Any, position: int) -> Store:
    if not isinstance(raw, dict):
        raise PersonalDataMapError(f"personal-data map: stores[{position}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PersonalDataMapError(
            f"personal-data map: stores[{position}]: field 'name' must be a non-empty string"
        )
    kind = raw.get("kind")
    if kind not in KINDS:
        raise _fail(name, "kind", f"must be one of {list(KINDS)}")
    unknown = set(raw) - _FIELDS[kind]
    if unknown:
        raise _fail(name, ",".join(sorted(unknown)), f"is not known for kind '{kind}'")
    personal = _str_list(raw.get("personalAttributes"), name, "personalAttributes")
    attrs: dict[str, Any] = {}
    key_attrs: tuple[str, ...] = ()
    if kind in (DYNAMODB, REGISTRY, S3):
        attrs["resource_env"] = _str(raw, name, "resourceEnv")
    if kind in (DYNAMODB, REGISTRY):
        attrs["key"] = _str(raw, name, "key")
        attrs["sort_key"] = _str(raw, name, "sortKey", required=False)
        attrs["index"] = _str(raw, name, "index", required=False)
        attrs["index_key"] = _str(raw, name, "indexKey", required=False)
        if (attrs["index"] is None) != (attrs["index_key"] is None):
            raise _fail(
                name,
                "index" if attrs["index"] is None else "indexKey",
                "is required when the other of index/indexKey is given",
            )
        if attrs["sort_key"] is not None and attrs["index"] is None:
            # With a sort key the account id alone is not an item key; an index must find the items.
            raise _fail(name, "index", "is required when the table has a sortKey")
        key_attrs = tuple(a for a in (attrs["key"], attrs["sort_key"]) if a)
    if kind == S3:
        template = _str(raw, name, "prefixTemplate")
        if template.count(ACCOUNT_PLACEHOLDER) != 1 or f"{ACCOUNT_PLACEHOLDER}/" not in template:
            # The trailing slash keeps account "abc" from matching the objects of account "abcd".
            raise _fail(name, "prefixTemplate", "must contain '{accountId}/' exactly once")
        if "{" in template.replace(ACCOUNT_PLACEHOLDER, ""):
            raise _fail(name, "prefixTemplate", "may use no placeholder but {accountId}")
        attrs["prefix_template"] = template
        versions = raw.get("versions", False)
        if not isinstance(versions, bool):
            raise _fail(name, "versions", "must be true or false")
        attrs["versions"] = versions
    export = raw.get("export")
    if export is not None:
        if kind != HOOK or not isinstance(export, dict) or set(export) != {"hook"}:
            raise _fail(name, "export", 'is only for hooks, as {"hook": name}')
        attrs["export_hook"] = _str(export, name, "hook")
    for text in ("description", "purpose"):
        if text in raw and not isinstance(raw[text], str):
            raise _fail(name, text, "must be a string")
        attrs[text] = raw.get(text, "")
    return Store(
        name=name,
        kind=kind,
        personal_attributes=personal,
        closed=_policy(raw, name, kind, "closed", key_attrs, personal),
        updated=_policy(raw, name, kind, "updated", key_attrs, personal),
        **attrs,
    )


def parse(doc: Any) -> PersonalDataMap:
    if not isinstance(doc, dict):
        raise PersonalDataMapError("personal-data map: the document must be an object")
    if doc.get("schema") != 1:
        raise PersonalDataMapError("personal-data map: field 'schema' must be 1")
    unknown = set(doc) - {"schema", "description", "stores"}
    if unknown:
        raise PersonalDataMapError(f"personal-data map: unknown top-level fields {sorted(unknown)}")
    raw_stores = doc.get("stores")
    if not isinstance(raw_stores, list) or not raw_stores:
        raise PersonalDataMapError("personal-data map: field 'stores' must be a non-empty list")
    stores = tuple(_store(raw, i) for i, raw in enumerate(raw_stores))
    seen: set[str] = set()
    for store in stores:
        if store.name in seen:
            raise _fail(store.name, "name", "is used by more than one store")
        seen.add(store.name)
    if sum(1 for s in stores if s.kind == REGISTRY) != 1:
        raise PersonalDataMapError("personal-data map: exactly one store of kind 'registry' is required")
    return PersonalDataMap(stores)


def load(path: str | Path | None = None) -> PersonalDataMap:
    path = Path(path) if path is not None else DEFAULT_MAP_PATH
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PersonalDataMapError(f"personal-data map: not valid JSON (line {exc.lineno})") from None
    return parse(doc)
