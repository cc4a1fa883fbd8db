"""The serve process dies (kill -9) or is stopped (SIGTERM) while events pour in.

What must hold: every event that got a 2xx reaches Segment, each under its one deterministic
messageId (message_id("default", id)); nothing is left pending once the leases have expired;
SIGTERM ends the process with status 0 within the shutdown bound.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import pytest

from tests.resilience.harness import (
    FACTOR,
    LEASE_S,
    SEGMENT_TIMEOUT_S,
    SHUTDOWN_TIMEOUT_S,
    SOAK,
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

EVENTS = scaled(1500)
KILLS = 10 if SOAK else 2
# How long after SIGTERM the process may take: the configured bound plus generous room for the
# interpreter to start and end on a busy machine (this is not a performance assertion).
SIGTERM_SLACK_S = 20.0


async def leased_pending(database: Inspector) -> int:
    rows = await database.query(
        "SELECT COUNT(*) AS n FROM nudgespot_event "
        "WHERE status = 'pending' AND lease_owner IS NOT NULL")
    return int(rows[0]["n"])


async def assert_stored_and_delivered(database: Inspector, load: LoadGenerator) -> None:
    """Every acknowledged id is a row of the database, delivered; nothing is dead."""
    rows = {r["dedup_key"]: r for r in await database.events() if r["source"] == "default"}
    acked = load.acked_ids()
    not_stored = sorted(acked - rows.keys())
    assert not not_stored, f"{len(not_stored)} acknowledged events are not in the database, " \
                           f"e.g. {not_stored[:10]}"
    undelivered = sorted(k for k in acked if rows[k]["status"] != "delivered")
    assert not undelivered, f"acknowledged events not delivered: " \
                            f"{[(k, rows[k]['status']) for k in undelivered[:10]]}"


async def test_kill_9_under_load_loses_nothing_and_sends_each_event_under_one_id(
    fake: TimedFakeSegment, service_factory, database: Inspector
) -> None:
    service = service_factory(database.url)
    await service.start_ready()
    # A short pause per batch keeps batches in flight, so a kill lands between claim and
    # outcome and leaves leases behind for the next process to wait out.
    fake.delay_s = 0.05
    load = LoadGenerator([service.webhook_url()], run=f"crash-{uuid.uuid4().hex[:8]}",
                         total=EVENTS, concurrency=16, duration_s=90.0 * FACTOR)
    load.start()

    stranded = []
    acked_at_restart = 0
    for k in range(KILLS):
        threshold = EVENTS * (k + 1) // (KILLS + 2)
        await wait_until(lambda t=threshold: len(load.acked) >= t, 60.0 * FACTOR,
                         f"{threshold} acknowledged events before kill #{k + 1}",
                         0.05, load.summary)
        await service.kill()
        stranded.append(await leased_pending(database))
        await asyncio.sleep(0.5)  # the load keeps posting into a dead port
        await service.start_ready()
        acked_at_restart = len(load.acked)

    await load.finish(120.0 * FACTOR)
    print(f"load: {load.summary()}; leased-but-unsettled after each kill: {stranded}")
    assert len(load.acked) > acked_at_restart, "no event was acknowledged after the restart"
    assert len(load.acked) >= EVENTS // 2, f"too few events acknowledged: {load.summary()}"

    await wait_delivered(fake, load)
    counts = await database.wait_settled()  # the crashed claims are retried after their lease
    assert counts.get("dead", 0) == 0, f"events went dead: {counts}"
    assert_delivery(load, Arrivals.of(fake, load.run))
    await assert_stored_and_delivered(database, load)
    assert service.running(), f"the restarted service died:\n{service.log_tail()}"


async def test_sigterm_under_load_exits_0_within_the_bound_and_loses_nothing(
    fake: TimedFakeSegment, service_factory, database: Inspector
) -> None:
    service = service_factory(database.url)
    await service.start_ready()
    fake.delay_s = 0.05
    load = LoadGenerator([service.webhook_url()], run=f"term-{uuid.uuid4().hex[:8]}",
                         total=EVENTS, concurrency=16, duration_s=90.0 * FACTOR)
    load.start()
    await wait_until(lambda: len(load.acked) >= EVENTS // 3, 60.0 * FACTOR,
                     "a third of the events acknowledged", 0.05, load.summary)

    service.signal(signal.SIGTERM)
    started = time.monotonic()
    code = await service.wait_exit(SHUTDOWN_TIMEOUT_S + SIGTERM_SLACK_S)
    took = time.monotonic() - started
    assert code is not None, f"still running {took:.0f} s after SIGTERM:\n{service.log_tail()}"
    assert code == 0, f"exit status {code} after SIGTERM:\n{service.log_tail()}"
    print(f"SIGTERM to exit: {took:.1f} s (shutdown_timeout_s {SHUTDOWN_TIMEOUT_S:g})")
    # A clean shutdown settles or releases every lease it held: none is left to expire.
    assert await leased_pending(database) == 0, "leases left behind by a clean shutdown"

    await service.start_ready()
    await load.finish(120.0 * FACTOR)
    await wait_delivered(fake, load)
    counts = await database.wait_settled(timeout_s=LEASE_S + 60.0 * FACTOR)
    assert counts.get("dead", 0) == 0, f"events went dead: {counts}"
    assert_delivery(load, Arrivals.of(fake, load.run))
    await assert_stored_and_delivered(database, load)


async def test_sigterm_with_a_batch_stuck_past_the_bound_releases_its_leases(
    fake: TimedFakeSegment, service_factory, sqlite_database: Inspector
) -> None:
    """A batch that cannot finish within shutdown_timeout_s: its leases are given back (no
    wait for their expiry), the process still exits 0, and the events are delivered later."""
    database = sqlite_database
    bound_s = 2.0
    service = service_factory(database.url, server={"shutdown_timeout_s": bound_s})
    await service.start_ready()
    fake.answer(200, delay_s=60)  # Segment stops answering: the request runs into its timeout
    load = LoadGenerator([service.webhook_url()], run=f"stuck-{uuid.uuid4().hex[:8]}",
                         total=scaled(100), concurrency=4, duration_s=60.0 * FACTOR)
    await load.run_all()
    assert len(load.acked) == load.total, load.summary()
    await wait_until(lambda: sum(fake.in_flight.values()) > 0, 30.0, "a batch in flight")

    service.signal(signal.SIGTERM)
    # The batch's thread is blocked in the HTTP request until segment.timeout_s at most.
    code = await service.wait_exit(bound_s + SEGMENT_TIMEOUT_S + SIGTERM_SLACK_S)
    assert code == 0, f"exit status {code} after SIGTERM:\n{service.log_tail()}"
    # SQLite's leases are in the process: the service says it gave them back.
    assert service.log_count("leased event(s) released") == 1, service.log_tail()
    counts = await database.status_counts()
    assert counts == {"pending": load.total}, counts

    fake.recover()
    await service.start_ready()
    await wait_delivered(fake, load)
    assert await database.wait_settled() == {"delivered": load.total}
    assert_delivery(load, Arrivals.of(fake, load.run))
