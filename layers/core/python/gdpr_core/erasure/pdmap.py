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
SITE_PLACEHOLDER = "{site}"
REMOVE_SITE = "removeSite"
# What uninstalling the app from one site does in each kind of store (optional, see _uninstall_policy).
UNINSTALL_ACTIONS = {
    DYNAMODB: {REMOVE_SITE, DELETE_ITEMS, SCRUB, NONE},
    S3: {DELETE_OBJECTS, NONE},
    HOOK: {RUN_HOOK, NONE},
    REGISTRY: {REMOVE_SITE},
}
MAX_AGE_DAYS_LIMIT = 3650
_COMMON = {"name", "kind", "description", "purpose", "personalAttributes", "closed", "updated", "export",
           "uninstall"}
_FIELDS = {
    DYNAMODB: _COMMON | {"resourceEnv", "key", "sortKey", "index", "indexKey", "maxAgeDays", "ageAttribute"},
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
    site_attribute: str | None = None  # uninstall: the attribute naming the item's site(s)
    key_template: str | None = None  # uninstall (S3): the one object key of an account on a site


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
    uninstall: Policy | None = None  # None: the map predates uninstall (see PersonalDataMap.require_uninstall)
    max_age_days: int | None = None  # retention: copies older than this are purged
    age_attribute: str | None = None  # retention: RFC 3339 retrieval time of the copy

    def site_key(self, account_id: str, site: str) -> str:
        template = (self.uninstall.key_template if self.uninstall else None) or ""
        return template.replace(ACCOUNT_PLACEHOLDER, account_id).replace(SITE_PLACEHOLDER, site)

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

    def require_uninstall(self) -> None:
        """Uninstall runs only on a map that says what it does in every store (fail closed)."""
        missing = [s.name for s in self.stores if s.uninstall is None]
        if missing:
            raise PersonalDataMapError(
                f"personal-data map: stores {missing} have no 'uninstall' policy; uninstall cannot run"
            )

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
                "onUninstall": s.uninstall.action if s.uninstall else None,
                "maxAgeDays": s.max_age_days,
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
    field_name: str | None = None,
) -> Policy:
    label = field_name or reason  # "uninstall" reuses the closed rules under its own name
    value = raw.get(label)
    if not isinstance(value, dict):
        raise _fail(store, label, "must be an object with an 'action'")
    action = value.get("action")
    allowed = ALLOWED_ACTIONS[kind][reason]
    if action not in allowed:
        raise _fail(store, f"{label}.action", f"must be one of {sorted(allowed)} for kind '{kind}'")
    extra = set(value) - {"action", "remove", "set", "hook"}
    if extra:
        raise _fail(store, label, f"has unknown fields {sorted(extra)}")
    if action == SCRUB:
        remove = _str_list(value.get("remove", []), store, f"{label}.remove", allow_empty=True)
        to_set = value.get("set", {})
        if not isinstance(to_set, dict) or not all(isinstance(v, str | int | float) for v in to_set.values()):
            raise _fail(store, f"{label}.set", "must map attribute names to neutral scalar values")
        if not remove and not to_set:
            raise _fail(store, label, "scrub needs 'remove' or 'set'")
        touched = set(remove) | set(to_set)
        if touched & set(key_attrs):
            raise _fail(store, label, "scrub cannot change the table key; use deleteItems")
        if set(remove) & set(to_set):
            raise _fail(store, label, "an attribute cannot be both removed and set")
        if reason == "closed":
            left = [a for a in personal if a not in touched]
            if left:
                # A closed account (or an uninstalled site) must keep nothing personal there.
                raise _fail(store, label, f"scrub leaves personal attributes {left}")
        return Policy(SCRUB, remove=remove, set=dict(to_set))
    if set(value) - {"action", "hook"} or ("hook" in value and action != RUN_HOOK):
        raise _fail(store, reason, f"action '{action}' takes no other fields")
    if action == RUN_HOOK:
        return Policy(RUN_HOOK, hook=_str(value, store, "hook"))
    return Policy(action)


def _uninstall_policy(
    raw: Mapping[str, Any],
    store: str,
    kind: str,
    key_attrs: tuple[str, ...],
    personal: tuple[str, ...],
    prefix_template: str | None,
) -> Policy | None:
    """What uninstalling the app from one site does here; None when the store does not say (old maps)."""
    if "uninstall" not in raw:
        return None
    value = raw["uninstall"]
    if not isinstance(value, dict):
        raise _fail(store, "uninstall", "must be an object with an 'action'")
    action = value.get("action")
    allowed = UNINSTALL_ACTIONS[kind]
    if action not in allowed:
        raise _fail(store, "uninstall.action", f"must be one of {sorted(allowed)} for kind '{kind}'")
    fields = {"action"}
    if kind == DYNAMODB and action != NONE:
        fields |= {"siteAttribute"} | ({"remove", "set"} if action == SCRUB else set())
    elif kind == S3 and action == DELETE_OBJECTS:
        fields |= {"keyTemplate"}
    elif action == RUN_HOOK:
        fields |= {"hook"}
    extra = set(value) - fields
    if extra:
        raise _fail(store, "uninstall", f"has unknown fields {sorted(extra)} for action '{action}'")
    if action == NONE:
        return Policy(NONE)
    if action == RUN_HOOK:
        return Policy(RUN_HOOK, hook=_hook_name(value, store))
    if kind == REGISTRY:
        return Policy(REMOVE_SITE, site_attribute="sites")  # the registry's own schema
    if kind == S3:
        template = value.get("keyTemplate")
        if not isinstance(template, str) or not template.strip():
            raise _fail(store, "uninstall.keyTemplate", "must be a non-empty string")
        if template.count(ACCOUNT_PLACEHOLDER) != 1 or template.count(SITE_PLACEHOLDER) != 1:
            raise _fail(store, "uninstall.keyTemplate", "must contain '{accountId}' and '{site}' exactly once each")
        if "{" in template.replace(ACCOUNT_PLACEHOLDER, "").replace(SITE_PLACEHOLDER, ""):
            raise _fail(store, "uninstall.keyTemplate", "may use no placeholder but {accountId} and {site}")
        head = (prefix_template or "").split(ACCOUNT_PLACEHOLDER)[0]
        if not template.startswith(head + ACCOUNT_PLACEHOLDER + "/"):
            # Inside the account's prefix, so a later closed erasure covers what uninstall leaves.
            raise _fail(store, "uninstall.keyTemplate", "must lie under prefixTemplate ('{accountId}/...')")
        return Policy(DELETE_OBJECTS, key_template=template)
    site_attribute = value.get("siteAttribute")
    if not isinstance(site_attribute, str) or not site_attribute.strip():
        raise _fail(store, "uninstall.siteAttribute", "must be a non-empty string")
    if site_attribute in key_attrs:
        raise _fail(store, "uninstall.siteAttribute", "cannot be part of the table key")
    if action == SCRUB:
        scrub = _policy({"uninstall": {k: v for k, v in value.items() if k != "siteAttribute"}},
                        store, DYNAMODB, "closed", key_attrs,
                        tuple(a for a in personal if a != site_attribute), field_name="uninstall")
        if site_attribute in set(scrub.remove) | set(scrub.set):
            raise _fail(store, "uninstall", "scrub must not change siteAttribute (it finds the site's items)")
        return Policy(SCRUB, remove=scrub.remove, set=scrub.set, site_attribute=site_attribute)
    return Policy(action, site_attribute=site_attribute)


def _hook_name(value: Mapping[str, Any], store: str) -> str:
    hook = value.get("hook")
    if not isinstance(hook, str) or not hook.strip():
        raise _fail(store, "uninstall.hook", "must be a non-empty string")
    return hook


def _retention(raw: Mapping[str, Any], store: str, kind: str, key_attrs: tuple[str, ...]) -> dict[str, Any]:
    days, attribute = raw.get("maxAgeDays"), raw.get("ageAttribute")
    if days is None and attribute is None:
        return {}
    if kind != DYNAMODB:
        raise _fail(store, "maxAgeDays", "is only supported for kind 'dynamodb' (use an S3 lifecycle rule for buckets)")
    if days is None:
        raise _fail(store, "maxAgeDays", "is required when ageAttribute is given")
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_AGE_DAYS_LIMIT:
        raise _fail(store, "maxAgeDays", f"must be a whole number of days from 1 to {MAX_AGE_DAYS_LIMIT}")
    if not isinstance(attribute, str) or not attribute.strip():
        raise _fail(store, "ageAttribute", "must name the attribute holding the copy's RFC 3339 retrieval time")
    if attribute in key_attrs:
        raise _fail(store, "ageAttribute", "cannot be part of the table key")
    return {"max_age_days": days, "age_attribute": attribute}


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
    attrs.update(_retention(raw, name, kind, key_attrs))
    return Store(
        name=name,
        kind=kind,
        personal_attributes=personal,
        closed=_policy(raw, name, kind, "closed", key_attrs, personal),
        updated=_policy(raw, name, kind, "updated", key_attrs, personal),
        uninstall=_uninstall_policy(raw, name, kind, key_attrs, personal, attrs.get("prefix_template")),
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
    with_uninstall = [s.name for s in stores if s.uninstall is not None]
    if with_uninstall and len(with_uninstall) != len(stores):
        # Optional for older maps, but all or nothing: a store left out would keep the site's data.
        missing = next(s.name for s in stores if s.uninstall is None)
        raise _fail(missing, "uninstall", "is required once any store gives one")
    return PersonalDataMap(stores)


def load(path: str | Path | None = None) -> PersonalDataMap:
    path = Path(path) if path is not None else DEFAULT_MAP_PATH
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PersonalDataMapError(f"personal-data map: not valid JSON (line {exc.lineno})") from None
    return parse(doc)
