"""The logs an operator reads and alerts on, produced by real parts.

The real application (create_app) with the real SegmentPublisher (segment-analytics-python's
request.post on a thread), a real store on SQLite and PostgreSQL, and FakeSegment served over
loopback (or a closed port on 127.0.0.1 for "connection refused"). Logging is set up as `serve`
sets it at level DEBUG (service.logs.configure_logging: tortoise and segment never below INFO,
aiohttp.access and apscheduler at WARNING), with pytest's caplog as the handler; assertions are
on the records. The unit tests at the end classify REAL exceptions: requests against a closed
port, an unresolvable host, a server that never answers and one that drops the connection.
Waits are generous; no duration is asserted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from models import Store
from models.tables import Event
from outbound import mapping
from outbound.policy import Verdict, classify, network_problem
from outbound.publisher import segment_sender
from service import __version__
from service.app import STORE, create_app
from service.config import LoggingSettings, Settings
from service.logs import JsonFormatter, configure_logging
from service.wiring import build_publisher
from tests.conftest import (
    OTHER_TOKEN,
    OTHER_WRITE_KEY,
    TOKEN,
    WRITE_KEY,
    make_settings,
    stored_events,
)
from tests.fake_segment import FakeSegment, _basic_user

WAIT_S = 20.0
PUBLISHER_LOGGER = "outbound.publisher"
APP_LOGGER = "service.app"
BATCH_LINE = re.compile(
    r"^batch source=(?P<source>\S+) events=(?P<events>\d+) bytes=\d+ "
    r"outcome=(?P<outcome>.*) ms=[\d.]+$"
)
# What a raw exception looks like when it leaks into a line meant for people.
RAW = re.compile(r"Error\(|Errno|object at 0x|ConnectionPool|Traceback|<[a-z_.]+ ", re.I)


# --- logging as the service sets it, recorded by caplog ------------------------------------------


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """configure_logging at DEBUG (as `serve` does), recorded by caplog instead of printed."""
    root = logging.getLogger()
    names = ("tortoise", "segment", "aiohttp.access", "apscheduler")
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in names}
    configure_logging(LoggingSettings(level="DEBUG", format="text"))
    root.handlers[:] = handlers  # pytest's handlers (caplog's among them), not stderr
    yield caplog
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


def messages(caplog: pytest.LogCaptureFixture, *, min_level: int = logging.NOTSET,
             logger: str | None = None) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= min_level and (logger is None or r.name == logger)]


def failing_lines(caplog: pytest.LogCaptureFixture, source: str) -> list[logging.LogRecord]:
    start = f"source {source}: sending to Segment is failing: "
    return [r for r in caplog.records if r.getMessage().startswith(start)]


def recovered_lines(caplog: pytest.LogCaptureFixture, source: str) -> list[logging.LogRecord]:
    start = f"source {source}: sending to Segment recovered"
    return [r for r in caplog.records if r.getMessage().startswith(start)]


def dead_lines(caplog: pytest.LogCaptureFixture, source: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.getMessage().startswith(f"source {source}: ") and "went dead" in r.getMessage()]


@dataclass
class BatchLine:
    level: int
    events: int
    outcome: str


def batch_lines(caplog: pytest.LogCaptureFixture, source: str) -> list[BatchLine]:
    lines = []
    for record in caplog.records:
        match = BATCH_LINE.match(record.getMessage()) if record.name == PUBLISHER_LOGGER else None
        if match and match["source"] == source:
            lines.append(BatchLine(record.levelno, int(match["events"]), match["outcome"]))
    return lines


def assert_no_errors_or_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    errors = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    tracebacks = [(r.name, r.getMessage()) for r in caplog.records
                  if (r.exc_info and r.exc_info[0] is not None) or r.exc_text
                  or "Traceback" in r.getMessage()]
    assert tracebacks == []


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


# --- Segment: the fake, served on loopback, or nothing at all ------------------------------------


@dataclass
class Attempt:
    write_key: str
    status: int
    message_ids: list[str]


class LoggingFake(FakeSegment):
    """FakeSegment that records every attempt (failed ones too) and can answer like a proxy in
    front of Segment: a 503 with an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.url = ""
        self.attempts: list[Attempt] = []
        self.arrivals = 0
        self.html_503 = False
        self.gate: asyncio.Event | None = None  # when set up and not set, requests wait for it

    async def batch(self, request: web.Request) -> web.StreamResponse:
        self.arrivals += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.html_503:
            body = await request.read()
            self._record(_basic_user(request.headers.get("Authorization", "")) or "", True,
                         body, 503)
            return web.Response(status=503, content_type="text/html",
                                text="<html><body><h1>503 Service Unavailable</h1></body></html>")
        return await super().batch(request)

    def _record(self, write_key: str, gzipped: bool, body: bytes, status: int) -> None:
        try:
            ids = [m.get("messageId") for m in json.loads(body)["batch"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            ids = []
        self.attempts.append(Attempt(write_key, status, ids))
        super()._record(write_key, gzipped, body, status)

    def failed_attempts(self, write_key: str) -> list[Attempt]:
        return [a for a in self.attempts if a.write_key == write_key and a.status != 200]


async def serve_fake(aiohttp_server: Any, port: int | None = None) -> LoggingFake:
    fake = LoggingFake()
    server = await aiohttp_server(fake.app(), port=port)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connecting is refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the service ------------------------------------------------------------------------------


def settings_for(db_url: str, endpoint: str, **publisher: Any) -> Settings:
    options = {"interval_s": 0.2, "retry_base_s": 0.05, "retry_max_s": 0.2, **publisher}
    return make_settings(db_url, segment={"endpoint": endpoint, "timeout_s": 5},
                         publisher=options)


async def start_app(aiohttp_client: Any, settings: Settings) -> Any:
    return await aiohttp_client(create_app(settings, publisher=build_publisher(settings)))


async def post(client: Any, body: Any, token: str = TOKEN) -> dict[str, Any]:
    resp = await client.post(f"/webhooks/nudgespot/{token}", json=body)
    answer = await resp.json()
    assert resp.status == 200, answer
    return answer


def ev(key: str, *, seconds: int = 0, uid: str = "42", **extra: Any) -> dict[str, Any]:
    return {"id": key, "event": "open", "timestamp": 1795167000 + seconds,
            "subscriber": {"uid": uid}, **extra}


def mid(key: str, source: str = "default") -> str:
    return mapping.message_id(source, key)


async def event_rows(store: Store) -> list[Event]:
    return await stored_events(store)


async def wait_rows(store: Store, done: Callable[[list[Event]], bool]) -> list[Event]:
    deadline = time.monotonic() + WAIT_S
    while True:
        rows = await event_rows(store)
        if done(rows):
            return rows
        if time.monotonic() > deadline:
            state = [(r.source, r.dedup_key, r.status, r.attempts, r.last_error) for r in rows]
            pytest.fail(f"the database did not reach the expected state in {WAIT_S}s: {state}")
        await asyncio.sleep(0.05)


def settled(count: int) -> Callable[[list[Event]], bool]:
    return lambda rows: len(rows) == count and all(r.status != "pending" for r in rows)


def kind_of(db_url: str) -> str:
    return "sqlite" if db_url.startswith("sqlite") else "postgres"


# --- 1. start-up and shutdown -------------------------------------------------------------------


async def test_start_up_names_version_database_and_each_source_with_its_format(
    aiohttp_client: Any, aiohttp_server: Any, db_url: str, logs: pytest.LogCaptureFixture
) -> None:
    fake = await serve_fake(aiohttp_server)
    settings = make_settings(
        db_url,
        segment={"endpoint": fake.url},
        sources=[
            {"name": "default", "token": TOKEN, "write_key": WRITE_KEY},
            {"name": "mg", "token": "tok-mailgun-0001", "write_key": "WK-mg", "format": "mailgun",
             "signing_secret": "key-mailgun-signing-0123456789abcdef"},
            {"name": "pm", "token": "tok-postmark-0001", "write_key": "WK-pm",
             "format": "postmark", "basic_auth": "hook:s3cret"},
        ],
    )
    client = await start_app(aiohttp_client, settings)

    starting = [(r.levelno, r.getMessage()) for r in logs.records
                if r.name == APP_LOGGER and " starting: " in r.getMessage()]
    assert starting == [(logging.INFO, (
        f"nudgespot-segment {__version__} starting: database {kind_of(db_url)}; sources "
        "default (format nudgespot), mg (format mailgun), pm (format postmark)"))]

    await client.close()

    stopping = [(r.name, r.levelno, r.getMessage()) for r in logs.records
                if "stopped" in r.getMessage()]
    assert stopping == [
        (PUBLISHER_LOGGER, logging.INFO, "publisher stopped: in-flight batches finished"),
        (APP_LOGGER, logging.INFO, "nudgespot-segment stopped: the database is closed"),
    ]


async def test_shutdown_during_a_send_that_never_ends_says_how_many_leases_it_released(
    aiohttp_client: Any, aiohttp_server: Any, db_url: str, logs: pytest.LogCaptureFixture
) -> None:
    fake = await serve_fake(aiohttp_server)
    fake.gate = asyncio.Event()  # Segment does not answer until the test lets it
    settings = make_settings(
        db_url, server={"shutdown_timeout_s": 0.5}, segment={"endpoint": fake.url},
        publisher={"interval_s": 0.2, "retry_base_s": 0.05, "retry_max_s": 0.2},
    )
    client = await start_app(aiohttp_client, settings)
    try:
        await post(client, [ev(f"st-{i}", seconds=i) for i in range(3)])
        await wait_for(lambda: fake.arrivals >= 1, "the send to begin")

        await client.close()
    finally:
        fake.gate.set()

    stopping = [(r.name, r.getMessage()) for r in logs.records if "stopped" in r.getMessage()]
    assert stopping == [
        (PUBLISHER_LOGGER,
         "publisher stopped: in-flight batches did not finish, 3 leased event(s) released"),
        (APP_LOGGER, "nudgespot-segment stopped: the database is closed"),
    ]


# --- 2. an outage: one WARNING when it begins, one when it ends ----------------------------------


@pytest.mark.parametrize("outage", ["500", "refused"])
async def test_an_outage_is_told_once_when_it_begins_and_once_when_it_ends(
    aiohttp_client: Any, aiohttp_server: Any, db_url: str, logs: pytest.LogCaptureFixture,
    outage: str,
) -> None:
    fake: LoggingFake | None = None
    if outage == "500":
        fake = await serve_fake(aiohttp_server)
        fake.answer(500)
        endpoint, summary = fake.url, "Segment answered 500: scripted 500"
    else:
        port = closed_port()
        endpoint = f"http://127.0.0.1:{port}"
        summary = f"Segment unreachable (127.0.0.1:{port}): connection refused"
    # Batches of two: each source fails several batches per round, for several rounds.
    client = await start_app(aiohttp_client, settings_for(db_url, endpoint, batch_max_events=2,
                                                          max_attempts=1000))
    store = client.app[STORE]
    await post(client, [ev(f"d-{i}", seconds=i) for i in range(6)])
    await post(client, [ev(f"o-{i}", seconds=i) for i in range(2)], token=OTHER_TOKEN)

    during = await wait_rows(store, lambda rows: len(rows) == 8 and all(
        r.attempts >= 3 and r.last_error for r in rows))

    # The stored error: the summary first, what the library raised on the next line.
    for row in during:
        lines = (row.last_error or "").splitlines()
        assert lines[0] == summary, row.last_error
        if outage == "refused":
            assert len(lines) == 2 and lines[1].startswith(
                f"ConnectionError: HTTPConnectionPool(host='127.0.0.1', port={port})"), lines
            assert "Connection refused" in lines[1]
        else:
            assert len(lines) == 1
    if fake is not None:
        fake.recover()
    else:
        fake = await serve_fake(aiohttp_server, port=port)  # Segment is back on that port
    await wait_rows(store, lambda rows: len(rows) == 8 and all(
        r.status == "delivered" for r in rows))
    await wait_for(lambda: recovered_lines(logs, "default") and recovered_lines(logs, "other"),
                   "both sources to recover")
    rows = await event_rows(store)

    for source, events in (("default", 6), ("other", 2)):
        [begins] = failing_lines(logs, source)
        assert (begins.levelno, begins.getMessage()) == (
            logging.WARNING,
            f"source {source}: sending to Segment is failing: {summary}; retrying with backoff")
        assert not RAW.search(begins.getMessage()), begins.getMessage()
        [ends] = recovered_lines(logs, source)
        assert ends.levelno == logging.WARNING
        assert re.fullmatch(rf"source {source}: sending to Segment recovered after \d+ s; "
                            rf"{events} event\(s\) waited", ends.getMessage()), ends.getMessage()
        assert logs.records.index(begins) < logs.records.index(ends)

        batches = batch_lines(logs, source)
        failed = [b for b in batches if b.outcome != "delivered"]
        delivered = [b for b in batches if b.outcome == "delivered"]
        assert len(failed) >= 3  # however many batches failed, one WARNING above
        assert {b.level for b in failed} == {logging.DEBUG}
        # Each failed batch's line: the summary, then what the library raised.
        assert {b.outcome.split(" | ")[0] for b in failed} == {summary}
        if outage == "refused":
            assert all(b.outcome.split(" | ")[1].startswith("ConnectionError: ") for b in failed)
        assert {b.level for b in delivered} == {logging.INFO}
        assert sum(b.events for b in delivered) == events
        # Every send of every event is one batch line: the attempts the database counted.
        assert sum(b.events for b in batches) == sum(r.attempts for r in rows if r.source == source)
        if outage == "500":
            key = WRITE_KEY if source == "default" else OTHER_WRITE_KEY
            assert len(failed) == len(fake.failed_attempts(key))
    assert_no_errors_or_tracebacks(logs)


async def test_an_outage_answered_by_a_proxys_html_503_is_one_warning_and_no_error_per_batch(
    aiohttp_client: Any, aiohttp_server: Any, sqlite_url: str, logs: pytest.LogCaptureFixture
) -> None:
    fake = await serve_fake(aiohttp_server)
    fake.html_503 = True
    client = await start_app(aiohttp_client, settings_for(sqlite_url, fake.url,
                                                          max_attempts=1000))
    await post(client, [ev(f"h-{i}", seconds=i) for i in range(3)])
    await wait_for(lambda: len(fake.failed_attempts(WRITE_KEY)) >= 3, "three failed batches")
    fake.html_503 = False
    await wait_rows(client.app[STORE], settled(3))
    await wait_for(lambda: recovered_lines(logs, "default"), "the recovery")

    assert len(failing_lines(logs, "default")) == 1
    above = [(r.name, r.getMessage()) for r in logs.records if r.levelno >= logging.WARNING]
    assert len(above) == 2, above  # the outage begins, the outage ends
    assert_no_errors_or_tracebacks(logs)


# --- 3. events going dead ------------------------------------------------------------------------


@pytest.mark.parametrize("outage", ["500", "refused"])
async def test_events_that_reach_max_attempts_in_an_outage_are_told_dead_with_count_and_reason(
    aiohttp_client: Any, aiohttp_server: Any, db_url: str, logs: pytest.LogCaptureFixture,
    outage: str,
) -> None:
    if outage == "500":
        fake = await serve_fake(aiohttp_server)
        fake.answer(500)
        endpoint, summary = fake.url, "Segment answered 500: scripted 500"
    else:
        port = closed_port()
        endpoint = f"http://127.0.0.1:{port}"
        summary = f"Segment unreachable (127.0.0.1:{port}): connection refused"
    client = await start_app(aiohttp_client, settings_for(db_url, endpoint, max_attempts=3))

    await post(client, [ev(f"x-{i}", seconds=i) for i in range(4)])
    await wait_rows(client.app[STORE], lambda rows: len(rows) == 4 and all(
        r.status == "dead" for r in rows))
    await wait_for(lambda: sum(int(r.getMessage().split()[2]) for r in dead_lines(
        logs, "default")) >= 4, "the dead events to be told")

    dead = dead_lines(logs, "default")
    assert {(r.levelno, re.sub(r"^source default: \d+ ", "", r.getMessage())) for r in dead} == {
        (logging.WARNING, f"event(s) went dead (replayable): {summary} (after 3 attempts)")}
    assert sum(int(r.getMessage().split()[2]) for r in dead) == 4
    assert_no_errors_or_tracebacks(logs)


async def test_an_event_segment_refuses_with_400_is_told_dead_and_is_no_outage(
    aiohttp_client: Any, aiohttp_server: Any, db_url: str, logs: pytest.LogCaptureFixture
) -> None:
    fake = await serve_fake(aiohttp_server)
    fake.reject(mid("b-3"), "properties.variant must be a string")
    client = await start_app(aiohttp_client, settings_for(db_url, fake.url))

    await post(client, [ev(f"b-{i}", seconds=i) for i in range(8)])
    rows = await wait_rows(client.app[STORE], settled(8))
    await wait_for(lambda: dead_lines(logs, "default"), "the dead event to be told")

    assert {r.dedup_key: r.status for r in rows if r.status == "dead"} == {"b-3": "dead"}
    assert [(r.levelno, r.getMessage()) for r in dead_lines(logs, "default")] == [
        (logging.WARNING, "source default: 1 event(s) went dead (replayable): "
                          "Segment answered 400: properties.variant must be a string")]
    assert failing_lines(logs, "default") == []
    assert recovered_lines(logs, "default") == []
    assert_no_errors_or_tracebacks(logs)


async def test_an_event_over_32_kb_is_told_dead_with_its_size(
    aiohttp_client: Any, aiohttp_server: Any, sqlite_url: str, logs: pytest.LogCaptureFixture
) -> None:
    fake = await serve_fake(aiohttp_server)
    client = await start_app(aiohttp_client, settings_for(sqlite_url, fake.url))

    await post(client, [ev("s-1"), ev("huge", seconds=1, properties={"blob": "x" * 40_000})])
    await wait_rows(client.app[STORE], settled(2))
    await wait_for(lambda: dead_lines(logs, "default"), "the dead event to be told")

    [dead] = dead_lines(logs, "default")
    assert dead.levelno == logging.WARNING
    assert re.fullmatch(r"source default: 1 event\(s\) went dead \(replayable\): message is "
                        r"\d+ bytes, over Segment's 32768-byte limit per event",
                        dead.getMessage()), dead.getMessage()
    assert "xxxxxxxx" not in dead.getMessage()


# --- 4. what someone watching WARNING and above sees ---------------------------------------------


async def test_warning_and_above_show_the_outage_and_dead_events_and_nothing_per_batch(
    aiohttp_client: Any, aiohttp_server: Any, db_url: str, logs: pytest.LogCaptureFixture
) -> None:
    fake = await serve_fake(aiohttp_server)
    fake.answer(500)
    client = await start_app(aiohttp_client, settings_for(db_url, fake.url, max_attempts=3,
                                                          batch_max_events=2))
    store = client.app[STORE]

    await post(client, [ev(f"a-{i}", seconds=i) for i in range(3)])  # these go dead
    await wait_rows(store, lambda rows: len(rows) == 3 and all(r.status == "dead" for r in rows))
    await post(client, [ev(f"w-{i}", seconds=i) for i in range(2)])  # these wait, then go
    await wait_rows(store, lambda rows: len(rows) == 5 and all(r.attempts >= 1 for r in rows))
    fake.recover()
    await wait_for(lambda: recovered_lines(logs, "default"), "the recovery")
    fake.reject(mid("c-1"), "properties.variant must be a string")
    await post(client, [ev("c-0", seconds=10), ev("c-1", seconds=11)])
    rows = await wait_rows(store, settled(7))
    await wait_for(lambda: len(dead_lines(logs, "default")) >= 2, "the refused event to be told")

    assert {r.dedup_key for r in rows if r.status == "dead"} == {"a-0", "a-1", "a-2", "c-1"}
    seen = messages(logs, min_level=logging.WARNING)
    failing = "source default: sending to Segment is failing: Segment answered 500: scripted 500"
    dead_500 = "Segment answered 500: scripted 500 (after 3 attempts)"
    assert [re.sub(r"after \d+ s", "after N s", m) for m in seen] == [
        f"{failing}; retrying with backoff",
        *[f"source default: {n} event(s) went dead (replayable): {dead_500}"
          for n in dead_counts(seen)],
        # every event that failed during the outage: the 3 that went dead and the 2 that waited
        "source default: sending to Segment recovered after N s; 5 event(s) waited",
        "source default: 1 event(s) went dead (replayable): "
        "Segment answered 400: properties.variant must be a string",
    ]
    assert sum(dead_counts(seen)) == 3
    failed_batches = [b for b in batch_lines(logs, "default") if b.outcome != "delivered"]
    assert len(failed_batches) >= 5 and {b.level for b in failed_batches} == {logging.DEBUG}


def dead_counts(seen: list[str]) -> list[int]:
    """The counts of the 500 outage's dead lines, in order."""
    found = [re.match(r"source default: (\d+) event\(s\) went dead \(replayable\): Segment "
                      r"answered 500", m) for m in seen]
    return [int(m[1]) for m in found if m]


# --- 5. no secrets or payloads at INFO and above ------------------------------------------------

SECRET_TOKEN = "tok-logs-3f9c2a71d4e84b06"
SECRET_OTHER_TOKEN = "tok-logs-0b6e5d7c19a24f83"
SECRET_WRITE_KEY = "wk-logs-8e1d5c2b9a704f31"
SECRET_OTHER_WRITE_KEY = "wk-logs-6a2f0c94e1d7b358"
PAYLOAD = {
    "email": "payload.person.7c1d@example.com",
    "uid": "payload-uid-3e8b91",
    "subject": "payload-subject-a41f07",
    "link": "https://example.com/payload-link-d2c6e8",
}


def secret_forms() -> dict[str, str]:
    forms = {
        "webhook token": SECRET_TOKEN, "other webhook token": SECRET_OTHER_TOKEN,
        "write key": SECRET_WRITE_KEY, "other write key": SECRET_OTHER_WRITE_KEY,
        **{f"payload {name}": value for name, value in PAYLOAD.items()},
    }
    for name in ("write key", "other write key"):
        forms[f"{name} as Basic"] = base64.b64encode(f"{forms[name]}:".encode()).decode()
    return forms


async def secret_flow(
    aiohttp_client: Any, aiohttp_server: Any, db_url: str, logs: pytest.LogCaptureFixture
) -> None:
    """Start, deliver, fail (500s, then a recovery), bisect a 400, refuse bad requests at
    the door, stop: with distinctive secrets and payload values."""
    fake = await serve_fake(aiohttp_server)
    fake.answer(500, times=3)
    settings = make_settings(
        db_url,
        segment={"endpoint": fake.url},
        publisher={"interval_s": 0.2, "retry_base_s": 0.05, "retry_max_s": 0.2,
                   "max_attempts": 1000, "batch_max_events": 3},
        sources=[
            {"name": "default", "token": SECRET_TOKEN, "write_key": SECRET_WRITE_KEY,
             "identify": True},
            {"name": "other", "token": SECRET_OTHER_TOKEN, "write_key": SECRET_OTHER_WRITE_KEY},
        ],
    )
    client = await start_app(aiohttp_client, settings)
    store = client.app[STORE]

    def payload_event(key: str, seconds: int) -> dict[str, Any]:
        return {"id": key, "event": "click", "timestamp": 1795167000 + seconds,
                "subscriber": {"uid": PAYLOAD["uid"], "email": PAYLOAD["email"]},
                "properties": {"subject": PAYLOAD["subject"], "url": PAYLOAD["link"]}}

    fake.reject(mid("p-4"), "invalid message")  # one refused with 400: bisected, dead
    await post(client, [payload_event(f"p-{i}", i) for i in range(6)], token=SECRET_TOKEN)
    await post(client, [payload_event("q-0", 0)], token=SECRET_OTHER_TOKEN)
    # Refused at the door: a body that is no event, and a wrong token.
    resp = await client.post(f"/webhooks/nudgespot/{SECRET_TOKEN}",
                             json=[{"subscriber": {"email": PAYLOAD["email"]}}])
    assert resp.status == 400
    resp = await client.post(f"/webhooks/nudgespot/{SECRET_TOKEN}x", json=[payload_event("r", 0)])
    assert resp.status in (401, 403, 404)
    await wait_rows(store, settled(7))
    await wait_for(lambda: recovered_lines(logs, "default") or recovered_lines(logs, "other"),
                   "the outage to end")
    await client.close()

    # The flow was logged: start-up, batches, the outage, a dead event, shutdown.
    texts = messages(logs, min_level=logging.INFO)
    for needle in ("starting", "outcome=delivered", "is failing", "recovered", "went dead",
                   "stopped"):
        assert any(needle in t for t in texts), (needle, texts)


def leaks(records: list[logging.LogRecord]) -> list[tuple[str, str, str]]:
    """(what, logger, message) for each secret or payload value a record shows, as the
    service's text and JSON formats print it, or in its raw arguments."""
    text_format = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return [
        (name, r.name, r.getMessage()[:200])
        for r in records
        for name, form in secret_forms().items()
        if form in text_format.format(r) + JsonFormatter().format(r) + repr(r.args) + str(r.msg)
    ]


async def test_info_and_above_never_show_write_keys_webhook_tokens_or_payloads(
    aiohttp_client: Any, aiohttp_server: Any, db_url: str, logs: pytest.LogCaptureFixture
) -> None:
    await secret_flow(aiohttp_client, aiohttp_server, db_url, logs)

    assert leaks([r for r in logs.records if r.levelno >= logging.INFO]) == []


async def test_debug_never_shows_them_either_on_sqlite(
    aiohttp_client: Any, aiohttp_server: Any, sqlite_url: str, logs: pytest.LogCaptureFixture
) -> None:
    await secret_flow(aiohttp_client, aiohttp_server, sqlite_url, logs)

    assert leaks(logs.records) == []


# --- 6. what a network failure is called: real exceptions from requests ------------------------


def raised_by_send(endpoint: str, timeout_s: float = 5.0) -> BaseException:
    """What the publisher's real sender (segment-analytics-python over requests) raises."""
    try:
        segment_sender(endpoint, timeout_s)("WK-unit", [{"type": "track", "event": "open"}])
    except Exception as exc:  # noqa: BLE001 - this is the exception under test
        return exc
    pytest.fail(f"sending to {endpoint} did not fail")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A server on 127.0.0.1 that reads the start of each request, then `handle`s the
    connection and closes it; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            with conn:
                conn.recv(16)
                handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


@pytest.fixture
def closing_server() -> Iterator[int]:
    """Closes each connection without an answer."""
    yield from tcp_server(lambda conn: None)


@pytest.fixture
def resetting_server() -> Iterator[int]:
    """Resets each connection (RST) without an answer."""
    yield from tcp_server(lambda conn: conn.setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)))


@pytest.fixture
def plain_http_server() -> Iterator[int]:
    """Answers in plain HTTP, whatever it was sent (a TLS handshake too)."""
    yield from tcp_server(lambda conn: conn.sendall(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))


def assert_summary_then_raw(exc: BaseException, host: str, problem: str) -> None:
    assert network_problem(exc) == problem
    failure = classify(exc, host)
    assert failure.verdict is Verdict.RETRY
    first, second = failure.error.splitlines()
    assert first == f"Segment unreachable ({host}): {problem}"
    assert second == f"{type(exc).__name__}: {str(exc)[:300]}"


def test_a_closed_port_is_connection_refused() -> None:
    port = closed_port()
    exc = raised_by_send(f"http://127.0.0.1:{port}")

    assert_summary_then_raw(exc, f"127.0.0.1:{port}", "connection refused")
    assert classify(exc, f"127.0.0.1:{port}").error.splitlines()[1].startswith(
        "ConnectionError: ")


def test_an_unresolvable_host_is_host_name_not_found() -> None:
    exc = raised_by_send("http://nonexistent.invalid")

    assert_summary_then_raw(exc, "nonexistent.invalid", "host name not found")


def test_a_server_that_never_answers_is_timed_out(silent_server: int) -> None:
    exc = raised_by_send(f"http://127.0.0.1:{silent_server}", timeout_s=0.3)

    assert_summary_then_raw(exc, f"127.0.0.1:{silent_server}", "timed out")
    assert type(exc).__name__ == "ReadTimeout"


@pytest.mark.parametrize("server", ["closing_server", "resetting_server"])
def test_a_connection_closed_mid_request_is_connection_dropped(
    server: str, request: pytest.FixtureRequest
) -> None:
    port = request.getfixturevalue(server)
    exc = raised_by_send(f"http://127.0.0.1:{port}")

    assert_summary_then_raw(exc, f"127.0.0.1:{port}", "connection dropped")


def test_tls_to_a_server_that_speaks_plain_http_is_a_tls_failure(plain_http_server: int) -> None:
    exc = raised_by_send(f"https://127.0.0.1:{plain_http_server}")

    assert_summary_then_raw(exc, f"127.0.0.1:{plain_http_server}", "TLS handshake failed")


def test_a_host_name_containing_ssl_that_does_not_resolve_is_host_name_not_found() -> None:
    exc = raised_by_send("http://ssl-proxy.invalid")

    assert_summary_then_raw(exc, "ssl-proxy.invalid", "host name not found")
