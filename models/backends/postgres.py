"""PostgreSQL through tortoise's asyncpg pool: several replicas on one database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from models.database import Database, Row, Statement, Transaction
from models.sql import Dialect

# SQLSTATE classes and codes that mean the server is out of reach, shutting down or out of
# room (https://www.postgresql.org/docs/current/errcodes-appendix.html).
POSTGRES_UNAVAILABLE_CLASSES = ("08", "53", "57P")
POSTGRES_UNAVAILABLE_CODES = {"25006", "40001", "40P01", "55P03", "58030"}


class PostgresDatabase(Database):
    """A pool of connections; claims skip rows other replicas are claiming."""

    dialect = Dialect("postgres", "$")
    engines = ("tortoise.backends.asyncpg", "tortoise.backends.psycopg")
    concurrent_writers = 4

    @classmethod
    def connection_defaults(cls, credentials: dict[str, Any]) -> None:
        credentials.setdefault("minsize", 1)
        credentials.setdefault("maxsize", 10)
        credentials.setdefault("timeout", 5)

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
            self.reraise(exc)

    def is_unavailable(self, exc: BaseException) -> bool:
        if isinstance(exc, asyncpg.PostgresError):
            state = getattr(exc, "sqlstate", "") or ""
            return state.startswith(POSTGRES_UNAVAILABLE_CLASSES) or (
                state in POSTGRES_UNAVAILABLE_CODES)
        # InterfaceError: the connection or pool is closed; OSError: refused, reset, DNS;
        # InternalClientError: work begun on a connection the server has just terminated
        # ("cannot switch to state ...; another operation is in progress").
        return isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError | OSError
                          | TimeoutError)


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
