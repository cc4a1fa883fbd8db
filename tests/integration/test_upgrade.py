"""A database written by release 0.1.0 keeps working after the upgrade to per-source formats.

tests/fixtures/upgrade/v0.1.0.sqlite3 was written by 0.1.0's own code (commit cae1eab; see
make_v0_1_0_db.py next to it). For source "default" it holds: up-1 delivered, up-2 dead, up-3
and an id-less click (keyed by the fallback hash) pending, one quarantined event
(email_teleported), a duplicate count of 1 and user 42 already identified. Only migration
0001 is applied.

Every test works on a copy in tmp_path (the committed file is never opened). On PostgreSQL the
same state is built by applying only migration 0001 to a fresh database and copying the
fixture's rows in with INSERTs. Then the current `nudgespot-segment migrate` (service.cli.main,
in process) upgrades it, and the real app with the real publisher serves it against
tests/fake_segment.py. The messageIds below were computed by 0.1.0's own code and are written
out: an upgrade that changed them would make Segment count events twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from models import Store
from service import __version__ as SERVICE_VERSION
from service.app import create_app
from service.cli import main
from service.config import Settings
from service.wiring import build_publisher
from tests.conftest import (
    POSTGRES_ADMIN_URL,
    REQUIRE_POSTGRES,
    TOKEN,
    WRITE_KEY,
    _create_database,
    _database_url,
    _drop_database,
    make_settings,
)
from tests.fake_segment import FakeSegment

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "upgrade" / "v0.1.0.sqlite3"
SENDGRID_FIXTURES = ROOT / "tests" / "fixtures" / "formats" / "sendgrid"
ADMIN_TOKEN = "admin-token-for-upgrade-tests"
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SENDGRID_TOKEN = "test-token-sendgrid-0003"
WAIT_S = 15.0

CLICK_KEY = "sha256:e9dab6d6a49880507fd1f40c6a44bd4ce8f13738dec5b1c7d697e9754b3fd523"
# Computed by 0.1.0's code (outbound.mapping.message_id at cae1eab), written out.
UP_3_MESSAGE_ID = "nudgespot-daaa4135e1cec72e4da3c7470096b830b33a37a58da70422fbeecbb1181e5847"
CLICK_MESSAGE_ID = "nudgespot-b198c5eb1adcb9fdb1383dc479f150f5c9f08ecf42c34297b63de13f65b3214a"
UP_2_MESSAGE_ID = "nudgespot-96569733bb84f2fb5002a7ab460a18c279d8d68d7307500a3ba6f6f30ba3661d"
USER_42_IDENTIFY_ID = (
    "nudgespot-40ce6e9be072c85c114cde9fa6ada9bd38de49a5b454c3fbd1f3882f8ec428ce"
)

# The 0.1.0 events as make_v0_1_0_db.py's BODY posted them (up-1, up-3, the id-less click).
REPOSTED_BODY = [
    {"id": "up-1", "event": "email_delivered", "timestamp": "2026-11-20T09:30:00Z",
     "subscriber": {"uid": "42", "email": "ada@example.com"}, "message": {"id": "m-1"}},
    {"id": "up-3", "event": "open", "timestamp": "2026-11-20T09:32:00Z",
     "subscriber": {"uid": "42", "email": "ada@example.com"}, "message": {"id": "m-1"}},
    {"event": "click", "timestamp": 1795167060, "user": {"email": "cy@example.com"},
     "link": {"url": "https://example.com/x"}, "mail_id": "m-2"},
]
TELEPORTED_PAYLOAD = (
    '{"event": "email_teleported", "timestamp": "2026-11-20T09:33:00Z", '
    '"subscriber": {"email": "dee@example.com"}}'
)
FIXTURE_EVENTS = {
    ("up-1", "email_delivered", "delivered", 1, None),
    ("up-2", "email_bounced", "dead", 1, "400 Bad Request: made dead for the fixture"),
    ("up-3", "email_opened", "pending", 0, None),
    (CLICK_KEY, "email_clicked", "pending", 0, None),
}
MIGRATIONS_AFTER_UPGRADE = [
    "0001_initial", "0002_source_counter_ignored", "0003_status_counters", "0004_event_message",
    "0005_event_body",
]


def integration(name: str = "nudgespot") -> dict[str, str]:
    return {"name": name, "version": SERVICE_VERSION}


# The messages the pending events must become (context.library left out: it is the Segment
# library's own name and version, not something an upgrade may change).
UP_3_TRACK = {
    "type": "track",
    "event": "Email Opened",
    "userId": "42",
    "timestamp": "2026-11-20T09:32:00.000Z",
    "properties": {"email_id": "m-1"},
    "context": {"traits": {"email": "ada@example.com"}, "integration": integration()},
    "integrations": {"Nudgespot": False},
    "messageId": UP_3_MESSAGE_ID,
}
CLICK_TRACK = {
    "type": "track",
    "event": "Email Link Clicked",
    "anonymousId": "cy@example.com",
    "timestamp": "2026-11-20T09:31:00.000Z",
    "properties": {"email_id": "m-2", "link_url": "https://example.com/x"},
    "context": {"traits": {"email": "cy@example.com"}, "integration": integration()},
    "integrations": {"Nudgespot": False},
    "messageId": CLICK_MESSAGE_ID,
}
UP_2_TRACK = {
    "type": "track",
    "event": "Email Bounced",
    "anonymousId": "bob@example.com",
    "timestamp": "2026-11-20T09:31:00.000Z",
    "properties": {"bounce_type": "hard", "bounce_reason": "gone"},
    "context": {"traits": {"email": "bob@example.com"}, "integration": integration()},
    "integrations": {"Nudgespot": False},
    "messageId": UP_2_MESSAGE_ID,
}


def without_library(message: dict[str, Any]) -> dict[str, Any]:
    copied = json.loads(json.dumps(message))
    copied.get("context", {}).pop("library", None)
    return copied


# --- databases as 0.1.0 left them ---------------------------------------------------------------


def sqlite_copy(tmp_path: Path) -> Path:
    """A copy of the 0.1.0 database in tmp_path (the committed file is never opened)."""
    path = tmp_path / "v0.1.0-copy.sqlite3"
    shutil.copyfile(FIXTURE, path)
    return path


def is_postgres(url: str) -> bool:
    return not url.startswith("sqlite://")


def pg_dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


async def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a read-only query, read with the plain driver (not through the store)."""
    if not is_postgres(url):
        connection = sqlite3.connect(url.removeprefix("sqlite://"))
        try:
            return [tuple(row) for row in connection.execute(sql)]
        finally:
            connection.close()
    conn = await asyncpg.connect(pg_dsn(url), timeout=5)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


TIME_COLUMNS = {
    "event_time", "next_attempt_at", "lease_expires_at", "received_at", "updated_at",
    "delivered_at", "identified_at", "held_until",
}
COPIED_TABLES = {
    "nudgespot_event": (
        "source", "dedup_key", "event_type", "event_time", "fields_json", "payload", "status",
        "attempts", "next_attempt_at", "last_error", "lease_owner", "lease_expires_at",
        "received_at", "updated_at", "delivered_at",
    ),
    "nudgespot_rejected": ("source", "body_index", "payload", "reason", "received_at"),
    "nudgespot_source_counter": ("source", "duplicates", "held_until"),
    "nudgespot_identified_user": ("source", "user_key", "identified_at"),
}


async def migrate_only_0001(url: str) -> None:
    """Apply migration 0001 and nothing after it, as release 0.1.0 did."""
    await Store(url).migrate(target="nudgespot.0001_initial")


async def copy_fixture_rows(source: Path, url: str) -> None:
    """INSERT the 0.1.0 rows into a PostgreSQL database at migration 0001 (ids generated)."""
    lite = sqlite3.connect(source)
    conn = await asyncpg.connect(pg_dsn(url), timeout=5)
    try:
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'nudgespot_source_counter'")
        assert {c["column_name"] for c in columns} == {"source", "duplicates", "held_until"}, \
            "the database is not at migration 0001"
        for table, names in COPIED_TABLES.items():
            order = "id" if table != "nudgespot_source_counter" else "source"
            rows = lite.execute(f"SELECT {', '.join(names)} FROM {table} ORDER BY {order}")
            placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
            for row in rows.fetchall():
                values = [
                    datetime.fromisoformat(v) if n in TIME_COLUMNS and v is not None else v
                    for n, v in zip(names, row, strict=True)
                ]
                await conn.execute(
                    f"INSERT INTO {table} ({', '.join(names)}) VALUES ({placeholders})", *values)
    finally:
        lite.close()
        await conn.close()


def postgres_at_0001(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL database at migration 0001 holding the fixture's rows; its URL."""
    name = f"nudgespot_upgrade_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        asyncio.run(_create_database(POSTGRES_ADMIN_URL, name))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({exc!r})"
        if REQUIRE_POSTGRES:
            pytest.fail(f"{message}; NUDGESPOT_TEST_REQUIRE_POSTGRES/CI demands these tests run")
        pytest.skip(f"{message}; PostgreSQL tests skipped (set NUDGESPOT_TEST_POSTGRES_URL)")
    url = _database_url(POSTGRES_ADMIN_URL, name)
    try:
        asyncio.run(migrate_only_0001(url))
        asyncio.run(copy_fixture_rows(sqlite_copy(tmp_path), url))
        yield url
    finally:
        asyncio.run(_drop_database(POSTGRES_ADMIN_URL, name))


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """service.cli.main configures the root logger; give pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(params=["sqlite", "postgres"])
def old_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database exactly as 0.1.0 left it (migration 0001 only), on each backend."""
    if request.param == "sqlite":
        yield f"sqlite://{sqlite_copy(tmp_path)}"
    else:
        yield from postgres_at_0001(tmp_path)


CONFIG = """\
database:
  url: "{url}"
sources:
  - name: default
    token: webhook-token-0001
    write_key: segment-write-key-0001
"""


def write_config(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(url=url), encoding="utf-8")
    return config


def run_cli(tmp_path: Path, url: str, *args: str) -> int:
    return main([*args, "--config", str(write_config(tmp_path, url))])


@pytest.fixture
def upgraded_url(old_url: str, tmp_path: Path, restore_logging: None) -> str:
    """The 0.1.0 database after `nudgespot-segment migrate`."""
    assert run_cli(tmp_path, old_url, "migrate") == 0
    return old_url


# --- the served app ------------------------------------------------------------------------------


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeSegment:
    fake = FakeSegment()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    return fake


def served_settings(url: str, fake: FakeSegment | None = None, **sections: Any) -> Settings:
    if fake is not None:
        sections["segment"] = {"endpoint": fake.url}  # type: ignore[attr-defined]
    return make_settings(
        url,
        admin={"token": ADMIN_TOKEN},
        publisher={"interval_s": 0.2, "retry_base_s": 0.05, "retry_max_s": 0.2,
                   "max_attempts": 3},
        **sections,
    )


async def serve(aiohttp_client: Any, settings: Settings, *, publish: bool,
                migrate_sqlite: bool = True) -> TestClient:
    publisher = build_publisher(settings) if publish else None
    return await aiohttp_client(create_app(settings, publisher=publisher, retention=False,
                                           migrate_sqlite=migrate_sqlite))


async def get_status(client: TestClient) -> dict[str, Any]:
    async with client.get("/status", headers=BEARER) as resp:
        assert resp.status == 200
        return await resp.json()


async def event_states(url: str) -> dict[str, str]:
    return dict(await query(url, "SELECT dedup_key, status FROM nudgespot_event"))


async def wait_states(url: str, expected: dict[str, str]) -> None:
    deadline = time.monotonic() + WAIT_S
    while (current := await event_states(url)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"rows never reached {expected}; they are {current}")
        await asyncio.sleep(0.05)


def by_message_id(fake: FakeSegment) -> dict[str, dict[str, Any]]:
    return {m["messageId"]: m for m in fake.delivered}


# --- migrate ------------------------------------------------------------------------------------


def test_migrate_applies_0002_to_a_0_1_0_database(
    old_url: str, tmp_path: Path, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    status = run_cli(tmp_path, old_url, "migrate")

    assert status == 0
    assert "migrations applied" in capsys.readouterr().out
    names = asyncio.run(query(old_url, "SELECT name FROM tortoise_migrations ORDER BY name"))
    assert [n for (n,) in names] == MIGRATIONS_AFTER_UPGRADE


def test_migrate_keeps_every_event_with_its_status(upgraded_url: str) -> None:
    rows = asyncio.run(query(
        upgraded_url,
        "SELECT dedup_key, event_type, status, attempts, last_error FROM nudgespot_event"))

    assert set(rows) == FIXTURE_EVENTS
    assert len(rows) == 4


def test_migrate_moves_each_events_fields_and_payload_to_its_body(upgraded_url: str) -> None:
    with sqlite3.connect(FIXTURE) as fixture:
        before = set(fixture.execute(
            "SELECT dedup_key, fields_json, payload FROM nudgespot_event"))
    after = set(asyncio.run(query(
        upgraded_url, "SELECT e.dedup_key, b.fields_json, b.payload FROM nudgespot_event e "
                      "JOIN nudgespot_event_body b ON b.id = e.id")))

    assert len(before) == len(FIXTURE_EVENTS)
    assert after == before


def test_events_of_0_1_0_have_no_stored_message_and_are_mapped_when_published(
    upgraded_url: str,
) -> None:
    rows = asyncio.run(query(upgraded_url, "SELECT count(*) FROM nudgespot_event e JOIN "
                                           "nudgespot_event_body b ON b.id = e.id "
                                           "WHERE b.message IS NULL AND b.fields_json <> ''"))

    assert rows == [(len(FIXTURE_EVENTS),)]  # the publisher maps these from fields_json


def test_migrate_keeps_the_quarantined_event(upgraded_url: str) -> None:
    rows = asyncio.run(query(
        upgraded_url, "SELECT source, body_index, payload, reason FROM nudgespot_rejected"))

    assert rows == [("default", 4, TELEPORTED_PAYLOAD, "unknown event 'email_teleported'")]


def test_migrate_keeps_the_duplicate_count_and_starts_ignored_at_0(upgraded_url: str) -> None:
    rows = asyncio.run(query(
        upgraded_url, "SELECT source, duplicates, ignored FROM nudgespot_source_counter"))

    assert rows == [("default", 1, 0)]


def test_migrate_keeps_the_identified_user(upgraded_url: str) -> None:
    rows = asyncio.run(query(
        upgraded_url, "SELECT source, user_key FROM nudgespot_identified_user"))

    assert rows == [("default", "user:42")]


def test_migrate_again_after_the_upgrade_changes_nothing(
    upgraded_url: str, tmp_path: Path, restore_logging: None
) -> None:
    assert run_cli(tmp_path, upgraded_url, "migrate") == 0

    rows = asyncio.run(query(
        upgraded_url,
        "SELECT dedup_key, event_type, status, attempts, last_error FROM nudgespot_event"))
    assert set(rows) == FIXTURE_EVENTS
    counters = asyncio.run(query(
        upgraded_url, "SELECT source, duplicates, ignored FROM nudgespot_source_counter"))
    assert counters == [("default", 1, 0)]


# --- serving the upgraded database ----------------------------------------------------------------


async def test_pending_events_reach_segment_with_the_message_ids_0_1_0_gave_them(
    aiohttp_client: Any, fake: FakeSegment, upgraded_url: str
) -> None:
    await serve(aiohttp_client, served_settings(upgraded_url, fake), publish=True)

    await fake.wait_for(2, timeout_s=WAIT_S)
    await wait_states(upgraded_url, {"up-1": "delivered", "up-2": "dead", "up-3": "delivered",
                                     CLICK_KEY: "delivered"})

    sent = by_message_id(fake)
    assert sorted(sent) == sorted([UP_3_MESSAGE_ID, CLICK_MESSAGE_ID])
    assert without_library(sent[UP_3_MESSAGE_ID]) == UP_3_TRACK
    assert without_library(sent[CLICK_MESSAGE_ID]) == CLICK_TRACK
    assert {r.write_key for r in fake.received} == {WRITE_KEY}


async def test_dead_event_of_0_1_0_is_replayed_with_its_message_id(
    aiohttp_client: Any, fake: FakeSegment, upgraded_url: str
) -> None:
    client = await serve(aiohttp_client, served_settings(upgraded_url, fake), publish=True)
    await fake.wait_for(2, timeout_s=WAIT_S)
    assert UP_2_MESSAGE_ID not in by_message_id(fake)  # dead stays dead until replayed

    async with client.post("/replay", json={"status": ["dead"]}, headers=BEARER) as resp:
        assert resp.status == 200
        answer = await resp.json()

    assert answer == {"matched": 1, "requeued": 1}
    await fake.wait_for(3, timeout_s=WAIT_S)
    assert without_library(by_message_id(fake)[UP_2_MESSAGE_ID]) == UP_2_TRACK
    await wait_states(upgraded_url, {"up-1": "delivered", "up-2": "delivered",
                                     "up-3": "delivered", CLICK_KEY: "delivered"})


async def test_reposted_0_1_0_events_are_all_duplicates(
    aiohttp_client: Any, upgraded_url: str
) -> None:
    client = await serve(aiohttp_client, served_settings(upgraded_url), publish=False)

    async with client.post(f"/webhooks/nudgespot/{TOKEN}", json=REPOSTED_BODY) as resp:
        assert resp.status == 200
        answer = await resp.json()

    assert answer == {"accepted": 0, "duplicates": 3, "rejected": []}
    assert await event_states(upgraded_url) == {
        "up-1": "delivered", "up-2": "dead", "up-3": "pending", CLICK_KEY: "pending"}
    assert (await get_status(client))["sources"]["default"]["duplicates"] == 4


async def test_user_identified_under_0_1_0_is_not_identified_again(
    aiohttp_client: Any, fake: FakeSegment, upgraded_url: str
) -> None:
    source = {"name": "default", "token": TOKEN, "write_key": WRITE_KEY, "identify": True}
    await serve(aiohttp_client, served_settings(upgraded_url, fake, sources=[source]),
                publish=True)

    await fake.wait_for(3, timeout_s=WAIT_S)  # two tracks and cy's identify
    await wait_states(upgraded_url, {"up-1": "delivered", "up-2": "dead", "up-3": "delivered",
                                     CLICK_KEY: "delivered"})

    identifies = [m for m in fake.delivered if m["type"] == "identify"]
    # identify is on: the recipient 0.1.0 never identified (cy, anonymous) gets one ...
    assert [m.get("anonymousId") for m in identifies] == ["cy@example.com"]
    # ... user 42, identified under 0.1.0, does not.
    assert [m for m in identifies if m.get("userId") == "42"] == []
    assert USER_42_IDENTIFY_ID not in fake.delivered_ids()


async def test_quarantined_event_of_0_1_0_is_still_listed(
    aiohttp_client: Any, upgraded_url: str
) -> None:
    client = await serve(aiohttp_client, served_settings(upgraded_url), publish=False)

    status = await get_status(client)

    assert status["sources"]["default"]["rejected"] == 1
    assert [(p["source"], p["error"], p["payload"]) for p in status["latest_rejected"]] == [
        ("default", "unknown event 'email_teleported'", TELEPORTED_PAYLOAD)]


def test_replay_rejected_leaves_the_0_1_0_quarantine_in_place(
    upgraded_url: str, tmp_path: Path, restore_logging: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()

    status = run_cli(tmp_path, upgraded_url, "replay", "--rejected")

    assert status == 0
    assert json.loads(capsys.readouterr().out) == {
        "matched": 1, "requeued": 0, "still_rejected": 1}
    rejects = asyncio.run(query(upgraded_url, "SELECT payload FROM nudgespot_rejected"))
    assert rejects == [(TELEPORTED_PAYLOAD,)]
    events = asyncio.run(query(upgraded_url, "SELECT dedup_key FROM nudgespot_event"))
    assert len(events) == 4


# --- serve on SQLite migrates by itself ---------------------------------------------------------


def sqlite_settings_with_sendgrid(url: str) -> Settings:
    return served_settings(url, sources=[
        {"name": "default", "token": TOKEN, "write_key": WRITE_KEY},
        {"name": "sg", "token": SENDGRID_TOKEN, "write_key": "WK-sg", "format": "sendgrid"},
    ])


async def test_serve_migrates_an_unmigrated_0_1_0_sqlite_by_itself(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    url = f"sqlite://{sqlite_copy(tmp_path)}"

    client = await serve(aiohttp_client, sqlite_settings_with_sendgrid(url), publish=False,
                         migrate_sqlite=True)

    figures = (await get_status(client))["sources"]["default"]
    assert {k: figures[k] for k in ("pending", "delivered", "dead", "rejected", "duplicates",
                                    "ignored")} == {
        "pending": 2, "delivered": 1, "dead": 1, "rejected": 1, "duplicates": 1, "ignored": 0}
    names = await query(url, "SELECT name FROM tortoise_migrations ORDER BY name")
    assert [n for (n,) in names] == MIGRATIONS_AFTER_UPGRADE


async def test_self_migrated_0_1_0_sqlite_counts_ignored_events(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    url = f"sqlite://{sqlite_copy(tmp_path)}"
    client = await serve(aiohttp_client, sqlite_settings_with_sendgrid(url), publish=False,
                         migrate_sqlite=True)
    deferred = json.loads((SENDGRID_FIXTURES / "deferred.json").read_text())["body"]

    async with client.post(f"/webhooks/{SENDGRID_TOKEN}", json=deferred) as resp:
        assert resp.status == 200
        answer = await resp.json()

    assert answer == {"accepted": 0, "duplicates": 0, "ignored": 1, "rejected": []}
    counters = await query(
        url, "SELECT source, duplicates, ignored FROM nudgespot_source_counter ORDER BY source")
    assert counters == [("default", 1, 0), ("sg", 0, 1)]
