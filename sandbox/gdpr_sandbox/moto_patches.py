"""Process-wide fixes to moto for a long-running sandbox.

moto's `BaseModel.__new__` appends every model instance it ever creates to a class-level list
(`instances_tracked`, for its server dashboard and reset), and `ListObjectVersions` deep-copies every
version in the bucket on each call. The copies are never released: one listing of a bucket with 2,000
versions kept ~11 MB, so a site uninstall on the demo data (two listings per account) grew the sandbox
by gigabytes until the machine ran out of memory. Nothing here uses the dashboard, and moto's reset
still disposes of the keys its buckets hold, so instances are simply no longer tracked.

The deep copies themselves cost time in proportion to the whole bucket: with 40,000 versions, one
`ListObjectVersions` for a single key's prefix took ~0.2 s, so an uninstall (two listings per account)
spent most of its time copying keys it then filtered out. `list_versions_by_prefix` hands moto's own
listing only the keys under the requested prefix; everything moto computes from them is unchanged.

DynamoDB `Query` in moto reads the whole table, sorted, on every call (`Table.all_items()`), even for a
single partition key: a table of 8,000 comments made each query of one author's comments cost as much
as a scan. `query_by_key` hands moto's own query only the items whose partition key matches.
"""

from __future__ import annotations

from typing import Any

_APPLIED = False
_LISTING_APPLIED = False
_QUERY_APPLIED = False


def _untracked_new(cls: type, *args: Any, **kwargs: Any) -> Any:
    return object.__new__(cls)


def stop_instance_tracking() -> None:
    """Idempotent; call before moto creates models (the sandbox does it before starting its server)."""
    global _APPLIED
    if _APPLIED:
        return
    from moto.core import model_instances
    from moto.core.common_models import BaseModel

    BaseModel.__new__ = staticmethod(_untracked_new)  # type: ignore[method-assign, assignment]
    model_instances.reset_model_data()  # drop what was tracked before the patch
    _APPLIED = True


class _KeysUnderPrefix:
    """The part of a bucket's versioned key store that moto's listing reads (`iterlists`), narrowed."""

    def __init__(self, keys: Any, prefix: str):
        self._keys, self._prefix = keys, prefix

    def iterlists(self) -> Any:
        return ((name, versions) for name, versions in self._keys.iterlists() if name.startswith(self._prefix))


class _BucketUnderPrefix:
    def __init__(self, bucket: Any, prefix: str):
        self.keys = _KeysUnderPrefix(bucket.keys, prefix)


class _BackendUnderPrefix:
    def __init__(self, backend: Any, prefix: str):
        self._backend, self._prefix = backend, prefix

    def get_bucket(self, bucket_name: str) -> Any:
        return _BucketUnderPrefix(self._backend.get_bucket(bucket_name), self._prefix)


def list_versions_by_prefix() -> None:
    """Idempotent. moto's `S3Backend.list_object_versions` reads the bucket only through
    `get_bucket(name).keys.iterlists()` and drops every name outside the prefix itself, so giving it the
    names under the prefix alone returns the same page. Left to moto unchanged: no prefix, and a
    `KeyMarker` without `VersionIdMarker` or outside the prefix (there moto's skipping looks at the
    first name at or after the marker, whatever its prefix)."""
    global _LISTING_APPLIED
    if _LISTING_APPLIED:
        return
    from moto.s3.models import S3Backend

    original = S3Backend.list_object_versions

    def list_object_versions(self: Any, bucket_name: str, delimiter: str | None = None,
                             key_marker: str | None = None, max_keys: int | None = 1000, prefix: str = "",
                             version_id_marker: str | None = None) -> Any:
        narrow = bool(prefix) and (key_marker is None or (bool(version_id_marker) and key_marker.startswith(prefix)))
        backend = _BackendUnderPrefix(self, prefix) if narrow else self
        return original(backend, bucket_name, delimiter=delimiter, key_marker=key_marker, max_keys=max_keys,
                        prefix=prefix, version_id_marker=version_id_marker)

    list_object_versions.moto_original = original  # type: ignore[attr-defined]  # for the equivalence test
    S3Backend.list_object_versions = list_object_versions  # type: ignore[method-assign]
    _LISTING_APPLIED = True


class _TableWithCandidates:
    """The table as moto's query reads it, with `all_items()` narrowed to the items that can match."""

    def __init__(self, table: Any, candidates: list[Any]):
        self._table, self._candidates = table, candidates

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def all_items(self) -> list[Any]:
        return self._candidates


def _candidates(table: Any, hash_key: Any, index_name: str | None,
                hash_key_conditions: list[tuple[str, Any]] | None) -> list[Any] | None:
    """Items whose partition key equals the query's, in `all_items()` order; None: leave it to moto."""
    if index_name is None:
        if hash_key is None:
            return None
        held = table.items.get(hash_key)
        if held is None:
            return []
        found = list(held.values()) if table.range_key_attr else [held]
    else:
        if not hash_key_conditions:
            return None
        found = []
        for held in table.items.values():
            for item in (held.values() if table.range_key_attr else (held,)):
                if all(name in item.attrs and item.attrs[name] == value for name, value in hash_key_conditions):
                    found.append(item)
    return sorted(found, key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)


def query_by_key() -> None:
    """Idempotent. moto's `Table.query` finds its results by keeping, from `all_items()`, those whose
    partition key (the table's, or every hash attribute of the index) equals the query's; handing it
    exactly those items, in the same order, leaves every later step (sort, pagination, filters,
    projection) as moto does it. Without a partition-key condition moto is left alone."""
    global _QUERY_APPLIED
    if _QUERY_APPLIED:
        return
    from moto.dynamodb.models.table import Table

    original = Table.query

    def query(self: Any, hash_key: Any, range_comparison: Any, range_objs: Any, limit: Any,
              exclusive_start_key: Any, scan_index_forward: Any, projection_expressions: Any,
              index_name: str | None = None, *args: Any, hash_key_conditions: Any = None, **kwargs: Any) -> Any:
        found = _candidates(self, hash_key, index_name, hash_key_conditions)
        table = self if found is None else _TableWithCandidates(self, found)
        return original(table, hash_key, range_comparison, range_objs, limit, exclusive_start_key,
                        scan_index_forward, projection_expressions, index_name, *args,
                        hash_key_conditions=hash_key_conditions, **kwargs)

    query.moto_original = original  # type: ignore[attr-defined]  # for the equivalence test
    Table.query = query  # type: ignore[method-assign]
    _QUERY_APPLIED = True


def apply() -> None:
    """Every fix above; the sandbox and the tests' moto both call this before creating models."""
    stop_instance_tracking()
    list_versions_by_prefix()
    query_by_key()
