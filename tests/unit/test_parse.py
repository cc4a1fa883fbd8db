"""Unit tests of inbound.parse and inbound.aliases: pure parsing of Nudgespot webhook bodies."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from inbound.aliases import EVENT_ALIASES, EVENT_TYPES
from inbound.parse import (
    Accepted,
    BodyError,
    Invalid,
    Rejected,
    fallback_key,
    parse_body,
    parse_event,
    parse_timestamp,
)

UTC = timezone.utc
NOW = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)  # the first worked example's instant
T0_S = 1_795_167_000  # T0 in Unix seconds
T0_MS = T0_S * 1000

CANONICAL = {
    "email_sent": ["email_sent", "sent"],
    "email_delivered": ["email_delivered", "delivered"],
    "email_opened": ["email_opened", "open", "opened"],
    "email_clicked": ["email_clicked", "click", "clicked", "email_link_clicked"],
    "email_bounced": ["email_bounced", "bounce", "bounced"],
    "email_unsubscribed": ["email_unsubscribed", "unsubscribe", "unsubscribed"],
    "email_marked_as_spam": [
        "email_marked_as_spam",
        "spam",
        "spamreport",
        "spam_report",
        "marked_as_spam",
    ],
}
ALL_NAMES = [(name, canonical) for canonical, names in CANONICAL.items() for name in names]


def make(**overrides: Any) -> dict[str, Any]:
    """A valid event; keyword overrides replace top-level keys (None removes the key)."""
    obj: dict[str, Any] = {
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


def set_path(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Return a copy of obj with the dotted path set (intermediate objects created)."""
    result = copy.deepcopy(obj)
    *parents, last = path.split(".")
    target = result
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value
    return result


def accept(obj: Any, index: int = 0) -> Accepted:
    result = parse_event(obj, index, NOW)
    assert isinstance(result, Accepted), result
    return result


def reject(obj: Any, index: int = 0) -> Rejected:
    result = parse_event(obj, index, NOW)
    assert isinstance(result, Rejected), result
    return result


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


# --- event names and aliases ----------------------------------------------------------------


def test_event_types_are_the_seven_of_the_contract():
    assert set(EVENT_TYPES) == set(CANONICAL)


def test_alias_table_has_exactly_the_contract_names():
    assert {name: canonical for name, canonical in ALL_NAMES} == EVENT_ALIASES


@pytest.mark.parametrize(("name", "canonical"), ALL_NAMES)
def test_every_event_name_and_alias_is_accepted(name, canonical):
    assert accept(make(event=name)).event_type == canonical


@pytest.mark.parametrize(("name", "canonical"), ALL_NAMES)
def test_event_names_are_case_insensitive(name, canonical):
    assert accept(make(event=name.upper())).event_type == canonical


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("Click", "email_clicked"),
        (" OPENED ", "email_opened"),
        ("Email_Marked_As_Spam", "email_marked_as_spam"),
        ("\tSpamReport\n", "email_marked_as_spam"),
    ],
)
def test_event_names_with_mixed_case_and_surrounding_space_are_accepted(name, canonical):
    assert accept(make(event=name)).event_type == canonical


def test_missing_event_is_rejected():
    assert "event" in reject(make(event=None)).reason


def test_null_event_is_rejected_as_missing():
    obj = make()
    obj["event"] = None
    assert "missing" in reject(obj).reason


@pytest.mark.parametrize("name", ["email_read", "", "sent!", "email sent", "link_clicked"])
def test_unknown_event_is_rejected(name):
    assert "unknown event" in reject(make(event=name)).reason


@pytest.mark.parametrize("value", [5, 1.5, True, ["sent"], {"name": "sent"}])
def test_event_that_is_not_a_string_is_rejected(value):
    assert "'event' must be a string" in reject(make(event=value)).reason


# --- timestamps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-20T09:30:00Z",
        "2026-11-20T09:30:00+00:00",
        "2026-11-20T11:30:00+02:00",
        "2026-11-20T04:00:00-05:30",
        "2026-11-20T18:30:00+09:00",
        "2026-11-20 09:30:00Z",
        " 2026-11-20T09:30:00Z ",
    ],
)
def test_iso_8601_with_zone_is_converted_to_utc(value):
    parsed = parse_timestamp(value, NOW)
    assert parsed == T0
    assert parsed.utcoffset() == timedelta(0)
    assert parsed.tzinfo == UTC


def test_iso_8601_keeps_fractional_seconds():
    parsed = parse_timestamp("2026-11-20T09:30:00.123456Z", NOW)
    assert parsed == T0.replace(microsecond=123456)


def test_iso_8601_offset_crossing_midnight_changes_the_utc_date():
    parsed = parse_timestamp("2026-11-20T01:00:00+03:00", NOW)
    assert parsed == datetime(2026, 11, 19, 22, 0, tzinfo=UTC)


def test_unix_seconds_are_read_as_seconds():
    assert parse_timestamp(T0_S, NOW) == T0


def test_fractional_unix_seconds_keep_the_fraction():
    assert parse_timestamp(T0_S + 0.5, NOW) == T0 + timedelta(milliseconds=500)


def test_unix_milliseconds_are_read_as_milliseconds():
    assert parse_timestamp(T0_MS, NOW) == T0


def test_unix_milliseconds_keep_the_millisecond():
    assert parse_timestamp(T0_MS + 123, NOW) == T0 + timedelta(milliseconds=123)


def test_unix_milliseconds_as_float_are_read_as_milliseconds():
    assert parse_timestamp(float(T0_MS), NOW) == T0


def test_ten_to_the_twelve_is_the_first_millisecond_value():
    assert parse_timestamp(10**12, NOW) == datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC)


def test_just_below_ten_to_the_twelve_is_seconds_and_out_of_range():
    with pytest.raises(Invalid):
        parse_timestamp(10**12 - 1, NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (str(T0_S), T0),
        (str(T0_MS), T0),
        (f"{T0_S}.5", T0 + timedelta(milliseconds=500)),
        (f" {T0_S} ", T0),
    ],
)
def test_numeric_strings_are_unix_time(value, expected):
    assert parse_timestamp(value, NOW) == expected


def test_unix_results_are_utc_aware():
    parsed = parse_timestamp(T0_S, NOW)
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == timedelta(0)


def test_missing_timestamp_is_rejected():
    assert "timestamp" in reject(make(timestamp=None)).reason


def test_parse_timestamp_of_none_says_missing():
    with pytest.raises(Invalid, match="missing required field 'timestamp'"):
        parse_timestamp(None, NOW)


@pytest.mark.parametrize("value", ["2026-11-20T09:30:00", "2026-11-20", "2026-11-20 09:30"])
def test_iso_without_zone_is_rejected(value):
    with pytest.raises(Invalid, match="no time zone"):
        parse_timestamp(value, NOW)


@pytest.mark.parametrize(
    "value",
    ["yesterday", "", "   ", "20-11-2026", "1795167000abc", "1.2.3", "0x6A", "1e9", "-1", "１２３"],
)
def test_garbage_timestamp_text_is_rejected(value):
    with pytest.raises(Invalid):
        parse_timestamp(value, NOW)


@pytest.mark.parametrize("value", [True, False])
def test_boolean_timestamp_is_rejected(value):
    with pytest.raises(Invalid, match="must be ISO 8601 or Unix time"):
        parse_timestamp(value, NOW)


@pytest.mark.parametrize("value", [[T0_S], {"seconds": T0_S}])
def test_timestamp_of_another_json_type_is_rejected(value):
    with pytest.raises(Invalid, match="must be ISO 8601 or Unix time"):
        parse_timestamp(value, NOW)


@pytest.mark.parametrize("value", [-1, -T0_S, -0.5, float("inf"), float("-inf"), float("nan")])
def test_negative_or_non_finite_timestamp_is_rejected(value):
    with pytest.raises(Invalid, match="out of range"):
        parse_timestamp(value, NOW)


@pytest.mark.parametrize("value", [10**15, 10**18, 10**30, 1e300])
def test_huge_timestamp_is_rejected(value):
    with pytest.raises(Invalid, match="out of range"):
        parse_timestamp(value, NOW)


def test_timestamp_integer_too_large_for_a_float_is_rejected():
    with pytest.raises(Invalid):
        parse_timestamp(10**400, NOW)


def test_timestamp_numeric_string_too_large_for_a_float_is_rejected():
    with pytest.raises(Invalid):
        parse_timestamp("1" * 400, NOW)


def test_timestamp_numeric_string_over_int_digit_limit_is_rejected():
    with pytest.raises(Invalid):
        parse_timestamp("1" * 5000, NOW)


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_iso_at_the_datetime_limits_with_an_offset_is_rejected(value):
    with pytest.raises(Invalid):
        parse_timestamp(value, NOW)


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_iso_at_the_datetime_limits_in_utc_is_rejected(value):
    with pytest.raises(Invalid, match="out of range"):
        parse_timestamp(value, NOW)


def test_timestamp_more_than_a_day_in_the_future_is_rejected():
    with pytest.raises(Invalid, match="out of range"):
        parse_timestamp((NOW + timedelta(days=1, seconds=1)).isoformat(), NOW)


def test_timestamp_exactly_a_day_in_the_future_is_accepted():
    edge = NOW + timedelta(days=1)
    assert parse_timestamp(edge.isoformat(), NOW) == edge


def test_future_limit_is_relative_to_now():
    later_now = NOW + timedelta(days=30)
    stamp = (NOW + timedelta(days=10)).isoformat()
    assert parse_timestamp(stamp, later_now) == NOW + timedelta(days=10)
    with pytest.raises(Invalid):
        parse_timestamp(stamp, NOW)


@pytest.mark.parametrize("value", ["1999-12-31T23:59:59Z", 946_684_799, "1970-01-01T00:00:00Z", 0])
def test_timestamp_before_2000_is_rejected(value):
    with pytest.raises(Invalid, match="out of range"):
        parse_timestamp(value, NOW)


@pytest.mark.parametrize(
    "value", ["2000-01-01T00:00:00Z", 946_684_800, "2000-01-01T01:00:00+01:00"]
)
def test_timestamp_at_2000_01_01_is_accepted(value):
    assert parse_timestamp(value, NOW) == datetime(2000, 1, 1, tzinfo=UTC)


def test_out_of_range_timestamp_rejects_the_event():
    assert "timestamp" in reject(make(timestamp="1999-01-01T00:00:00Z")).reason


# --- subscriber -----------------------------------------------------------------------------


def test_subscriber_fields_are_normalized():
    subscriber = {
        "uid": "42",
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "name": "Ada Lovelace",
    }
    fields = accept(make(subscriber=subscriber)).fields
    assert fields == {
        "user_id": "42",
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "name": "Ada Lovelace",
    }


def test_user_is_an_alias_of_subscriber():
    obj = make(subscriber=None, user={"uid": "7", "email": "bob@example.com"})
    fields = accept(obj).fields
    assert fields["user_id"] == "7"
    assert fields["email"] == "bob@example.com"


def test_subscriber_wins_over_user():
    obj = make(subscriber={"uid": "1"}, user={"uid": "2"})
    assert accept(obj).fields["user_id"] == "1"


def test_null_subscriber_falls_back_to_user():
    obj = make(user={"uid": "2"})
    obj["subscriber"] = None
    assert accept(obj).fields["user_id"] == "2"


def test_subscriber_with_only_uid_is_accepted():
    fields = accept(make(subscriber={"uid": "42"})).fields
    assert fields == {"user_id": "42"}


def test_subscriber_with_only_email_is_accepted():
    fields = accept(make(subscriber={"email": "ada@example.com"})).fields
    assert fields == {"email": "ada@example.com"}


def test_integer_uid_is_coerced_to_a_string():
    assert accept(make(subscriber={"uid": 42})).fields["user_id"] == "42"


def test_missing_subscriber_is_rejected():
    reason = reject(make(subscriber=None)).reason
    assert "subscriber" in reason


@pytest.mark.parametrize("value", ["ada@example.com", 42, ["42"], True])
def test_subscriber_that_is_not_an_object_is_rejected(value):
    assert "'subscriber' must be an object" in reject(make(subscriber=value)).reason


def test_user_that_is_not_an_object_is_rejected_naming_user():
    assert "'user' must be an object" in reject(make(subscriber=None, user="bob")).reason


@pytest.mark.parametrize(
    "subscriber",
    [{}, {"first_name": "Ada"}, {"uid": "", "email": ""}, {"uid": None, "email": None}],
)
def test_subscriber_without_uid_or_email_is_rejected(subscriber):
    reason = reject(make(subscriber=subscriber)).reason
    assert "'uid' or an 'email'" in reason


@pytest.mark.parametrize(
    "email",
    [
        "not-an-email",
        "ada@",
        "@example.com",
        "ada @example.com",
        "ada@example.com\n",
        "a" * 310 + "@example.com",
    ],
)
def test_bad_email_is_rejected(email):
    assert "email" in reject(make(subscriber={"uid": "42", "email": email})).reason


def test_bad_email_is_rejected_even_with_a_uid():
    assert isinstance(parse_event(make(subscriber={"uid": "1", "email": "x"}), 0, NOW), Rejected)


# --- message, link, list, bounce, properties -------------------------------------------------


def test_message_object_fields_are_normalized():
    message = {"id": "msg-77", "subject": "Hi", "campaign_id": "c-9", "campaign_name": "Receipts"}
    fields = accept(make(message=message)).fields
    assert fields["message_id"] == "msg-77"
    assert fields["subject"] == "Hi"
    assert fields["campaign_id"] == "c-9"
    assert fields["campaign_name"] == "Receipts"


@pytest.mark.parametrize(
    ("alias", "field"),
    [
        ("mail_id", "message_id"),
        ("message_id", "message_id"),
        ("subject", "subject"),
        ("campaign_id", "campaign_id"),
        ("campaign_name", "campaign_name"),
        ("url", "link_url"),
    ],
)
def test_top_level_alias_fills_the_field(alias, field):
    assert accept(make(**{alias: "value-1"})).fields[field] == "value-1"


@pytest.mark.parametrize(
    ("path", "alias", "field"),
    [
        ("message.id", "mail_id", "message_id"),
        ("message.id", "message_id", "message_id"),
        ("message.subject", "subject", "subject"),
        ("message.campaign_id", "campaign_id", "campaign_id"),
        ("message.campaign_name", "campaign_name", "campaign_name"),
        ("link.url", "url", "link_url"),
    ],
)
def test_nested_object_wins_over_the_top_level_alias(path, alias, field):
    obj = set_path(make(**{alias: "from-alias"}), path, "from-object")
    assert accept(obj).fields[field] == "from-object"


def test_alias_fills_a_field_the_nested_object_lacks():
    obj = make(message={"id": "msg-1"}, subject="Spring sale")
    fields = accept(obj).fields
    assert fields["message_id"] == "msg-1"
    assert fields["subject"] == "Spring sale"


def test_link_list_and_bounce_objects_are_normalized():
    obj = make(
        link={"id": "l-3", "url": "https://shop.example.com/sale"},
        list={"id": "news", "name": "Newsletter"},
        bounce={"type": "hard", "reason": "mailbox unavailable"},
        ip="203.0.113.9",
        user_agent="Mozilla/5.0",
    )
    fields = accept(obj).fields
    assert fields["link_id"] == "l-3"
    assert fields["link_url"] == "https://shop.example.com/sale"
    assert fields["list_id"] == "news"
    assert fields["list_name"] == "Newsletter"
    assert fields["bounce_type"] == "hard"
    assert fields["bounce_reason"] == "mailbox unavailable"
    assert fields["ip"] == "203.0.113.9"
    assert fields["user_agent"] == "Mozilla/5.0"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("message.id", "message_id"),
        ("message.campaign_id", "campaign_id"),
        ("link.id", "link_id"),
        ("list.id", "list_id"),
        ("mail_id", "message_id"),
        ("message_id", "message_id"),
        ("campaign_id", "campaign_id"),
    ],
)
def test_integer_ids_are_coerced_to_strings(path, field):
    assert accept(set_path(make(), path, 77)).fields[field] == "77"


def test_absent_optional_fields_are_left_out():
    fields = accept(make(message={}, link=None, ip="")).fields
    assert fields == {"user_id": "42", "email": "ada@example.com"}


def test_properties_are_kept_as_given():
    props = {"variant": "B", "n": 3, "nested": {"a": [1, 2]}}
    assert accept(make(properties=props)).fields["properties"] == props


def test_empty_properties_are_left_out():
    assert "properties" not in accept(make(properties={})).fields


@pytest.mark.parametrize("value", [["a"], "a", 3, True])
def test_properties_that_are_not_an_object_are_rejected(value):
    assert "'properties' must be an object" in reject(make(properties=value)).reason


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("subscriber.uid", {"id": 1}),
        ("subscriber.uid", 4.2),
        ("subscriber.uid", True),
        ("subscriber.email", 42),
        ("subscriber.first_name", ["Ada"]),
        ("subscriber.last_name", 7),
        ("subscriber.name", {"first": "Ada"}),
        ("message.id", 7.5),
        ("message.subject", {"text": "Hi"}),
        ("message.subject", 12),
        ("message.campaign_id", False),
        ("message.campaign_name", ["Receipts"]),
        ("link.id", [1]),
        ("link.url", {"href": "x"}),
        ("list.id", 1.0),
        ("list.name", 3),
        ("bounce.type", True),
        ("bounce.reason", ["full"]),
        ("mail_id", 1.5),
        ("message_id", {"id": "m"}),
        ("subject", 3),
        ("campaign_id", [1]),
        ("campaign_name", True),
        ("url", 80),
        ("ip", 2130706433),
        ("user_agent", ["Mozilla"]),
    ],
)
def test_field_of_the_wrong_type_is_rejected_naming_it(path, value):
    reason = reject(set_path(make(), path, value)).reason
    assert f"'{path}' must be a string" in reason


@pytest.mark.parametrize("key", ["message", "link", "list", "bounce"])
@pytest.mark.parametrize("value", ["text", ["a"], 3, True])
def test_nested_object_of_the_wrong_type_is_rejected(key, value):
    assert f"'{key}' must be an object" in reject(make(**{key: value})).reason


@pytest.mark.parametrize(
    "path",
    ["subscriber.first_name", "subscriber.email", "message.subject", "link.url", "ip", "subject"],
)
def test_nul_in_a_text_field_is_rejected(path):
    value = "ada@exa\x00mple.com" if path.endswith("email") else "a\x00b"
    assert "NUL" in reject(set_path(make(), path, value)).reason


@pytest.mark.parametrize("path", ["message.subject", "subscriber.first_name", "user_agent"])
def test_lone_surrogate_in_a_text_field_is_rejected(path):
    assert "lone surrogate" in reject(set_path(make(), path, "x\ud800y")).reason


def test_lone_surrogate_in_a_property_value_is_rejected():
    assert "lone surrogate" in reject(make(properties={"a": ["ok", "\udfff"]})).reason


def test_lone_surrogate_in_a_property_key_is_rejected():
    assert "lone surrogate" in reject(make(properties={"\ud83d": 1})).reason


def test_lone_surrogate_from_a_json_escape_is_rejected_and_payload_kept():
    raw = (
        b'{"event":"sent","timestamp":1795167000,"subscriber":{"uid":"1"},'
        b'"message":{"subject":"\\ud800"}}'
    )
    [result] = parse_body(raw, NOW)
    assert isinstance(result, Rejected)
    assert "lone surrogate" in result.reason
    assert json.loads(result.payload)["message"]["subject"] == "\ud800"


def test_valid_non_ascii_text_is_accepted():
    fields = accept(make(subscriber={"uid": "1", "first_name": "Zoë 🎉"})).fields
    assert fields["first_name"] == "Zoë 🎉"


# --- event ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["id", "event_id", "message_event_id"])
def test_id_and_its_aliases_become_the_dedup_key(key):
    assert accept(make(**{key: "ev-1001"})).dedup_key == "ev-1001"


def test_id_wins_over_event_id():
    assert accept(make(id="a", event_id="b", message_event_id="c")).dedup_key == "a"


def test_event_id_wins_over_message_event_id():
    assert accept(make(event_id="b", message_event_id="c")).dedup_key == "b"


@pytest.mark.parametrize("key", ["id", "event_id", "message_event_id"])
def test_integer_id_is_coerced_to_a_string(key):
    assert accept(make(**{key: 1001})).dedup_key == "1001"


def test_integer_and_string_id_give_the_same_dedup_key():
    assert accept(make(id=1001)).dedup_key == accept(make(id="1001")).dedup_key


@pytest.mark.parametrize("key", ["id", "event_id", "message_event_id"])
@pytest.mark.parametrize("value", [1.5, 1001.0, True, ["x"], {"id": "x"}])
def test_id_of_the_wrong_type_is_rejected(key, value):
    assert f"'{key}' must be a string or integer" in reject(make(**{key: value})).reason


def test_id_of_255_characters_is_accepted():
    assert accept(make(id="x" * 255)).dedup_key == "x" * 255


@pytest.mark.parametrize("key", ["id", "event_id", "message_event_id"])
def test_id_longer_than_255_characters_is_rejected(key):
    assert "longer than 255" in reject(make(**{key: "x" * 256})).reason


def test_nul_in_id_is_rejected():
    assert "NUL" in reject(make(id="ev\x001")).reason


def test_empty_id_falls_back_to_the_hash():
    result = accept(make(id=""))
    assert result.dedup_key == fallback_key(result.event_type, result.event_time, result.fields)


# --- fallback dedup key ---------------------------------------------------------------------


def key_of(obj: dict[str, Any]) -> str:
    return accept(obj).dedup_key


BASE = make(
    event="click",
    timestamp=T0_S,
    message={"id": "msg-1"},
    link={"url": "https://example.com/a"},
)


def test_event_without_id_gets_the_fallback_key():
    result = accept(BASE)
    assert result.dedup_key == fallback_key(result.event_type, result.event_time, result.fields)


def test_fallback_key_is_stable_for_the_same_event():
    assert key_of(BASE) == key_of(copy.deepcopy(BASE))


def test_fallback_key_is_stable_across_calls_of_fallback_key():
    fields = {"email": "a@example.com", "message_id": "m"}
    assert fallback_key("email_sent", T0, fields) == fallback_key("email_sent", T0, dict(fields))


def test_fallback_key_is_not_the_explicit_id_of_another_event():
    assert key_of(BASE) != key_of(make(id="ev-1"))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("event", "open"),
        ("subscriber", {"uid": "42", "email": "other@example.com"}),
        ("message.id", "msg-2"),
        ("timestamp", T0_S + 1),
        ("timestamp", T0_MS + 1),
        ("link.url", "https://example.com/b"),
    ],
)
def test_fallback_key_differs_when_an_identifying_part_differs(path, value):
    assert key_of(set_path(BASE, path, value)) != key_of(BASE)


def test_fallback_key_differs_for_different_uids_without_email():
    one = set_path(BASE, "subscriber", {"uid": "1"})
    two = set_path(BASE, "subscriber", {"uid": "2"})
    assert key_of(one) != key_of(two)


def test_fallback_key_differs_when_link_url_is_absent():
    assert key_of(set_path(BASE, "link", {})) != key_of(BASE)


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-20T09:30:00Z",
        "2026-11-20T11:30:00+02:00",
        T0_MS,
        str(T0_S),
        float(T0_S),
    ],
)
def test_fallback_key_is_the_same_for_every_form_of_the_same_instant(stamp):
    assert key_of(set_path(BASE, "timestamp", stamp)) == key_of(BASE)


def test_fallback_key_is_the_same_for_milliseconds_and_iso_with_milliseconds():
    iso = set_path(BASE, "timestamp", "2026-11-20T09:30:00.123Z")
    ms = set_path(BASE, "timestamp", T0_MS + 123)
    assert key_of(iso) == key_of(ms)


def test_fallback_key_is_the_same_for_an_event_alias_and_its_canonical_name():
    assert key_of(set_path(BASE, "event", "EMAIL_CLICKED")) == key_of(BASE)


def test_fallback_key_is_the_same_for_mail_id_and_message_id_object():
    via_alias = make(event="click", timestamp=T0_S, mail_id="msg-1", url="https://example.com/a")
    assert key_of(via_alias) == key_of(BASE)


def test_fallback_key_ignores_fields_that_do_not_identify_the_event():
    other = set_path(set_path(BASE, "ip", "203.0.113.9"), "message.subject", "Hello")
    assert key_of(other) == key_of(BASE)


# --- body shapes ----------------------------------------------------------------------------


def test_body_with_one_event_object_gives_one_result():
    [result] = parse_body(body(make()), NOW)
    assert isinstance(result, Accepted)
    assert result.index == 0


def test_body_with_an_array_gives_one_result_per_event():
    results = parse_body(body([make(id="a"), make(id="b"), make(id="c")]), NOW)
    assert [r.dedup_key for r in results] == ["a", "b", "c"]
    assert [r.index for r in results] == [0, 1, 2]


def test_body_with_an_events_wrapper_gives_one_result_per_event():
    results = parse_body(body({"events": [make(id="a"), make(id="b")]}), NOW)
    assert [r.dedup_key for r in results] == ["a", "b"]


def test_object_with_both_event_and_events_is_one_event():
    [result] = parse_body(body(make(id="a", events=[1, 2])), NOW)
    assert isinstance(result, Accepted)
    assert result.dedup_key == "a"


@pytest.mark.parametrize("events", ["x", {"event": "sent"}, 5, None])
def test_events_wrapper_that_is_not_an_array_is_a_body_error(events):
    with pytest.raises(BodyError, match="'events' must be an array"):
        parse_body(body({"events": events}), NOW)


@pytest.mark.parametrize("raw", [b"42", b'"hello"', b"true", b"null", b"1.5"])
def test_scalar_body_is_a_body_error(raw):
    with pytest.raises(BodyError, match="must be an event object"):
        parse_body(raw, NOW)


@pytest.mark.parametrize("raw", [b"[]", b'{"events": []}', b" [ ] "])
def test_body_without_events_is_a_body_error(raw):
    with pytest.raises(BodyError, match="no events"):
        parse_body(raw, NOW)


@pytest.mark.parametrize("raw", [b"", b"   ", b"\n\t\r\n"])
def test_empty_body_is_a_body_error(raw):
    with pytest.raises(BodyError, match="empty"):
        parse_body(raw, NOW)


@pytest.mark.parametrize("raw", [b'{"event": "sent\xff"}', b"\xfe\xff", b'["caf\xc3"]'])
def test_invalid_utf8_is_a_body_error(raw):
    with pytest.raises(BodyError, match="UTF-8"):
        parse_body(raw, NOW)


@pytest.mark.parametrize("raw", [b"{", b"[1,]", b"{'event': 'sent'}", b"event=sent", b"[] []"])
def test_malformed_json_is_a_body_error(raw):
    with pytest.raises(BodyError, match="not valid JSON"):
        parse_body(raw, NOW)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_a_body_error(constant):
    raw = b'{"event":"sent","timestamp":' + constant + b',"subscriber":{"uid":"1"}}'
    with pytest.raises(BodyError):
        parse_body(raw, NOW)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"event":"sent","properties":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    ],
)
def test_deep_nesting_is_a_body_error_not_a_recursion_error(raw):
    with pytest.raises(BodyError, match="nested too deeply"):
        parse_body(raw, NOW)


def test_integer_literal_over_the_digit_limit_is_a_body_error():
    raw = b'{"event":"sent","timestamp":' + b"1" * 5000 + b',"subscriber":{"uid":"1"}}'
    with pytest.raises(BodyError):
        parse_body(raw, NOW)


def test_event_with_a_timestamp_too_large_for_a_float_is_rejected_not_raised():
    raw = b'[{"event":"sent","timestamp":1' + b"0" * 400 + b',"subscriber":{"uid":"1"}}]'
    [result] = parse_body(raw, NOW)
    assert isinstance(result, Rejected)


def test_mixed_valid_and_invalid_events_keep_their_indexes():
    events = [make(id="a"), {"event": "sent"}, "not an object", make(id="d"), make(event="nope")]
    results = parse_body(body(events), NOW)
    assert [type(r) for r in results] == [Accepted, Rejected, Rejected, Accepted, Rejected]
    assert [r.index for r in results] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("value", ["x", 5, None, ["sent"], True])
def test_event_that_is_not_an_object_is_rejected(value):
    assert "must be a JSON object" in reject(value).reason


def test_parse_event_records_the_index_it_is_given():
    assert parse_event(make(), 7, NOW).index == 7
    assert parse_event({}, 9, NOW).index == 9


@pytest.mark.parametrize(
    "obj",
    [
        {"event": "nope", "timestamp": "x", "extra": [1, {"a": None}]},
        "not an object",
        42,
        None,
        make(subscriber={"uid": "1", "email": "bad"}, properties={"ü": "ç"}),
    ],
)
def test_rejected_payload_keeps_what_was_received(obj):
    result = reject(obj)
    assert json.loads(result.payload) == obj


def test_rejected_payload_is_ascii_json():
    result = reject(make(event="nope", subject="héllo"))
    assert result.payload.isascii()
    assert json.loads(result.payload)["subject"] == "héllo"


def test_accepted_payload_keeps_what_was_received():
    obj = make(id="a", properties={"variant": "B"}, unknown_key=[1, 2])
    assert json.loads(accept(obj).payload) == obj


def test_accepted_fields_do_not_include_unknown_keys():
    assert "unknown_key" not in accept(make(unknown_key="x")).fields


# --- the worked example in examples.md ------------------------------------------------------

EXAMPLE_BODY = b"""
[
  {"id": "ev-1001", "event": "email_delivered", "timestamp": "2026-11-20T09:30:00Z",
   "subscriber": {"uid": "42", "email": "ada@example.com", "first_name": "Ada"},
   "message": {"id": "msg-77", "subject": "Your receipt", "campaign_id": "c-9",
               "campaign_name": "Receipts"}},
  {"id": "ev-1002", "event": "click", "timestamp": 1795167060,
   "user": {"email": "bob@example.com"},
   "mail_id": "msg-78", "subject": "Spring sale",
   "link": {"id": "l-3", "url": "https://shop.example.com/sale"},
   "ip": "203.0.113.9", "user_agent": "Mozilla/5.0",
   "properties": {"variant": "B", "campaign_id": "ignored"}},
  {"event": "unsubscribed", "timestamp": 1795167120000,
   "subscriber": {"uid": "42", "email": "ada@example.com"},
   "message": {"id": "msg-77"}, "list": {"id": "news", "name": "Newsletter"}}
]
"""


@pytest.fixture
def example() -> list[Accepted | Rejected]:
    return parse_body(EXAMPLE_BODY, NOW)


def test_worked_example_accepts_all_three_events(example):
    assert [type(r) for r in example] == [Accepted, Accepted, Accepted]
    assert [r.index for r in example] == [0, 1, 2]


def test_worked_example_event_types(example):
    assert [r.event_type for r in example] == [
        "email_delivered",
        "email_clicked",
        "email_unsubscribed",
    ]


def test_worked_example_event_times_are_utc(example):
    assert [r.event_time for r in example] == [
        datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
        datetime(2026, 11, 20, 9, 31, tzinfo=UTC),
        datetime(2026, 11, 20, 9, 32, tzinfo=UTC),
    ]


def test_worked_example_dedup_keys(example):
    first, second, third = example
    assert first.dedup_key == "ev-1001"
    assert second.dedup_key == "ev-1002"
    assert third.dedup_key == fallback_key(third.event_type, third.event_time, third.fields)
    assert third.dedup_key not in ("ev-1001", "ev-1002")


def test_worked_example_dedup_keys_are_the_same_when_posted_again(example):
    again = parse_body(EXAMPLE_BODY, NOW + timedelta(hours=1))
    assert [r.dedup_key for r in again] == [r.dedup_key for r in example]


def test_worked_example_first_event_fields(example):
    assert example[0].fields == {
        "user_id": "42",
        "email": "ada@example.com",
        "first_name": "Ada",
        "message_id": "msg-77",
        "subject": "Your receipt",
        "campaign_id": "c-9",
        "campaign_name": "Receipts",
    }


def test_worked_example_second_event_fields(example):
    assert example[1].fields == {
        "email": "bob@example.com",
        "message_id": "msg-78",
        "subject": "Spring sale",
        "link_id": "l-3",
        "link_url": "https://shop.example.com/sale",
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0",
        "properties": {"variant": "B", "campaign_id": "ignored"},
    }


def test_worked_example_third_event_fields(example):
    assert example[2].fields == {
        "user_id": "42",
        "email": "ada@example.com",
        "message_id": "msg-77",
        "list_id": "news",
        "list_name": "Newsletter",
    }


def test_worked_example_payloads_keep_each_event_as_received(example):
    originals = json.loads(EXAMPLE_BODY)
    assert [json.loads(r.payload) for r in example] == originals


def test_fallback_key_ignores_the_case_of_the_email_address():
    upper = set_path(BASE, "subscriber", {"uid": "42", "email": "ADA@Example.COM"})
    assert key_of(upper) == key_of(BASE)
