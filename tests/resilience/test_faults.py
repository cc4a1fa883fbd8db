"""Bugs are not outages: real faults, told apart.

Only a connection-level failure (the disk is full, PostgreSQL is down) is an outage: the
webhook answers 503 with Retry-After, the log says WARNING, and the service recovers by itself
once the fault is gone. Anything else is a bug: a generic 500 {"error": "internal error"}
(nothing of the internals in the body), an ERROR with its traceback in the log naming the
route (never the path, which holds the token), and nudgespot_internal_errors_total{route=...}
in /metrics.

Every fault here is real: a full tmpfs under SQLite, a table dropped under the running
service, a private PostgreSQL cluster stopped under it. Nothing of our own code is mocked.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from models import Store
from tests.conftest import (
    OTHER_TOKEN,
    POSTGRES_ADMIN_URL,
    REQUIRE_POSTGRES,
    TOKEN,
    _create_database,
    _database_url,
    _drop_database,
)
from tests.resilience.harness import (
    Arrivals,
    Attempt,
    LoadGenerator,
    ServiceProcess,
    TimedFakeSegment,
    assert_delivery,
    inspector_for,
    make_event,
    timeout_for,
    wait_delivered,
    wait_until,
)
from tests.resilience.pgcluster import PrivateCluster
from tests.resilience.test_postgres_restart import (
    Outages,
    answers_since,
    longest_2xx_run,
    serve_on_private_cluster,
    stop_and_start,
)

pytestmark = pytest.mark.timeout(timeout_for(180))

# The tmpfs the SQLite database lives on: room for the database, its WAL (which grows to about
# 4 MB before the automatic checkpoint) and the -shm file, several times over.
TMPFS_MB = 16
# Events acknowledged before the disk fills, so the database and its WAL have some size.
ACKED_BEFORE_FULL = 300
# While full: wait for this many 503 answers (the WAL may first reuse space it already has).
FULL_503S = 30
# Recovered: this many webhook posts in a row answered 2xx after the space came back.
RECOVERED_RUN = 40
INTERNAL_ERROR = {"error": "internal error"}
ROUTES = ("/webhooks/{token}", "/webhooks/nudgespot/{token}")


# --- what the log says ----------------------------------------------------------------------

RECORD_START = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>\S+): ")


@dataclass
class LogRecord:
    """One record of the service's text log, with its traceback lines if it has any."""

    level: str
    logger: str
    text: str


# What aiohttp prints (not logs) when it starts serving.
BANNERS = ("======== Running on ", "(Press CTRL+C to quit)")


def log_records(service: ServiceProcess) -> list[LogRecord]:
    records: list[LogRecord] = []
    for line in service.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = RECORD_START.match(line)
        if match:
            records.append(LogRecord(match["level"], match["logger"], line))
        elif records:  # a traceback (or other continuation) belongs to the record before it
            records[-1].text += "\n" + line
    return records


def errors_in_log(service: ServiceProcess) -> list[str]:
    """ERROR/CRITICAL records (with their tracebacks), and output that is no log record:
    none is expected during an outage. A WARNING may carry a traceback (asyncpg's pool logs
    "Failed to restore the pool connection floor; retrying" with one)."""
    found = []
    for record in log_records(service):
        _, _, rest = record.text.partition("\n")
        if record.level in ("ERROR", "CRITICAL"):
            found.append(record.text)
        elif rest and not rest.startswith("Traceback (most recent call last):") and not all(
                line.startswith(BANNERS) for line in rest.splitlines()):
            found.append(record.text)  # e.g. a thread's traceback printed to stderr
    return found


def publisher_complaints(service: ServiceProcess) -> list[LogRecord]:
    """The publisher's records at WARNING or above (it has nothing to warn of normally)."""
    return [r for r in log_records(service)
            if r.logger == "outbound.publisher" and r.level in ("WARNING", "ERROR", "CRITICAL")]


def storage_warnings(service: ServiceProcess) -> list[str]:
    return [r.text for r in log_records(service)
            if r.level == "WARNING" and "webhook storage unavailable" in r.text]


# --- what the service answers ---------------------------------------------------------------


async def internal_errors(http: aiohttp.ClientSession, service: ServiceProcess) -> dict[str, float]:
    """nudgespot_internal_errors_total by route, as GET /metrics shows it (loopback: no token)."""
    async with http.get(f"{service.base_url}/metrics") as resp:
        text = await resp.text()
        assert resp.status == 200, f"/metrics answered {resp.status}: {text[:300]}"
    return {
        sample.labels["route"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "nudgespot_internal_errors_total"
    }


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> Answer:
    async with http.post(url, data=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"}) as resp:
        return Answer(resp.status, dict(resp.headers), await resp.text())


async def get_status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as resp:
        await resp.read()
        return resp.status


# --- 1. SQLite on a full filesystem ---------------------------------------------------------


def _mount_tmpfs(directory: Path, size_mb: int) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(directory)],
                   check=True, capture_output=True, text=True, timeout=30)


def _unmount(directory: Path) -> None:
    for _ in range(20):
        if subprocess.run(["umount", str(directory)], capture_output=True).returncode == 0:
            return
        time.sleep(0.25)  # a process that held a file there may still be exiting
    subprocess.run(["umount", "-l", str(directory)], capture_output=True)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A TMPFS_MB tmpfs mounted for this test (needs root or CAP_SYS_ADMIN); unmounted after."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    try:
        _mount_tmpfs(mount_point, TMPFS_MB)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else exc
        message = f"cannot mount a tmpfs to fill up ({detail or exc})"
        if REQUIRE_POSTGRES:
            pytest.fail(f"{message}; CI/NUDGESPOT_TEST_REQUIRE_POSTGRES demands this test runs")
        pytest.skip(message)
    try:
        yield mount_point
    finally:
        _unmount(mount_point)


class DiskFiller:
    """Keeps a filesystem full: a thread appends to a file whenever space appears (SQLite
    gives some back on its own: tortoise sets journal_size_limit, so a WAL restart after a
    checkpoint truncates the WAL), until stopped; then the file is deleted."""

    CHUNKS = (1 << 20, 1 << 16, 4096, 512, 1)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        self.full = threading.Event()  # set once a write has met ENOSPC
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="disk-filler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            with open(self.path, "wb", buffering=0) as f:
                while not self._stop.is_set():
                    for size in self.CHUNKS:
                        chunk = b"\xa5" * size
                        while True:
                            try:
                                self.written += f.write(chunk) or 0
                            except OSError as exc:
                                if exc.errno != errno.ENOSPC:
                                    raise
                                break
                    self.full.set()
                    self._stop.wait(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._failure = exc
            self.full.set()

    def stop_and_delete(self) -> None:
        """Stop filling and delete the file (again: a no-op)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=30)
        self.path.unlink(missing_ok=True)
        failure, self._failure = self._failure, None
        if failure is not None:
            raise AssertionError(f"the disk filler failed: {failure!r}")


def answered_between(load: LoadGenerator, start: float, end: float) -> list[Attempt]:
    return [a for a in load.attempts if start <= a.sent and a.done <= end]


def bug_answers(load: LoadGenerator) -> list[Attempt]:
    """5xx answers other than 503: the webhook took the fault for a bug."""
    return [a for a in load.attempts if a.status is not None and a.status >= 500
            and a.status != 503]


def integrity_check(path: Path) -> list[str]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
    finally:
        conn.close()


async def test_sqlite_disk_full_is_an_outage_503_and_recovers_by_itself(
    small_tmpfs: Path, fake: TimedFakeSegment, service_factory
) -> None:
    db_path = small_tmpfs / "nudgespot.sqlite3"
    url = f"sqlite://{db_path}"
    database = inspector_for(url)
    service = service_factory(url)
    filler = DiskFiller(small_tmpfs / "filler")
    load = LoadGenerator([service.webhook_url()], run=f"full-{uuid.uuid4().hex[:8]}",
                         total=100_000, concurrency=8, duration_s=120.0, tries=100_000,
                         retry_pause_s=0.2)
    try:
        await service.start_ready()
        pid = service.proc.pid if service.proc else None
        load.start()
        await wait_until(lambda: len(load.acked) >= ACKED_BEFORE_FULL, 60.0,
                         f"{ACKED_BEFORE_FULL} acknowledged events before the disk fills", 0.05,
                         load.summary)

        # Segment fails for now, so the publisher has writes to make (leases, retries) while
        # the disk is full: its side of the outage is checked too.
        fake.answer(500)
        full_at = time.monotonic()
        filler.start()
        assert await asyncio.to_thread(filler.full.wait, 30), "the disk did not fill up"

        def full_503s() -> int:
            return sum(1 for a in load.attempts if a.sent >= full_at and a.status == 503)

        await wait_until(lambda: full_503s() >= FULL_503S or bug_answers(load), 60.0,
                         f"{FULL_503S} webhook answers 503 while the disk is full", 0.1,
                         lambda: f"{answers_since(load, full_at)}; {load.summary()}")
        bugs = bug_answers(load)
        assert not bugs, \
            f"a full disk was answered as a bug: {[(a.status, a.body) for a in bugs[:3]]}"
        await wait_until(lambda: publisher_complaints(service), 60.0,
                         "the publisher to meet the full disk (a WARNING of it)", 0.2,
                         service.log_tail)
        await asyncio.sleep(1.0)  # keep posting a little longer at a full disk
        assert service.running() and service.proc is not None and service.proc.pid == pid, \
            f"the service died on a full disk:\n{service.log_tail()}"
        freed_at = time.monotonic()
        await asyncio.to_thread(filler.stop_and_delete)  # the space comes back
        fake.recover()
        print(f"filled {filler.written / 2**20:.1f} MiB; answers while full: "
              f"{dict(Counter(a.status for a in answered_between(load, full_at, freed_at)))}")

        # Recovered by itself: the same process answers an unbroken run of 2xx again.
        await wait_until(lambda: longest_2xx_run(load, freed_at) >= RECOVERED_RUN, 60.0,
                         f"{RECOVERED_RUN} webhook posts in a row answered 2xx after the "
                         "space came back", 0.2,
                         lambda: f"{answers_since(load, freed_at)}; {load.summary()}")
        load.stop()
        await load.finish(60.0)
        print(f"load: {load.summary()}")
        assert service.running() and service.proc is not None and service.proc.pid == pid, \
            "the service had to be restarted"

        while_full = answered_between(load, full_at, freed_at)
        not_503 = [(a.status, a.error, a.body) for a in while_full
                   if a.status != 503 and not (a.status is not None and 200 <= a.status < 300)]
        assert not not_503, f"answers at a full disk other than 503 or 2xx: {not_503[:10]}"
        no_retry_after = [a for a in while_full if a.status == 503 and not a.retry_after]
        assert not no_retry_after, f"503 without Retry-After: {no_retry_after[:5]}"
        assert not bug_answers(load), f"5xx other than 503: {bug_answers(load)[:10]}"

        # Every acknowledged event (before, during and after) is stored and reaches Segment.
        await wait_delivered(fake, load)
        arrivals = Arrivals.of(fake, load.run)
        assert_delivery(load, arrivals)  # each event under its one messageId, none missing
        # Sent twice under the same messageId is allowed (Segment deduplicates): a batch
        # Segment accepted whose outcome could not be written to the full disk is sent again.
        print(f"messageIds delivered more than once: {len(arrivals.repeated())}")
        stored = {r["dedup_key"] for r in await database.events()}
        not_stored = sorted(load.acked_ids() - stored)
        assert not not_stored, f"acknowledged but not stored: {not_stored[:10]}"

        assert storage_warnings(service), "no WARNING about the unavailable storage in the log"
        errors = errors_in_log(service)
        assert not errors, "a full disk is an outage, not a bug; the log has:\n" + \
            "\n".join(errors[:3])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            counted = await internal_errors(http, service)
        assert not any(counted.values()), f"a full disk was counted as internal errors: {counted}"

        service.signal(signal.SIGTERM)
        assert await service.wait_exit(60.0) == 0, f"SIGTERM:\n{service.log_tail()}"
    finally:
        load.stop()
        await asyncio.to_thread(filler.stop_and_delete)
        service.cleanup()  # before the tmpfs is unmounted
    assert await asyncio.to_thread(integrity_check, db_path) == ["ok"]


# --- 2. a bug is a 500 ----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database of this test's own (its schema gets broken): a SQLite file, or a migrated
    PostgreSQL database on the shared server, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/faults.sqlite3"
        return
    name = f"nudgespot_faults_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        await _create_database(POSTGRES_ADMIN_URL, name)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({exc!r})"
        if REQUIRE_POSTGRES:
            pytest.fail(f"{message}; NUDGESPOT_TEST_REQUIRE_POSTGRES/CI demands these tests run")
        pytest.skip(message)
    try:
        url = _database_url(POSTGRES_ADMIN_URL, name)
        await Store(url).migrate()
        yield url
    finally:
        await _drop_database(POSTGRES_ADMIN_URL, name)


async def drop_table(url: str, table: str) -> None:
    """DROP TABLE under the running service, with a driver of our own."""
    if url.startswith("sqlite://"):
        def run() -> None:
            conn = sqlite3.connect(url.removeprefix("sqlite://"), timeout=30)
            try:
                conn.execute(f"DROP TABLE {table}")
                conn.commit()
            finally:
                conn.close()

        await asyncio.to_thread(run)
        return
    dsn = url.replace("postgres://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()


def invalid_event(n: int) -> dict[str, Any]:
    return {"id": f"bad-{n}", "event": "email_opened", "timestamp": "not a time",
            "subscriber": {"uid": "u-1"}}


def internal_error_records(service: ServiceProcess, route: str) -> list[LogRecord]:
    return [r for r in log_records(service)
            if r.level == "ERROR" and f"internal error answering POST {route}" in r.text]


async def test_a_bug_answers_500_logs_error_and_counts_it_while_valid_bodies_pass(
    fake: TimedFakeSegment, service_factory, own_database: str
) -> None:
    url = own_database
    database = inspector_for(url)
    service = service_factory(url)
    await service.start_ready()
    run = f"bug-{uuid.uuid4().hex[:8]}"
    urls = {"/webhooks/{token}": f"{service.base_url}/webhooks/{TOKEN}",
            "/webhooks/nudgespot/{token}": service.webhook_url()}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        # Healthy: a valid + invalid body is accepted in part, the invalid event quarantined.
        first = await post(http, service.webhook_url(), [make_event(run, 0), invalid_event(0)])
        assert first.status == 200, first
        assert first.json()["accepted"] == 1 and len(first.json()["rejected"]) == 1, first

        # The bug: the quarantine table is gone. Only bodies with a rejected event touch it.
        await drop_table(url, "nudgespot_rejected")
        for i, (route, post_url) in enumerate(urls.items(), start=1):
            answer = await post(http, post_url, [make_event(run, 10 + i), invalid_event(i)])
            assert answer.status == 500, (route, answer)
            assert answer.json() == INTERNAL_ERROR, (route, answer)
            assert answer.headers.get("Content-Type", "").startswith("application/json")
            assert "Retry-After" not in answer.headers, answer

        counted = await internal_errors(http, service)
        for route in ROUTES:
            assert counted.get(route, 0) >= 1, f"internal errors by route: {counted}"
            records = internal_error_records(service, route)
            assert len(records) == 1, f"ERROR records for {route}: {records}; the log:\n" \
                                      f"{service.log_tail()}"
            record = records[0]
            assert "Traceback (most recent call last)" in record.text, record.text
            assert "nudgespot_rejected" in record.text, record.text  # the cause is there
            assert TOKEN not in record.text, f"the token is in the log:\n{record.text}"
        assert TOKEN not in service.log_path.read_text(encoding="utf-8", errors="replace")

        # Not an outage: a body of valid events only is stored and delivered, /readyz is 200.
        valid = await post(http, service.webhook_url(), [make_event(run, 1), make_event(run, 2)])
        assert valid.status == 200, valid
        assert valid.json() == {"accepted": 2, "duplicates": 0, "rejected": []}, valid
        assert await get_status(http, f"{service.base_url}/readyz") == 200
        other = await post(http, f"{service.base_url}/webhooks/{OTHER_TOKEN}",
                           [make_event(f"{run}-other", 0)])
        assert other.status == 200, other
    stored = {(r["source"], r["dedup_key"]) for r in await database.events()}
    expected = {("default", f"{run}-{n}") for n in (0, 1, 2)} | {("other", f"{run}-other-0")}
    assert expected <= stored, stored
    await wait_until(lambda: not Arrivals.of(fake, run).missing({0, 1, 2}), 30.0,
                     "the valid events to reach Segment")
    await wait_until(lambda: not Arrivals.of(fake, f"{run}-other", "other").missing({0}), 30.0,
                     "the other source's event to reach Segment")
    assert not Arrivals.of(fake, run).wrong_ids() and service.running()
    # The bug has been logged as one; nothing else is an error.
    unexpected = [r.text for r in log_records(service) if r.level in ("ERROR", "CRITICAL")
                  and "internal error answering POST /webhooks/" not in r.text]
    assert not unexpected, "\n".join(unexpected[:3])


class ValidBodyFailed(AssertionError):
    """A body of valid events only was not answered 200."""


async def test_a_bug_in_one_request_does_not_fail_the_valid_requests_committed_with_it(
    fake: TimedFakeSegment, service_factory, own_database: str
) -> None:
    service = service_factory(own_database)
    await service.start_ready()
    run = f"blast-{uuid.uuid4().hex[:8]}"
    await drop_table(own_database, "nudgespot_rejected")
    valid_answers: list[Answer] = []
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                     connector=connector) as http:
        for round_ in range(10):
            valid = [post(http, service.webhook_url(), [make_event(run, round_ * 100 + i)])
                     for i in range(24)]
            poisoned = [post(http, service.webhook_url(), [invalid_event(round_ * 100 + i)])
                        for i in range(4)]
            answers = await asyncio.gather(*valid[:12], *poisoned, *valid[12:])
            valid_answers += answers[:12] + answers[16:]
            assert all(a.status == 500 for a in answers[12:16]), answers[12:16]
            if any(a.status != 200 for a in valid_answers):
                break
    statuses = Counter(a.status for a in valid_answers)
    if statuses != {200: len(valid_answers)}:
        raise ValidBodyFailed(f"answers to bodies of valid events only, sent alongside "
                              f"poisoned ones: {dict(statuses)}")


# --- 3. a stopped PostgreSQL is an outage ---------------------------------------------------

# Restarts of PostgreSQL (after one longer outage) at most: each had about an even chance to
# catch a request on a connection the server had just terminated, which used to be answered
# 500 (asyncpg.InternalClientError), so this many make a regression all but certain to show.
QUICK_RESTARTS = 12



class OutageTreatedAsBug(AssertionError):
    """An outage was answered 500, logged at ERROR or counted as an internal error."""


async def test_stopped_postgres_is_a_503_and_a_warning_never_an_internal_error(
    private_cluster: PrivateCluster, fake: TimedFakeSegment, service_factory
) -> None:
    """What test_postgres_restart.py does not check: an outage is never answered 500, logs
    WARNINGs but no ERROR, and never counts as an internal error. Everything else (503 while
    down, recovery by itself, delivery) is asserted first, as plain failures.

    One outage of DOWN_S seconds, then up to QUICK_RESTARTS restarts (stop, start at once)
    under load: whether a transaction is cut at the wrong moment is a race, and each restart
    is another chance for it (about one in two, here)."""
    cluster = private_cluster
    service, url = await serve_on_private_cluster(cluster, service_factory)
    pid = service.proc.pid if service.proc else None
    load = LoadGenerator([service.webhook_url()], run=f"pgfault-{uuid.uuid4().hex[:8]}",
                         total=100_000, concurrency=8, duration_s=150.0, tries=100_000,
                         retry_pause_s=0.2)
    load.start()
    outages = Outages()
    restarts = 0
    try:
        await stop_and_start(cluster, service, load, outages)
        await wait_recovered(load, outages.ready_again[-1])
        while not (bug_answers(load) or errors_in_log(service)) and restarts < QUICK_RESTARTS:
            acked = len(load.acked)
            await wait_until(lambda a=acked: len(load.acked) >= a + 100, 60.0,
                             "100 more acknowledged events before restarting PostgreSQL",
                             0.05, load.summary)
            await cluster.stop()
            await cluster.start()
            await service.wait_ready(timeout_s=60.0)
            restarts += 1
            await wait_recovered(load, time.monotonic())
    finally:
        load.stop()
        await load.finish(60.0)
    print(f"load: {load.summary()}; quick restarts: {restarts}; "
          f"readyz while down: {outages.readyz_while_down}")
    assert service.proc is not None and service.proc.pid == pid and service.running(), \
        "the service had to be restarted"

    [(down, restarting)] = outages.windows
    while_down = answered_between(load, down, restarting)
    assert while_down, "no webhook request was made while PostgreSQL was down"
    wrong = [(a.status, a.error) for a in while_down if a.status != 503]
    assert not wrong, f"answers while PostgreSQL was down, other than 503: {wrong[:10]}"
    assert all(a.retry_after for a in while_down), "a 503 without Retry-After"
    assert all(s == 503 for s in outages.readyz_while_down), outages.readyz_while_down
    await wait_delivered(fake, load)
    assert_delivery(load, Arrivals.of(fake, load.run))
    stored = {r["dedup_key"] for r in await inspector_for(url).events()}
    not_stored = sorted(load.acked_ids() - stored)
    assert not not_stored, f"acknowledged but not stored: {not_stored[:10]}"
    assert storage_warnings(service), "no WARNING about the unavailable storage in the log"

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        counted = await internal_errors(http, service)
    problems = []
    bugs = bug_answers(load)
    if bugs:
        problems.append(f"{len(bugs)} answer(s) other than 503 among the 5xx, e.g. "
                        f"{[(a.status, a.body) for a in bugs[:3]]}")
    if any(counted.values()):
        problems.append(f"the outage was counted as internal errors: {counted}")
    errors = errors_in_log(service)
    if errors:
        problems.append("the log has ERRORs:\n" + "\n".join(errors[:2]))
    if problems:
        raise OutageTreatedAsBug("a stopped PostgreSQL is an outage, not a bug: " +
                                 "\n".join(problems))


async def wait_recovered(load: LoadGenerator, since: float) -> None:
    """Wait for an unbroken run of RECOVERED_RUN webhook answers 2xx sent after `since`."""
    await wait_until(lambda: longest_2xx_run(load, since) >= RECOVERED_RUN, 60.0,
                     f"{RECOVERED_RUN} webhook posts in a row answered 2xx after PostgreSQL "
                     "came back", 0.1,
                     lambda: f"{answers_since(load, since)}; {load.summary()}")
