"""Integration tests of models.store.Store on a real SQLite file and a real PostgreSQL database.

Every test that takes `store` or `db_url` runs once per database (see tests/conftest.py).
What the store claims to have stored is always read back from the database.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from models import DatabaseUnavailable, IngestBatch, NewEvent, NewReject, Store
from models.tables import Event, RejectedEvent, SourceCounter
from tests.conftest import stored_events

UNREACHABLE_POSTGRES_URL = "postgres://root@127.0.0.1:1/x"
EVENT_TIME = datetime(2026, 11, 20, 9, 30, 0, 123000, tzinfo=timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_event(
    key: str,
    *,
    source: str = "default",
    event_type: str = "email_delivered",
    event_time: datetime = EVENT_TIME,
    fields_json: str | None = None,
    payload: str | None = None,
) -> NewEvent:
    """An accepted event whose payload names its key (so rows can be told apart)."""
    return NewEvent(
        source=source,
        dedup_key=key,
        event_type=event_type,
        event_time=event_time,
        fields_json=fields_json if fields_json is not None else json.dumps({"user_id": "42"}),
        payload=payload if payload is not None else json.dumps({"id": key}),
    )


async def event_rows(store: Store) -> list[Event]:
    return await stored_events(store)


async def reject_rows(store: Store) -> list[RejectedEvent]:
    with store.db.orm():
        return await RejectedEvent.all().order_by("id")


async def duplicate_counters(store: Store) -> dict[str, int]:
    with store.db.orm():
        return {c.source: c.duplicates for c in await SourceCounter.all()}


def sqlite_path(url: str) -> str:
    assert url.startswith("sqlite://")
    return url[len("sqlite://") :]


# --- what a stored row holds ------------------------------------------------------------------


async def test_ingest_stores_every_column_of_a_new_event(store: Store) -> None:
    fields_json = json.dumps({"user_id": "42", "email": "ada@example.com", "message_id": "msg-77"})
    payload = json.dumps({"id": "ev-1001", "event": "email_delivered"})
    event = new_event("ev-1001", fields_json=fields_json, payload=payload)
    before = utcnow()

    [result] = await store.ingest.write([IngestBatch(events=[event])])

    after = utcnow()
    assert result.stored == [True]
    [row] = await event_rows(store)
    assert row.source == "default"
    assert row.dedup_key == "ev-1001"
    assert row.event_type == "email_delivered"
    assert row.event_time == EVENT_TIME
    assert row.fields_json == fields_json
    assert row.payload == payload
    assert row.status == "pending"
    assert row.attempts == 0
    assert row.last_error is None
    assert row.lease_owner is None
    assert row.lease_expires_at is None
    assert row.delivered_at is None
    assert before <= row.received_at <= after
    assert row.next_attempt_at == row.received_at
    assert row.updated_at == row.received_at


async def test_event_time_in_another_zone_is_stored_as_the_same_instant(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = EVENT_TIME.astimezone(plus_two)

    await store.ingest.write([IngestBatch(events=[new_event("k-zone", event_time=local)])])

    [row] = await event_rows(store)
    assert row.event_time == EVENT_TIME
    assert row.event_time.utcoffset() == timedelta(0)


# --- duplicates ---------------------------------------------------------------------------------


async def test_duplicate_within_one_batch_is_stored_once_and_first_occurrence_wins(
    store: Store,
) -> None:
    first = new_event("k1", payload='{"copy":1}')
    second = new_event("k1", payload='{"copy":2}')
    other = new_event("k2")

    [result] = await store.ingest.write([IngestBatch(events=[first, second, other])])

    assert result.stored == [True, False, True]
    assert (result.accepted, result.duplicates) == (2, 1)
    rows = await event_rows(store)
    assert [(r.dedup_key, r.payload) for r in rows] == [
        ("k1", '{"copy":1}'),
        ("k2", '{"id": "k2"}'),
    ]


async def test_duplicate_across_batches_of_one_call_is_reported_in_the_later_batch(
    store: Store,
) -> None:
    batch_a = IngestBatch(events=[new_event("k1"), new_event("k2")])
    batch_b = IngestBatch(events=[new_event("k2"), new_event("k3")])

    result_a, result_b = await store.ingest.write([batch_a, batch_b])

    assert result_a.stored == [True, True]
    assert result_b.stored == [False, True]
    assert sorted(r.dedup_key for r in await event_rows(store)) == ["k1", "k2", "k3"]


async def test_duplicate_across_calls_is_not_stored_again(store: Store) -> None:
    [first] = await store.ingest.write([IngestBatch(events=[new_event("k1", payload='{"v":1}')])])
    [again] = await store.ingest.write(
        [IngestBatch(events=[new_event("k1", payload='{"v":2}'), new_event("k2")])]
    )

    assert first.stored == [True]
    assert again.stored == [False, True]
    rows = await event_rows(store)
    assert [(r.dedup_key, r.payload) for r in rows] == [("k1", '{"v":1}'), ("k2", '{"id": "k2"}')]


async def test_duplicates_are_counted_per_source_and_accumulate_across_calls(store: Store) -> None:
    await store.ingest.write(
        [
            IngestBatch(events=[new_event("a"), new_event("a"), new_event("a")]),
            IngestBatch(events=[new_event("b", source="other"), new_event("b", source="other")]),
        ]
    )
    assert await duplicate_counters(store) == {"default": 2, "other": 1}

    await store.ingest.write([IngestBatch(events=[new_event("a"), new_event("c", source="other")])])

    assert await duplicate_counters(store) == {"default": 3, "other": 1}


async def test_no_duplicate_counter_row_when_nothing_was_a_duplicate(store: Store) -> None:
    await store.ingest.write([IngestBatch(events=[new_event("a"), new_event("b")])])

    assert await duplicate_counters(store) == {}


async def test_same_dedup_key_in_two_sources_is_not_a_duplicate(store: Store) -> None:
    [result] = await store.ingest.write(
        [IngestBatch(events=[new_event("k1", source="default"), new_event("k1", source="other")])]
    )

    assert result.stored == [True, True]
    rows = await event_rows(store)
    assert sorted((r.source, r.dedup_key) for r in rows) == [("default", "k1"), ("other", "k1")]
    assert await duplicate_counters(store) == {}


# --- rejects ------------------------------------------------------------------------------------


async def test_rejects_are_stored_with_source_index_payload_and_reason(store: Store) -> None:
    rejects = [
        NewReject("default", 3, '{"event":"nope"}', "unknown event 'nope'"),
        NewReject("other", None, "not json at all", "body is not valid JSON"),
    ]
    before = utcnow()

    await store.ingest.write([IngestBatch(events=[new_event("k1")], rejects=rejects)])

    after = utcnow()
    rows = await reject_rows(store)
    assert [(r.source, r.body_index, r.payload, r.reason) for r in rows] == [
        ("default", 3, '{"event":"nope"}', "unknown event 'nope'"),
        ("other", None, "not json at all", "body is not valid JSON"),
    ]
    assert all(before <= r.received_at <= after for r in rows)


async def test_reject_only_batch_stores_the_rejects_and_no_event(store: Store) -> None:
    reject = NewReject("default", 0, "[1]", "event must be a JSON object, not a number")

    [result] = await store.ingest.write([IngestBatch(rejects=[reject])])

    assert result.stored == []
    assert (result.accepted, result.duplicates) == (0, 0)
    assert await event_rows(store) == []
    [row] = await reject_rows(store)
    assert (row.source, row.body_index, row.reason) == ("default", 0, reject.reason)


async def test_more_rows_than_one_statement_holds_are_all_stored(store: Store) -> None:
    events = [new_event(f"bulk-{i}") for i in range(1201)]
    rejects = [NewReject("default", i, "{}", "bad") for i in range(1100)]

    [result] = await store.ingest.write([IngestBatch(events=events + events[:5], rejects=rejects)])

    assert result.stored == [True] * 1201 + [False] * 5
    assert len(await event_rows(store)) == 1201
    assert len(await reject_rows(store)) == 1100


# --- awkward text -------------------------------------------------------------------------------

AWKWARD = {
    "nul": "a\x00b",
    "emoji": "party 🎉 ✓ Ünïcödé 中文",
    "sql": "'; DROP TABLE nudgespot_event; -- \" \\ % _ $1 ?",
}


async def test_event_payload_with_escaped_nul_emoji_and_sql_metacharacters_round_trips(
    store: Store,
) -> None:
    payload = json.dumps(AWKWARD, ensure_ascii=False)  # NUL becomes the escape \u0000
    assert "\\u0000" in payload and "🎉" in payload
    key = "key-'\"; DROP TABLE x; --🎉"
    event = new_event(key, payload=payload, fields_json=payload)

    [result] = await store.ingest.write([IngestBatch(events=[event])])

    assert result.stored == [True]
    [row] = await event_rows(store)
    assert row.dedup_key == key
    assert row.payload == payload
    assert row.fields_json == payload
    assert json.loads(row.payload) == AWKWARD


async def test_reject_payload_with_escaped_nul_emoji_and_sql_metacharacters_round_trips(
    store: Store,
) -> None:
    payload = json.dumps(AWKWARD, ensure_ascii=False)
    reason = "'reason' with 🎉 and '; DELETE FROM nudgespot_rejected; --"

    await store.ingest.write([IngestBatch(rejects=[NewReject("default", 7, payload, reason)])])

    [row] = await reject_rows(store)
    assert row.payload == payload
    assert row.reason == reason
    assert json.loads(row.payload) == AWKWARD


# --- concurrency --------------------------------------------------------------------------------


def overlapping_batches(calls: int, keys: int, per_call: int) -> list[IngestBatch]:
    """Batches whose keys overlap, every batch listing its keys in the same (sorted) order.

    One order for all keeps these tests about dedup under concurrency; what happens when
    the orders differ is the subject of the opposite-orders test below.
    """
    batches = []
    for i in range(calls):
        chosen = sorted(f"ck-{(i + j) % keys:03d}" for j in range(per_call))
        batches.append(IngestBatch(events=[new_event(k) for k in chosen]))
    return batches


def assert_one_winner_per_key(batches: list[IngestBatch], results: list[list]) -> None:
    wins: Counter[str] = Counter()
    for batch, [result] in zip(batches, results, strict=True):
        assert len(result.stored) == len(batch.events)
        for event, stored in zip(batch.events, result.stored, strict=True):
            wins[event.dedup_key] += stored
    all_keys = {e.dedup_key for b in batches for e in b.events}
    assert wins == Counter({k: 1 for k in all_keys})


async def test_concurrent_ingests_with_overlapping_keys_store_each_key_once(store: Store) -> None:
    batches = overlapping_batches(calls=30, keys=12, per_call=6)

    results = await asyncio.gather(*(store.ingest.write([b]) for b in batches))

    assert_one_winner_per_key(batches, results)
    keys = [r.dedup_key for r in await event_rows(store)]
    assert sorted(keys) == sorted({e.dedup_key for b in batches for e in b.events})


async def test_concurrent_ingests_through_two_stores_on_one_database_store_each_key_once(
    store: Store, db_url: str
) -> None:
    batches = overlapping_batches(calls=24, keys=10, per_call=5)
    async with Store(db_url) as second:
        results = await asyncio.gather(
            *((store if i % 2 else second).ingest.write([b]) for i, b in enumerate(batches))
        )

    assert_one_winner_per_key(batches, results)
    keys = [r.dedup_key for r in await event_rows(store)]
    assert sorted(keys) == sorted({e.dedup_key for b in batches for e in b.events})
    total_duplicates = sum(len(b.events) for b in batches) - len(keys)
    assert await duplicate_counters(store) == {"default": total_duplicates}


async def test_concurrent_ingests_of_the_same_keys_in_opposite_orders_all_succeed(
    store: Store
) -> None:
    # Writers inserting k0..k999 and k999..k0 at the same time, each on its own connection.
    # PostgreSQL locks a unique-index entry per inserted row, in statement order, so this
    # deadlocks unless the store inserts in a consistent order (or retries the deadlock).
    await asyncio.gather(*(store.ping() for _ in range(10)))  # open the pool's connections
    for round_ in range(3):  # a few rounds, so that a lucky interleaving cannot hide it
        keys = [f"ord-{round_}-{i:04d}" for i in range(1000)]
        forward = IngestBatch(events=[new_event(k) for k in keys])
        backward = IngestBatch(events=[new_event(k) for k in reversed(keys)])
        batches = [forward, backward] * 4

        results = await asyncio.gather(*(store.ingest.write([b]) for b in batches))

        assert_one_winner_per_key(batches, results)
        stored = {r.dedup_key for r in await event_rows(store)}
        assert stored.issuperset(keys)
    assert len(await event_rows(store)) == 3000


# --- availability -------------------------------------------------------------------------------


async def test_ping_succeeds_on_a_reachable_database(store: Store) -> None:
    assert await store.ping() is None


async def test_ingest_after_close_raises_database_unavailable(store: Store) -> None:
    await store.close()

    with pytest.raises(DatabaseUnavailable):
        await store.ingest.write([IngestBatch(events=[new_event("k1")])])


async def test_ping_after_close_raises_database_unavailable(store: Store) -> None:
    await store.close()

    with pytest.raises(DatabaseUnavailable):
        await store.ping()


@pytest.fixture
async def unreachable_store():
    s = Store(UNREACHABLE_POSTGRES_URL)
    await s.open()
    yield s
    await s.close()


async def test_ingest_on_unreachable_postgres_raises_database_unavailable(
    unreachable_store: Store,
) -> None:
    with pytest.raises(DatabaseUnavailable):
        await asyncio.wait_for(
            unreachable_store.ingest.write([IngestBatch(events=[new_event("k1")])]), 10
        )


async def test_ping_on_unreachable_postgres_raises_database_unavailable(
    unreachable_store: Store,
) -> None:
    with pytest.raises(DatabaseUnavailable):
        await asyncio.wait_for(unreachable_store.ping(), 10)


async def test_unavailable_error_does_not_reveal_the_database_password() -> None:
    async with Store("postgres://root:hunter2-secret@127.0.0.1:1/x") as s:
        with pytest.raises(DatabaseUnavailable) as caught:
            await s.ping()
    assert "hunter2-secret" not in str(caught.value)


# --- migrations and SQLite specifics ----------------------------------------------------------


async def test_migrate_twice_keeps_data_and_the_store_keeps_working(
    store: Store, db_url: str
) -> None:
    await store.ingest.write([IngestBatch(events=[new_event("before")])])

    await Store(db_url).migrate()
    await Store(db_url).migrate()

    batch = IngestBatch(events=[new_event("before"), new_event("after")])
    [result] = await store.ingest.write([batch])
    assert result.stored == [False, True]
    assert [r.dedup_key for r in await event_rows(store)] == ["before", "after"]


@pytest.fixture
async def sqlite_store(sqlite_url: str):
    s = Store(sqlite_url)
    await s.migrate()
    await s.open()
    yield s
    await s.close()


async def test_sqlite_file_is_in_wal_mode(sqlite_store: Store, sqlite_url: str) -> None:
    await sqlite_store.ping()  # opens the store's connection, which sets the journal mode
    with sqlite3.connect(sqlite_path(sqlite_url)) as fresh:
        [(mode,)] = fresh.execute("PRAGMA journal_mode").fetchall()
    assert mode.lower() == "wal"


async def test_sqlite_store_connection_uses_full_synchronous_commits(sqlite_store: Store) -> None:
    with sqlite_store.db.orm():
        [row] = await sqlite_store.db.fetch("PRAGMA synchronous")
    assert list(row.values()) == [2]  # FULL


async def test_sqlite_committed_ingest_is_visible_to_a_fresh_connection(
    sqlite_store: Store, sqlite_url: str
) -> None:
    await sqlite_store.ingest.write(
        [IngestBatch(events=[new_event("seen")], rejects=[NewReject("default", 0, "{}", "r")])]
    )

    fresh = sqlite3.connect(sqlite_path(sqlite_url))
    try:
        events = fresh.execute("SELECT source, dedup_key, status FROM nudgespot_event").fetchall()
        rejects = fresh.execute("SELECT source, body_index FROM nudgespot_rejected").fetchall()
    finally:
        fresh.close()
    assert events == [("default", "seen", "pending")]
    assert rejects == [("default", 0)]
