"""One process serves a SQLite database: its publisher keeps leases in memory, not in the rows.

What must hold: a second `serve` of the same file refuses to start and says why (it would send
what the first has leased); a killed server's claim on the file ends with it; and a `replay`
from the command line, run while the server is sending, never makes it send an event twice.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.resilience.harness import (
    Inspector,
    TimedFakeSegment,
    make_event,
    run_cli,
    timeout_for,
)

pytestmark = pytest.mark.timeout(timeout_for(120))

EXIT_IN_USE = 3


async def test_a_second_serve_of_the_same_sqlite_file_refuses_to_start_and_says_why(
    service_factory, sqlite_database: Inspector
) -> None:
    first = service_factory(sqlite_database.url, name="first")
    await first.start_ready()
    second = service_factory(sqlite_database.url, name="second")

    second.start()

    assert await second.wait_exit(60) == EXIT_IN_USE
    assert f"another process (pid {first.proc.pid}) is serving" in second.log_tail()
    assert first.running()


async def test_serve_starts_on_the_file_again_once_the_first_was_killed(
    service_factory, sqlite_database: Inspector
) -> None:
    first = service_factory(sqlite_database.url, name="first")
    await first.start_ready()
    await first.kill()
    second = service_factory(sqlite_database.url, name="second")

    await second.start_ready()  # fails with the log if it refused

    assert second.running()


async def test_a_cli_replay_of_events_in_flight_sends_each_of_them_once(
    fake: TimedFakeSegment, service_factory, sqlite_database: Inspector, tmp_path: Path
) -> None:
    fake.delay_s = 4.0  # every batch stays in flight while the replay runs
    service = service_factory(sqlite_database.url, publisher={"batch_max_events": 10})
    await service.start_ready()
    run = f"replay-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as http:
        for n in range(40):
            async with http.post(service.webhook_url(), json=make_event(run, n)) as resp:
                assert resp.status == 200
    await asyncio.sleep(0.5)  # the publisher has claimed and is sending

    out = await run_cli("replay", "--status", "pending", "--config", str(service.config),
                        cwd=tmp_path)

    answer = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    # Every event was still pending (in flight, none answered yet) and requeued.
    assert answer == {"matched": 40, "requeued": 40}
    await fake.wait_for(40, timeout_s=60)
    await asyncio.sleep(2 * fake.delay_s)  # room for a second send, were there one
    sent = Counter(m["messageId"] for m in fake.delivered if run in str(m["properties"]))
    assert len(sent) == 40
    assert {n for n in sent.values()} == {1}, sent.most_common(3)
