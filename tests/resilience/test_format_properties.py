"""Property tests of sender formats: the format engine on generated formats and bodies.

- `nudgespot.yaml`, compiled by the engine, reads valid Nudgespot events exactly as the native
  parser does (so `extends: nudgespot` starts from the real contract).
- Any custom format, on any body: parse raises nothing but BodyError, returns one result per
  event in order, and every accepted event maps to a track message Segment takes.
- An expression that fails at run time on one event rejects that event only.

Strategies for valid Nudgespot events come from test_properties.py, which these extend.
"""

from __future__ import annotations

import fnmatch
import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from inbound.formats import builtin_definition, builtin_format, resolve_formats
from inbound.formats.engine import compile_definition
from inbound.parse import MAX_ID_CHARS, Accepted, BodyError, Ignored, Rejected, parse_event
from outbound import mapping
from tests.fake_segment import MAX_MESSAGE_BYTES, message_problem
from tests.resilience.test_properties import (
    BOUNDED,
    NOW,
    SEGMENT_TS,
    VERSION,
    clean_ids,
    clean_text,
    either,
    in_range_timestamps,
    json_values,
    plausible_events,
    property_text,
    property_values,
)

SPEC_NAMES = (
    "Email Sent", "Email Delivered", "Email Opened", "Email Link Clicked", "Email Bounced",
    "Email Unsubscribed", "Email Marked as Spam",
)

# --- nudgespot.yaml and the native parser ---------------------------------------------------

NATIVE = builtin_format("nudgespot")
AS_DATA = compile_definition("nudgespot", builtin_definition("nudgespot"), "x")


def natively_valid(event: dict[str, Any]) -> bool:
    return isinstance(parse_event(event, 0, NOW), Accepted)


def renamed(event: dict[str, Any], id_key: str, person_key: str) -> dict[str, Any]:
    """The event with its id under another of the id keys and its person as `user` maybe."""
    keys = {"id": id_key, "subscriber": person_key}
    return {keys.get(key, key): value for key, value in event.items()}


valid_events = st.builds(
    renamed,
    plausible_events,
    st.sampled_from(("id", "event_id", "message_event_id")),
    st.sampled_from(("subscriber", "user")),
).filter(natively_valid)
nudgespot_bodies = st.one_of(
    valid_events,
    st.lists(valid_events, min_size=1, max_size=4),
    st.lists(valid_events, min_size=1, max_size=4).map(lambda evs: {"events": evs}),
)


def essence(result: Any) -> tuple[Any, ...]:
    if isinstance(result, Accepted):
        return ("accepted", result.index, result.event_type, result.dedup_key,
                result.event_time, result.fields)
    return (type(result).__name__, result.index)


@BOUNDED
@given(body=nudgespot_bodies)
@example(body={"event": "OPEN", "timestamp": 1_700_000_000, "subscriber": {"uid": 0}})
@example(body={"events": [{"event": " clicked\t", "timestamp": "2024-02-29T23:59:59.5-05:00",
                           "subscriber": {"email": "a@b.c"}, "message": {},
                           "mail_id": 7, "url": "https://x.example/"}]})
def test_nudgespot_yaml_reads_valid_events_like_the_native_parser(body: Any) -> None:
    raw = json.dumps(body).encode()

    native = NATIVE.parse(raw, NOW)
    as_data = AS_DATA.parse(raw, NOW)

    assert all(isinstance(r, Accepted) for r in native)
    assert [essence(r) for r in as_data] == [essence(r) for r in native]


def test_nudgespot_yaml_keeps_null_properties_like_the_native_parser() -> None:
    event = {"id": "e-1", "event": "open", "timestamp": 1_700_000_000,
             "subscriber": {"uid": "7"}, "properties": {"variant": None, "plan": "pro"}}
    raw = json.dumps(event).encode()

    (native,) = NATIVE.parse(raw, NOW)
    (as_data,) = AS_DATA.parse(raw, NOW)

    assert native.fields["properties"] == {"variant": None, "plan": "pro"}
    assert as_data.fields == native.fields


# --- generated custom formats --------------------------------------------------------------

# Sender event names the generated events carry and the generated formats list.
SENDER_NAMES = ("opened", "OPENED", " clicked ", "sent", "queued", "x.ping", "bounce", "Spam", "7")
# Paths that exist in the generated events, or not, or hold the wrong type.
PATHS = (
    "kind", "at", "to", "to.address", "to.id", "uid", "mid", "tags", "tags[0]", "meta",
    "meta.a", "info", "info.x", "missing", "nested.deep.x", "`null`", "''", "join(',', tags)",
    "to_string(at)", "length(tags)", "kind || mid", "to.address || uid", "@", "`7`",
)
# Paths that give text or nothing on shaped events.
TEXT_PATHS = ("missing", "to.address", "kind", "`null`", "''", "tags[0]", "join(',', tags || `[]`)")
PROPERTY_PATHS = ("meta", "info", "to", "{t: tags, k: kind, m: missing}", "`null`", "missing",
                  "{n: `null`, a: meta.a}")
OPTIONAL_FIELDS = (
    "id", "first_name", "last_name", "name", "message_id", "subject", "campaign_id",
    "campaign_name", "link_id", "link_url", "list_id", "list_name", "bounce_type",
    "bounce_reason", "ip", "user_agent",
)
PATTERNS = ("queued", "x.*", "*", "[sq]*", "?pened", "clicked", "BOUNCE")

sender_names = st.sampled_from(SENDER_NAMES)
emails = st.one_of(st.emails().map(str), st.builds(lambda a: f"{a}@example.com", clean_text))
tag_text = st.text(st.characters(codec="ascii", exclude_characters="\x00"), max_size=8)


def shaped_events(kinds: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Events shaped as the generated formats expect, with hostile text inside."""
    return st.fixed_dictionaries(
        {"kind": kinds, "at": in_range_timestamps,
         "to": st.fixed_dictionaries({"address": emails}, optional={"id": clean_ids})},
        optional={
            "uid": clean_ids,
            "mid": clean_ids,
            "tags": st.lists(tag_text, max_size=3),
            "meta": st.dictionaries(property_text, property_values, max_size=4),
            "info": json_values,
        },
    )


# Events with any key missing or of any type.
loose_events = st.fixed_dictionaries({}, optional={
    "kind": either(sender_names),
    "at": either(in_range_timestamps),
    "to": either(st.fixed_dictionaries({}, optional={"address": either(emails),
                                                     "id": either(clean_ids)})),
    "uid": either(clean_ids),
    "mid": either(clean_ids),
    "tags": either(st.lists(st.text(max_size=10), max_size=3)),
    "meta": either(st.dictionaries(property_text, property_values, max_size=4)),
    "info": json_values,
})


def any_candidates(kinds: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Mostly shaped events, some loose ones, some JSON values that are no event at all."""
    shaped = shaped_events(kinds)
    return st.one_of(shaped, shaped, shaped, loose_events, json_values)

def mostly(usual: str, others: tuple[str, ...] = PATHS) -> st.SearchStrategy[str]:
    """`usual` four times in five, else one of `others`."""
    return st.sampled_from((usual,) * (4 * len(others)) + others)


@st.composite
def definitions(draw: st.DrawFn) -> dict[str, Any]:
    """A valid format definition: required fields mostly from the usual paths, others from
    paths that exist or not, or hold the wrong type."""
    fields: dict[str, str] = {"event": draw(mostly("kind")), "timestamp": draw(mostly("at"))}
    who = draw(st.sampled_from(("email", "user_id", "both")))
    if who in ("email", "both"):
        fields["email"] = draw(mostly("to.address"))
    if who in ("user_id", "both"):
        fields["user_id"] = draw(mostly("to.id || uid"))
    for name in draw(st.lists(st.sampled_from(OPTIONAL_FIELDS), max_size=5, unique=True)):
        fields[name] = draw(st.sampled_from(TEXT_PATHS * 6 + PATHS))
    if draw(st.booleans()):
        fields["properties"] = draw(st.sampled_from(PROPERTY_PATHS))
    definition: dict[str, Any] = {
        "fields": fields,
        "event_names": draw(st.dictionaries(
            sender_names, st.sampled_from((*SPEC_NAMES, "Parcel Queued", "Thing")),
            min_size=2, max_size=7)),
    }
    if draw(st.booleans()):
        definition["ignore"] = draw(st.lists(st.sampled_from(PATTERNS), max_size=3))
    unit = draw(st.sampled_from((None, "auto", "auto", "s", "ms")))
    if unit is not None:
        definition["timestamp_unit"] = unit
    return definition


# (events expression, how a list of events is wrapped into a body)
SHAPES = (
    (None, lambda evs: evs),
    ("items", lambda evs: {"items": evs}),
    ("data.items", lambda evs: {"data": {"items": evs}}),
    ("@", lambda evs: evs),
    ("reverse(items)", lambda evs: {"items": evs[::-1]}),  # fails at run time on other bodies
)


@st.composite
def formats_and_bodies(
    draw: st.DrawFn, candidates: Any = any_candidates
) -> tuple[dict[str, Any], list[Any], bytes]:
    """A definition, the events a body carries (as the format will find them), and the body.

    Event names are drawn among the format's own names half of the time, so that many events
    map; `candidates(kinds)` gives the event strategy.
    """
    definition = draw(definitions())
    events_expression, wrap = draw(st.sampled_from(SHAPES))
    if events_expression is not None:
        definition["events"] = events_expression
    own = st.sampled_from(sorted(definition["event_names"]))
    events_of = candidates(st.one_of(own, sender_names))
    if events_expression in (None, "items") and draw(st.booleans()):
        event = draw(events_of.filter(lambda c: isinstance(c, dict)))  # one event object
        return definition, [event], json.dumps(wrap(event)).encode()
    events = draw(st.lists(events_of, min_size=1, max_size=5))
    return definition, events, json.dumps(wrap(events)).encode()


def acme(definition: dict[str, Any]) -> Any:
    return resolve_formats({"acme": definition})["acme"]


def ignored_by(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name.strip().lower(), p.lower()) for p in patterns)


def lowered(names: dict[str, str]) -> set[str]:
    return {k.lower() for k in names}


@BOUNDED
@given(case=formats_and_bodies())
def test_custom_format_returns_one_result_per_event_in_order(case: Any) -> None:
    definition, events, raw = case

    results = acme(definition).parse(raw, NOW)

    assert [r.index for r in results] == list(range(len(events)))
    for result, event in zip(results, events, strict=True):
        if not isinstance(result, Ignored):
            assert json.loads(result.payload) == event


@BOUNDED
@given(case=formats_and_bodies(shaped_events),
       source=st.sampled_from(("src", "acme-hooks", "a.b_c-1")))
def test_custom_format_accepted_events_map_to_tracks_segment_takes(case: Any, source: str) -> None:
    definition, _, raw = case

    for result in acme(definition).parse(raw, NOW):
        if not isinstance(result, Accepted):
            continue
        message = mapping.track(source, result.dedup_key, result.event_type,
                                result.event_time, result.fields, VERSION)
        assert message_problem(message) is None, message_problem(message)
        assert len(json.dumps(message).encode()) < MAX_MESSAGE_BYTES
        assert message.get("userId") or message.get("anonymousId")
        assert message["timestamp"].endswith("Z")
        assert SEGMENT_TS.match(message["timestamp"])
        assert None not in message["properties"].values(), message["properties"]
        assert message["event"] in definition["event_names"].values()
        assert message["context"]["integration"]["name"] == "acme"
        assert 0 < len(result.dedup_key) <= MAX_ID_CHARS
        assert timedelta(0) == result.event_time.utcoffset()


@BOUNDED
@given(case=formats_and_bodies())
def test_custom_format_ignores_only_names_matching_ignore(case: Any) -> None:
    definition, _, raw = case
    patterns = definition.get("ignore", [])

    for result in acme(definition).parse(raw, NOW):
        if isinstance(result, Ignored):
            assert ignored_by(result.name, patterns), (result.name, patterns)
            assert result.name.strip().lower() not in lowered(definition["event_names"])


@BOUNDED
@given(case=formats_and_bodies())
def test_custom_format_rejections_say_why_in_storable_text(case: Any) -> None:
    definition, _, raw = case

    for result in acme(definition).parse(raw, NOW):
        if isinstance(result, Rejected):
            assert result.reason
            result.payload.encode("utf-8")
            assert "\x00" not in result.payload
            result.reason.encode("utf-8")
            assert "\x00" not in result.reason


# Bodies the format may not find events in at all, and bytes that are no JSON.
hostile_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda evs: json.dumps({"items": evs}).encode(), json_values),
    st.builds(lambda evs: json.dumps({"data": {"items": evs}}).encode(), json_values),
    st.sampled_from([b"NaN", b"[Infinity]", b"1e400", b"9" * 5000, b"[]", b"{}",
                     b'{"items": []}', b"[" * 5000 + b"]" * 5000]),
)


@BOUNDED
@given(definition=definitions(), shape=st.sampled_from(SHAPES), body=hostile_bodies)
def test_custom_format_parse_raises_nothing_but_body_error(
    definition: dict[str, Any], shape: Any, body: bytes
) -> None:
    if shape[0] is not None:
        definition["events"] = shape[0]
    try:
        results = acme(definition).parse(body, NOW)
    except BodyError as exc:
        assert str(exc)
        return
    assert results
    assert [r.index for r in results] == list(range(len(results)))
    assert all(isinstance(r, Accepted | Rejected | Ignored) for r in results)


# --- a run-time error rejects its event only ---------------------------------------------------

JOINED = compile_definition("acme", {
    "fields": {"id": "uuid", "event": "kind", "timestamp": "at", "email": "to",
               "subject": "join(',', tags)"},
    "event_names": {"opened": "Email Opened"},
}, "formats.acme")


def joined_event(i: int, tags: list[Any]) -> dict[str, Any]:
    return {"uuid": f"ev-{i}", "kind": "opened", "at": 1_700_000_000 + i,
            "to": f"user{i}@example.com", "tags": tags}


@BOUNDED
@given(
    tags=st.lists(st.lists(tag_text, max_size=3), min_size=1, max_size=6),
    bad=st.data(),
    value=st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans(), st.just(None), st.just({"a": 1})),
)
def test_expression_failing_on_one_event_rejects_that_event_only(
    tags: list[list[str]], bad: st.DataObject, value: Any
) -> None:
    where = bad.draw(st.integers(0, len(tags) - 1))
    events = [joined_event(i, t) for i, t in enumerate(tags)]
    events[where]["tags"] = [*events[where]["tags"], value]

    results = JOINED.parse(json.dumps(events).encode(), NOW)

    assert [type(r) for r in results] == [
        Rejected if i == where else Accepted for i in range(len(tags))
    ]
    assert results[where].reason.startswith("fields.subject ")
    assert [r.dedup_key for r in results if isinstance(r, Accepted)] == [
        f"ev-{i}" for i in range(len(tags)) if i != where
    ]


def test_expression_failing_on_the_middle_event_keeps_the_others():
    events = [joined_event(0, ["a", "b"]), joined_event(1, ["a", 5]), joined_event(2, [])]

    results = JOINED.parse(json.dumps(events).encode(), NOW)

    assert [type(r) for r in results] == [Accepted, Rejected, Accepted]
    assert results[0].fields["subject"] == "a,b"
    assert "subject" not in results[2].fields  # "" means absent
    assert results[1].reason.startswith("fields.subject (\"join(',', tags)\"): ")
    assert json.loads(results[1].payload) == events[1]


# --- run-time error messages quote event data as is --------------------------------------------

TEXT_WITH_NUL = "ab\x00cd"
LONE_SURROGATE = "ab\ud800cd"


def test_runtime_error_reason_holds_no_nul_from_the_event() -> None:
    event = joined_event(0, TEXT_WITH_NUL)  # join() of a string: a type error quoting it

    (result,) = JOINED.parse(json.dumps([event]).encode(), NOW)

    assert isinstance(result, Rejected)
    assert "\x00" not in result.reason


def test_runtime_error_reason_is_valid_unicode() -> None:
    event = joined_event(0, LONE_SURROGATE)

    (result,) = JOINED.parse(json.dumps([event]).encode(), NOW)

    assert isinstance(result, Rejected)
    result.reason.encode("utf-8")


def test_events_expression_error_holds_no_nul_from_the_body() -> None:
    fmt = compile_definition("acme", {
        "events": "join(',', items)",
        "fields": {"event": "kind", "timestamp": "at", "email": "to"},
        "event_names": {"opened": "Email Opened"},
    }, "formats.acme")

    with pytest.raises(BodyError) as info:
        fmt.parse(json.dumps({"items": TEXT_WITH_NUL}).encode(), NOW)

    assert "\x00" not in str(info.value)

