"""Regression: the sandbox's moto grew by ~11 MB per ListObjectVersions on a 2,000-version bucket
(moto tracks every model instance it creates, including the copies each listing makes), so a site
uninstall on the demo data ran the machine out of memory. Counted in live objects, not in time."""

from __future__ import annotations

import gc

import boto3
from moto.s3.models import FakeKey

from tests.support.moto_world import mocked_aws

REGION = "us-east-1"


def _live_keys() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, FakeKey))


def test_listing_versions_keeps_no_copies(monkeypatch):
    from tests.support.moto_world import fake_aws_env

    fake_aws_env(monkeypatch, REGION)
    with mocked_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="leak-check")
        s3.put_bucket_versioning(Bucket="leak-check", VersioningConfiguration={"Status": "Enabled"})
        for n in range(50):
            s3.put_object(Bucket="leak-check", Key=f"avatars/{n}/a.png", Body=b"x")
        before = _live_keys()
        for n in range(10):
            page = s3.list_object_versions(Bucket="leak-check", Prefix=f"avatars/{n}/")
            assert [v["Key"] for v in page["Versions"]] == [f"avatars/{n}/a.png"]
        # Unpatched moto keeps 10 listings x 50 copies = 500 more FakeKeys alive.
        assert _live_keys() - before == 0
