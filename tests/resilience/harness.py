"""Resilience harness: the real service as a subprocess, a timed fake Segment, a load
generator, database inspectors, and the checks every resilience test shares.

Everything here is asynchronous on purpose: the fake Segment runs in the test's event loop,
so nothing may block that loop while the service is posting to it.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml
from aiohttp import web

from outbound.mapping import message_id
from tests.conftest import OTHER_TOKEN, OTHER_WRITE_KEY, TOKEN, WRITE_KEY
from tests.fake_segment import FakeSegment, Plan, _basic_user

# The installed console script, next to the interpreter running the tests (.venv/bin).
SERVE_BIN = Path(sys.executable).with_name("nudgespot-segment")
if not SERVE_BIN.exists():  # pragma: no cover - e.g. a venv whose python is a symlink elsewhere
    SERVE_BIN = Path(shutil.which("nudgespot-segment") or SERVE_BIN)

# NUDGESPOT_SOAK=1 multiplies event counts and load durations for a long soak run.
SOAK = os.environ.get("NUDGESPOT_SOAK") == "1"
FACTOR = 20 if SOAK else 1

# Service timings used by every test: a short lease so a crashed claim is retried soon.
SEGMENT_TIMEOUT_S = 5.0
LEASE_S = 12.0
SHUTDOWN_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 60.0
# How long to wait for a backlog to drain, beyond the lease: generous, the machine is noisy.
DRAIN_TIMEOUT_S = LEASE_S + 90.0 * FACTOR


def scaled(n: int) -> int:
    """An event count (or other size) for this run: ×FACTOR under NUDGESPOT_SOAK=1."""
    return n * FACTOR


def timeout_for(default_s: float) -> float:
    """A pytest-timeout for a test whose default run takes well under `default_s`."""
    return default_s * FACTOR


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout_s: float,
    what: str,
    interval_s: float = 0.2,
    describe: Callable[[], str] | None = None,
) -> None:
    """Poll `condition` until true; fail naming `what` (and describe()) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            detail = f": {describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
        await asyncio.sleep(interval_s)


# --- the fake Segment, with arrival times --------------------------------------------------

_ARRIVAL: contextvars.ContextVar[float | None] = contextvars.ContextVar("arrival", default=None)
_WRITE_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("write_key", default=None)


class TimedFakeSegment(FakeSegment):
    """tests/fake_segment.py's FakeSegment, also noting when each request arrived, and able to
    script answers for one write key only (`answer_for`).

    `arrived_at[i]` (time.monotonic() of this process) belongs to `received[i]`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.arrived_at: list[float] = []
        self.key_plans: dict[str, list[Plan]] = {}
        self.url = ""
        # Requests being answered now, per write key: a batch in flight (SQLite's leases are
        # in the serving process, not in the rows, so the fake is where to see one).
        self.in_flight: Counter[str] = Counter()

    def answer_for(self, write_key: str, status: int, *, times: int | None = None,
                   headers: dict[str, str] | None = None, delay_s: float = 0.0) -> None:
        """Like answer(), for requests of this write key only (checked before answer()'s)."""
        self.key_plans.setdefault(write_key, []).append(
            Plan(status, headers or {}, times, delay_s))

    async def batch(self, request: web.Request) -> web.StreamResponse:
        # Each connection's handler runs in its own task, so these are per request.
        _ARRIVAL.set(time.monotonic())
        write_key = _basic_user(request.headers.get("Authorization", "")) or ""
        _WRITE_KEY.set(write_key)
        self.in_flight[write_key] += 1
        try:
            return await super().batch(request)
        finally:
            self.in_flight[write_key] -= 1

    def _next_plan(self) -> Plan | None:
        plans = self.key_plans.get(_WRITE_KEY.get() or "")
        while plans:
            plan = plans[0]
            if plan.times is None:
                return plan
            if plan.times > 0:
                plan.times -= 1
                if plan.times == 0:
                    plans.pop(0)
                return plan
            plans.pop(0)
        return super()._next_plan()

    def _record(self, write_key: str, gzipped: bool, body: bytes, status: int) -> None:
        arrived = _ARRIVAL.get()
        self.arrived_at.append(arrived if arrived is not None else time.monotonic())
        super()._record(write_key, gzipped, body, status)

    def requests(self, write_key: str | None = None) -> list[tuple[float, int]]:
        """(arrival time, status) of every request, optionally of one write key."""
        return [
            (t, r.status)
            for t, r in zip(self.arrived_at, self.received, strict=True)
            if write_key is None or r.write_key == write_key
        ]


# --- the service as a subprocess -----------------------------------------------------------


def service_config(
    *,
    port: int,
    db_url: str,
    segment_url: str,
    server: dict[str, Any] | None = None,
    segment: dict[str, Any] | None = None,
    publisher: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A config document for `serve`: two sources, loopback only, short lease, quick retries."""
    return {
        "server": {"host": "127.0.0.1", "port": port,
                   "shutdown_timeout_s": SHUTDOWN_TIMEOUT_S, **(server or {})},
        "database": {"url": db_url},
        "admin": {"token": ""},
        "segment": {"endpoint": segment_url, "timeout_s": SEGMENT_TIMEOUT_S, **(segment or {})},
        "publisher": {
            "interval_s": 0.5,
            "max_attempts": 1000,  # an outage must never make events dead in these tests
            "retry_base_s": 0.2,
            "retry_max_s": 2.0,
            "lease_s": LEASE_S,
            "concurrency": 4,
            "batch_max_events": 500,
            **(publisher or {}),
        },
        "logging": {"level": "INFO", "format": "text"},
        "sources": [
            {"name": "default", "token": TOKEN, "write_key": WRITE_KEY},
            {"name": "other", "token": OTHER_TOKEN, "write_key": OTHER_WRITE_KEY},
        ],
    }


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):  # the config file says everything; nothing may leak in
        if name.startswith(("NUDGESPOT_SEGMENT", "NUDGESPOT_WEBHOOK", "SEGMENT_", "DATABASE_URL")):
            env.pop(name)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def run_cli(*args: str, cwd: Path, timeout_s: float = 120.0) -> str:
    """Run `nudgespot-segment ARGS` to completion; return its output; fail on non-zero."""
    proc = await asyncio.create_subprocess_exec(
        str(SERVE_BIN), *args, cwd=str(cwd), env=_child_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"nudgespot-segment {' '.join(args)} did not finish") from None
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"nudgespot-segment {' '.join(args)} exited " \
                                 f"{proc.returncode}:\n{text}"
    return text


class ServiceProcess:
    """One `nudgespot-segment serve --config PATH` replica; can be killed and started again."""

    def __init__(self, name: str, config: Path, port: int, workdir: Path) -> None:
        self.name = name
        self.config = config
        self.port = port
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        self._all: list[subprocess.Popen[bytes]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def webhook_url(self, token: str = TOKEN) -> str:
        return f"{self.base_url}/webhooks/nudgespot/{token}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{len(self._all) + 1} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(SERVE_BIN), "serve", "--config", str(self.config)],
                cwd=str(self.workdir), env=_child_env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self._all.append(self.proc)
        self.pids.append(self.proc.pid)

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until /readyz answers 200; fail with the log when the process exits first."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        timeout = aiohttp.ClientTimeout(total=3)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.name} exited {self.proc.returncode} before it "
                                         f"was ready:\n{self.log_tail()}")
                try:
                    async with http.get(f"{self.base_url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready after {timeout_s:.0f} s:\n"
                                         f"{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def start_ready(self) -> None:
        self.start()
        await self.wait_ready()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} is not running"
        os.kill(self.proc.pid, signum)

    async def wait_exit(self, timeout_s: float) -> int | None:
        """The exit status, or None if the process is still running after `timeout_s`."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def kill(self) -> None:
        """SIGKILL the running process and reap it."""
        self.signal(signal.SIGKILL)
        code = await self.wait_exit(30)
        assert code == -signal.SIGKILL, f"{self.name}: unexpected exit {code}"

    def cleanup(self) -> None:
        """Kill whatever this object started and is still running (test teardown)."""
        for proc in self._all:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass

    def log_tail(self, lines: int = 60) -> str:
        """The end of the log, without the one-line-per-request records of successful posts."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        kept = [line for line in text.splitlines() if " status=200 accepted=" not in line]
        return "\n".join(kept[-lines:])

    def log_count(self, needle: str) -> int:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").count(needle)
        except OSError:
            return 0


# --- the load generator --------------------------------------------------------------------


def make_event(run: str, n: int) -> dict[str, Any]:
    """Event number `n` of a load run: unique id `{run}-{n}` and custom property n."""
    return {
        "id": f"{run}-{n}",
        "event": "email_opened",
        "timestamp": 1795167060 + n,
        "subscriber": {"uid": f"user-{n % 97}", "email": f"user{n % 97}@example.com"},
        "message": {"id": f"msg-{n % 7}", "subject": "Resilience", "campaign_id": "c-1"},
        "properties": {"n": n, "run": run},
    }


@dataclass
class Attempt:
    """One POST of the load generator."""

    n: int
    target: int  # index into the generator's urls
    sent: float  # time.monotonic()
    done: float
    status: int | None  # None: no HTTP answer (refused, reset, timeout)
    error: str | None = None
    retry_after: str | None = None
    body: Any = None


@dataclass
class LoadGenerator:
    """Posts single events with unique ids, concurrently, and records every answer.

    Bounded in count (`total` ids, `tries` posts per id) and time (`duration_s`). Like
    Nudgespot, a post without a definite answer (no connection, 5xx) is retried with the same
    id a little later; an id counts as acknowledged when any of its posts got a 2xx.
    """

    urls: Sequence[str]
    run: str
    total: int
    concurrency: int = 16
    duration_s: float = 60.0
    tries: int = 200
    retry_pause_s: float = 0.1
    request_timeout_s: float = 15.0
    attempts: list[Attempt] = field(default_factory=list)
    acked: dict[int, float] = field(default_factory=dict)  # n -> when its 2xx came
    unanswered: set[int] = field(default_factory=set)  # ids that never got a 2xx
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def event_id(self, n: int) -> str:
        return f"{self.run}-{n}"

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run_all())
        return self._task

    def stop(self) -> None:
        self._stop.set()

    async def finish(self, timeout_s: float) -> None:
        """Wait for the run to end by itself (count or duration exhausted)."""
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout_s)

    async def stop_and_wait(self, timeout_s: float = 60.0) -> None:
        self.stop()
        await self.finish(timeout_s)

    async def run_all(self) -> None:
        counter = itertools.count()
        deadline = time.monotonic() + self.duration_s
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        connector = aiohttp.TCPConnector(limit=self.concurrency, force_close=False)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:

            async def worker() -> None:
                while not self._stop.is_set() and time.monotonic() < deadline:
                    n = next(counter)
                    if n >= self.total:
                        return
                    await self._deliver_one(http, n, deadline)

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def _deliver_one(self, http: aiohttp.ClientSession, n: int, deadline: float) -> None:
        body = json.dumps(make_event(self.run, n)).encode()
        headers = {"Content-Type": "application/json"}
        for attempt in range(self.tries):
            target = (n + attempt) % len(self.urls)
            sent = time.monotonic()
            record = Attempt(n, target, sent, sent, None)
            try:
                async with http.post(self.urls[target], data=body, headers=headers) as resp:
                    record.status = resp.status
                    record.retry_after = resp.headers.get("Retry-After")
                    try:
                        record.body = await resp.json(content_type=None)
                    except (ValueError, aiohttp.ClientError):
                        record.body = None
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                record.error = f"{type(exc).__name__}: {exc}"
            record.done = time.monotonic()
            self.attempts.append(record)
            if record.status is not None and 200 <= record.status < 300:
                self.acked[n] = record.done
                return
            if record.status is not None and record.status < 500:
                break  # a definite refusal: retrying would not change it (tests assert none)
            if self._stop.is_set() or time.monotonic() >= deadline:
                break
            await asyncio.sleep(self.retry_pause_s)
        self.unanswered.add(n)

    # --- what happened ---------------------------------------------------------------------

    def acked_ids(self) -> set[str]:
        return {self.event_id(n) for n in self.acked}

    def statuses(self) -> Counter[int | None]:
        return Counter(a.status for a in self.attempts)

    def refusals(self) -> list[Attempt]:
        """Answers that are neither 2xx nor a retryable 5xx: none expected in these tests."""
        return [a for a in self.attempts if a.status is not None and 300 <= a.status < 500]

    def bad_bodies(self) -> list[Attempt]:
        """2xx answers that do not account for the one event that was posted."""
        bad = []
        for a in self.attempts:
            if a.status is not None and 200 <= a.status < 300:
                b = a.body if isinstance(a.body, dict) else {}
                if b.get("accepted", 0) + b.get("duplicates", 0) != 1 or b.get("rejected"):
                    bad.append(a)
        return bad

    def summary(self) -> str:
        return (f"{len(self.acked)} acked of {self.total}, {len(self.attempts)} posts, "
                f"statuses {dict(self.statuses())}")


# --- what reached the fake Segment ---------------------------------------------------------


@dataclass
class Arrivals:
    """The track messages of one load run that the fake answered 2xx, keyed by property n."""

    run: str
    source: str
    message_ids_by_n: dict[int, set[str]]
    message_id_counts: Counter[str]

    @classmethod
    def of(cls, fake: FakeSegment, run: str, source: str = "default") -> Arrivals:
        by_n: dict[int, set[str]] = defaultdict(set)
        counts: Counter[str] = Counter()
        for message in fake.delivered:
            if message.get("type") != "track":
                continue
            props = message.get("properties") or {}
            if props.get("run") != run:
                continue
            by_n[int(props["n"])].add(message["messageId"])
            counts[message["messageId"]] += 1
        return cls(run, source, dict(by_n), counts)

    def expected_id(self, n: int) -> str:
        return message_id(self.source, f"{self.run}-{n}")

    def missing(self, ns: set[int] | Sequence[int]) -> list[int]:
        """Of these event numbers, those whose messageId never arrived."""
        return sorted(n for n in ns if self.expected_id(n) not in self.message_id_counts)

    def under_several_ids(self) -> dict[int, set[str]]:
        """Events that arrived under more than one messageId."""
        return {n: ids for n, ids in self.message_ids_by_n.items() if len(ids) > 1}

    def wrong_ids(self) -> dict[int, set[str]]:
        """Events that arrived under a messageId other than message_id(source, id)."""
        return {n: ids for n, ids in self.message_ids_by_n.items()
                if ids != {self.expected_id(n)}}

    def repeated(self) -> dict[str, int]:
        """messageIds delivered (answered 2xx) more than once."""
        return {mid: c for mid, c in self.message_id_counts.items() if c > 1}


def assert_delivery(load: LoadGenerator, arrivals: Arrivals, *, total: int | None = None) -> None:
    """The checks every test makes: nothing acknowledged lost, one messageId per event."""
    missing = arrivals.missing(set(load.acked))
    assert not missing, (f"{len(missing)} acknowledged event(s) never reached Segment, e.g. "
                         f"{[load.event_id(n) for n in missing[:10]]}; {load.summary()}")
    several = arrivals.under_several_ids()
    assert not several, \
        f"events arrived under several messageIds: {dict(list(several.items())[:5])}"
    wrong = arrivals.wrong_ids()
    assert not wrong, \
        f"events arrived under an unexpected messageId: {dict(list(wrong.items())[:5])}"
    limit = total if total is not None else load.total
    strangers = [n for n in arrivals.message_ids_by_n if not 0 <= n < limit]
    assert not strangers, f"messages arrived for events never posted: {strangers[:10]}"
    assert not load.refusals(), f"unexpected answers: {load.refusals()[:5]}"
    assert not load.bad_bodies(), f"2xx answers not counting the event: {load.bad_bodies()[:5]}"


async def wait_delivered(fake: FakeSegment, load: LoadGenerator, source: str = "default",
                         timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Wait until every acknowledged event's messageId was answered 2xx by the fake."""

    def done() -> bool:
        return not Arrivals.of(fake, load.run, source).missing(set(load.acked))

    def describe() -> str:
        missing = Arrivals.of(fake, load.run, source).missing(set(load.acked))
        return f"{len(missing)} of {len(load.acked)} acknowledged events not delivered"

    await wait_until(done, timeout_s, "every acknowledged event to reach Segment", 0.25, describe)


# --- the database, read directly ----------------------------------------------------------


class Inspector:
    """Reads the service's tables directly (independently of the service)."""

    url: str

    async def query(self, sql: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def status_counts(self) -> dict[str, int]:
        rows = await self.query(
            "SELECT status, COUNT(*) AS n FROM nudgespot_event GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}

    async def events(self) -> list[dict[str, Any]]:
        return await self.query(
            "SELECT source, dedup_key, status, attempts, lease_owner, lease_expires_at "
            "FROM nudgespot_event")

    async def wait_settled(self, timeout_s: float = DRAIN_TIMEOUT_S) -> dict[str, int]:
        """Wait until no event is pending; return the final status counts."""
        counts: dict[str, int] = {}

        async def settled() -> bool:
            nonlocal counts
            counts = await self.status_counts()
            return counts.get("pending", 0) == 0

        await wait_until(settled, timeout_s, "no event left pending", 0.5,
                         lambda: f"status counts {counts}")
        return counts


class SqliteInspector(Inspector):
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = url.removeprefix("sqlite://")

    async def query(self, sql: str) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            conn = sqlite3.connect(self.path, timeout=30)
            try:
                conn.row_factory = sqlite3.Row
                return [dict(row) for row in conn.execute(sql).fetchall()]
            finally:
                conn.close()

        return await asyncio.to_thread(run)


class PostgresInspector(Inspector):
    def __init__(self, url: str) -> None:
        self.url = url

    async def query(self, sql: str) -> list[dict[str, Any]]:
        dsn = self.url.replace("postgres://", "postgresql://", 1).split("?", 1)[0]
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return [dict(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()


def inspector_for(url: str) -> Inspector:
    return SqliteInspector(url) if url.startswith("sqlite://") else PostgresInspector(url)
