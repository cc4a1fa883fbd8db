"""Unit tests of outbound.mapping: stored Nudgespot events -> Segment messages (contract.md).

Events are written as Nudgespot sends them and go through the real parser first
(inbound.parse), then through the same JSON round trip the store applies to the
normalized fields, so each test states a raw event and the Segment message it must become.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime, timezone
from typing import Any

import pytest

from inbound.parse import Accepted, dump, parse_body, parse_event
from outbound import mapping
from service import __version__ as SERVICE_VERSION
from tests.examples import EXAMPLE_BODY, EXAMPLE_TRACKS

UTC = timezone.utc
NOW = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

SEGMENT_NAMES = {
    "email_sent": "Email Sent",
    "email_delivered": "Email Delivered",
    "email_opened": "Email Opened",
    "email_clicked": "Email Link Clicked",
    "email_bounced": "Email Bounced",
    "email_unsubscribed": "Email Unsubscribed",
    "email_marked_as_spam": "Email Marked as Spam",
}
TYPE_ONLY_PROPERTIES = {
    "email_clicked": {"link_id", "link_url"},
    "email_unsubscribed": {"list_id", "list_name"},
    "email_bounced": {"bounce_type", "bounce_reason"},
}
ALL_TYPE_ONLY = set().union(*TYPE_ONLY_PROPERTIES.values())


# --- helpers ------------------------------------------------------------------------------------


def accepted(obj: dict[str, Any]) -> Accepted:
    result = parse_event(obj, 0, NOW)
    assert isinstance(result, Accepted), result
    return result


def stored_fields(event: Accepted) -> dict[str, Any]:
    """The normalized fields as the publisher reads them back from the database."""
    return json.loads(dump(event.fields))


def to_track(obj: dict[str, Any], source: str = "default") -> dict[str, Any]:
    event = accepted(obj)
    return mapping.track(
        source,
        event.dedup_key,
        event.event_type,
        event.event_time,
        stored_fields(event),
        SERVICE_VERSION,
    )


def to_identify(obj: dict[str, Any], source: str = "default") -> dict[str, Any]:
    event = accepted(obj)
    return mapping.identify(source, event.event_time, stored_fields(event), SERVICE_VERSION)


def without_generated(message: dict[str, Any]) -> dict[str, Any]:
    """The message without the parts examples.md leaves out: messageId, context.library."""
    copied = copy.deepcopy(message)
    copied.pop("messageId", None)
    copied.get("context", {}).pop("library", None)
    return copied


def event(**overrides: Any) -> dict[str, Any]:
    """A valid raw Nudgespot event; keyword overrides replace top-level keys (None removes)."""
    obj: dict[str, Any] = {
        "id": "ev-1",
        "event": "email_sent",
        "timestamp": "2026-11-20T09:30:00Z",
        "subscriber": {"uid": "42", "email": "ada@example.com"},
    }
    for key, value in overrides.items():
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


def full_event(event_type: str) -> dict[str, Any]:
    """An event of `event_type` that carries every optional object, whatever its type."""
    return event(
        event=event_type,
        message={"id": "msg-1", "subject": "Hi", "campaign_id": "c-1", "campaign_name": "Camp"},
        link={"id": "l-1", "url": "https://example.com/a"},
        list={"id": "news", "name": "Newsletter"},
        bounce={"type": "hard", "reason": "mailbox does not exist"},
    )


def nones(value: Any, path: str = "$") -> list[str]:
    """Paths of every None inside a JSON-like value."""
    found: list[str] = []
    if value is None:
        found.append(path)
    elif isinstance(value, dict):
        for key, item in value.items():
            found.extend(nones(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(nones(item, f"{path}[{i}]"))
    return found


# --- the worked examples --------------------------------------------------------------------


def example_tracks() -> list[dict[str, Any]]:
    parsed = parse_body(json.dumps(EXAMPLE_BODY).encode(), NOW)
    events = [p for p in parsed if isinstance(p, Accepted)]
    assert len(events) == 3
    return [
        mapping.track(
            "default", e.dedup_key, e.event_type, e.event_time, stored_fields(e), SERVICE_VERSION
        )
        for e in events
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["delivered", "click", "unsubscribed"])
def test_example_event_maps_to_the_documented_track(index: int) -> None:
    assert without_generated(example_tracks()[index]) == EXAMPLE_TRACKS[index]


def test_example_message_ids_are_distinct_short_strings() -> None:
    ids = [m["messageId"] for m in example_tracks()]
    assert all(isinstance(i, str) and 0 < len(i) <= 100 for i in ids)
    assert len(set(ids)) == 3


def test_example_message_id_is_derived_from_source_and_event_id() -> None:
    first = example_tracks()[0]
    # Another event with the same id in the same source carries the same messageId.
    other = to_track(
        event(
            id="ev-1001",
            event="open",
            timestamp="2026-11-01T00:00:00Z",
            subscriber={"email": "someone@example.com"},
        )
    )
    assert first["messageId"] == other["messageId"]


def test_example_without_id_gets_message_id_of_its_fallback_hash() -> None:
    third = example_tracks()[2]
    again = example_tracks()[2]
    assert third["messageId"] == again["messageId"]
    # The same event sent again with different custom properties keeps its dedup key,
    # hence its messageId; a different message id in the body changes it.
    same = to_track({**EXAMPLE_BODY[2], "properties": {"x": "y"}})
    changed = to_track({**EXAMPLE_BODY[2], "message": {"id": "msg-other"}})
    assert same["messageId"] == third["messageId"]
    assert changed["messageId"] != third["messageId"]


# --- event names and identity ----------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(SEGMENT_NAMES))
def test_event_type_gets_its_segment_name(event_type: str) -> None:
    message = to_track(event(event=event_type))
    assert message["type"] == "track"
    assert message["event"] == SEGMENT_NAMES[event_type]


@pytest.mark.parametrize(
    "alias, name",
    [
        ("click", "Email Link Clicked"),
        ("email_link_clicked", "Email Link Clicked"),
        ("OPEN", "Email Opened"),
        ("spamreport", "Email Marked as Spam"),
        ("bounce", "Email Bounced"),
    ],
)
def test_event_alias_gets_the_canonical_segment_name(alias: str, name: str) -> None:
    assert to_track(event(event=alias))["event"] == name


def test_uid_becomes_user_id_and_no_anonymous_id() -> None:
    message = to_track(event(subscriber={"uid": "42", "email": "ada@example.com"}))
    assert message["userId"] == "42"
    assert "anonymousId" not in message


def test_numeric_uid_becomes_a_string_user_id() -> None:
    message = to_track(event(subscriber={"uid": 42}))
    assert message["userId"] == "42"


def test_email_without_uid_becomes_anonymous_id_and_no_user_id() -> None:
    message = to_track(event(subscriber={"email": "bob@example.com"}))
    assert message["anonymousId"] == "bob@example.com"
    assert "userId" not in message


# --- properties -------------------------------------------------------------------------------


def test_common_properties_come_from_the_message() -> None:
    message = to_track(
        event(
            message={"id": "msg-1", "subject": "Hi", "campaign_id": "c-1", "campaign_name": "Camp"}
        )
    )
    assert message["properties"] == {
        "email_id": "msg-1",
        "email_subject": "Hi",
        "campaign_id": "c-1",
        "campaign_name": "Camp",
    }


@pytest.mark.parametrize("event_type", sorted(SEGMENT_NAMES))
def test_type_specific_properties_appear_only_on_their_type(event_type: str) -> None:
    properties = to_track(full_event(event_type))["properties"]
    expected = TYPE_ONLY_PROPERTIES.get(event_type, set())
    assert ALL_TYPE_ONLY & set(properties) == expected


def test_click_adds_link_id_and_link_url() -> None:
    properties = to_track(full_event("email_clicked"))["properties"]
    assert properties["link_id"] == "l-1"
    assert properties["link_url"] == "https://example.com/a"


def test_unsubscribe_adds_list_id_and_list_name() -> None:
    properties = to_track(full_event("email_unsubscribed"))["properties"]
    assert properties["list_id"] == "news"
    assert properties["list_name"] == "Newsletter"


def test_bounce_adds_bounce_type_and_bounce_reason() -> None:
    properties = to_track(full_event("email_bounced"))["properties"]
    assert properties["bounce_type"] == "hard"
    assert properties["bounce_reason"] == "mailbox does not exist"


def test_custom_properties_are_merged_and_mapped_keys_win() -> None:
    message = to_track(
        event(
            event="click",
            message={"id": "msg-1"},
            link={"url": "https://example.com/a"},
            properties={
                "variant": "B",
                "email_id": "custom",
                "link_url": "custom",
                "campaign_id": "kept",
                "nested": {"a": [1, 2]},
            },
        )
    )
    assert message["properties"] == {
        "email_id": "msg-1",
        "link_url": "https://example.com/a",
        "variant": "B",
        "campaign_id": "kept",
        "nested": {"a": [1, 2]},
    }


@pytest.mark.parametrize("event_type", sorted(SEGMENT_NAMES))
def test_absent_values_are_left_out_not_null(event_type: str) -> None:
    sparse = event(
        event=event_type,
        subscriber={"email": "x@example.com", "uid": None, "first_name": None, "name": ""},
        message={"id": None, "subject": "", "campaign_id": None},
        link={"id": None, "url": None},
        list={"id": None},
        bounce={"type": None, "reason": ""},
        ip=None,
        user_agent="",
    )
    for message in (to_track(sparse), to_identify(sparse)):
        assert nones(message) == []
        assert "userId" not in message
    track = to_track(sparse)
    assert track["properties"] == {}
    assert track["context"]["traits"] == {"email": "x@example.com"}
    assert "ip" not in track["context"] and "userAgent" not in track["context"]


# --- context, integrations, timestamp ---------------------------------------------------------


def test_context_carries_traits_ip_user_agent_and_integration() -> None:
    message = to_track(
        event(
            event="open",
            subscriber={
                "uid": "42",
                "email": "ada@example.com",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "name": "Ada Lovelace",
            },
            ip="203.0.113.9",
            user_agent="Mozilla/5.0",
        )
    )
    context = without_generated(message)["context"]
    assert context == {
        "traits": {
            "email": "ada@example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "name": "Ada Lovelace",
        },
        "ip": "203.0.113.9",
        "userAgent": "Mozilla/5.0",
        "integration": {"name": "nudgespot", "version": SERVICE_VERSION},
    }


def test_integrations_turn_nudgespot_off() -> None:
    assert to_track(event())["integrations"] == {"Nudgespot": False}


def test_integrations_object_is_not_shared_between_messages() -> None:
    first = to_track(event(id="a"))
    first["integrations"]["Nudgespot"] = True
    assert to_track(event(id="b"))["integrations"] == {"Nudgespot": False}


@pytest.mark.parametrize(
    "timestamp, expected",
    [
        ("2026-11-20T11:30:00.123456+02:00", "2026-11-20T09:30:00.123Z"),
        ("2026-11-20T09:30:00Z", "2026-11-20T09:30:00.000Z"),
        (1795167060, "2026-11-20T09:31:00.000Z"),
        (1795167060789, "2026-11-20T09:31:00.789Z"),
        ("2026-11-19T22:00:00-05:00", "2026-11-20T03:00:00.000Z"),
    ],
)
def test_timestamp_is_the_event_time_in_utc_with_milliseconds_and_z(
    timestamp: Any, expected: str
) -> None:
    message = to_track(event(timestamp=timestamp))
    assert message["timestamp"] == expected
    assert TIMESTAMP_RE.match(message["timestamp"])


# --- messageId ----------------------------------------------------------------------------------


def test_message_id_is_deterministic() -> None:
    assert to_track(event())["messageId"] == to_track(event())["messageId"]


def test_message_id_is_at_most_100_characters_for_the_longest_inputs() -> None:
    message_id = mapping.message_id("s" * 100, "k" * 255)
    assert isinstance(message_id, str) and 0 < len(message_id) <= 100
    track = to_track(event(id="k" * 255), source="s" * 100)
    assert 0 < len(track["messageId"]) <= 100


def test_message_id_differs_when_the_source_differs() -> None:
    assert (
        to_track(event(), source="default")["messageId"]
        != to_track(event(), source="other")["messageId"]
    )


def test_message_id_differs_when_the_dedup_key_differs() -> None:
    assert to_track(event(id="ev-1"))["messageId"] != to_track(event(id="ev-2"))["messageId"]


def test_message_id_does_not_confuse_source_and_key_boundaries() -> None:
    assert mapping.message_id("ab", "c") != mapping.message_id("a", "bc")


def test_message_id_is_the_same_when_only_event_fields_differ() -> None:
    one = to_track(event(id="ev-9", event="open", timestamp="2026-11-20T09:30:00Z"))
    two = to_track(
        event(
            id="ev-9",
            event="click",
            timestamp=1795000000,
            subscriber={"email": "other@example.com"},
            message={"id": "m-2", "subject": "changed"},
            properties={"variant": "C"},
        )
    )
    assert one["messageId"] == two["messageId"]


# --- identify -----------------------------------------------------------------------------------


def test_identify_carries_the_recipient_traits() -> None:
    message = to_identify(
        event(
            event="open",
            subscriber={
                "uid": "42",
                "email": "ada@example.com",
                "first_name": "Ada",
                "last_name": "Lovelace",
            },
            ip="203.0.113.9",
            user_agent="Mozilla/5.0",
        )
    )
    assert message["type"] == "identify"
    assert message["userId"] == "42" and "anonymousId" not in message
    assert message["traits"] == {
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
    }
    assert "event" not in message and "properties" not in message
    assert TIMESTAMP_RE.match(message["timestamp"])
    assert message["integrations"] == {"Nudgespot": False}
    assert message["context"]["integration"] == {"name": "nudgespot", "version": SERVICE_VERSION}
    assert 0 < len(message["messageId"]) <= 100


def test_identify_of_an_email_only_recipient_uses_anonymous_id() -> None:
    message = to_identify(event(subscriber={"email": "bob@example.com"}))
    assert message["anonymousId"] == "bob@example.com"
    assert "userId" not in message
    assert message["traits"] == {"email": "bob@example.com"}


def test_identify_message_id_is_the_same_for_every_event_of_a_user() -> None:
    one = to_identify(event(id="a", event="open"))
    two = to_identify(event(id="b", event="click", timestamp="2026-11-01T00:00:00Z"))
    assert one["messageId"] == two["messageId"]


def test_identify_message_id_differs_from_any_track_message_id() -> None:
    subscriber = {"uid": "42", "email": "ada@example.com"}
    identify = to_identify(event(subscriber=subscriber))
    # Try to collide: tracks whose dedup keys look like anything an identify is derived from.
    candidates = ["42", "user:42", "anon:ada@example.com", "ada@example.com", "identify", "ev-1"]
    track_ids = {to_track(event(id=key, subscriber=subscriber))["messageId"] for key in candidates}
    assert identify["messageId"] not in track_ids
