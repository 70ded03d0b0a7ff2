"""The personal-data map's lifecycle fields: `uninstall` per store and `maxAgeDays`/`ageAttribute`,
optional (older maps still load) but strict once given; and the uninstall message's validation."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest

from gdpr_core.erasure import pdmap
from gdpr_core.erasure.engine import InvalidMessage
from gdpr_core.lifecycle.uninstall import (
    APP_EVENT_TYPES,
    app_event,
    is_lifecycle_message,
    parse_lifecycle_message,
    request_message,
    validate_site,
)
from tests.support import aws_events
from tests.support.pdmap_docs import RAW, map_doc, parse_error
from tests.support.stacks import load_template, parameter_defaults


def test_shipped_map_says_what_uninstall_and_retention_do():
    m = pdmap.parse(RAW)
    m.require_uninstall()
    assert m.store("profile-cache").uninstall.action == "removeSite"
    assert m.store("profile-cache").uninstall.site_attribute == "sites"
    assert (m.store("profile-cache").max_age_days, m.store("profile-cache").age_attribute) == (30, "fetchedAt")
    comments = m.store("comments").uninstall
    assert (comments.action, comments.site_attribute, comments.remove) == ("scrub", "site", ("authorAccountId",))
    assert m.store("avatars").site_key("abc", "x.atlassian.net") == "avatars/abc/x.atlassian.net.png"
    assert m.store("consent").uninstall.action == "none"
    assert m.store("registry").uninstall.action == "removeSite"
    rows = {r["store"]: r for r in m.records_of_processing()}
    assert rows["profile-cache"]["onUninstall"] == "removeSite" and rows["profile-cache"]["maxAgeDays"] == 30


def test_maps_without_lifecycle_fields_still_load_but_refuse_to_uninstall():
    doc = copy.deepcopy(RAW)
    for store in doc["stores"]:
        for key in ("uninstall", "maxAgeDays", "ageAttribute"):
            store.pop(key, None)
    m = pdmap.parse(doc)
    assert all(s.uninstall is None and s.max_age_days is None for s in m.stores)
    with pytest.raises(pdmap.PersonalDataMapError, match="no 'uninstall' policy"):
        m.require_uninstall()


@pytest.mark.parametrize(
    ("store", "changes", "expected"),
    [
        ("comments", {"uninstall": None}, "store 'comments': field 'uninstall' is required once any store"),
        ("comments", {"uninstall": "scrub"}, "store 'comments': field 'uninstall' must be an object"),
        ("comments", {"uninstall": {"action": "tombstone"}}, "field 'uninstall.action' must be one of"),
        ("comments", {"uninstall": {"action": "deleteItems"}}, "field 'uninstall.siteAttribute'"),
        ("comments", {"uninstall": {"action": "deleteItems", "siteAttribute": "commentId"}},
         "field 'uninstall.siteAttribute' cannot be part of the table key"),
        ("comments", {"uninstall": {"action": "scrub", "siteAttribute": "site", "remove": ["authorAccountId"]}},
         "store 'comments': field 'uninstall' scrub leaves personal attributes ['authorName']"),
        ("comments", {"uninstall": {"action": "scrub", "siteAttribute": "site", "remove": ["authorAccountId", "site"],
                                    "set": {"authorName": "x"}}}, "must not change siteAttribute"),
        ("comments", {"uninstall": {"action": "none", "siteAttribute": "site"}},
         "has unknown fields ['siteAttribute']"),
        ("avatars", {"uninstall": {"action": "deleteObjects"}}, "field 'uninstall.keyTemplate'"),
        ("avatars", {"uninstall": {"action": "deleteObjects", "keyTemplate": "avatars/{accountId}/x.png"}},
         "must contain '{accountId}' and '{site}' exactly once each"),
        ("avatars", {"uninstall": {"action": "deleteObjects", "keyTemplate": "other/{accountId}/{site}.png"}},
         "must lie under prefixTemplate"),
        ("avatars", {"uninstall": {"action": "deleteObjects", "keyTemplate": "avatars/{accountId}/{site}{x}"}},
         "may use no placeholder but"),
        ("avatars", {"uninstall": {"action": "removeSite"}}, "store 'avatars': field 'uninstall.action'"),
        ("registry", {"uninstall": {"action": "none"}}, "store 'registry': field 'uninstall.action'"),
        ("registry", {"uninstall": {"action": "removeSite", "siteAttribute": "x"}}, "has unknown fields"),
        ("consent", {"uninstall": {"action": "hook"}}, "field 'uninstall.hook' must be a non-empty string"),
        ("profile-cache", {"maxAgeDays": 0}, "field 'maxAgeDays' must be a whole number of days from 1 to 3650"),
        ("profile-cache", {"maxAgeDays": True}, "field 'maxAgeDays' must be a whole number"),
        ("profile-cache", {"maxAgeDays": 30.5}, "field 'maxAgeDays' must be a whole number"),
        ("profile-cache", {"ageAttribute": None}, "field 'ageAttribute' must name the attribute"),
        ("profile-cache", {"maxAgeDays": None}, "field 'maxAgeDays' is required when ageAttribute is given"),
        ("profile-cache", {"ageAttribute": "accountId"}, "field 'ageAttribute' cannot be part of the table key"),
        ("avatars", {"maxAgeDays": 30}, "is not known for kind 's3'"),
    ],
)
def test_invalid_lifecycle_fields_are_rejected_naming_store_and_field(store, changes, expected):
    assert expected in parse_error(map_doc(store, **changes))


def test_hook_uninstall_policy_is_accepted():
    m = pdmap.parse(map_doc("consent", uninstall={"action": "hook", "hook": "consent.forget_site"}))
    assert m.store("consent").uninstall.hook == "consent.forget_site"


# ------------------------------------------------------------------ the queue message
def test_uninstall_message_round_trip_and_errors_never_echo_the_site():
    body = request_message("acme.atlassian.net")
    message = parse_lifecycle_message(body)
    assert (message.action, message.site, message.seq) == ("uninstall", "acme.atlassian.net", None)
    cases = [
        ("not json", "body is not JSON"),
        (json.dumps({"schema": 2, "action": "uninstall"}), "schema must be 1"),
        (json.dumps({"schema": 1, "action": "uninstall", "site": "bad/site.example", "requestedAt":
                     "2026-12-01T00:00:00Z"}), "site must be a site id"),
        (json.dumps({"schema": 1, "action": "uninstall", "site": "a.example", "requestedAt": "yesterday"}),
         "requestedAt is not an RFC 3339 timestamp"),
        (json.dumps({"schema": 1, "action": "reinstall", "site": "a.example", "requestedAt": "2026-12-01T00:00:00Z",
                     "seq": 1}), "seq must be a non-negative integer"),
        (json.dumps({"schema": 1, "action": "uninstall", "site": "a.example", "requestedAt": "2026-12-01T00:00:00Z",
                     "extra": "bad/site.example"}),
         "1 unknown field (expected ['action', 'requestedAt', 'schema', 'seq', 'site'])"),
        # a key that is itself personal data (an account id, a name) is counted, never named
        (json.dumps({"schema": 1, "action": "uninstall", "site": "a.example", "requestedAt": "2026-12-01T00:00:00Z",
                     "e56fb63287408705176fed6e": 1, "JohnSmith": 2}), "2 unknown fields (expected"),
    ]
    for raw, expected in cases:
        with pytest.raises(InvalidMessage) as info:
            parse_lifecycle_message(raw)
        assert expected in str(info.value) and "bad/site" not in str(info.value)
        assert "e56fb63287408705176fed6e" not in str(info.value) and "JohnSmith" not in str(info.value)
    for bad in ("", " x", "a/b", "a b", "x" * 300, None, 3):
        with pytest.raises(ValueError):
            validate_site(bad)


# ------------------------------------------------------------------ the app's EventBridge events
def _delivered(entry: dict, time: str = "2026-12-01T09:00:00Z") -> str:
    """The queue body EventBridge delivers for a PutEvents entry: AWS's own sample event (the scheduled
    one) with the entry's source, detail-type and detail, as the rule's SQS target sends it whole."""
    event = aws_events.load("scheduled-event.json")
    event.update({"source": entry["Source"], "detail-type": entry["DetailType"],
                  "detail": json.loads(entry["Detail"]), "time": time, "resources": []})
    return json.dumps(event)


def test_the_apps_eventbridge_events_parse_to_the_same_requests_as_queue_messages():
    when = datetime(2026, 12, 1, 8, 59, 30, 250000, tzinfo=UTC)
    for action in ("uninstall", "reinstall"):
        body = _delivered(app_event("acme.atlassian.net", action, when))
        assert is_lifecycle_message(body)
        message = parse_lifecycle_message(body)
        assert (message.action, message.site, message.requested_at, message.seq) == (
            action, "acme.atlassian.net", "2026-12-01T08:59:30.250Z", None)
    # The event's own time (whole seconds) does not stand in for requestedAt: it could reorder an
    # uninstall and a re-install of the same second.
    bare = _delivered({"Source": "atlassian-app", "DetailType": "App Installed",
                       "Detail": json.dumps({"site": "acme.atlassian.net"})})
    with pytest.raises(InvalidMessage, match="the EventBridge detail needs requestedAt"):
        parse_lifecycle_message(bare)


def test_a_malformed_or_foreign_eventbridge_event_is_refused_without_echoing_the_site():
    base = {"Source": "atlassian-app", "DetailType": "App Uninstalled"}
    cases = [
        (_delivered({**base, "Detail": json.dumps({"site": "bad/site.example",
                                                    "requestedAt": "2026-12-01T09:00:00Z"})}),
         "site must be a site id"),
        (_delivered({**base, "Detail": json.dumps({"requestedAt": "2026-12-01T09:00:00Z"})}), "site must be a site id"),
        (_delivered({**base, "Detail": json.dumps({"site": "a.example", "tenant": "bad/site.example"})}),
         "1 unknown field in the EventBridge detail (expected ['requestedAt', 'site'])"),
        (_delivered({**base, "Detail": json.dumps({"site": "a.example", "jane@example.org": 1, "x": 2})}),
         "2 unknown fields in the EventBridge detail"),
        (_delivered({**base, "Detail": json.dumps(["bad/site.example"])}), "detail must be a JSON object"),
        (_delivered({**base, "Detail": json.dumps({"site": "a.example", "requestedAt": "soon"})}),
         "requestedAt is not an RFC 3339 timestamp"),
        # An event with a queue message's fields beside it: which was meant cannot be known, so neither runs.
        (json.dumps({**json.loads(_delivered({**base, "Detail": json.dumps(
            {"site": "a.example", "requestedAt": "2026-12-01T09:00:00Z"})})), "schema": 1, "action": "uninstall",
            "site": "bad/site.example", "requestedAt": "2026-12-01T09:00:00Z"}),
         "4 unknown fields beside the EventBridge event"),
        # AWS's scheduled event itself, had a schedule been pointed at the actions queue.
        (json.dumps(aws_events.load("scheduled-event.json")), "detail-type must be one of"),
    ]
    for raw, expected in cases:
        assert is_lifecycle_message(raw)  # routed to the lifecycle parser, which names the problem
        with pytest.raises(InvalidMessage) as info:
            parse_lifecycle_message(raw)
        assert expected in str(info.value) and "bad/site" not in str(info.value) and "jane" not in str(info.value)
    with pytest.raises(ValueError, match="action must be"):
        app_event("acme.atlassian.net", "erase")
    with pytest.raises(ValueError, match="site must be a site id"):
        app_event("bad site")


def test_the_templates_rule_matches_exactly_the_events_the_parser_and_the_helper_know():
    template = load_template()
    rule = template["Resources"]["AppLifecycleRule"]["Properties"]
    assert sorted(rule["EventPattern"]["detail-type"]) == sorted(APP_EVENT_TYPES)
    assert rule["EventPattern"]["source"] == [{"Ref": "AppEventSource"}]
    assert rule["EventBusName"] == {"Ref": "AppEventBusName"}
    defaults = parameter_defaults(template)
    entry = app_event("acme.atlassian.net")
    assert (entry["Source"], entry["EventBusName"]) == (defaults["AppEventSource"], defaults["AppEventBusName"])
    # The rule may write only to the actions queue and its DLQ, and only as that rule.
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["ActionsQueue", "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["ActionsDeadLetterQueue", "Arn"]}
    (statement,) = template["Resources"]["ActionsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"} and statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["AppLifecycleRule", "Arn"]}}}


def test_odd_shapes_on_the_actions_queue_get_a_reason_not_a_type_error():
    """The handler's routing: lifecycle parser for lifecycle messages and events, else the erasure one."""
    from gdpr_core.erasure.engine import parse_action_message

    def parse(body: str):
        return (parse_lifecycle_message if is_lifecycle_message(body) else parse_action_message)(body)

    event = json.loads(_delivered(app_event("acme.atlassian.net")))
    cases = [
        (json.dumps({"schema": 1, "action": ["uninstall"], "site": "a.example"}), "action must be erase or refresh"),
        (json.dumps({"schema": 1, "action": {"x": 1}}), "action must be erase or refresh"),
        (json.dumps({"schema": 1, "action": "UNINSTALL", "site": "a.example"}),
         "or, for a site, uninstall or reinstall"),
        (json.dumps({**event, "detail-type": ["App Uninstalled"]}), "detail-type must be one of"),
        (json.dumps({**event, "detail-type": {"a": 1}}), "detail-type must be one of"),
        ("[" * 100_000 + "]" * 100_000, "body is not JSON"),
        # a repeated key: json would keep the last silently, and which the sender meant is unknowable
        ('{"schema": 1, "action": "uninstall", "site": "a.example", "site": "b.example",'
         ' "requestedAt": "2026-12-01T00:00:00Z"}', "body repeats a JSON key"),
        ('{"schema": 1, "action": "erase", "accountId": "557058:aaaa", "accountId": "557058:bbbb"}',
         "body repeats a JSON key"),
        (_delivered(app_event("acme.atlassian.net")).replace('"detail": {', '"detail": {"site": "b.example", ', 1),
         "body repeats a JSON key"),
        (json.dumps({"schema": 1, "action": "uninstall", "site": "a.example",
                     "requestedAt": "0001-01-01T00:00:00+01:00"}), "requestedAt is not an RFC 3339 timestamp"),
    ]
    for raw, expected in cases:
        with pytest.raises(InvalidMessage, match=expected.replace("(", r"\(").replace(")", r"\)")):
            parse(raw)
