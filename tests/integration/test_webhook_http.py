"""The webhook over real HTTP on loopback, through the real app factory, on both databases.

Each test builds the application with service.app.create_app and talks to it with
pytest-aiohttp's `aiohttp_client`; what the service claims to have stored is read back from
the database through the application's own store.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from inbound.signature import SIGNATURE_HEADER, sign
from models import Store
from models.tables import Event, RejectedEvent, SourceCounter
from service.app import STORE, create_app
from service.config import Settings
from tests.conftest import OTHER_TOKEN, TOKEN, make_settings, stored_events, with_source
from tests.examples import EXAMPLE_BODY

UNREACHABLE_POSTGRES_URL = "postgres://root@127.0.0.1:1/x"
SECRET = "s3cret"
SMALL_LIMIT = 2048
JSON_HEADERS = {"Content-Type": "application/json"}

EXAMPLES_BODY = EXAMPLE_BODY  # the request of docs/examples.md

ClientFactory = Callable[..., Awaitable[TestClient]]


def event(event_id: str, **changes: Any) -> dict[str, Any]:
    """A valid Nudgespot event with the given id."""
    body: dict[str, Any] = {
        "id": event_id,
        "event": "email_opened",
        "timestamp": "2026-11-20T09:30:00Z",
        "subscriber": {"uid": "u-1", "email": "ada@example.com"},
        "message": {"id": "msg-1"},
    }
    body.update(changes)
    return body


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def store_of(client: TestClient) -> Store:
    return client.server.app[STORE]


async def event_rows(client: TestClient) -> list[Event]:
    store = store_of(client)
    return await stored_events(store)


async def reject_rows(client: TestClient) -> list[RejectedEvent]:
    store = store_of(client)
    with store.db.orm():
        return await RejectedEvent.all().order_by("id")


async def duplicate_counters(client: TestClient) -> dict[str, int]:
    store = store_of(client)
    with store.db.orm():
        return {c.source: c.duplicates for c in await SourceCounter.all()}


async def post(
    client: TestClient,
    body: bytes,
    *,
    token: str = TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """POST a raw body as JSON; return the status, the decoded JSON answer and the headers."""
    async with client.post(
        f"/webhooks/nudgespot/{token}", data=body, headers=headers or JSON_HEADERS
    ) as response:
        text = await response.text()
        answer = json.loads(text) if text else None
        return response.status, answer, dict(response.headers)


@pytest.fixture
def app_client(aiohttp_client: Any) -> ClientFactory:
    """Start create_app(settings) on a loopback port and return a client for it."""

    async def start(settings: Settings, **kwargs: Any) -> TestClient:
        return await aiohttp_client(create_app(settings, **kwargs))

    return start


@pytest.fixture
async def client(
    app_client: ClientFactory, settings_factory: Callable[..., Settings]
) -> TestClient:
    return await app_client(settings_factory())


@pytest.fixture
async def signed_client(app_client: ClientFactory, db_url: str) -> TestClient:
    return await app_client(with_source(make_settings(db_url), "default", signing_secret=SECRET))


@pytest.fixture
async def small_client(
    app_client: ClientFactory, settings_factory: Callable[..., Settings]
) -> TestClient:
    return await app_client(settings_factory(server={"max_body_bytes": SMALL_LIMIT}))


@pytest.fixture
async def unreachable_client(app_client: ClientFactory) -> TestClient:
    settings = make_settings(UNREACHABLE_POSTGRES_URL)
    return await app_client(settings, migrate_sqlite=False)


# --- the worked example -------------------------------------------------------------------------


async def test_examples_body_is_accepted_and_its_three_events_are_stored(
    client: TestClient,
) -> None:
    status, answer, _ = await post(client, encode(EXAMPLES_BODY))

    assert status == 200
    assert answer == {"accepted": 3, "duplicates": 0, "rejected": []}
    rows = await event_rows(client)
    assert [(r.source, r.event_type, r.status) for r in rows] == [
        ("default", "email_delivered", "pending"),
        ("default", "email_clicked", "pending"),
        ("default", "email_unsubscribed", "pending"),
    ]
    assert [r.dedup_key for r in rows[:2]] == ["ev-1001", "ev-1002"]
    assert rows[2].dedup_key.startswith("sha256:")
    assert [r.event_time for r in rows] == [
        datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc),
        datetime(2026, 11, 20, 9, 31, tzinfo=timezone.utc),
        datetime(2026, 11, 20, 9, 32, tzinfo=timezone.utc),
    ]
    assert [json.loads(r.payload) for r in rows] == EXAMPLES_BODY


async def test_examples_body_posted_again_is_all_duplicates(client: TestClient) -> None:
    await post(client, encode(EXAMPLES_BODY))

    status, answer, _ = await post(client, encode(EXAMPLES_BODY))

    assert status == 200
    assert answer == {"accepted": 0, "duplicates": 3, "rejected": []}
    assert len(await event_rows(client)) == 3
    assert await duplicate_counters(client) == {"default": 3}


# --- tokens -------------------------------------------------------------------------------------


async def test_get_with_known_token_names_the_source(client: TestClient) -> None:
    async with client.get(f"/webhooks/nudgespot/{TOKEN}") as response:
        assert response.status == 200
        assert await response.json() == {"ok": True, "source": "default"}


async def test_get_with_unknown_token_is_401(client: TestClient) -> None:
    async with client.get("/webhooks/nudgespot/not-a-known-token") as response:
        assert response.status == 401
        assert "error" in await response.json()


async def test_post_with_unknown_token_is_401_and_stores_nothing(client: TestClient) -> None:
    status, answer, _ = await post(client, encode(EXAMPLES_BODY), token="not-a-known-token")

    assert status == 401
    assert "error" in answer
    assert await event_rows(client) == []
    assert await reject_rows(client) == []


async def test_events_posted_with_the_other_token_are_stored_under_that_source(
    client: TestClient,
) -> None:
    status, answer, _ = await post(client, encode([event("o-1"), event("o-2")]), token=OTHER_TOKEN)

    assert status == 200
    assert answer["accepted"] == 2
    assert [(r.source, r.dedup_key) for r in await event_rows(client)] == [
        ("other", "o-1"),
        ("other", "o-2"),
    ]


async def test_same_event_id_in_two_sources_is_stored_for_each(client: TestClient) -> None:
    _, first, _ = await post(client, encode(event("shared")), token=TOKEN)
    _, second, _ = await post(client, encode(event("shared")), token=OTHER_TOKEN)

    assert (first["accepted"], second["accepted"]) == (1, 1)
    rows = await event_rows(client)
    assert sorted((r.source, r.dedup_key) for r in rows) == [
        ("default", "shared"),
        ("other", "shared"),
    ]


# --- signature ----------------------------------------------------------------------------------


def signed_headers(body: bytes, *, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if at is None else at
    return {**JSON_HEADERS, SIGNATURE_HEADER: sign(secret, timestamp, body)}


async def test_correctly_signed_body_is_accepted(signed_client: TestClient) -> None:
    body = encode([event("s-1")])

    status, answer, _ = await post(signed_client, body, headers=signed_headers(body))

    assert status == 200
    assert answer["accepted"] == 1
    assert [r.dedup_key for r in await event_rows(signed_client)] == ["s-1"]


async def test_body_signed_with_the_wrong_secret_is_401(signed_client: TestClient) -> None:
    body = encode([event("s-1")])

    status, answer, _ = await post(
        signed_client, body, headers=signed_headers(body, secret="not-the-secret")
    )

    assert status == 401
    assert "error" in answer
    assert await event_rows(signed_client) == []


async def test_signature_more_than_300_seconds_old_is_401(signed_client: TestClient) -> None:
    body = encode([event("s-1")])

    status, _, _ = await post(
        signed_client, body, headers=signed_headers(body, at=int(time.time()) - 301)
    )

    assert status == 401
    assert await event_rows(signed_client) == []


async def test_signature_more_than_300_seconds_in_the_future_is_401(
    signed_client: TestClient,
) -> None:
    body = encode([event("s-1")])

    status, _, _ = await post(
        signed_client, body, headers=signed_headers(body, at=int(time.time()) + 301)
    )

    assert status == 401
    assert await event_rows(signed_client) == []


async def test_missing_signature_is_401_when_the_source_has_a_secret(
    signed_client: TestClient,
) -> None:
    status, answer, _ = await post(signed_client, encode([event("s-1")]))

    assert status == 401
    assert "error" in answer
    assert await event_rows(signed_client) == []


async def test_signed_body_whose_bytes_were_changed_is_401(signed_client: TestClient) -> None:
    body = encode([event("s-1")])
    headers = signed_headers(body)
    tampered = body.replace(b'"s-1"', b'"s-2"')
    assert tampered != body

    status, _, _ = await post(signed_client, tampered, headers=headers)

    assert status == 401
    assert await event_rows(signed_client) == []


async def test_malformed_signature_header_is_401(signed_client: TestClient) -> None:
    body = encode([event("s-1")])
    headers = {**JSON_HEADERS, SIGNATURE_HEADER: "v1=deadbeef"}

    status, _, _ = await post(signed_client, body, headers=headers)

    assert status == 401
    assert await event_rows(signed_client) == []


async def test_source_without_secret_needs_no_signature(signed_client: TestClient) -> None:
    status, answer, _ = await post(signed_client, encode([event("o-1")]), token=OTHER_TOKEN)

    assert status == 200
    assert answer["accepted"] == 1


# --- size and type ------------------------------------------------------------------------------


def padded_body(size: int) -> bytes:
    """A valid one-event JSON body of exactly `size` bytes (padded with spaces)."""
    body = encode([event("big")])
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"]"


async def test_body_at_max_body_bytes_is_accepted(small_client: TestClient) -> None:
    status, answer, _ = await post(small_client, padded_body(SMALL_LIMIT))

    assert status == 200
    assert answer["accepted"] == 1


async def test_body_over_max_body_bytes_with_content_length_is_413(
    small_client: TestClient,
) -> None:
    status, answer, _ = await post(small_client, padded_body(SMALL_LIMIT + 1))

    assert status == 413
    assert "error" in answer
    assert await event_rows(small_client) == []


async def chunks(body: bytes, size: int = 500) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]
        await asyncio.sleep(0)


async def post_chunked(client: TestClient, body: bytes) -> tuple[int, Any, dict[str, str]]:
    """POST with Transfer-Encoding: chunked, so the server sees no Content-Length."""
    async with client.post(
        f"/webhooks/nudgespot/{TOKEN}", data=chunks(body), headers=JSON_HEADERS
    ) as response:
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in response.request_info.headers
        return response.status, await response.json(), dict(response.headers)


async def test_chunked_body_within_max_body_bytes_is_accepted(small_client: TestClient) -> None:
    status, answer, _ = await post_chunked(small_client, padded_body(SMALL_LIMIT))

    assert status == 200
    assert answer["accepted"] == 1
    assert [r.dedup_key for r in await event_rows(small_client)] == ["big"]


async def test_chunked_body_over_max_body_bytes_is_413(small_client: TestClient) -> None:
    status, answer, _ = await post_chunked(small_client, padded_body(SMALL_LIMIT + 1))

    assert status == 413
    assert "error" in answer
    assert await event_rows(small_client) == []


async def test_text_plain_content_type_is_415(client: TestClient) -> None:
    status, answer, _ = await post(
        client, encode([event("t-1")]), headers={"Content-Type": "text/plain"}
    )

    assert status == 415
    assert "error" in answer
    assert await event_rows(client) == []


async def test_form_encoded_content_type_is_415(client: TestClient) -> None:
    async with client.post(
        f"/webhooks/nudgespot/{TOKEN}", data={"payload": json.dumps([event("f-1")])}
    ) as response:
        assert response.request_info.headers["Content-Type"].startswith(
            "application/x-www-form-urlencoded"
        )
        assert response.status == 415
    assert await event_rows(client) == []


async def test_json_with_charset_parameter_is_accepted(client: TestClient) -> None:
    status, answer, _ = await post(
        client,
        encode([event("c-1")]),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    assert status == 200
    assert answer["accepted"] == 1
    assert [r.dedup_key for r in await event_rows(client)] == ["c-1"]


# --- bad bodies and quarantine ------------------------------------------------------------------


async def test_invalid_json_is_400_and_the_raw_body_is_quarantined(client: TestClient) -> None:
    raw = b'[{"id": "x-1", "event": "email_sent",'

    status, answer, _ = await post(client, raw)

    assert status == 400
    assert "JSON" in answer["error"]
    assert await event_rows(client) == []
    [row] = await reject_rows(client)
    assert (row.source, row.body_index, row.payload) == ("default", None, raw.decode())
    assert row.reason == answer["error"]


async def test_empty_body_is_400(client: TestClient) -> None:
    status, answer, _ = await post(client, b"")

    assert status == 400
    assert answer["error"]
    assert await event_rows(client) == []


async def test_mixed_batch_is_200_and_the_invalid_events_are_quarantined(
    client: TestClient,
) -> None:
    missing_event = {"id": "m-2", "timestamp": "2026-11-20T09:30:00Z", "subscriber": {"uid": "u"}}
    bad_timestamp = event("m-4", timestamp="yesterday")
    body = [event("m-1"), missing_event, event("m-3"), bad_timestamp]

    status, answer, _ = await post(client, encode(body))

    assert status == 200
    assert (answer["accepted"], answer["duplicates"]) == (2, 0)
    assert [r["index"] for r in answer["rejected"]] == [1, 3]
    assert all(r["error"] for r in answer["rejected"])
    assert [r.dedup_key for r in await event_rows(client)] == ["m-1", "m-3"]
    rows = await reject_rows(client)
    assert [(r.source, r.body_index) for r in rows] == [("default", 1), ("default", 3)]
    assert [json.loads(r.payload) for r in rows] == [missing_event, bad_timestamp]
    assert [r.reason for r in rows] == [r["error"] for r in answer["rejected"]]


async def test_all_invalid_batch_is_400_listing_and_quarantining_every_event(
    client: TestClient,
) -> None:
    body = [{"event": "email_sent"}, 42, event("z-3", event="not_an_event")]

    status, answer, _ = await post(client, encode(body))

    assert status == 400
    assert answer["error"]
    assert [r["index"] for r in answer["rejected"]] == [0, 1, 2]
    assert await event_rows(client) == []
    rows = await reject_rows(client)
    assert [(r.source, r.body_index) for r in rows] == [
        ("default", 0),
        ("default", 1),
        ("default", 2),
    ]
    assert [json.loads(r.payload) for r in rows] == body


async def test_body_with_a_raw_nul_byte_is_400_and_quarantined_with_the_nul_escaped(
    client: TestClient,
) -> None:
    raw = b'[{"id": "a\x00b", "event": "email_sent"}]'

    status, answer, _ = await post(client, raw)

    assert status == 400
    assert answer["error"]
    [row] = await reject_rows(client)
    assert row.body_index is None
    assert "\x00" not in row.payload
    assert row.payload == raw.decode().replace("\x00", "\\x00")


async def test_body_that_is_not_utf8_is_400_and_quarantined(client: TestClient) -> None:
    raw = b'[{"id": "caf\xe9"}]'

    status, answer, _ = await post(client, raw)

    assert status == 400
    assert "UTF-8" in answer["error"]
    [row] = await reject_rows(client)
    assert (row.body_index, row.payload) == (None, '[{"id": "caf\\xe9"}]')


async def test_post_without_content_type_is_415(client: TestClient) -> None:
    async with client.post(
        f"/webhooks/nudgespot/{TOKEN}",
        data=encode([event("n-1")]),
        skip_auto_headers=["Content-Type"],
    ) as response:
        assert "Content-Type" not in response.request_info.headers
        assert response.status == 415
    assert await event_rows(client) == []


async def test_non_ascii_unknown_token_is_401(client: TestClient) -> None:
    async with client.get("/webhooks/nudgespot/t%C3%B6ken-%F0%9F%8E%89") as response:
        assert response.status == 401


# --- body shapes and duplicates -----------------------------------------------------------------


async def test_events_wrapper_object_is_accepted(client: TestClient) -> None:
    status, answer, _ = await post(client, encode({"events": [event("w-1"), event("w-2")]}))

    assert status == 200
    assert answer == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert [r.dedup_key for r in await event_rows(client)] == ["w-1", "w-2"]


async def test_single_event_object_is_accepted(client: TestClient) -> None:
    status, answer, _ = await post(client, encode(event("single")))

    assert status == 200
    assert answer == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert [r.dedup_key for r in await event_rows(client)] == ["single"]


async def test_duplicates_within_one_body_are_stored_once(client: TestClient) -> None:
    body = [event("d-1"), event("d-2"), event("d-1"), event("d-1")]

    status, answer, _ = await post(client, encode(body))

    assert status == 200
    assert answer == {"accepted": 2, "duplicates": 2, "rejected": []}
    assert [r.dedup_key for r in await event_rows(client)] == ["d-1", "d-2"]


async def test_same_events_in_20_concurrent_requests_are_stored_once(client: TestClient) -> None:
    body = encode([event(f"cc-{i}") for i in range(25)] + EXAMPLES_BODY)
    distinct = 28

    answers = await asyncio.gather(*(post(client, body) for _ in range(20)))

    assert [status for status, _, _ in answers] == [200] * 20
    assert sum(a["accepted"] for _, a, _ in answers) == distinct
    assert sum(a["duplicates"] for _, a, _ in answers) == 20 * distinct - distinct
    rows = await event_rows(client)
    assert len(rows) == distinct
    assert len({r.dedup_key for r in rows}) == distinct
    assert await duplicate_counters(client) == {"default": 19 * distinct}


async def test_concurrent_requests_with_the_same_events_in_opposite_orders_all_succeed(
    client: TestClient
) -> None:
    for round_ in range(2):  # more than once, so that a lucky interleaving cannot hide it
        events = [event(f"oo-{round_}-{i:04d}") for i in range(1000)]
        forward, backward = encode(events), encode(events[::-1])

        answers = await asyncio.gather(*(post(client, b) for b in [forward, backward] * 4))

        assert [status for status, _, _ in answers] == [200] * 8
        assert sum(a["accepted"] for _, a, _ in answers) == 1000
    assert len(await event_rows(client)) == 2000


# --- storage unavailable and probes -------------------------------------------------------------


async def test_unavailable_storage_answers_503_with_retry_after(
    unreachable_client: TestClient,
) -> None:
    status, answer, headers = await post(unreachable_client, encode(EXAMPLES_BODY))

    assert status == 503
    assert "error" in answer
    assert int(headers["Retry-After"]) > 0


async def test_unavailable_storage_never_answers_2xx_for_any_body(
    unreachable_client: TestClient,
) -> None:
    bodies = [
        encode(event("u-1")),
        encode([event("u-1"), {"event": "nope"}]),
        encode([{"event": "nope"}]),
        b"not json",
    ]
    statuses = [(await post(unreachable_client, body))[0] for body in bodies]

    assert statuses == [503] * len(bodies)


async def test_healthz_is_200(client: TestClient) -> None:
    async with client.get("/healthz") as response:
        assert response.status == 200
        assert (await response.json())["ok"] is True


async def test_readyz_is_200_when_the_database_answers(client: TestClient) -> None:
    async with client.get("/readyz") as response:
        assert response.status == 200
        assert (await response.json())["ok"] is True


async def test_readyz_is_503_when_the_database_is_unreachable(
    unreachable_client: TestClient,
) -> None:
    async with unreachable_client.get("/readyz") as response:
        assert response.status == 503
        assert (await response.json())["ok"] is False


async def test_healthz_is_200_even_when_the_database_is_unreachable(
    unreachable_client: TestClient,
) -> None:
    async with unreachable_client.get("/healthz") as response:
        assert response.status == 200
