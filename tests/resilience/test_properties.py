"""Property tests of the pure edges: parsing Nudgespot input and mapping it to Segment.

Generated events are "valid-ish" (every known field, each drawn either from plausible values
or from arbitrary JSON values) so that both the accepting and the rejecting paths are reached.
Strings may hold NUL characters and lone surrogates, since JSON escapes can produce both.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from inbound.aliases import EVENT_ALIASES, EVENT_TYPES
from inbound.parse import (
    MAX_ID_CHARS,
    Accepted,
    BodyError,
    Rejected,
    dump,
    parse_body,
    parse_event,
)
from outbound import mapping
from outbound.packing import MAX_MSG_SIZE, encoded_size
from tests.fake_segment import message_problem

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
VERSION = "0.1.0"
SEGMENT_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
MAPPED_PROPERTIES = {
    "email_id", "email_subject", "campaign_id", "campaign_name", "link_id", "link_url",
    "list_id", "list_name", "bounce_type", "bounce_reason",
}

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies ---------------------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=40)  # NUL, surrogates too
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# What json.loads can hand the parser: no NaN (the literal is refused), but 1e400 is inf.
json_scalars = st.none() | st.booleans() | st.integers() | finite_floats | any_text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(any_text, json_values, max_size=5)


def either(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly plausible values, sometimes any JSON value."""
    return st.one_of(plausible, plausible, json_values)


ids = st.one_of(st.text(min_size=1, max_size=30), st.integers(-(10**20), 10**20))
plain_text = st.text(max_size=30)
event_names = st.builds(
    lambda name, style: style(name),
    st.sampled_from(sorted(EVENT_ALIASES)),
    st.sampled_from([str, str.upper, str.title, lambda s: f"  {s}\t"]),
)
offsets = st.builds(
    timezone, st.timedeltas(min_value=-timedelta(hours=23, minutes=59),
                            max_value=timedelta(hours=23, minutes=59))
)
instants = st.datetimes(
    min_value=datetime(1999, 12, 1), max_value=datetime(2026, 6, 3), timezones=offsets
)
unix_seconds = st.integers(900_000_000, 1_790_000_000)
timestamps = st.one_of(
    instants.map(lambda d: d.isoformat()),
    instants.map(lambda d: d.isoformat().replace("+00:00", "Z")),
    unix_seconds,
    unix_seconds.map(lambda s: s * 1000 + 123),
    st.floats(900_000_000, 1_790_000_000),
    unix_seconds.map(str),
    st.integers(-(10**30), 10**30),
    st.floats(),
    st.text(max_size=30),
)
emails = st.one_of(
    st.emails().map(str),
    st.builds(lambda a, b: f"{a}@{b}", plain_text, plain_text),
)
subscribers = st.fixed_dictionaries({}, optional={
    "uid": either(ids),
    "email": either(emails),
    "first_name": either(plain_text),
    "last_name": either(plain_text),
    "name": either(plain_text),
})


def nested_object(*keys: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: either(ids) for k in keys})


events = st.fixed_dictionaries(
    {"event": either(event_names), "timestamp": either(timestamps)},
    optional={
        "id": either(ids),
        "event_id": either(ids),
        "message_event_id": either(ids),
        "subscriber": either(subscribers),
        "user": either(subscribers),
        "message": either(nested_object("id", "subject", "campaign_id", "campaign_name")),
        "mail_id": either(ids),
        "message_id": either(ids),
        "subject": either(plain_text),
        "campaign_id": either(ids),
        "campaign_name": either(plain_text),
        "link": either(nested_object("id", "url")),
        "url": either(plain_text),
        "list": either(nested_object("id", "name")),
        "bounce": either(st.fixed_dictionaries({}, optional={
            "type": st.sampled_from(["hard", "soft"]), "reason": plain_text})),
        "ip": either(st.ip_addresses().map(str)),
        "user_agent": either(plain_text),
        "properties": either(json_objects),
    },
)
candidates = st.one_of(events, events, json_values)
sources = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
dedup_keys = st.text(min_size=1, max_size=MAX_ID_CHARS).filter(lambda k: "\x00" not in k)

# Plausible events, mostly accepted: every field of the right type, hostile text inside.
clean_text = st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=40)
clean_ids = st.one_of(clean_text, st.integers(-(10**20), 10**20))
property_text = st.text(max_size=40)  # NUL allowed in custom properties
property_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite_floats | property_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(property_text, inner, max_size=4),
    max_leaves=12,
)
in_range = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2026, 5, 31), timezones=offsets
)
in_range_seconds = st.integers(946_771_200, 1_780_000_000)
in_range_timestamps = st.one_of(
    in_range.map(lambda d: d.isoformat()),
    in_range.map(lambda d: d.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")),
    in_range_seconds,
    in_range_seconds.map(lambda s: s * 1000 + 999),
    st.floats(946_771_200, 1_780_000_000),
    in_range_seconds.map(str),
)
identities = st.one_of(
    st.fixed_dictionaries({"uid": clean_ids}),
    st.fixed_dictionaries({"email": st.emails()}),
    st.fixed_dictionaries({"uid": clean_ids, "email": st.emails()}),
)
plausible_events = st.builds(
    lambda base, who, names, extra: {**base, "subscriber": {**who, **names}, **extra},
    st.fixed_dictionaries({"event": event_names, "timestamp": in_range_timestamps}),
    identities,
    st.fixed_dictionaries({}, optional={k: clean_text for k in ("first_name", "last_name",
                                                                 "name")}),
    st.fixed_dictionaries({}, optional={
        "id": clean_ids,
        "message": st.fixed_dictionaries({}, optional={
            "id": clean_ids, "subject": clean_text, "campaign_id": clean_ids,
            "campaign_name": clean_text}),
        "mail_id": clean_ids,
        "subject": clean_text,
        "link": st.fixed_dictionaries({}, optional={"id": clean_ids, "url": clean_text}),
        "url": clean_text,
        "list": st.fixed_dictionaries({}, optional={"id": clean_ids, "name": clean_text}),
        "bounce": st.fixed_dictionaries({}, optional={
            "type": st.sampled_from(["hard", "soft"]), "reason": clean_text}),
        "ip": st.ip_addresses().map(str),
        "user_agent": clean_text,
        "properties": st.dictionaries(property_text, property_values, max_size=5),
    }),
)


def accepted_events() -> st.SearchStrategy[Accepted]:
    """Accepted results of parse_event on plausible events (almost all are accepted)."""
    return plausible_events.map(lambda e: parse_event(e, 0, NOW)).filter(
        lambda r: isinstance(r, Accepted)
    )


# --- checks -------------------------------------------------------------------------------------


def nones(value: Any, path: str = "$") -> list[str]:
    """Paths of every None inside a JSON-like value."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nones(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nones(v, f"{path}[{i}]")]
    return []


def has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(has_non_finite(v) for v in value)
    return False


def check_segment_message(message: dict[str, Any], custom: dict[str, Any]) -> None:
    """What every message the service sends must satisfy."""
    if encoded_size(message) <= MAX_MSG_SIZE:  # larger ones go dead before sending
        assert message_problem(message) is None, message_problem(message)
    own = {**message, "properties": {
        k: v for k, v in message.get("properties", {}).items() if k not in custom
    }}
    assert nones(own) == [], nones(own)
    assert SEGMENT_TS.match(message["timestamp"]), message["timestamp"]
    json.dumps(message, allow_nan=False)
    assert len(message["messageId"]) <= 100
    assert message["integrations"] == {"Nudgespot": False}


# --- parse_event --------------------------------------------------------------------------------


@BOUNDED
@given(candidate=candidates, index=st.integers(0, 10_000))
def test_parse_event_never_raises(candidate: Any, index: int) -> None:
    result = parse_event(candidate, index, NOW)

    assert isinstance(result, Accepted | Rejected)
    assert result.index == index
    json.loads(result.payload)  # what is stored is always JSON...
    result.payload.encode("utf-8")  # ...and storable as text in either database
    assert "\x00" not in result.payload
    if isinstance(result, Rejected):
        assert result.reason
        result.reason.encode("utf-8")  # storable as text in either database
        assert "\x00" not in result.reason


@BOUNDED
@given(accepted=accepted_events())
def test_accepted_event_is_normalized(accepted: Accepted) -> None:
    assert accepted.event_type in EVENT_TYPES
    assert 0 < len(accepted.dedup_key) <= MAX_ID_CHARS
    assert accepted.event_time.utcoffset() == timedelta(0)
    assert datetime(2000, 1, 1, tzinfo=timezone.utc) <= accepted.event_time
    assert accepted.event_time <= NOW + timedelta(days=1)
    assert accepted.fields.get("user_id") or accepted.fields.get("email")
    for name, value in accepted.fields.items():
        if name != "properties":
            assert isinstance(value, str) and value and "\x00" not in value, (name, value)
            value.encode("utf-8")


@BOUNDED
@given(accepted=accepted_events())
def test_accepted_fields_survive_storage_unchanged(accepted: Accepted) -> None:
    stored = json.loads(dump(accepted.fields))

    assert stored == accepted.fields
    assert json.loads(accepted.payload) is not None


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_accepted_fields_with_an_infinite_property_survive_storage(value: float) -> None:
    event = {"id": "e", "event": "open", "timestamp": 1_700_000_000,
             "subscriber": {"uid": "1"}, "properties": {"score": value}}
    result = parse_event(event, 0, NOW)

    if isinstance(result, Accepted):
        assert isinstance(json.loads(dump(result.fields)), dict)


# --- mapping -----------------------------------------------------------------------------------


@BOUNDED
@given(accepted=accepted_events(), source=sources)
def test_accepted_event_maps_to_a_track_segment_accepts(accepted: Accepted, source: str) -> None:
    custom = accepted.fields.get("properties", {})
    message = mapping.track(source, accepted.dedup_key, accepted.event_type,
                            accepted.event_time, accepted.fields, VERSION)

    check_segment_message(message, custom)
    assert message["event"] == mapping.SEGMENT_EVENT_NAMES[accepted.event_type]
    assert message.get("userId") == accepted.fields.get("user_id") or (
        message.get("anonymousId") == accepted.fields["email"]
    )
    for key in set(custom) - MAPPED_PROPERTIES:
        assert message["properties"][key] == custom[key]  # custom properties pass through


@BOUNDED
@given(accepted=accepted_events(), source=sources)
def test_accepted_event_maps_to_an_identify_segment_accepts(
    accepted: Accepted, source: str
) -> None:
    message = mapping.identify(source, accepted.event_time, accepted.fields, VERSION)

    check_segment_message(message, {})
    assert set(message["traits"]) <= {"email", "first_name", "last_name", "name"}


@BOUNDED
@given(accepted=accepted_events(), source=sources)
def test_mapping_from_stored_fields_equals_mapping_from_parsed_fields(
    accepted: Accepted, source: str
) -> None:
    stored = json.loads(dump(accepted.fields))
    args = (source, accepted.dedup_key, accepted.event_type, accepted.event_time)

    assert mapping.track(*args, stored, VERSION) == mapping.track(*args, accepted.fields, VERSION)


@BOUNDED
@given(instant=instants)
def test_segment_timestamp_is_the_same_instant_in_utc(instant: datetime) -> None:
    text = mapping.segment_timestamp(instant)

    assert SEGMENT_TS.match(text)
    utc = instant.astimezone(timezone.utc)
    back = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert back == utc.replace(microsecond=utc.microsecond // 1000 * 1000)


# --- messageId ----------------------------------------------------------------------------------


@BOUNDED
@given(source=sources, key=dedup_keys, first=accepted_events(), second=accepted_events())
def test_message_id_depends_only_on_source_and_dedup_key(
    source: str, key: str, first: Accepted, second: Accepted
) -> None:
    one = mapping.track(source, key, first.event_type, first.event_time, first.fields, VERSION)
    two = mapping.track(source, key, second.event_type, second.event_time, second.fields, "9.9")

    assert one["messageId"] == two["messageId"] == mapping.message_id(source, key)


@BOUNDED
@given(source=sources, key=dedup_keys, other=dedup_keys, accepted=accepted_events())
def test_different_dedup_keys_give_different_message_ids(
    source: str, key: str, other: str, accepted: Accepted
) -> None:
    assume(key != other)
    args = (accepted.event_type, accepted.event_time, accepted.fields, VERSION)

    assert mapping.track(source, key, *args)["messageId"] != (
        mapping.track(source, other, *args)["messageId"]
    )


@BOUNDED
@given(source=sources, other=sources, key=dedup_keys)
def test_different_sources_give_different_message_ids(source: str, other: str, key: str) -> None:
    assume(source != other)

    assert mapping.message_id(source, key) != mapping.message_id(other, key)


@BOUNDED
@given(source=st.text(max_size=200), key=st.text(max_size=2000))
@example(source="s", key="k" * 100_000)
def test_message_id_is_at_most_100_characters(source: str, key: str) -> None:
    assert 0 < len(mapping.message_id(source, key)) <= 100
    assert 0 < len(mapping.message_id(source, key, kind="identify")) <= 100


@BOUNDED
@given(accepted=accepted_events(), source=sources)
def test_track_and_identify_never_share_a_message_id(accepted: Accepted, source: str) -> None:
    track = mapping.track(source, accepted.dedup_key, accepted.event_type,
                          accepted.event_time, accepted.fields, VERSION)
    identify = mapping.identify(source, accepted.event_time, accepted.fields, VERSION)

    assert track["messageId"] != identify["messageId"]


# --- parse_body ---------------------------------------------------------------------------------


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


bodies = st.one_of(
    st.binary(max_size=300),
    st.lists(candidates, max_size=4).map(json_bytes),
    candidates.map(json_bytes),
    st.lists(candidates, max_size=4).map(lambda evs: json_bytes({"events": evs})),
    # JSON with some bytes spliced in: invalid UTF-8, NULs, stray punctuation
    st.tuples(events.map(json_bytes), st.binary(min_size=1, max_size=4), st.integers(0, 400))
    .map(lambda t: t[0][: t[2]] + t[1] + t[0][t[2]:]),
    st.integers(0, 20_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(0, 20_000).map(lambda n: b'{"events":' + b"[" * n + b"]" * n + b"}"),
    st.sampled_from(
        [b"NaN", b"[Infinity]", b"-Infinity", b"1e400", b"9" * 5000, b"\xef\xbb\xbf{}"]
    ),
)


@BOUNDED
@given(body=bodies)
def test_parse_body_raises_nothing_but_body_error(body: bytes) -> None:
    try:
        results = parse_body(body, NOW)
    except BodyError as exc:
        assert str(exc)
        return
    assert results
    assert [r.index for r in results] == list(range(len(results)))
    assert all(isinstance(r, Accepted | Rejected) for r in results)
    for r in results:  # each payload is storable text in either database
        r.payload.encode("utf-8")
        assert "\x00" not in r.payload


@BOUNDED
@given(evs=st.lists(candidates, min_size=1, max_size=4))
def test_parse_body_of_an_array_agrees_with_parse_event(evs: list[Any]) -> None:
    assume(not has_non_finite(evs))
    body = json_bytes(evs)

    results = parse_body(body, NOW)

    decoded = json.loads(body)
    singles = [parse_event(e, i, NOW) for i, e in enumerate(decoded)]
    assert [without_payload(r) for r in results] == [without_payload(r) for r in singles]
    assert [json.loads(r.payload) for r in results] == decoded  # each element as received


def without_payload(result: Accepted | Rejected) -> tuple[Any, ...]:
    if isinstance(result, Rejected):
        return ("rejected", result.index, result.reason)
    return ("accepted", result.index, result.event_type, result.dedup_key, result.event_time,
            result.fields)
