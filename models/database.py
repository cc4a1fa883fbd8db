"""One adapter per database backend: the only code that touches tortoise-orm or a driver.

An adapter owns its connections (a tortoise context of its own, so several databases can live
in one process), runs statements and transactions, and knows its SQL dialect and which driver
failures mean "the database is unavailable" as opposed to a bug. The query objects in
`ingest.py`, `outbox.py` and `admin.py` speak SQL through it and never see tortoise.
"""

from __future__ import annotations

import abc
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.context import TortoiseContext
from tortoise.migrations.api import migrate as run_migrations

from models.sql import Dialect

APP_LABEL = "nudgespot"
MIGRATIONS_MODULE = "migrations"
MODELS_MODULE = "models.tables"

Row = dict[str, Any]
Statement = tuple[str, Sequence[Any]]


class DatabaseUnavailable(Exception):
    """The database could not be reached or refused the work for now; retry later."""


def describe(exc: BaseException) -> str:
    """Return a short description of a storage failure that carries no connection secrets."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Transaction(abc.ABC):
    """Statements run in one database transaction (see Database.transaction)."""

    @abc.abstractmethod
    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a statement and return its rows (and any statements queued before it)."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue a statement whose rows are not needed; it runs with the next fetch or at
        commit, so its failure surfaces there."""


class Database(abc.ABC):
    """A database this service stores its state in."""

    dialect: Dialect

    def __init__(self, url: str, *, connection_name: str | None = None) -> None:
        self.config = tortoise_config(url, connection_name=connection_name)
        self.connection_name = next(iter(self.config["connections"]))
        self._ctx: TortoiseContext | None = None

    @staticmethod
    def for_url(url: str, *, connection_name: str | None = None) -> Database:
        """Return the adapter for a database URL (sqlite://PATH or postgres://...)."""
        dialect = Dialect.from_engine(expand_db_url(url)["engine"])
        adapter = SqliteDatabase if dialect is Dialect.SQLITE else PostgresDatabase
        return adapter(url, connection_name=connection_name)

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Initialise this database's own tortoise context (connections open lazily)."""
        _prepare_sqlite_path(self.config)
        ctx = TortoiseContext()
        with ctx:  # init resolves the models' connections through the current context
            await ctx.init(config=self.config)
        self._ctx = ctx

    async def close(self) -> None:
        """Close this database's connections."""
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            await ctx.close_connections()

    async def migrate(self, target: str | None = None) -> None:
        """Apply every migration this database has not had yet (up to `target`)."""
        _prepare_sqlite_path(self.config)
        # The migration API initialises the current context: give it one of its own, so
        # that it never closes or re-initialises this adapter's connections.
        with TortoiseContext() as ctx:
            try:
                await run_migrations(config=self.config, target=target)
            finally:
                await ctx.close_connections()

    @contextlib.contextmanager
    def orm(self) -> Iterator[None]:
        """Make tortoise model queries in this block use this database (tests, tools)."""
        with self._context():
            yield

    # --- statements -----------------------------------------------------------------------

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement on its own (autocommit) and return its rows."""
        try:
            return await self._client().execute_query_dict(sql, list(params))
        except Exception as exc:
            raise self.translate(exc) from exc

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers a trivial query."""
        try:
            await self._client().execute_query_dict("SELECT 1 AS ok")
        except Exception as exc:  # noqa: BLE001 - any failure here means "not ready"
            raise DatabaseUnavailable(describe(exc)) from exc

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """Return `async with db.transaction() as tx`: committed when the block ends,
        rolled back when it raises."""

    # --- dialect --------------------------------------------------------------------------

    def placeholder(self, position: int) -> str:
        """Return the parameter marker for a 1-based position."""
        return self.dialect.placeholder(position)

    @abc.abstractmethod
    def time(self, value: datetime) -> Any:
        """Return a datetime as this driver takes it as a parameter."""

    @property
    @abc.abstractmethod
    def skip_locked(self) -> str:
        """Return the clause a claim's inner SELECT ends with to skip rows others lock."""

    # --- failures -------------------------------------------------------------------------

    def translate(self, exc: BaseException) -> BaseException:
        """Return DatabaseUnavailable for a connection-level failure, else `exc` itself."""
        if isinstance(exc, DatabaseUnavailable):
            return exc
        for cause in _chain(exc):
            if self.is_unavailable(cause):
                return DatabaseUnavailable(describe(cause))
        return exc

    @abc.abstractmethod
    def is_unavailable(self, exc: BaseException) -> bool:
        """Whether a driver error means the database is out of reach or out of room
        (retry later), not that our statement is wrong."""

    # --- the seam -------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._ctx is None:
            raise DatabaseUnavailable("the database is not open")
        return self._ctx.db(self.connection_name)

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        if self._ctx is None:
            raise DatabaseUnavailable("the database is not open")
        with self._ctx:
            yield


# --- SQLite ---------------------------------------------------------------------------------

# SQLite result codes (the low byte of sqlite_errorcode) that mean "not now", not "wrong".
SQLITE_UNAVAILABLE = {
    5,  # SQLITE_BUSY: locked beyond busy_timeout
    6,  # SQLITE_LOCKED
    7,  # SQLITE_NOMEM
    8,  # SQLITE_READONLY: e.g. a read-only filesystem
    10,  # SQLITE_IOERR
    13,  # SQLITE_FULL: disk full
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
}


class SqliteDatabase(Database):
    """SQLite through tortoise's aiosqlite client: one connection, one writer at a time."""

    dialect = Dialect.SQLITE

    def time(self, value: datetime) -> Any:
        # The text tortoise's own adapter writes; formatted here once per value.
        return value.isoformat(" ")

    @property
    def skip_locked(self) -> str:
        return ""  # one writer: nothing to skip

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._client().acquire_connection() as connection:
            tx = _SqliteTransaction(DriverThread(connection))
            try:
                yield tx
                await tx.commit()
            except BaseException as exc:
                await tx.rollback()
                if isinstance(exc, Exception):
                    raise self.translate(exc) from exc
                raise

    def is_unavailable(self, exc: BaseException) -> bool:
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            return code is not None and (code & 0xFF) in SQLITE_UNAVAILABLE
        return isinstance(exc, OSError | TimeoutError)


class DriverThread:
    """The seam to aiosqlite: run a function on its connection's own thread with the raw
    sqlite3 connection, in one trip. tortoise has no public way to do this; a test
    (tests/integration/test_database.py) fails if an upgrade changes what it relies on."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def run(self, function: Callable[[sqlite3.Connection], Any]) -> Any:
        """Return function(raw sqlite3 connection), called on the connection's thread."""
        return await self._connection._execute(function, self._connection._conn)


class _SqliteTransaction(Transaction):
    """Queued statements travel to the SQLite thread together: BEGIN with the first trip,
    COMMIT with the last, so a write transaction costs as few trips as it has fetches + 1."""

    def __init__(self, thread: DriverThread) -> None:
        self._thread = thread
        self._queued: list[Statement] = []
        self._begun = False

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        queued, self._queued = self._queued, []
        begin = not self._begun
        self._begun = True
        return await self._thread.run(
            lambda conn: _run_sqlite(conn, begin, queued, (sql, params), end=None)
        )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._queued.append((sql, params))

    async def commit(self) -> None:
        queued, self._queued = self._queued, []
        if not queued and not self._begun:
            return
        begin = not self._begun
        self._begun = True
        await self._thread.run(lambda conn: _run_sqlite(conn, begin, queued, None, end="COMMIT"))

    async def rollback(self) -> None:
        self._queued = []
        if self._begun:
            await self._thread.run(_rollback_if_open)


def _run_sqlite(
    conn: sqlite3.Connection,
    begin: bool,
    queued: list[Statement],
    last: Statement | None,
    end: str | None,
) -> list[Row]:
    """On the SQLite thread: (BEGIN), the queued statements, the last one's rows, (COMMIT)."""
    if begin:
        conn.execute("BEGIN IMMEDIATE")
    for sql, params in queued:
        conn.execute(sql, params)
    rows: list[Row] = []
    if last is not None:
        cursor = conn.execute(*last)
        names = [d[0] for d in cursor.description or ()]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    if end is not None:
        conn.execute(end)
    return rows


def _rollback_if_open(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


# --- PostgreSQL -----------------------------------------------------------------------------

# SQLSTATE classes and codes that mean the server is out of reach, shutting down or out of
# room (https://www.postgresql.org/docs/current/errcodes-appendix.html).
POSTGRES_UNAVAILABLE_CLASSES = ("08", "53", "57P")
POSTGRES_UNAVAILABLE_CODES = {"25006", "40001", "40P01", "55P03", "58030"}


class PostgresDatabase(Database):
    """PostgreSQL through tortoise's asyncpg pool."""

    dialect = Dialect.POSTGRES

    def time(self, value: datetime) -> Any:
        return value

    @property
    def skip_locked(self) -> str:
        return " FOR UPDATE SKIP LOCKED"

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        # The pool's own connection and asyncpg's transaction, not tortoise's transaction
        # context: when BEGIN fails on a connection a database restart killed, tortoise
        # leaves the task's connection override on the dead connection (and never returns
        # it to the pool), so writers kept answering 503 after PostgreSQL was back.
        try:
            async with self._client().acquire_connection() as connection, \
                    connection.transaction():
                tx = _PostgresTransaction(connection)
                yield tx
                await tx.flush()
        except Exception as exc:
            raise self.translate(exc) from exc

    def is_unavailable(self, exc: BaseException) -> bool:
        if isinstance(exc, asyncpg.PostgresError):
            state = getattr(exc, "sqlstate", "") or ""
            return state.startswith(POSTGRES_UNAVAILABLE_CLASSES) or (
                state in POSTGRES_UNAVAILABLE_CODES)
        # InterfaceError: the connection or pool is closed; OSError: refused, reset, DNS.
        return isinstance(exc, asyncpg.InterfaceError | OSError | TimeoutError)


class _PostgresTransaction(Transaction):
    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._queued: list[Statement] = []

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        await self.flush()
        return [dict(row) for row in await self._connection.fetch(sql, *params)]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._queued.append((sql, params))

    async def flush(self) -> None:
        queued, self._queued = self._queued, []
        for sql, params in queued:
            await self._connection.execute(sql, *params)


# --- configuration --------------------------------------------------------------------------


def tortoise_config(url: str, *, connection_name: str | None = None) -> dict[str, Any]:
    """Return a tortoise config for the database URL, with this service's connection defaults."""
    db = expand_db_url(url)
    dialect = Dialect.from_engine(db["engine"])
    credentials = db["credentials"]
    if dialect is Dialect.SQLITE:
        # WAL plus synchronous=FULL: a commit is on disk before we answer, even across power loss.
        credentials.setdefault("journal_mode", "WAL")
        credentials.setdefault("synchronous", "FULL")
        credentials.setdefault("busy_timeout", 5000)
    else:
        credentials.setdefault("minsize", 1)
        credentials.setdefault("maxsize", 10)
        credentials.setdefault("timeout", 5)
    name = connection_name or f"nudgespot_{dialect.value}"
    return {
        "connections": {name: db},
        "apps": {
            APP_LABEL: {
                "models": [MODELS_MODULE],
                "default_connection": name,
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def _prepare_sqlite_path(config: dict[str, Any]) -> None:
    for conn in config["connections"].values():
        path = conn["credentials"].get("file_path", "")
        if conn["engine"].endswith("sqlite") and path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield an exception and what caused it (tortoise wraps driver errors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        for arg in current.args:
            if isinstance(arg, BaseException) and id(arg) not in seen:
                yield arg
        current = current.__cause__ or current.__context__
