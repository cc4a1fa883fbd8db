"""PostgreSQL goes away for a few seconds under load and comes back.

On a private cluster (never the shared server on 5432): while the database is down the
webhook answers 503 with Retry-After (never 2xx for an event it could not store) and /readyz
is 503; once it is back the same process recovers by itself (/readyz 200, the webhook answers
2xx again), and every event that got a 2xx reaches Segment.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.resilience.harness import (
    FACTOR,
    SOAK,
    Arrivals,
    LoadGenerator,
    ServiceProcess,
    TimedFakeSegment,
    assert_delivery,
    inspector_for,
    run_cli,
    scaled,
    timeout_for,
    wait_delivered,
    wait_until,
)
from tests.resilience.pgcluster import PrivateCluster

pytestmark = pytest.mark.timeout(timeout_for(180))

DOWN_S = 4.0
CYCLES = 5 if SOAK else 1
# Recovered: this many webhook posts in a row answered 2xx, within RECOVER_S of /readyz 200
# (a healthy service manages that within a second or two).
RECOVERED_RUN = 40
RECOVER_S = 15.0



async def readyz(http: aiohttp.ClientSession, base_url: str) -> int | None:
    try:
        async with http.get(f"{base_url}/readyz") as resp:
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return None


def longest_2xx_run(load: LoadGenerator, since: float) -> int:
    """The longest run of consecutive 2xx answers among the posts sent after `since`."""
    best = run = 0
    for attempt in sorted((a for a in load.attempts if a.sent >= since), key=lambda a: a.sent):
        ok = attempt.status is not None and 200 <= attempt.status < 300
        run = run + 1 if ok else 0
        best = max(best, run)
    return best


def answers_since(load: LoadGenerator, since: float) -> str:
    counts = Counter(a.status for a in load.attempts if a.sent >= since)
    return f"answers since /readyz was 200 again: {dict(counts)}"


@dataclass
class Outages:
    """What the test saw around each stop/start of PostgreSQL."""

    windows: list[tuple[float, float]] = field(default_factory=list)  # (fully down, restarting)
    readyz_while_down: list[int | None] = field(default_factory=list)
    ready_again: list[float] = field(default_factory=list)  # /readyz 200 after the restart


async def serve_on_private_cluster(
    cluster: PrivateCluster, service_factory
) -> tuple[ServiceProcess, str]:
    url = await cluster.create_database("nudgespot")
    service = service_factory(url)
    await run_cli("migrate", "--config", str(service.config), cwd=service.workdir)
    await service.start_ready()
    return service, url


async def stop_and_start(cluster: PrivateCluster, service: ServiceProcess,
                         load: LoadGenerator, outages: Outages, more_acked: int = 200) -> None:
    """Let `more_acked` more events in, stop PostgreSQL for DOWN_S while posting, start it
    again, and wait for /readyz to be 200 again."""
    acked = len(load.acked)
    await wait_until(lambda: len(load.acked) >= acked + more_acked, 60.0,
                     f"{more_acked} more acknowledged events before stopping PostgreSQL", 0.05,
                     load.summary)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        await cluster.stop()
        down = time.monotonic()
        while time.monotonic() < down + DOWN_S:
            outages.readyz_while_down.append(await readyz(http, service.base_url))
            await asyncio.sleep(0.5)
        outages.windows.append((down, time.monotonic()))
    await cluster.start()
    await service.wait_ready(timeout_s=60.0)  # fails if the process died meanwhile
    outages.ready_again.append(time.monotonic())


async def test_postgres_down_answers_503_and_loses_nothing(
    private_cluster: PrivateCluster, fake: TimedFakeSegment, service_factory
) -> None:
    cluster = private_cluster
    service, url = await serve_on_private_cluster(cluster, service_factory)
    database = inspector_for(url)
    pid = service.proc.pid if service.proc else None
    load = LoadGenerator([service.webhook_url()], run=f"pgdown-{uuid.uuid4().hex[:8]}",
                         total=scaled(4000), concurrency=8, duration_s=90.0 * FACTOR,
                         retry_pause_s=0.2)
    load.start()
    outages = Outages()
    for cycle in range(CYCLES):
        # Only the first cycle waits for acknowledgements: whether the webhook recovers after
        # a restart is the next test's question, not this one's.
        await stop_and_start(cluster, service, load, outages, 200 if cycle == 0 else 0)
        await asyncio.sleep(2.0)  # keep posting a little while after the restart
    load.stop()
    await load.finish(60.0)
    print(f"load: {load.summary()}; readyz while down: {outages.readyz_while_down}")

    assert service.proc is not None and service.proc.pid == pid and service.running(), \
        "the service had to be restarted"
    assert outages.readyz_while_down and all(s == 503 for s in outages.readyz_while_down), \
        f"/readyz while PostgreSQL was down: {outages.readyz_while_down}"
    while_down = [a for a in load.attempts
                  if any(lo <= a.sent and a.done <= hi for lo, hi in outages.windows)]
    assert while_down, "no webhook request was made while PostgreSQL was down"
    wrong = [(a.status, a.error) for a in while_down if a.status != 503]
    assert not wrong, f"webhook answers while PostgreSQL was down, other than 503: {wrong[:10]}"
    assert all(a.retry_after for a in while_down), "a 503 without Retry-After"

    # Whatever got a 2xx (before, during or after) was stored and reaches Segment.
    await wait_delivered(fake, load)
    counts = await database.wait_settled()
    assert counts.get("dead", 0) == 0, counts
    assert_delivery(load, Arrivals.of(fake, load.run))
    rows = {r["dedup_key"] for r in await database.events()}
    not_stored = sorted(load.acked_ids() - rows)
    assert not not_stored, f"acknowledged but not stored: {not_stored[:10]}"


async def test_webhook_answers_2xx_again_once_postgres_is_back(
    private_cluster: PrivateCluster, fake: TimedFakeSegment, service_factory
) -> None:
    cluster = private_cluster
    service, _ = await serve_on_private_cluster(cluster, service_factory)
    load = LoadGenerator([service.webhook_url()], run=f"pgback-{uuid.uuid4().hex[:8]}",
                         total=scaled(6000), concurrency=8, duration_s=90.0 * FACTOR,
                         retry_pause_s=0.2)
    load.start()
    outages = Outages()
    for _ in range(max(CYCLES, 2)):
        await stop_and_start(cluster, service, load, outages)
        ready = outages.ready_again[-1]
        # Every post, not only some: a retrying sender would hide a partial recovery, so ask
        # for an unbroken run of 2xx answers.
        await wait_until(lambda r=ready: longest_2xx_run(load, r) >= RECOVERED_RUN, RECOVER_S,
                         f"{RECOVERED_RUN} webhook posts in a row answered 2xx after "
                         "PostgreSQL came back and /readyz was 200 again", 0.2,
                         lambda r=ready: f"{answers_since(load, r)}; {load.summary()}")
    load.stop()
    await load.finish(60.0)
    assert service.running()
