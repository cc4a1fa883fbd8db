"""SQLite through tortoise's aiosqlite client: the embedded default, one process, one writer."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

import aiosqlite

from models.database import Database, DatabaseInUse, Row, Statement, Transaction
from models.sql import Dialect

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
    """One connection; a write transaction holds it (and SQLite's lock) until it ends."""

    dialect = Dialect("sqlite", "?")
    engines = ("tortoise.backends.sqlite",)
    concurrent_writers = 1
    migrates_on_serve = True
    leases_in_memory = True

    def exclusive(self) -> Callable[[], None]:
        """Hold an advisory lock on `<database file>.serve.lock` until released: a second
        `serve` of the same file would send the events this one has leased in memory."""
        path = self._file_path()
        if path is None:
            return lambda: None
        lock_path = f"{os.path.abspath(path)}.serve.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DatabaseInUse(
                f"another process (pid {holder}) is serving {path}: a SQLite database is "
                f"served by one process, whose publisher leases events in memory; stop that "
                f"one first, or use PostgreSQL to run several replicas") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())

        def release() -> None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

        return release

    _reader: aiosqlite.Connection | None = None  # read's own connection, opened by it
    _opening: asyncio.Future[aiosqlite.Connection] | None = None

    def _file_path(self) -> str | None:
        """The database file, or None for an in-memory database."""
        path = self.config["connections"][self.connection_name]["credentials"]["file_path"]
        return None if not path or path == ":memory:" else path

    async def close(self) -> None:
        await self._drop_reader()
        await super().close()

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Reads on a second, read-only connection with a thread of its own: in WAL mode
        they run beside the writer's transactions instead of queueing behind them."""
        path = self._file_path()
        if path is None:  # a second connection would see another (in-memory) database
            return await self.fetch(sql, params)
        try:
            reader = self._reader or await self._open_reader(path)
            return await DriverThread(reader).run(
                lambda conn: _run_sqlite(conn, False, [], (sql, params), end=None))
        except Exception as exc:
            await self._drop_reader()
            self.reraise(exc)

    async def _open_reader(self, path: str) -> aiosqlite.Connection:
        """Open the reader once, in a task of its own: a claim cancelled while it waits (the
        publisher stopping) leaves the connection to be closed with the database, not to a
        thread that outlives the event loop."""
        if self._opening is None or self._opening.done():
            self._opening = asyncio.ensure_future(self._keep_reader(path))
            self._opening.add_done_callback(_retrieve)
        return await asyncio.shield(self._opening)

    async def _keep_reader(self, path: str) -> aiosqlite.Connection:
        self._reader = await _connect_reader(path)
        return self._reader

    async def _drop_reader(self) -> None:
        """Close the reader (it failed, or the database closes): a next read opens another."""
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done():
            await asyncio.wait([opening])  # its connection is closed below
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):  # nothing left to protect
                await reader.close()

    @classmethod
    def connection_defaults(cls, credentials: dict[str, Any]) -> None:
        # WAL plus synchronous=FULL: a commit is on disk before we answer, even across power loss.
        credentials.setdefault("journal_mode", "WAL")
        credentials.setdefault("synchronous", "FULL")
        credentials.setdefault("busy_timeout", 5000)

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
                    self.reraise(exc)
                raise

    def is_unavailable(self, exc: BaseException) -> bool:
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            return code is not None and (code & 0xFF) in SQLITE_UNAVAILABLE
        return isinstance(exc, OSError | TimeoutError)


async def _connect_reader(path: str) -> aiosqlite.Connection:
    """A read-only connection to the database file."""
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
    reader = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    try:
        await reader.execute("PRAGMA busy_timeout = 5000")
    except BaseException:
        await reader.close()
        raise
    return reader


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a task's outcome as seen (its awaiters report it; they may all be gone)."""
    if not task.cancelled():
        task.exception()


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
