"""Integration tests of the Segment publisher: webhook -> store -> SegmentPublisher -> Segment.

The real application, store and publisher (segment-analytics-python's request.post on a
thread) talk to FakeSegment, a recording fake of Segment's /v1/batch, served by
pytest-aiohttp. Tests that involve storage run once on SQLite and once on PostgreSQL.
Assertions are on data (what the fake received, what the database holds); waits are
generous and time is only checked as lower bounds or loose upper bounds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web

from models import IngestBatch, NewEvent, Store
from models.tables import Event
from outbound import mapping
from outbound.packing import serialize as encoded
from service.app import STORE, create_app
from service.config import Settings
from service.wiring import build_publisher
from tests.conftest import (
    OTHER_TOKEN,
    OTHER_WRITE_KEY,
    TOKEN,
    WRITE_KEY,
    make_settings,
    stored_events,
    with_source,
)
from tests.examples import EXAMPLE_BODY, EXAMPLE_TRACKS
from tests.fake_segment import FakeSegment, _basic_user
from tests.unit.test_mapping import without_generated

UTC = timezone.utc
MAX_ATTEMPTS = 3


# --- the fake, with a per-request log and a per-write-key failure hook ---------------------------


@dataclass
class Attempt:
    """One request that reached the fake, whatever it was answered."""

    at: float  # time.monotonic() when it was answered
    write_key: str
    status: int  # 0: connection reset
    message_ids: list[str]


class RecordingSegment(FakeSegment):
    """FakeSegment that also logs arrivals and every attempt's messageIds (failed ones too),
    can fail every request of chosen write keys, and can hold requests behind a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.url = ""
        self.arrivals: list[tuple[float, str]] = []  # (time.monotonic(), write key)
        self.attempts: list[Attempt] = []
        self.failing_keys: dict[str, int] = {}  # write key -> status answered to all its requests
        self.gate: asyncio.Event | None = None  # when set up and not set, requests wait for it

    async def batch(self, request: web.Request) -> web.StreamResponse:
        write_key = _basic_user(request.headers.get("Authorization", "")) or ""
        self.arrivals.append((time.monotonic(), write_key))
        self.changed.set()
        if self.gate is not None:
            await self.gate.wait()
        status = self.failing_keys.get(write_key)
        if status is not None:
            body = await request.read()
            gzipped = request.headers.get("Content-Encoding", "") == "gzip"
            self._record(write_key, gzipped, body, status)
            return web.json_response(
                {"code": "scripted", "message": f"failing write key {status}"}, status=status
            )
        return await super().batch(request)

    def _record(self, write_key: str, gzipped: bool, body: bytes, status: int) -> None:
        try:
            ids = [m.get("messageId") for m in json.loads(body)["batch"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            ids = []
        self.attempts.append(Attempt(time.monotonic(), write_key, status, ids))
        super()._record(write_key, gzipped, body, status)

    def sends_of(self, message_id: str) -> list[Attempt]:
        return [a for a in self.attempts if message_id in a.message_ids]

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async def reached() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(reached(), timeout_s)


async def serve_fake(aiohttp_server: Any) -> RecordingSegment:
    fake = RecordingSegment()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
async def fake(aiohttp_server: Any) -> RecordingSegment:
    return await serve_fake(aiohttp_server)


# --- helpers ---------------------------------------------------------------------------------


def settings_for(db_url: str, fake: RecordingSegment, **publisher: Any) -> Settings:
    options = {
        "interval_s": 0.2,
        "retry_base_s": 0.05,
        "retry_max_s": 0.2,
        "max_attempts": MAX_ATTEMPTS,
        **publisher,
    }
    return make_settings(db_url, segment={"endpoint": fake.url}, publisher=options)


async def start_app(aiohttp_client: Any, settings: Settings, **publisher_kw: Any) -> Any:
    publisher = build_publisher(settings, **publisher_kw)
    client = await aiohttp_client(create_app(settings, publisher=publisher))
    client.publisher = publisher
    return client


async def post(client: Any, body: Any, token: str = TOKEN) -> dict[str, Any]:
    resp = await client.post(f"/webhooks/nudgespot/{token}", json=body)
    answer = await resp.json()
    assert resp.status == 200, answer
    return answer


def ev(
    key: str,
    *,
    uid: str | None = "42",
    email: str | None = None,
    event: str = "open",
    seconds: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """A raw Nudgespot event with id `key`."""
    subscriber = {k: v for k, v in (("uid", uid), ("email", email)) if v is not None}
    return {
        "id": key,
        "event": event,
        "timestamp": 1795167000 + seconds,
        "subscriber": subscriber,
        **extra,
    }


def mid(key: str, source: str = "default") -> str:
    return mapping.message_id(source, key)


async def event_rows(store: Store) -> list[Event]:
    return await stored_events(store)


async def wait_rows(
    store: Store, done: Callable[[list[Event]], bool], timeout_s: float = 15.0
) -> list[Event]:
    """Poll the database until `done(rows)`; fail showing the rows' state otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await event_rows(store)
        if done(rows):
            return rows
        if time.monotonic() > deadline:
            state = [(r.dedup_key, r.status, r.attempts, r.lease_owner, r.last_error) for r in rows]
            pytest.fail(f"database did not reach the expected state in {timeout_s}s: {state}")
        await asyncio.sleep(0.05)


def new_events(count: int, *, source: str = "default", prefix: str = "bulk") -> list[NewEvent]:
    base = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    return [
        NewEvent(
            source,
            f"{prefix}-{i:05d}",
            "email_opened",
            base + timedelta(seconds=i),
            json.dumps({"user_id": f"u{i % 50}"}),
            json.dumps({"id": f"{prefix}-{i}"}),
        )
        for i in range(count)
    ]


def all_status(status: str, count: int) -> Callable[[list[Event]], bool]:
    return lambda rows: len(rows) == count and all(r.status == status for r in rows)


# --- what arrives ------------------------------------------------------------------------------


async def test_example_body_arrives_as_the_three_documented_tracks(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    client = await start_app(aiohttp_client, settings_for(db_url, fake))

    answer = await post(client, EXAMPLE_BODY)

    assert answer == {"accepted": 3, "duplicates": 0, "rejected": []}
    delivered = await fake.wait_for(3)
    tracks = sorted(delivered, key=lambda m: m["timestamp"])
    assert [without_generated(m) for m in tracks] == EXAMPLE_TRACKS
    assert [m["messageId"] for m in tracks] == [
        mid("ev-1001"),
        mid("ev-1002"),
        tracks[2]["messageId"],
    ]
    assert len({m["messageId"] for m in tracks}) == 3
    assert fake.received and all(r.write_key == WRITE_KEY and r.gzipped for r in fake.received)


async def test_the_webhook_stores_each_event_with_its_track_message_ready_to_send(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    settings = settings_for(db_url, fake)
    client = await aiohttp_client(create_app(settings))  # no publisher: the rows stay pending

    await post(client, EXAMPLE_BODY)

    rows = await event_rows(client.app[STORE])
    assert len(rows) == 3 and all(row.message is not None for row in rows)
    stored = [json.loads(row.message) for row in rows]
    assert [without_generated(m) for m in stored] == [without_generated(m) for m in EXAMPLE_TRACKS]
    # Serialized as request.post writes it, so its length is the size the publisher packs by.
    assert all(row.message == encoded(json.loads(row.message)) for row in rows)


async def test_the_publisher_sends_the_stored_message_as_it_is(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    settings = settings_for(db_url, fake)
    client = await aiohttp_client(create_app(settings))
    store = client.app[STORE]
    [event] = new_events(1, prefix="stored")
    ready = mapping.track("default", event.dedup_key, event.event_type, event.event_time,
                          json.loads(event.fields_json), "0.0.0")
    ready["properties"]["made_at_ingest"] = True  # not what mapping the fields would give
    await store.ingest.write([IngestBatch(events=[replace(event, message=encoded(ready))])])
    publisher = build_publisher(settings)

    await publisher.start(store.outbox)
    try:
        await fake.wait_until(lambda: len(fake.delivered) == 1)
    finally:
        await publisher.stop()

    assert fake.delivered[0]["properties"] == {"made_at_ingest": True}
    assert fake.delivered[0]["messageId"] == mid(event.dedup_key)


async def test_events_of_each_source_go_with_that_sources_write_key(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    client = await start_app(aiohttp_client, settings_for(db_url, fake))

    await post(client, [ev("o-1"), ev("o-2")], token=OTHER_TOKEN)
    await post(client, [ev("d-1")])
    await fake.wait_for(3)

    by_key = {m["messageId"]: r.write_key for r in fake.received for m in r.messages}
    assert by_key == {
        mid("o-1", "other"): OTHER_WRITE_KEY,
        mid("o-2", "other"): OTHER_WRITE_KEY,
        mid("d-1"): WRITE_KEY,
    }


# --- retries ------------------------------------------------------------------------------------


async def test_message_ids_are_the_same_on_a_retry_after_500(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    fake.answer(500, times=1)
    client = await start_app(aiohttp_client, settings_for(db_url, fake))

    await post(client, [ev("r-1"), ev("r-2", uid="43")])
    await fake.wait_for(2)

    failed = [a for a in fake.attempts if a.status == 500]
    assert len(failed) == 1
    assert sorted(failed[0].message_ids) == sorted(fake.delivered_ids())
    assert sorted(fake.delivered_ids()) == sorted([mid("r-1"), mid("r-2")])
    rows = await wait_rows(client.app[STORE], all_status("delivered", 2))
    assert [(r.status, r.attempts, r.last_error) for r in rows] == [("delivered", 2, None)] * 2


async def test_event_goes_dead_after_max_attempts_of_500(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    fake.answer(500)
    client = await start_app(aiohttp_client, settings_for(db_url, fake))

    await post(client, [ev("dead-1")])
    [row] = await wait_rows(client.app[STORE], all_status("dead", 1))

    assert row.attempts == MAX_ATTEMPTS
    assert row.last_error and "500" in row.last_error
    assert row.lease_owner is None
    assert [a.status for a in fake.sends_of(mid("dead-1"))] == [500] * MAX_ATTEMPTS
    assert fake.delivered == []


async def test_retry_after_from_429_holds_the_source_then_delivers(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    fake.answer(429, times=1, headers={"Retry-After": "2"})
    client = await start_app(aiohttp_client, settings_for(db_url, fake))

    await post(client, [ev("ra-1")])
    await fake.wait_until(lambda: any(a.status == 429 for a in fake.attempts))
    await post(client, [ev("ra-2", uid="43")])  # new work must not break the hold either
    await fake.wait_for(2, timeout_s=20)

    first_at = next(at for at, key in fake.arrivals if key == WRITE_KEY)
    later = [at - first_at for at, key in fake.arrivals[1:] if key == WRITE_KEY]
    assert later, "nothing was sent after the 429"
    assert min(later) >= 1.8, f"sent again {min(later):.2f}s after a Retry-After of 2s"
    assert sorted(fake.delivered_ids()) == sorted([mid("ra-1"), mid("ra-2")])


async def test_connection_reset_is_retried_then_delivered(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    fake.reset_connections(times=1)
    client = await start_app(aiohttp_client, settings_for(db_url, fake))

    await post(client, [ev("reset-1")])
    await fake.wait_for(1)

    assert [a.status for a in fake.sends_of(mid("reset-1"))] == [0, 200]
    [row] = await wait_rows(client.app[STORE], all_status("delivered", 1))
    assert row.attempts == 2


# --- events Segment can never accept ---------------------------------------------------------


async def test_400_for_one_message_kills_only_that_event(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    keys = [f"b-{i:02d}" for i in range(20)]
    bad = "b-07"
    fake.reject(mid(bad), "properties.variant must be a string")
    client = await start_app(aiohttp_client, settings_for(db_url, fake))

    await post(client, [ev(k, seconds=i) for i, k in enumerate(keys)])
    rows = await wait_rows(
        client.app[STORE],
        lambda rows: len(rows) == 20 and all(r.status != "pending" for r in rows),
    )

    assert sorted(fake.delivered_ids()) == sorted(mid(k) for k in keys if k != bad)
    assert Counter(fake.delivered_ids()).most_common(1)[0][1] == 1
    state = {r.dedup_key: r.status for r in rows}
    assert state == {k: ("dead" if k == bad else "delivered") for k in keys}
    dead = next(r for r in rows if r.dedup_key == bad)
    assert "properties.variant must be a string" in (dead.last_error or "")


async def test_message_over_32_kb_goes_dead_with_the_size_reason(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    client = await start_app(aiohttp_client, settings_for(db_url, fake))

    await post(
        client,
        [ev("s-1"), ev("huge", seconds=1, properties={"blob": "x" * 40_000}), ev("s-2", seconds=2)],
    )
    rows = await wait_rows(
        client.app[STORE],
        lambda rows: len(rows) == 3 and all(r.status != "pending" for r in rows),
    )

    state = {r.dedup_key: r.status for r in rows}
    assert state == {"s-1": "delivered", "huge": "dead", "s-2": "delivered"}
    error = next(r.last_error for r in rows if r.dedup_key == "huge") or ""
    assert "bytes" in error and "32768" in error, error
    assert fake.sends_of(mid("huge")) == []
    assert sorted(fake.delivered_ids()) == sorted([mid("s-1"), mid("s-2")])


# --- leases and replicas --------------------------------------------------------------------------


async def test_expired_lease_of_a_crashed_publisher_is_taken_over(
    fake: RecordingSegment, store: Store, db_url: str
) -> None:
    await store.ingest.write([IngestBatch(events=new_events(5))])
    claimed_at = time.monotonic()
    claimed = await store.outbox.claim("default", owner="crashed", limit=10, lease_s=0.2)
    assert len(claimed) == 5
    publisher = build_publisher(settings_for(db_url, fake), owner="survivor")

    await publisher.start(store.outbox)
    try:
        await fake.wait_for(5, timeout_s=15)
    finally:
        await publisher.stop()

    assert min(at for at, _ in fake.arrivals) - claimed_at >= 0.15  # not before the lease ended
    assert sorted(fake.delivered_ids()) == sorted(mid(e.dedup_key) for e in new_events(5))
    rows = await wait_rows(store, all_status("delivered", 5))
    assert all(r.lease_owner is None for r in rows)


async def test_concurrent_claims_lease_each_event_once_and_leave_none_behind(
    store: Store,
) -> None:
    await store.ingest.write([IngestBatch(events=new_events(30))])

    claims = await asyncio.gather(*(
        store.outbox.claim("default", owner="publisher", limit=10, lease_s=60)
        for _ in range(3)))

    ids = [event.id for claim in claims for event in claim]
    assert len(ids) == len(set(ids)) == 30  # disjoint, and none came back empty-handed


async def test_live_lease_of_another_publisher_is_not_taken_over(
    fake: RecordingSegment, store: Store, db_url: str
) -> None:
    await store.ingest.write([IngestBatch(events=new_events(3))])
    await store.outbox.claim("default", owner="alive", limit=10, lease_s=60)
    publisher = build_publisher(settings_for(db_url, fake), owner="intruder")

    await publisher.start(store.outbox)
    try:
        await asyncio.sleep(1.0)  # five publisher intervals
    finally:
        await publisher.stop()

    assert fake.arrivals == []
    rows = await event_rows(store)
    # SQLite's leases are kept by the serving process, PostgreSQL's in the rows.
    holder = None if store.db.leases_in_memory else "alive"
    assert [(r.status, r.lease_owner) for r in rows] == [("pending", holder)] * 3


async def test_two_publishers_on_one_postgres_database_send_each_event_once(
    aiohttp_server: Any, postgres_url: str
) -> None:
    fakes = [await serve_fake(aiohttp_server), await serve_fake(aiohttp_server)]
    for f in fakes:
        f.delay_s = 0.02  # keep each publisher busy long enough for both to take part
    seed = Store(postgres_url)
    await seed.open()
    events = new_events(2000)
    await seed.ingest.write([IngestBatch(events=events)])
    await seed.close()
    stores = [Store(postgres_url), Store(postgres_url)]
    publishers = [
        build_publisher(settings_for(postgres_url, f, batch_max_events=100), owner=f"replica-{i}")
        for i, f in enumerate(fakes)
    ]

    for s in stores:
        await s.open()
    try:
        await asyncio.gather(
            *(p.start(s.outbox) for s, p in zip(stores, publishers, strict=True)))
        deadline = time.monotonic() + 45
        while len({i for f in fakes for i in f.delivered_ids()}) < 2000:
            assert time.monotonic() < deadline, "not everything was delivered in 45s"
            await asyncio.sleep(0.05)
    finally:
        for p in publishers:
            await p.stop()

    try:
        sent = Counter(i for f in fakes for a in f.attempts for i in a.message_ids)
        assert set(sent) == {mid(e.dedup_key) for e in events}
        assert max(sent.values()) == 1, [i for i, n in sent.items() if n > 1][:5]
        assert all(f.delivered for f in fakes), "one publisher did all the work"
        await wait_rows(stores[0], all_status("delivered", 2000))
    finally:
        for s in stores:
            await s.close()


# --- identify -------------------------------------------------------------------------------------


def identify_settings(db_url: str, fake: RecordingSegment) -> Settings:
    return with_source(settings_for(db_url, fake), "default", identify=True)


def messages_of(fake: RecordingSegment, *, kind: str, user: str) -> list[dict[str, Any]]:
    return [
        m
        for m in fake.delivered
        if m["type"] == kind and (m.get("userId") == user or m.get("anonymousId") == user)
    ]


async def test_identify_precedes_a_users_first_track_in_the_same_batch(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    client = await start_app(aiohttp_client, identify_settings(db_url, fake))

    await post(
        client,
        [
            ev("i-1", email="ada@example.com", seconds=0),
            ev("i-2", email="ada@example.com", seconds=1, event="click"),
            ev("i-3", uid=None, email="bob@example.com", seconds=2),
        ],
    )
    await fake.wait_for(5)  # three tracks, two identifies

    for user, email in (("42", "ada@example.com"), ("bob@example.com", "bob@example.com")):
        [identify] = messages_of(fake, kind="identify", user=user)
        assert identify["traits"]["email"] == email
        [request] = [r for r in fake.received if identify in r.messages]
        mine = [
            m for m in request.messages if m.get("userId") == user or m.get("anonymousId") == user
        ]
        assert mine[0] is identify and mine[1]["type"] == "track", mine
        first_track = min(messages_of(fake, kind="track", user=user), key=lambda m: m["timestamp"])
        assert mine[1]["messageId"] == first_track["messageId"]
    assert len(messages_of(fake, kind="track", user="42")) == 2


async def test_identify_is_not_sent_again_for_later_events_of_the_user(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    client = await start_app(aiohttp_client, identify_settings(db_url, fake))

    await post(client, [ev("j-1")])
    await fake.wait_for(2)
    await post(client, [ev("j-2", seconds=1)])
    await post(client, [ev("j-3", seconds=2)])
    await fake.wait_for(4)

    assert len(messages_of(fake, kind="identify", user="42")) == 1
    assert len(messages_of(fake, kind="track", user="42")) == 3


async def test_identify_is_not_sent_again_after_a_restart(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    settings = identify_settings(db_url, fake)
    first = await start_app(aiohttp_client, settings)
    await post(first, [ev("k-1")])
    await fake.wait_for(2)
    await first.close()

    second = await start_app(aiohttp_client, settings)
    await post(second, [ev("k-2", seconds=1)])
    await fake.wait_for(3)

    assert len(messages_of(fake, kind="identify", user="42")) == 1
    assert {m["messageId"] for m in messages_of(fake, kind="track", user="42")} == {
        mid("k-1"),
        mid("k-2"),
    }


# --- scheduling ----------------------------------------------------------------------------------


async def test_a_failing_source_does_not_delay_another(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    fake.failing_keys[OTHER_WRITE_KEY] = 500
    client = await start_app(
        aiohttp_client, settings_for(db_url, fake, max_attempts=1000, retry_max_s=0.1)
    )

    await post(client, [ev(f"o-{i}", seconds=i) for i in range(5)], token=OTHER_TOKEN)
    await fake.wait_until(lambda: sum(a.write_key == OTHER_WRITE_KEY for a in fake.attempts) >= 2)
    await post(client, [ev(f"d-{i}", seconds=i) for i in range(5)])
    await fake.wait_for(5, timeout_s=5)

    assert sorted(fake.delivered_ids()) == sorted(mid(f"d-{i}") for i in range(5))
    rows = await event_rows(client.app[STORE])
    assert {r.dedup_key: r.status for r in rows if r.source == "other"} == {
        f"o-{i}": "pending" for i in range(5)
    }


async def test_a_stored_event_wakes_the_publisher_before_its_interval(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    client = await start_app(aiohttp_client, settings_for(db_url, fake, interval_s=30))

    await post(client, [ev("w-1")])
    await fake.wait_for(1, timeout_s=5)
    await asyncio.sleep(0.5)  # let the run that sent w-1 end; the next scheduled one is ~30 s away
    await post(client, [ev("w-2", seconds=1)])
    await fake.wait_for(2, timeout_s=5)

    assert sorted(fake.delivered_ids()) == sorted([mid("w-1"), mid("w-2")])


async def test_stop_during_a_slow_send_is_bounded_and_releases_leases(
    aiohttp_client: Any, fake: RecordingSegment, db_url: str
) -> None:
    fake.gate = asyncio.Event()  # Segment does not answer until the test lets it
    settings = make_settings(
        db_url,
        server={"shutdown_timeout_s": 0.5},
        segment={"endpoint": fake.url},
        publisher={"interval_s": 0.2, "retry_base_s": 0.05, "retry_max_s": 0.2},
    )
    client = await start_app(aiohttp_client, settings)
    try:
        await post(client, [ev(f"st-{i}", seconds=i) for i in range(3)])
        await fake.wait_until(lambda: len(fake.arrivals) >= 1)

        started = time.monotonic()
        await client.publisher.stop()
        elapsed = time.monotonic() - started

        assert elapsed < 5.0, f"stop took {elapsed:.1f}s with a 0.5s bound"
        rows = await event_rows(client.app[STORE])
        assert len(rows) == 3
        leased = [
            (r.dedup_key, r.status, r.lease_owner)
            for r in rows
            if r.status != "delivered" and r.lease_owner is not None
        ]
        assert leased == []
    finally:
        fake.gate.set()
