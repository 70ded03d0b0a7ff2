"""Process-wide fixes to moto for a long-running sandbox.

moto's `BaseModel.__new__` appends every model instance it ever creates to a class-level list
(`instances_tracked`, for its server dashboard and reset), and `ListObjectVersions` deep-copies every
version in the bucket on each call. The copies are never released: one listing of a bucket with 2,000
versions kept ~11 MB, so a site uninstall on the demo data (two listings per account) grew the sandbox
by gigabytes until the machine ran out of memory. Nothing here uses the dashboard, and moto's reset
still disposes of the keys its buckets hold, so instances are simply no longer tracked.
"""

from __future__ import annotations

from typing import Any

_APPLIED = False


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
