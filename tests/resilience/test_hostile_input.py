"""Hostile webhook input through the real app, on SQLite and on PostgreSQL.

Every hostile request must get one of the documented answers (400, 401, 413, 415, or a 200
that lists what was rejected), never a 5xx; whatever could not be accepted is quarantined; the
process keeps serving; and events accepted just before and just after are stored exactly once.
Text that looks like SQL or HTML is data: stored verbatim, and only ever shown escaped.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from outbound import mapping
from service.app import create_app
from service.wiring import build_publisher
from tests.conftest import make_settings
from tests.fake_segment import FakeSegment
from tests.resilience.hostile_helpers import (
    JSON_HEADERS,
    Answer,
    assert_stored_once,
    event_rows,
    good_event,
    post_json,
    post_raw,
    recent_ts,
    reject_rows,
    status_html,
    status_json,
    still_serving,
    table_counts,
)

LIMIT = 1_048_576  # the default server.max_body_bytes
DEEP = 10_000


@pytest.fixture
async def client(aiohttp_client: Any, db_url: str) -> TestClient:
    """The real app on the parametrized database, no admin token (loopback admin)."""
    return await aiohttp_client(create_app(make_settings(db_url), retention=False))


@pytest.fixture
async def hostile_fake(aiohttp_server: Any) -> FakeSegment:
    fake = FakeSegment()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    return fake


@pytest.fixture
async def publishing_client(
    aiohttp_client: Any, db_url: str, hostile_fake: FakeSegment
) -> TestClient:
    """The real app with the real Segment publisher talking to the fake Segment."""
    settings = make_settings(
        db_url,
        segment={"endpoint": hostile_fake.url},  # type: ignore[attr-defined]
        publisher={"max_attempts": 1, "interval_s": 0.1, "retry_base_s": 0.05},
    )
    return await aiohttp_client(
        create_app(settings, publisher=build_publisher(settings), retention=False)
    )


def enc(document: Any) -> bytes:
    return json.dumps(document).encode()


def hostile(**changes: Any) -> dict[str, Any]:
    """A valid event (id 'hostile') with the given fields changed; None removes a field."""
    event = good_event("hostile")
    for key, value in changes.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def with_literal(key: str, literal: bytes) -> bytes:
    """The hostile event as JSON with `key` set to a raw literal (NaN, Infinity, 1e400...)."""
    event = hostile(**{key: "@@LITERAL@@"})
    return json.dumps(event).encode().replace(b'"@@LITERAL@@"', literal)


def nested(depth: int, kind: str = "array") -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


async def chunked(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --- the catalogue of hostile requests ---------------------------------------------------------


@dataclass(frozen=True)
class Case:
    body: bytes | Callable[[], Any]
    status: int
    quarantined: int | None  # new quarantine rows; None: not checked
    headers: dict[str, str] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def data(self) -> Any:
        return self.body() if callable(self.body) else self.body


OVER_LIMIT = b"[" + b" " * (LIMIT + 16) + b"]"
GZIP_BOMB = gzip.compress(b"[" + b" " * (8 * LIMIT) + b"]")
NUL_PROPERTY_KEY_BODY = enc(hostile(properties={"k": "v"})).replace(b'"k"', b'"k\x00"')

CASES: dict[str, Case] = {
    # malformed JSON: the whole body is quarantined
    "truncated": Case(b'{"id": "hostile", "event": "open"', 400, 1),
    "trailing-comma": Case(b'[{"id": "hostile",},]', 400, 1),
    "single-quotes": Case(b"{'id': 'hostile', 'event': 'open'}", 400, 1),
    "bare-word": Case(b"hello", 400, 1),
    "two-documents": Case(b'{"a": 1}{"b": 2}', 400, 1),
    "unterminated-string": Case(b'{"id": "hostile', 400, 1),
    "lone-bracket": Case(b"]", 400, 1),
    "json-number": Case(b"42", 400, 1),
    "json-null": Case(b"null", 400, 1),
    "json-string": Case(b'"email_opened"', 400, 1),
    "json-true": Case(b"true", 400, 1),
    "empty-array": Case(b"[]", 400, 1),
    "events-not-an-array": Case(b'{"events": "email_opened"}', 400, 1),
    "events-empty": Case(b'{"events": []}', 400, 1),
    "array-of-scalars": Case(b'[1, "a", null, true, 2.5]', 400, 5),
    "integer-longer-than-python-allows": Case(b'{"id": ' + b"9" * 5000 + b"}", 400, 1),
    "id-of-4000-digits": Case(enc(hostile(id=int("7" * 4000))), 400, 1),
    # deep nesting
    "deep-array-body": Case(nested(DEEP), 400, 1),
    "deep-object-body": Case(nested(DEEP, "object"), 400, 1),
    "deep-in-properties": Case(
        enc(hostile(properties={"a": "@@"})).replace(b'"@@"', nested(DEEP)), 400, 1
    ),
    "deep-in-events-wrapper": Case(b'{"events": ' + nested(DEEP) + b"}", 400, 1),
    # size
    "over-the-limit": Case(OVER_LIMIT, 413, 0),
    "over-the-limit-chunked": Case(lambda: chunked(OVER_LIMIT), 413, 0),
    "gzip-bomb": Case(GZIP_BOMB, 413, 0, {**JSON_HEADERS, "Content-Encoding": "gzip"}),
    "not-gzip-though-declared": Case(
        enc(good_event("hostile")), 400, None, {**JSON_HEADERS, "Content-Encoding": "gzip"}
    ),
    # encodings and NUL bytes
    "invalid-utf8": Case(b'{"id": "hostile", "event": "open\xff\xfe"}', 400, 1),
    "overlong-utf8": Case(b'{"id": "\xc0\xaf"}', 400, 1),
    "utf8-encoded-surrogate": Case(b'{"id": "\xed\xa0\x80"}', 400, 1),
    "utf16-body": Case(json.dumps(good_event("hostile")).encode("utf-16"), 400, 1),
    "latin1-body": Case(enc(hostile(subscriber={"uid": "1"})).replace(b'"1"', b'"\xe9"'), 400, 1),
    "raw-nul-in-string": Case(enc(hostile()).replace(b'"hostile"', b'"hos\x00tile"'), 400, 1),
    "raw-nul-in-property-key": Case(NUL_PROPERTY_KEY_BODY, 400, 1),
    "raw-nul-before-json": Case(b"\x00" + enc(hostile()), 400, 1),
    "only-nul-bytes": Case(b"\x00\x00\x00", 400, 1),
    "escaped-nul-in-event": Case(enc(hostile(event="email_opened\u0000")), 400, 1),
    "escaped-nul-in-id": Case(enc(hostile(id="hos\u0000tile")), 400, 1),
    "escaped-nul-in-uid": Case(enc(hostile(subscriber={"uid": "\u0000"})), 400, 1),
    "escaped-nul-in-subject": Case(enc(hostile(message={"subject": "a\u0000b"})), 400, 1),
    "escaped-lone-surrogate-in-uid": Case(
        b'{"id": "hostile", "event": "open", "timestamp": %d, "subscriber": {"uid": "\\ud800"}}'
        % recent_ts(), 400, 1
    ),
    "escaped-lone-surrogate-in-properties": Case(
        with_literal("properties", b'{"\\udfff": "\\ud800"}'), 400, 1
    ),
    # content types and empty bodies
    "form-encoded": Case(
        b"id=hostile&event=open", 415, 0, {"Content-Type": "application/x-www-form-urlencoded"}
    ),
    "multipart": Case(
        b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--\r\n", 415, 0,
        {"Content-Type": "multipart/form-data; boundary=x"},
    ),
    "text-plain": Case(enc(good_event("hostile")), 415, 0, {"Content-Type": "text/plain"}),
    "no-content-type": Case(
        enc(good_event("hostile")), 415, 0, {}, {"skip_auto_headers": ("Content-Type",)}
    ),
    "empty-body": Case(b"", 400, 1),
    "whitespace-body": Case(b"  \r\n\t ", 400, 1),
    # timestamps out of range or not timestamps
    "ts-negative": Case(enc(hostile(timestamp=-1)), 400, 1),
    "ts-negative-ms": Case(enc(hostile(timestamp=-1_700_000_000_000)), 400, 1),
    "ts-zero": Case(enc(hostile(timestamp=0)), 400, 1),
    "ts-1e30": Case(enc(hostile(timestamp=1e30)), 400, 1),
    "ts-10-to-the-30": Case(enc(hostile(timestamp=10**30)), 400, 1),
    "ts-1e400-literal": Case(with_literal("timestamp", b"1e400"), 400, 1),
    "ts-string-negative": Case(enc(hostile(timestamp="-1")), 400, 1),
    "ts-string-1e30": Case(enc(hostile(timestamp="1e30")), 400, 1),
    "ts-string-30-digits": Case(enc(hostile(timestamp="9" * 30)), 400, 1),
    "ts-year-0001": Case(enc(hostile(timestamp="0001-01-01T00:00:00Z")), 400, 1),
    "ts-year-0001-plus-offset": Case(enc(hostile(timestamp="0001-01-01T00:00:00+01:00")), 400, 1),
    "ts-year-9999": Case(enc(hostile(timestamp="9999-12-31T23:59:59Z")), 400, 1),
    "ts-year-9999-minus-offset": Case(
        enc(hostile(timestamp="9999-12-31T23:59:59-14:00")), 400, 1
    ),
    "ts-month-13": Case(enc(hostile(timestamp="2026-13-45T00:00:00Z")), 400, 1),
    "ts-no-zone": Case(enc(hostile(timestamp="2026-11-20T09:30:00")), 400, 1),
    "ts-empty": Case(enc(hostile(timestamp="")), 400, 1),
    "ts-before-2000": Case(enc(hostile(timestamp=946_684_799)), 400, 1),
    "ts-two-days-ahead": Case(enc(hostile(timestamp=recent_ts(-2 * 86400))), 400, 1),
    "ts-string-nan": Case(enc(hostile(timestamp="NaN")), 400, 1),
    "ts-nan-literal": Case(with_literal("timestamp", b"NaN"), 400, 1),
    "ts-infinity-literal": Case(with_literal("timestamp", b"Infinity"), 400, 1),
    "ts-minus-infinity-literal": Case(with_literal("timestamp", b"-Infinity"), 400, 1),
    # NaN and friends elsewhere
    "nan-in-properties": Case(with_literal("properties", b'{"score": NaN}'), 400, 1),
    "infinity-as-uid": Case(with_literal("subscriber", b'{"uid": Infinity}'), 400, 1),
    "minus-infinity-as-message-id": Case(with_literal("message", b'{"id": -Infinity}'), 400, 1),
    "float-uid": Case(enc(hostile(subscriber={"uid": 1.5})), 400, 1),
    "negative-float-id": Case(enc(hostile(id=-0.5)), 400, 1),
}


def case_params(
    *, only_quarantined: bool = False, known_quarantine: bool = False
) -> list[Any]:
    """The catalogue as pytest params."""
    params = []
    for name, case in CASES.items():
        if only_quarantined and not case.quarantined:
            continue
        if known_quarantine and case.quarantined is None:
            continue
        params.append(pytest.param(case, id=name))
    return params


async def send(client: TestClient, case: Case) -> Answer:
    return await post_raw(client, case.data(), case.headers, **case.kwargs)


def answer_errors(answer: Answer) -> list[str]:
    """The reasons a webhook answer gives: per rejected event, else the body's error."""
    document = answer.json
    if document.get("rejected"):
        return [r["error"] for r in document["rejected"]]
    return [document["error"]]


@pytest.mark.parametrize("case", case_params())
async def test_hostile_request_gets_its_documented_answer(client: TestClient, case: Case) -> None:
    answer = await send(client, case)

    assert answer.status == case.status, answer.text
    document = answer.json
    assert isinstance(document.get("error"), str) and document["error"]


@pytest.mark.parametrize("case", case_params(known_quarantine=True))
async def test_hostile_request_quarantines_what_was_read_and_nothing_else(
    client: TestClient, case: Case
) -> None:
    await send(client, case)

    assert len(await reject_rows(client)) == case.quarantined
    assert await event_rows(client) == []


@pytest.mark.parametrize("case", case_params())
async def test_events_before_and_after_a_hostile_request_are_stored_once(
    client: TestClient, case: Case
) -> None:
    before, after = good_event("before-1"), good_event("after-1")
    first = await post_json(client, [before])
    assert (first.status, first.json) == (200, {"accepted": 1, "duplicates": 0, "rejected": []})

    answer = await send(client, case)
    assert answer.status < 500, answer.text
    await still_serving(client)
    last = await post_json(client, [after])

    assert (last.status, last.json) == (200, {"accepted": 1, "duplicates": 0, "rejected": []})
    await assert_stored_once(client, before)
    await assert_stored_once(client, after)
    assert len(await event_rows(client)) == 2


@pytest.mark.parametrize("case", case_params(only_quarantined=True))
async def test_quarantined_hostile_request_is_listed_in_status_json(
    client: TestClient, case: Case
) -> None:
    answer = await send(client, case)

    status = await status_json(client)
    assert status.status == 200, status.text
    report = status.json
    assert report["sources"]["default"]["rejected"] == case.quarantined
    listed = {p["error"] for p in report["latest_rejected"]}
    assert set(answer_errors(answer)) <= listed
    assert all(p["source"] == "default" for p in report["latest_rejected"])


@pytest.mark.parametrize("case", case_params(only_quarantined=True))
async def test_quarantined_hostile_request_leaves_status_page_working(
    client: TestClient, case: Case
) -> None:
    await send(client, case)

    page = await status_html(client)
    assert page.status == 200, page.text[:500]
    assert page.headers["Content-Type"].startswith("text/html")
    assert 'id="rejected"' in page.text


async def test_quarantined_invalid_utf8_keeps_the_bytes_escaped(client: TestClient) -> None:
    await post_raw(client, b'{"event": "open\xff\xfe"}')

    [row] = await reject_rows(client)
    assert row.body_index is None
    assert row.payload == '{"event": "open\\xff\\xfe"}'


async def test_quarantined_raw_nul_is_kept_escaped(client: TestClient) -> None:
    await post_raw(client, b'{"id": "a\x00b"}')

    [row] = await reject_rows(client)
    assert row.payload == '{"id": "a\\x00b"}'


async def test_quarantined_event_keeps_its_payload(client: TestClient) -> None:
    event = hostile(timestamp="0001-01-01T00:00:00Z")
    await post_json(client, [good_event("ok-1"), event])

    [row] = await reject_rows(client)
    assert row.body_index == 1
    assert json.loads(row.payload) == event


# --- every field with the wrong type -----------------------------------------------------------

WRONG_TYPES: dict[str, tuple[str, list[Any]]] = {
    # field: (the name the error must mention, wrong values)
    "event": ("event", [1, 1.5, True, [], {}, None, ["email_opened"]]),
    "timestamp": ("timestamp", [True, [], {}, None, {"seconds": 1}]),
    "subscriber": ("subscriber", ["ada@example.com", 42, [], True]),
    "user": ("user", ["ada@example.com", 42, [], True]),
    "uid": ("subscriber.uid", [1.5, True, [], {}, False]),
    "email": ("subscriber.email", [42, True, [], {}, "not-an-email", "a b@example.com"]),
    "message": ("message", ["msg-1", 1, [], True]),
    "link": ("link", ["https://example.com", 1, [], True]),
    "list": ("list", ["newsletter", 1, [], True]),
    "bounce": ("bounce", ["hard", 1, [], True]),
    "properties": ("properties", ["p", 1, [], True]),
    "ip": ("ip", [1, True, [], {}]),
    "user_agent": ("user_agent", [1, True, [], {}]),
    "id": ("id", [1.5, True, [], {}, "x" * 256]),
    # aliases and inner fields
    "mail_id": ("mail_id", [1.5, True, []]),
    "url": ("url", [1, True, {}]),
    "message.subject": ("message.subject", [1, True, []]),
    "link.url": ("link.url", [1, True, []]),
    "bounce.type": ("bounce.type", [1, True, {}]),
}


def wrong(field_name: str, value: Any) -> dict[str, Any]:
    event = good_event("hostile")
    if field_name in ("uid", "email"):
        event["subscriber"] = {"uid": "u-1", "email": "ada@example.com", field_name: value}
    elif field_name == "mail_id":  # the message object would win over the alias
        del event["message"]
        event[field_name] = value
    elif field_name == "user":
        del event["subscriber"]
        event["user"] = value
    elif "." in field_name:
        outer, inner = field_name.split(".")
        event[outer] = {inner: value}
    elif value is None:
        del event[field_name]
    else:
        event[field_name] = value
    return event


@pytest.mark.parametrize("field_name", list(WRONG_TYPES))
async def test_wrong_type_is_rejected_naming_the_field_and_quarantined(
    client: TestClient, field_name: str
) -> None:
    mention, values = WRONG_TYPES[field_name]
    for n, value in enumerate(values, start=1):
        event = wrong(field_name, value)
        answer = await post_json(client, event)

        assert answer.status == 400, (value, answer.text)
        [rejection] = answer.json["rejected"]
        assert rejection["index"] == 0
        assert f"'{mention}'" in rejection["error"], (value, rejection)
        rows = await reject_rows(client)
        assert len(rows) == n
        assert json.loads(rows[-1].payload) == event
    assert await event_rows(client) == []


@pytest.mark.parametrize("field_name", list(WRONG_TYPES))
async def test_wrong_type_next_to_a_good_event_is_200_listing_the_rejection(
    client: TestClient, field_name: str
) -> None:
    _, values = WRONG_TYPES[field_name]
    good = good_event("good-1")
    body = [wrong(field_name, v) for v in values] + [good]

    answer = await post_json(client, body)

    assert answer.status == 200, answer.text
    assert answer.json["accepted"] == 1
    assert [r["index"] for r in answer.json["rejected"]] == list(range(len(values)))
    await assert_stored_once(client, good)
    report = (await status_json(client)).json
    assert report["sources"]["default"]["rejected"] == len(values)


async def test_wrong_types_never_disturb_neighbouring_events(client: TestClient) -> None:
    before, after = good_event("before-1"), good_event("after-1")
    await post_json(client, before)
    for field_name, (_, values) in WRONG_TYPES.items():
        for value in values:
            answer = await post_json(client, wrong(field_name, value))
            assert answer.status == 400, (field_name, value, answer.text)
    await still_serving(client)
    await post_json(client, after)

    await assert_stored_once(client, before)
    await assert_stored_once(client, after)
    assert len(await event_rows(client)) == 2


# --- accepted oddities are stored exactly ------------------------------------------------------


async def test_900_kb_subject_within_the_limit_is_accepted_verbatim(client: TestClient) -> None:
    subject = "Ω<'\";--" * 100_000  # 9 bytes each in UTF-8 JSON
    event = good_event("big-1", message={"id": "m-1", "subject": subject})
    body = json.dumps(event, ensure_ascii=False).encode()
    assert 900_000 < len(body) < LIMIT

    answer = await post_raw(client, body)

    assert (answer.status, answer.json["accepted"]) == (200, 1), answer.text[:300]
    [row] = await event_rows(client)
    assert json.loads(row.fields_json)["subject"] == subject
    assert json.loads(row.payload) == event


async def test_body_exactly_at_the_limit_is_read(client: TestClient) -> None:
    event = good_event("edge-1")
    body = enc(event)
    body = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
    assert len(body) == LIMIT

    answer = await post_raw(client, body)

    assert answer.status == 200, answer.text
    await assert_stored_once(client, event)


async def test_escaped_nul_in_custom_properties_is_stored_verbatim(client: TestClient) -> None:
    event = good_event("nul-1", properties={"note\u0000key": "a\u0000b", "list": ["\u0000"]})

    answer = await post_json(client, event)

    assert answer.status == 200, answer.text
    [row] = await event_rows(client)
    assert json.loads(row.fields_json)["properties"] == event["properties"]
    assert json.loads(row.payload) == event


async def test_negative_numbers_in_ids_and_properties_are_stored_verbatim(
    client: TestClient,
) -> None:
    event = good_event("neg-1", subscriber={"uid": -5}, message={"id": -7},
                       properties={"balance": -1.25, "delta": -(10**20)})

    answer = await post_json(client, event)

    assert answer.status == 200, answer.text
    [row] = await event_rows(client)
    fields = json.loads(row.fields_json)
    assert (fields["user_id"], fields["message_id"]) == ("-5", "-7")
    assert fields["properties"] == {"balance": -1.25, "delta": -(10**20)}


async def test_negative_integer_id_is_a_dedup_key(client: TestClient) -> None:
    event = good_event("x", id=-42)
    await post_json(client, event)

    again = await post_json(client, event)

    assert again.json == {"accepted": 0, "duplicates": 1, "rejected": []}
    [row] = await event_rows(client)
    assert row.dedup_key == "-42"


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400"])
async def test_overflowing_number_in_properties_is_never_stored_as_a_non_object(
    client: TestClient, literal: bytes
) -> None:
    answer = await post_raw(client, with_literal("properties", b'{"score": %s}' % literal))

    assert answer.status in (200, 400), answer.text
    for row in await event_rows(client):
        assert isinstance(json.loads(row.fields_json), dict), row.fields_json
        assert isinstance(json.loads(row.payload), dict), row.payload


async def test_overflowing_number_does_not_hold_back_the_good_event_beside_it(
    publishing_client: TestClient, hostile_fake: FakeSegment
) -> None:
    good = good_event("good-1")
    body = b"[" + with_literal("properties", b'{"score": 1e400}') + b", " + enc(good) + b"]"

    answer = await post_raw(publishing_client, body)
    assert answer.status in (200, 400), answer.text

    delivered = await hostile_fake.wait_for(1, timeout_s=5)
    assert mapping.message_id("default", "good-1") in {m["messageId"] for m in delivered}


# --- SQL metacharacters -----------------------------------------------------------------------

SQL_TEXTS = [
    "'; DROP TABLE nudgespot_event; --",
    "Robert'); DROP TABLE nudgespot_rejected;--",
    '" OR "1"="1" --',
    "\\'; DELETE FROM nudgespot_source_counter; --\\",
    "%' OR 1=1; -- _ % $1 ? :name",
    "back\\slash\\\\ and 'quote' and \"dq\" and `tick`",
    "<script>alert('x')</script>",
    '"><img src=x onerror=alert(1)>',
]
TEXT_FIELDS = {
    # normalized field: how it is posted
    "user_id": ("subscriber", "uid"),
    "email": ("subscriber", "email"),
    "first_name": ("subscriber", "first_name"),
    "last_name": ("subscriber", "last_name"),
    "name": ("subscriber", "name"),
    "message_id": ("message", "id"),
    "subject": ("message", "subject"),
    "campaign_id": ("message", "campaign_id"),
    "campaign_name": ("message", "campaign_name"),
    "link_id": ("link", "id"),
    "link_url": ("link", "url"),
    "list_id": ("list", "id"),
    "list_name": ("list", "name"),
    "bounce_type": ("bounce", "type"),
    "bounce_reason": ("bounce", "reason"),
    "ip": (None, "ip"),
    "user_agent": (None, "user_agent"),
}


def texts_everywhere(text: str, key: str = "sql-1") -> tuple[dict[str, Any], dict[str, Any]]:
    """An event with `text` (made distinct per field) in every text field; and its fields."""
    event: dict[str, Any] = {"id": f"{text} {key}", "event": "click", "timestamp": recent_ts()}
    expected: dict[str, Any] = {}
    for name, (outer, inner) in TEXT_FIELDS.items():
        value = f"{text} {name}"
        if name == "email":  # an address: no whitespace, one '@'
            value = re.sub(r"\s", "", f"{text}{name}").replace("@", "") + "@example.com"
        expected[name] = value
        if outer is None:
            event[inner] = value
        else:
            event.setdefault(outer, {})[inner] = value
    event["properties"] = {text: text, "nested": [text, {text: [text]}]}
    expected["properties"] = event["properties"]
    return event, expected


@pytest.mark.parametrize("text", SQL_TEXTS)
async def test_sql_metacharacters_in_every_text_field_are_stored_verbatim(
    client: TestClient, text: str
) -> None:
    event, expected = texts_everywhere(text)

    answer = await post_json(client, event)

    assert (answer.status, answer.json) == (200, {"accepted": 1, "duplicates": 0, "rejected": []})
    [row] = await event_rows(client)
    assert row.dedup_key == event["id"]
    assert json.loads(row.fields_json) == expected
    assert json.loads(row.payload) == event


@pytest.mark.parametrize("text", SQL_TEXTS)
async def test_sql_metacharacters_leave_every_table_in_place(
    client: TestClient, text: str
) -> None:
    event, _ = texts_everywhere(text)
    rejected = {**event, "id": f"{text} rejected", "timestamp": text, "event": text}

    await post_json(client, [event, rejected])
    await post_json(client, [event])  # a duplicate: touches the counter table
    await post_raw(client, text.encode())  # not JSON: a whole-body reject

    assert await table_counts(client) == {
        "nudgespot_event": 1,
        "nudgespot_event_body": 1,
        "nudgespot_rejected": 2,
        "nudgespot_source_counter": 1,
        "nudgespot_identified_user": 0,
        "nudgespot_delivery_minute": 0,
        "nudgespot_backlog_minute": 0,
    }
    report = (await status_json(client)).json
    assert report["sources"]["default"]["duplicates"] == 1
    assert text in {p["payload"] for p in report["latest_rejected"]}


@pytest.mark.parametrize("text", SQL_TEXTS)
async def test_sql_metacharacters_in_the_dedup_key_still_deduplicate(
    client: TestClient, text: str
) -> None:
    event = good_event(text)
    await post_json(client, event)

    again = await post_json(client, [event, good_event(text + "'")])

    assert again.json == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert sorted(r.dedup_key for r in await event_rows(client)) == [text, text + "'"]


@pytest.mark.parametrize("text", SQL_TEXTS)
async def test_sql_metacharacters_in_replay_filters_match_nothing_and_change_nothing(
    client: TestClient, text: str
) -> None:
    keep = good_event("keep-1")
    await post_json(client, keep)
    before = await table_counts(client)

    async with client.post("/replay", json={
        "source": "default", "ids": [text, f"x{text}"],
        "status": ["dead", "pending", "delivered"],
    }) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"matched": 0, "requeued": 0}
    async with client.post("/replay", json={"source": text}) as resp:  # not a source: named
        assert resp.status == 400, await resp.text()
        assert "unknown source" in (await resp.json())["error"]

    assert await table_counts(client) == before
    await assert_stored_once(client, keep)


# --- hostile /replay requests (admin, loopback) -----------------------------------------------


async def post_replay(client: TestClient, body: bytes) -> Answer:
    return await post_raw(client, body, JSON_HEADERS, path="/replay")


async def test_replay_with_a_deeply_nested_body_is_400(client: TestClient) -> None:
    answer = await post_replay(client, nested(DEEP))

    assert answer.status == 400, answer.text


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_replay_with_an_instant_out_of_range_is_400(client: TestClient, since: str) -> None:
    answer = await post_replay(client, enc({"since": since}))

    assert answer.status == 400, answer.text


@pytest.mark.parametrize("body", [b'{"source": "\\udfff"}', b'{"ids": ["\\ud800"]}'])
async def test_replay_with_a_lone_surrogate_is_400(client: TestClient, body: bytes) -> None:
    answer = await post_replay(client, body)

    assert answer.status == 400, answer.text


async def test_replay_with_nul_in_filters_is_400(client: TestClient) -> None:
    for body in (b'{"source": "a\\u0000b"}', b'{"ids": ["x\\u0000"]}'):
        answer = await post_replay(client, body)
        assert answer.status == 400, answer.text


@pytest.mark.parametrize("body", [b"\xff\xfe", b"[", b"NaN", b"[1, 2]", b'{"status": 5}'])
async def test_replay_with_malformed_body_is_400(client: TestClient, body: bytes) -> None:
    answer = await post_replay(client, body)

    assert answer.status == 400, answer.text
    assert answer.json["error"].startswith("bad replay request")


# --- script tags are shown only escaped --------------------------------------------------------

XSS = "<script>alert('x')</script>"
XSS_IMG = '"><img src=x onerror=alert(1)>'
XSS_BREAKOUT = "</code></td></tr></table><script>alert(2)</script>"
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table",
             "tr", "th", "td", "code", "button", "script", "details", "summary",
             "svg", "desc", "line", "path", "text"}


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def assert_only_the_page_own_markup(page: str) -> None:
    parser = TagCollector()
    parser.feed(page)
    tags = [tag for tag, _ in parser.tags]
    assert set(tags) <= PAGE_TAGS, set(tags) - PAGE_TAGS
    assert tags.count("script") == 1, "a script tag besides the page's own"
    attributes = {name for _, attrs in parser.tags for name, _ in attrs}
    assert not {a for a in attributes if a.startswith("on")}, attributes
    assert "<img" not in page


def xss_rejected_event(key: str) -> dict[str, Any]:
    event, _ = texts_everywhere(XSS, key)
    event["event"] = XSS_BREAKOUT  # unknown: rejected, and named in the reason
    event["message"]["subject"] = XSS_IMG
    return event


async def test_script_tags_in_rejected_events_are_escaped_on_the_status_page(
    client: TestClient,
) -> None:
    await post_json(client, [xss_rejected_event("r-1"), good_event("ok-1")])
    await post_raw(client, XSS_BREAKOUT.encode())  # not JSON: the raw body is quarantined
    await post_raw(client, enc(hostile(timestamp=XSS_IMG)))

    page = await status_html(client)

    assert page.status == 200, page.text[:300]
    assert_only_the_page_own_markup(page.text)
    assert "&lt;/code&gt;&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;&lt;script&gt;" in page.text
    assert "&lt;script&gt;alert(" in page.text
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page.text


async def wait_for_statuses(client: TestClient, expected: list[str], bound_s: float = 15) -> None:
    """Poll the stored statuses until they are `expected` (fail after `bound_s`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while (current := [r.status for r in await event_rows(client)]) != expected:
        assert loop.time() < deadline, f"statuses stayed {current}, expected {expected}"
        await asyncio.sleep(0.05)


async def test_script_tags_in_dead_events_and_segment_errors_are_escaped_on_the_status_page(
    publishing_client: TestClient, hostile_fake: FakeSegment
) -> None:
    event, _ = texts_everywhere(XSS, "dead-1")
    hostile_fake.reject(mapping.message_id("default", event["id"]), reason=XSS_BREAKOUT)

    await post_json(publishing_client, event)
    await wait_for_statuses(publishing_client, ["dead"])

    page = await status_html(publishing_client)
    assert page.status == 200, page.text[:300]
    assert_only_the_page_own_markup(page.text)
    assert 'id="dead"' in page.text
    assert "&lt;/table&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in page.text  # Segment's reason
    assert "&lt;script&gt;alert(" in page.text
