"""The database adapters: transactions, the one seam into the driver, and failure kinds.

`DriverThread` relies on what tortoise-orm and aiosqlite do today (tortoise's SQLite client
hands out the aiosqlite connection; aiosqlite runs a function on its thread with the raw
sqlite3 connection). These tests fail if an upgrade changes that, before ingest breaks.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import pytest

from models import Database, DatabaseUnavailable
from models.backends.postgres import PostgresDatabase
from models.backends.sqlite import DriverThread, SqliteDatabase
from models.schema import EVENTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def database(db_url: str):
    db = Database.for_url(db_url)
    await db.migrate()
    await db.open()
    yield db
    await db.close()


async def test_for_url_picks_the_adapter_of_the_url(db_url: str) -> None:
    expected = SqliteDatabase if db_url.startswith("sqlite") else PostgresDatabase
    assert type(Database.for_url(db_url)) is expected


async def test_sqlite_seam_runs_a_function_on_the_driver_thread_with_the_raw_connection(
    sqlite_url: str,
) -> None:
    db = Database.for_url(sqlite_url)
    await db.open()
    try:
        seen: dict[str, object] = {}

        def probe(conn: sqlite3.Connection) -> int:
            seen["thread"] = threading.current_thread()
            seen["conn"] = conn
            return conn.execute("SELECT 41 + 1").fetchone()[0]

        async with db._client().acquire_connection() as connection:
            answer = await DriverThread(connection).run(probe)
    finally:
        await db.close()

    assert answer == 42
    assert isinstance(seen["conn"], sqlite3.Connection)
    assert seen["thread"] is not threading.current_thread()


async def test_transaction_commits_what_it_ran(database: Database) -> None:
    p = database.placeholder
    async with database.transaction() as tx:
        tx.execute(f"INSERT INTO nudgespot_source_counter (source, duplicates) "
                   f"VALUES ({p(1)}, {p(2)})", ["committed", 3])
        rows = await tx.fetch(f"SELECT duplicates FROM nudgespot_source_counter "
                              f"WHERE source = {p(1)}", ["committed"])

    assert [r["duplicates"] for r in rows] == [3]
    assert len(await database.fetch("SELECT source FROM nudgespot_source_counter")) == 1


async def test_transaction_that_raises_leaves_nothing_behind(database: Database) -> None:
    p = database.placeholder
    with pytest.raises(RuntimeError, match="after the insert"):
        async with database.transaction() as tx:
            await tx.fetch(f"INSERT INTO nudgespot_source_counter (source, duplicates) "
                           f"VALUES ({p(1)}, {p(2)}) RETURNING source", ["rolled-back", 1])
            raise RuntimeError("after the insert")

    assert await database.fetch("SELECT source FROM nudgespot_source_counter") == []


async def test_a_wrong_statement_is_not_an_outage(database: Database) -> None:
    with pytest.raises(Exception) as info:
        await database.fetch("SELECT no_such_column FROM nudgespot_event")

    assert not isinstance(info.value, DatabaseUnavailable)


async def test_a_wrong_statement_in_a_transaction_is_not_an_outage(database: Database) -> None:
    with pytest.raises(Exception) as info:
        async with database.transaction() as tx:
            tx.execute("INSERT INTO no_such_table VALUES (1)")

    assert not isinstance(info.value, DatabaseUnavailable)
    # The failed transaction was rolled back: the connection takes the next one.
    async with database.transaction() as tx:
        assert await tx.fetch(f"SELECT COUNT(*) AS n FROM {EVENTS}") == [{"n": 0}]


async def test_an_unreachable_postgres_is_an_outage() -> None:
    db = Database.for_url("postgres://root@127.0.0.1:1/nothing?timeout=2")
    await db.open()
    try:
        with pytest.raises(DatabaseUnavailable):
            await db.fetch("SELECT 1")
        with pytest.raises(DatabaseUnavailable):
            async with db.transaction() as tx:
                await tx.fetch("SELECT 1")
    finally:
        await db.close()


def test_a_locked_or_full_sqlite_is_an_outage_and_a_syntax_error_is_not(tmp_path: Path) -> None:
    db = SqliteDatabase(f"sqlite://{tmp_path / 'x.sqlite3'}")
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # type: ignore[attr-defined]
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]
    syntax = sqlite3.OperationalError("near 'SELEC': syntax error")
    syntax.sqlite_errorcode = 1  # type: ignore[attr-defined]

    assert isinstance(db.translate(busy), DatabaseUnavailable)
    assert isinstance(db.translate(full), DatabaseUnavailable)
    assert db.translate(syntax) is syntax


def test_no_code_outside_the_adapter_reaches_into_tortoise_or_driver_internals() -> None:
    private = re.compile(r"_current_context|\._conn\b|\._execute\(|connection\._|\._connections\b")
    offenders = []
    for path in sorted((ROOT / "models").rglob("*.py")) + sorted((ROOT / "service").glob("*.py")) \
            + sorted((ROOT / "inbound").rglob("*.py")) + sorted((ROOT / "outbound").glob("*.py")):
        if path.name == "sqlite.py" and path.parent.name == "backends":
            continue  # the seam: DriverThread
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if private.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_only_the_adapter_and_the_models_import_tortoise() -> None:
    allowed = {"database.py", "tables.py", "sqlite.py", "postgres.py"}
    importers = [
        str(path.relative_to(ROOT))
        for folder in ("models", "service", "inbound", "outbound")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name not in allowed
        and re.search(r"^\s*(from|import) tortoise", path.read_text(encoding="utf-8"), re.M)
    ]
    assert importers == []


def test_adding_a_backend_is_one_module_in_models_backends() -> None:
    from models.database import adapters

    modules = sorted(p.stem for p in (ROOT / "models" / "backends").glob("*.py")
                     if p.stem != "__init__")
    assert modules == ["postgres", "sqlite"]
    assert sorted(a.__module__ for a in adapters()) == [
        "models.backends.postgres", "models.backends.sqlite"]
