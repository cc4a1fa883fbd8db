"""Shared fixtures: real SQLite files, a real PostgreSQL database, settings and app clients."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from models import Store
from models.schema import TABLES
from service.config import Settings, SourceSettings, parse_settings

POSTGRES_ADMIN_URL = os.environ.get(
    "NUDGESPOT_TEST_POSTGRES_URL", "postgres://root@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("NUDGESPOT_TEST_REQUIRE_POSTGRES") == "1" or bool(
    os.environ.get("CI")
)
TOKEN = "test-token-default-0001"
OTHER_TOKEN = "test-token-other-0002"
WRITE_KEY = "WK-default"
OTHER_WRITE_KEY = "WK-other"


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _database_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session; its URL."""
    name = f"nudgespot_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        asyncio.run(_create_database(POSTGRES_ADMIN_URL, name))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({exc!r})"
        if REQUIRE_POSTGRES:
            pytest.fail(f"{message}; NUDGESPOT_TEST_REQUIRE_POSTGRES/CI demands these tests run")
        pytest.skip(f"{message}; PostgreSQL tests skipped (set NUDGESPOT_TEST_POSTGRES_URL)")
    url = _database_url(POSTGRES_ADMIN_URL, name)
    asyncio.run(Store(url).migrate())
    yield url
    asyncio.run(_drop_database(POSTGRES_ADMIN_URL, name))


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1), timeout=5)
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
    finally:
        await conn.close()


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite://{tmp_path}/nudgespot-test.sqlite3"


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    asyncio.run(_truncate(postgres_database))
    return postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """An open, migrated store on the parametrized database."""
    s = Store(db_url)
    await s.migrate()
    await s.open()
    yield s
    await s.close()


def make_settings(db_url: str, **sections: dict[str, Any]) -> Settings:
    """Settings for tests: two sources, loopback, the given section overrides."""
    document: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 8080},
        "database": {"url": db_url},
        "segment": {"endpoint": "http://127.0.0.1:9", "timeout_s": 5},
        "publisher": {"interval_s": 0.2, "retry_base_s": 0.05, "retry_max_s": 1},
        "sources": [
            {"name": "default", "token": TOKEN, "write_key": WRITE_KEY},
            {"name": "other", "token": OTHER_TOKEN, "write_key": OTHER_WRITE_KEY},
        ],
    }
    for name, values in sections.items():
        if name == "sources":
            document["sources"] = values
        else:
            document.setdefault(name, {}).update(values)
    return parse_settings(document, env={})


@pytest.fixture
def settings_factory(db_url: str) -> Callable[..., Settings]:
    """Build settings on the parametrized database with section overrides."""
    return lambda **sections: make_settings(db_url, **sections)


def with_source(settings: Settings, name: str, **changes: Any) -> Settings:
    """Return settings where source `name` has the given fields changed."""
    sources = tuple(
        replace(s, **changes) if s.name == name else s for s in settings.sources
    )
    return replace(settings, sources=sources)


__all__ = ["SourceSettings", "make_settings", "with_source"]


async def stored_events(store: Store) -> list[Any]:
    """The event rows in id order, each with what its body holds (fields_json, payload,
    message) set on it, as read through the ORM."""
    from models.tables import Event, EventBody

    with store.db.orm():
        rows = await Event.all().order_by("id")
        bodies = {body.id: body for body in await EventBody.all()}
    for row in rows:
        body = bodies.get(row.id)
        row.fields_json = body.fields_json if body else None
        row.payload = body.payload if body else None
        row.message = body.message if body else None
    return rows
