"""Two `serve` replicas on one PostgreSQL database: events are claimed by exactly one replica
and reach Segment exactly once, and an event posted to both at once is stored once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from tests.resilience.harness import (
    FACTOR,
    Arrivals,
    Inspector,
    LoadGenerator,
    TimedFakeSegment,
    assert_delivery,
    scaled,
    timeout_for,
    wait_delivered,
    wait_until,
)

pytestmark = pytest.mark.timeout(timeout_for(150))

EVENTS = scaled(2000)
# Small batches and a short pause at the fake: many claims race, batches overlap in flight.
REPLICA_SECTIONS = {"publisher": {"batch_max_events": 50}}


async def start_replicas(service_factory, url: str):
    a = service_factory(url, name="replica-a", **REPLICA_SECTIONS)
    b = service_factory(url, name="replica-b", **REPLICA_SECTIONS)
    a.start()
    b.start()
    await asyncio.gather(a.wait_ready(), b.wait_ready())
    return a, b


async def assert_each_row_delivered_once(database: Inspector, expected: int) -> None:
    rows = await database.events()
    assert len(rows) == expected, f"{len(rows)} rows stored, expected {expected}"
    wrong = [(r["dedup_key"], r["status"], r["attempts"]) for r in rows
             if r["status"] != "delivered" or r["attempts"] != 1]
    assert not wrong, f"{len(wrong)} rows not delivered in exactly one attempt: {wrong[:10]}"


def assert_no_messageid_twice(fake: TimedFakeSegment) -> None:
    twice = {m: c for m, c in Counter(fake.delivered_ids()).items() if c > 1}
    assert not twice, f"{len(twice)} messageIds delivered more than once, e.g. " \
                      f"{list(twice.items())[:5]}"


async def test_two_replicas_deliver_every_event_exactly_once(
    fake: TimedFakeSegment, service_factory, postgres_database_inspector: Inspector
) -> None:
    database = postgres_database_inspector
    a, b = await start_replicas(service_factory, database.url)
    fake.delay_s = 0.02
    load = LoadGenerator([a.webhook_url(), b.webhook_url()], run=f"rep-{uuid.uuid4().hex[:8]}",
                         total=EVENTS, concurrency=16, duration_s=90.0 * FACTOR)
    await load.run_all()
    assert len(load.acked) == EVENTS, load.summary()
    assert {att.target for att in load.attempts} == {0, 1}, "the load did not alternate"

    await wait_delivered(fake, load)
    counts = await database.wait_settled()
    assert counts == {"delivered": EVENTS}, counts
    arrivals = Arrivals.of(fake, load.run)
    assert_delivery(load, arrivals)
    assert_no_messageid_twice(fake)
    await assert_each_row_delivered_once(database, EVENTS)
    # Both replicas took part in publishing (else this would not test claiming at all).
    published = {s.name: s.log_count("outcome=delivered") for s in (a, b)}
    print(f"delivered batches per replica: {published}; {len(fake.received)} requests")
    assert all(published.values()), f"a replica published nothing: {published}"
    assert a.running() and b.running()


async def test_the_same_events_posted_to_both_replicas_at_once_are_stored_once(
    fake: TimedFakeSegment, service_factory, postgres_database_inspector: Inspector
) -> None:
    database = postgres_database_inspector
    a, b = await start_replicas(service_factory, database.url)
    run = f"both-{uuid.uuid4().hex[:8]}"
    total = scaled(500)
    # Two generators post the same ids (same run) at the same time, one to each replica.
    to_a = LoadGenerator([a.webhook_url()], run=run, total=total, concurrency=8,
                         duration_s=60.0 * FACTOR)
    to_b = LoadGenerator([b.webhook_url()], run=run, total=total, concurrency=8,
                         duration_s=60.0 * FACTOR)
    await asyncio.gather(to_a.run_all(), to_b.run_all())
    assert len(to_a.acked) == total and len(to_b.acked) == total, \
        f"{to_a.summary()} / {to_b.summary()}"

    accepted: Counter[int] = Counter()
    for attempt in to_a.attempts + to_b.attempts:
        if attempt.status == 200 and isinstance(attempt.body, dict):
            accepted[attempt.n] += attempt.body.get("accepted", 0)
    wrong = {n: c for n, c in accepted.items() if c != 1}
    assert len(accepted) == total and not wrong, \
        f"events accepted (stored) other than once: {dict(list(wrong.items())[:10])}"

    await wait_delivered(fake, to_a)
    counts = await database.wait_settled()
    assert counts == {"delivered": total}, counts
    assert_delivery(to_a, Arrivals.of(fake, run))
    assert_no_messageid_twice(fake)
    await assert_each_row_delivered_once(database, total)


async def test_a_retry_after_holds_the_source_on_every_replica(
    fake: TimedFakeSegment, service_factory, postgres_database_inspector: Inspector
) -> None:
    database = postgres_database_inspector
    hold_s = 8
    # A request already on its way from the other replica when the 429 came back is no breach:
    # allow that much time after the 429 (it is sent within milliseconds of its claim).
    in_flight_s = 1.5
    sections = {"publisher": {"batch_max_events": 50, "concurrency": 1}}
    a = service_factory(database.url, name="replica-a", **sections)
    b = service_factory(database.url, name="replica-b", **sections)
    a.start()
    b.start()
    await asyncio.gather(a.wait_ready(), b.wait_ready())
    fake.answer(429, times=1, headers={"Retry-After": str(hold_s)})
    load = LoadGenerator([a.webhook_url(), b.webhook_url()], run=f"hold2-{uuid.uuid4().hex[:8]}",
                         total=scaled(1000), concurrency=8, duration_s=60.0 * FACTOR)
    await load.run_all()
    await wait_delivered(fake, load)
    await database.wait_settled()

    t429 = next(t for t, s in fake.requests() if s == 429)
    after = [(round(t - t429, 2), s) for t, s in fake.requests() if t > t429]
    too_soon = [(dt, s) for dt, s in after if in_flight_s < dt < hold_s - 0.5]
    assert not too_soon, f"a replica sent during the {hold_s} s hold: {too_soon}"
    assert_delivery(load, Arrivals.of(fake, load.run))
    assert_no_messageid_twice(fake)


async def test_a_replica_killed_under_load_leaves_nothing_behind(
    fake: TimedFakeSegment, service_factory, postgres_database_inspector: Inspector
) -> None:
    """kill -9 one replica mid-load: the survivor takes its expired leases and delivers all."""
    database = postgres_database_inspector
    a, b = await start_replicas(service_factory, database.url)
    fake.delay_s = 0.05  # keep batches in flight, so the kill strands some claims
    load = LoadGenerator([a.webhook_url(), b.webhook_url()], run=f"repkill-{uuid.uuid4().hex[:8]}",
                         total=EVENTS, concurrency=16, duration_s=90.0 * FACTOR)
    load.start()
    await wait_until(lambda: len(load.acked) >= EVENTS // 3, 60.0 * FACTOR,
                     "a third of the events acknowledged", 0.05, load.summary)
    await a.kill()  # the load carries on: a refused post is retried on the other replica
    await load.finish(120.0 * FACTOR)
    assert len(load.acked) == EVENTS, load.summary()

    await wait_delivered(fake, load)
    counts = await database.wait_settled()
    assert counts == {"delivered": EVENTS}, counts
    # A message may arrive twice (the replica died between Segment's 2xx and recording it),
    # but always under its one messageId.
    assert_delivery(load, Arrivals.of(fake, load.run))
    assert b.running()
