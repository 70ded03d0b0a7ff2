"""The personal-data map: strict validation, and agreement with the templates it describes."""

from __future__ import annotations

import copy

import pytest

from gdpr_core.config import ConfigurationError
from gdpr_core.erasure import audit, pdmap
from tests.support import stacks
from tests.support.pdmap_docs import RAW, map_doc, parse_error

MAP = pdmap.load()
MAIN = stacks.load_template(stacks.MAIN_TEMPLATE)
SAMPLE = stacks.load_template(stacks.SAMPLE_APP_TEMPLATE)
ERASURE = MAIN["Resources"]["ErasureFunction"]["Properties"]


# ------------------------------------------------------------------ loading and validation
def test_shipped_map_loads_with_every_store_kind():
    assert {s.kind for s in MAP.stores} == {"dynamodb", "s3", "hook", "registry"}
    comments = MAP.store("comments")
    assert comments.closed.action == "scrub"
    assert comments.closed.remove == ("authorAccountId",)
    assert comments.closed.set == {"authorName": "Former user"}
    assert comments.updated.action == "none"
    assert MAP.store("avatars").prefix("abc") == "avatars/abc/"
    assert MAP.store("consent").closed.hook == "consent.erase_account"


def test_records_of_processing_lists_every_store():
    rows = MAP.records_of_processing()
    assert [r["store"] for r in rows] == [s.name for s in MAP.stores]
    assert all(r["purpose"] and r["personalAttributes"] for r in rows)


@pytest.mark.parametrize(
    ("store", "changes", "expected"),
    [
        ("comments", {"kind": "mongodb"}, "store 'comments': field 'kind'"),
        ("comments", {"closed": {"action": "shred"}}, "store 'comments': field 'closed.action'"),
        ("avatars", {"closed": {"action": "deleteItems"}}, "store 'avatars': field 'closed.action'"),
        (
            "comments",
            {"closed": {"action": "scrub", "remove": ["authorAccountId"]}},
            "store 'comments': field 'closed' scrub leaves personal attributes ['authorName']",
        ),
        (
            "comments",
            {"closed": {"action": "scrub", "remove": ["commentId", "authorAccountId", "authorName"]}},
            "store 'comments': field 'closed' scrub cannot change the table key",
        ),
        ("comments", {"closed": {"action": "scrub"}}, "store 'comments': field 'closed' scrub needs"),
        (
            "comments",
            {"closed": {"action": "deleteItems", "remove": ["x"]}},
            "store 'comments': field 'closed'",
        ),
        ("comments", {"indexKey": None}, "store 'comments': field 'indexKey'"),
        ("comments", {"key": None}, "store 'comments': field 'key'"),
        ("comments", {"personalAttributes": []}, "store 'comments': field 'personalAttributes'"),
        ("comments", {"typo": 1}, "store 'comments': field 'typo' is not known"),
        ("profile-cache", {"resourceEnv": ""}, "store 'profile-cache': field 'resourceEnv'"),
        ("avatars", {"prefixTemplate": "avatars/"}, "store 'avatars': field 'prefixTemplate'"),
        ("avatars", {"prefixTemplate": "avatars/{accountId}"}, "store 'avatars': field 'prefixTemplate'"),
        ("avatars", {"prefixTemplate": "{site}/{accountId}/"}, "store 'avatars': field 'prefixTemplate'"),
        ("avatars", {"versions": "yes"}, "store 'avatars': field 'versions'"),
        ("consent", {"closed": {"action": "hook"}}, "store 'consent': field 'hook'"),
        ("registry", {"closed": {"action": "deleteItems"}}, "store 'registry': field 'closed.action'"),
        ("profile-cache", {"export": {"hook": "x"}}, "store 'profile-cache': field 'export'"),
    ],
)
def test_invalid_maps_are_rejected_naming_store_and_field(store, changes, expected):
    assert expected in parse_error(map_doc(store, **changes))


def test_document_level_errors():
    assert "schema" in parse_error({**RAW, "schema": 2})
    assert "stores" in parse_error({**RAW, "stores": []})
    assert "unknown top-level" in parse_error({**RAW, "extra": 1})
    doubled = copy.deepcopy(RAW)
    doubled["stores"].append(copy.deepcopy(doubled["stores"][0]))
    assert "store 'profile-cache': field 'name' is used by more than one store" in parse_error(doubled)
    no_registry = copy.deepcopy(RAW)
    no_registry["stores"] = [s for s in RAW["stores"] if s["kind"] != "registry"]
    assert "registry" in parse_error(no_registry)


def test_invalid_json_file(tmp_path):
    path = tmp_path / "map.json"
    path.write_text("{not json")
    with pytest.raises(pdmap.PersonalDataMapError, match="not valid JSON"):
        pdmap.load(path)


def test_resolve_names_every_resource_and_the_missing_variable():
    env = {"PROFILE_CACHE_TABLE": "p", "COMMENTS_TABLE": "c", "AVATAR_BUCKET": "a", "REGISTRY_TABLE": "r"}
    assert MAP.resolve(env) == {"profile-cache": "p", "comments": "c", "avatars": "a", "registry": "r"}
    with pytest.raises(ConfigurationError, match="store 'avatars': environment variable AVATAR_BUCKET"):
        MAP.resolve({k: v for k, v in env.items() if k != "AVATAR_BUCKET"})


# ------------------------------------------------------------------ against the templates
def _erasure_environment() -> dict:
    variables = dict(MAIN["Globals"]["Function"]["Environment"]["Variables"])
    variables.update(ERASURE["Environment"]["Variables"])
    return variables


def _sample_resource(env_name: str) -> tuple[str, dict]:
    """The sample-app resource that the ErasureFunction's variable names, via parameter defaults."""
    value = _erasure_environment()[env_name]
    physical = stacks.resolve(value, stacks.parameter_defaults(MAIN))
    sample_names = stacks.parameter_defaults(SAMPLE)
    for logical_id, resource in SAMPLE["Resources"].items():
        props = resource["Properties"]
        name = props.get("TableName") or props.get("BucketName")
        if stacks.resolve(name, sample_names) == physical:
            return logical_id, resource
    raise AssertionError(f"{env_name} names no resource of sandbox/sample-app.yaml")


def test_every_resource_env_is_set_on_the_erasure_function():
    env = _erasure_environment()
    for store in MAP.stores:
        if store.resource_env:
            assert store.resource_env in env, store.name


def test_dynamodb_keys_and_indexes_exist_in_the_sample_app_template():
    for store in [s for s in MAP.stores if s.kind == "dynamodb"]:
        _, resource = _sample_resource(store.resource_env)
        props = resource["Properties"]
        assert resource["Type"] == "AWS::DynamoDB::Table"
        keys = {k["KeyType"]: k["AttributeName"] for k in props["KeySchema"]}
        assert keys["HASH"] == store.key, store.name
        assert keys.get("RANGE") == store.sort_key, store.name
        if store.index:
            index = next(
                (i for i in props.get("GlobalSecondaryIndexes", []) if i["IndexName"] == store.index), None
            )
            assert index is not None, f"{store.name}: index {store.index} missing"
            assert {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}["HASH"] == store.index_key


def test_s3_stores_exist_with_matching_versioning():
    for store in [s for s in MAP.stores if s.kind == "s3"]:
        _, resource = _sample_resource(store.resource_env)
        assert resource["Type"] == "AWS::S3::Bucket"
        status = resource["Properties"].get("VersioningConfiguration", {}).get("Status")
        assert (status == "Enabled") == store.versions, store.name


def test_registry_store_is_the_accounts_table():
    registry = next(s for s in MAP.stores if s.kind == "registry")
    assert _erasure_environment()[registry.resource_env] == {"Ref": "AccountsTable"}
    keys = MAIN["Resources"]["AccountsTable"]["Properties"]["KeySchema"]
    assert keys == [{"AttributeName": registry.key, "KeyType": "HASH"}]


def _statements() -> list[tuple[set[str], list[str]]]:
    """(actions, resources as '${Logical.Arn}' / Sub text) for every statement of the policy."""
    out = []
    for policy in ERASURE["Policies"]:
        for statement in policy["Statement"]:
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            out.append((set(statement["Action"]), [t for r in resources for t in _resource_texts(r)]))
    return out


def _resource_texts(resource) -> list[str]:
    if isinstance(resource, str):
        return [resource]
    if "Fn::If" in resource:  # either branch may be what is deployed
        return [t for branch in resource["Fn::If"][1:] for t in _resource_texts(branch)]
    if "Fn::GetAtt" in resource:
        return ["${" + ".".join(resource["Fn::GetAtt"]) + "}"]
    if "Ref" in resource:
        return ["${" + resource["Ref"] + "}"]
    return [resource["Fn::Sub"]]


def _allowed(action: str, resource_fragment: str, exact: bool = False) -> bool:
    return any(
        action in actions
        and any((text == resource_fragment) if exact else text.endswith(resource_fragment) for text in texts)
        for actions, texts in _statements()
    )


def _needed_actions(store: pdmap.Store) -> set[str]:
    """What the erasure engine calls on the table itself (the subject export runs as the operator)."""
    policies = {store.closed.action, store.updated.action}
    needed = set() if store.index else {"dynamodb:Query"}  # by key: consistent Query on the table
    if store.index:
        # index hits are confirmed with consistent reads: one GetItem, or BatchGetItem for several
        needed |= {"dynamodb:GetItem", "dynamodb:BatchGetItem"}
    if pdmap.DELETE_ITEMS in policies:
        needed.add("dynamodb:BatchWriteItem")
    if pdmap.SCRUB in policies:
        needed.add("dynamodb:UpdateItem")
    return needed


def test_erasure_policy_covers_every_dynamodb_store():
    for store in [s for s in MAP.stores if s.kind == "dynamodb"]:
        parameter = _erasure_environment()[store.resource_env]["Ref"]
        for action in _needed_actions(store):
            assert _allowed(action, f"table/${{{parameter}}}"), f"{store.name}: {action}"
        if store.index:
            assert _allowed("dynamodb:Query", f"table/${{{parameter}}}/index/{store.index}") or _allowed(
                "dynamodb:Query", f"table/${{{parameter}}}/index/*"
            ), store.name


def test_erasure_policy_covers_every_s3_store():
    for store in [s for s in MAP.stores if s.kind == "s3"]:
        parameter = _erasure_environment()[store.resource_env]["Ref"]
        listing = "s3:ListBucketVersions" if store.versions else "s3:ListBucket"
        assert _allowed(listing, f":::${{{parameter}}}"), store.name
        deleting = "s3:DeleteObjectVersion" if store.versions else "s3:DeleteObject"
        assert _allowed(deleting, f":::${{{parameter}}}/*"), f"{store.name}: {deleting}"


def test_erasure_policy_covers_registry_audit_consent_and_idempotency():
    # Registry: counted with GetItem, refresh deletes, the tombstone transaction deletes + updates.
    for action in ("dynamodb:GetItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem"):
        assert _allowed(action, "${AccountsTable.Arn}", exact=True), action
    assert _allowed("dynamodb:Query", "${ConsentTable.Arn}/index/account-index", exact=True)
    for action in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"):
        assert _allowed(action, "${IdempotencyTable.Arn}", exact=True), action
    audit_statement = next(
        s
        for p in ERASURE["Policies"]
        for s in p["Statement"]
        if s["Resource"] == {"Fn::GetAtt": ["AuditTable", "Arn"]}
    )
    assert audit_statement["Action"] == ["dynamodb:PutItem"]  # append-only
    allowed = audit_statement["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"]
    assert set(audit.AUDIT_ATTRIBUTES) <= set(allowed)
