"""The store: every read and write of the pipeline's durable state goes through here."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.context import TortoiseContext, _current_context

from models import outbox
from models.admin import AdminQueries
from models.base import DatabaseUnavailable, bound, describe, utcnow
from models.outbox import ClaimedEvent
from models.sql import Dialect, insert_rows

logger = logging.getLogger(__name__)

APP_LABEL = "nudgespot"
MIGRATIONS_MODULE = "migrations"
# Rows per INSERT statement: well under SQLite's and asyncpg's 32,766-parameter ceilings.
ROWS_PER_STATEMENT = 500

Statement = tuple[str, list[Any]]

EVENT_INSERT_COLUMNS = (
    "source",
    "dedup_key",
    "event_type",
    "event_time",
    "fields_json",
    "payload",
    "status",
    "attempts",
    "next_attempt_at",
    "received_at",
    "updated_at",
)
REJECT_INSERT_COLUMNS = ("source", "body_index", "payload", "reason", "received_at")



@dataclass(frozen=True, slots=True)
class NewEvent:
    """An accepted event, ready to be stored."""

    source: str
    dedup_key: str
    event_type: str
    event_time: datetime
    fields_json: str
    payload: str


@dataclass(frozen=True, slots=True)
class NewReject:
    """Something a webhook sent that could not be accepted, with the reason."""

    source: str
    body_index: int | None
    payload: str
    reason: str


@dataclass(slots=True)
class IngestBatch:
    """What one webhook request hands to the store."""

    events: Sequence[NewEvent] = ()
    rejects: Sequence[NewReject] = ()
    ignored: dict[str, int] = field(default_factory=dict)  # per source: dropped on purpose


@dataclass(slots=True)
class IngestResult:
    """Per event of an IngestBatch, in order: True when stored now, False when a duplicate."""

    stored: list[bool] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(self.stored)

    @property
    def duplicates(self) -> int:
        return len(self.stored) - self.accepted


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
                "models": ["models.tables"],
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
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)


class Store(AdminQueries):
    """Owns one tortoise context (its connections) and offers the pipeline's queries."""

    def __init__(self, url: str, *, connection_name: str | None = None) -> None:
        self.config = tortoise_config(url, connection_name=connection_name)
        self.connection_name = next(iter(self.config["connections"]))
        engine = self.config["connections"][self.connection_name]["engine"]
        self.dialect = Dialect.from_engine(engine)
        self._ctx: TortoiseContext | None = None

    @contextlib.contextmanager
    def _activated(self) -> Iterator[None]:
        # The ORM finds its state through a ContextVar; set it for this task only, so that
        # several stores (tests, replicas in one process) never see each other's connections.
        if self._ctx is None:
            raise DatabaseUnavailable("store is not open")
        token = _current_context.set(self._ctx)
        try:
            yield
        finally:
            _current_context.reset(token)

    async def open(self) -> None:
        """Initialise the ORM for this store's database (connections open lazily)."""
        _prepare_sqlite_path(self.config)
        token = _current_context.set(None)
        try:
            self._ctx = await Tortoise.init(config=self.config)
        finally:
            _current_context.reset(token)

    async def close(self) -> None:
        """Close this store's connections."""
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            await ctx.close_connections()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _db_time(self, value: datetime) -> Any:
        """Return a datetime as this database's driver takes it.

        For SQLite that is the text tortoise's adapter would write; formatting it here once
        per row (not once per column) is cheaper on the ingest path.
        """
        return value.isoformat(" ") if self.dialect is Dialect.SQLITE else value

    def _connection(self) -> Any:
        assert self._ctx is not None
        return self._ctx.connections.get(self.connection_name)

    async def migrate(self) -> None:
        """Apply every migration that this database has not had yet."""
        from tortoise.migrations.api import migrate

        _prepare_sqlite_path(self.config)
        # The migration API initialises whatever context is current; give it a fresh one of
        # its own so that it never closes or re-initialises this store's connections.
        token = _current_context.set(None)
        try:
            await migrate(config=self.config)
        finally:
            migrating = _current_context.get()
            if migrating is not None:
                await migrating.close_connections()
            _current_context.reset(token)

    @bound
    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers a trivial query."""
        try:
            await self._connection().execute_query_dict("SELECT 1 AS ok")
        except Exception as exc:  # noqa: BLE001 - any failure here means "not ready"
            raise DatabaseUnavailable(describe(exc)) from exc

    @bound
    async def ingest(self, batches: Sequence[IngestBatch]) -> list[IngestResult]:
        """Store the batches in one transaction; return, per batch, which events were new.

        The database's unique (source, dedup_key) constraint decides what is a duplicate, so
        concurrent writers (other requests, other replicas) cannot both store one event.
        """
        try:
            return await self._ingest(batches)
        except Exception as exc:  # noqa: BLE001 - every storage failure is "try again later"
            raise DatabaseUnavailable(describe(exc)) from exc

    async def _ingest(self, batches: Sequence[IngestBatch]) -> list[IngestResult]:
        now = utcnow()
        firsts: dict[tuple[str, str], NewEvent] = {}
        for batch in batches:
            for event in batch.events:
                firsts.setdefault((event.source, event.dedup_key), event)
        rejects = [r for batch in batches for r in batch.rejects]
        ignored: dict[str, int] = {}
        for batch in batches:
            for source, count in batch.ignored.items():
                ignored[source] = ignored.get(source, 0) + count
        # Rows go in key order: PostgreSQL locks unique-index entries in statement order, so
        # two transactions inserting shared keys in different orders would deadlock.
        ordered = [firsts[key] for key in sorted(firsts)]
        results: list[IngestResult] = []

        def then(inserted: set[tuple[str, str]]) -> list[Statement]:
            attributed, duplicates = _attribute(batches, firsts, inserted)
            results.extend(attributed)
            counters = self._counter_statements(duplicates, ignored)
            return self._reject_statements(rejects, now) + counters

        await self._write(self._event_statements(ordered, now), then)
        return results

    async def _write(
        self, inserts: list[Statement], then: Callable[[set[tuple[str, str]]], list[Statement]]
    ) -> None:
        """In one transaction: run `inserts` (RETURNING source, dedup_key), then `then`'s.

        On SQLite the BEGIN IMMEDIATE lock makes the transaction the only writer; on
        PostgreSQL the unique key decides between concurrent writers.
        """
        if self.dialect is Dialect.SQLITE:
            # One trip to the SQLite thread for the whole transaction instead of one per
            # statement: the writer's round trips were what held ingest back.
            async with self._connection().acquire_connection() as connection:
                await connection._execute(_sqlite_write, connection._conn, inserts, then)
            return
        # The pool's own connection and asyncpg's transaction, not tortoise's transaction
        # context: when BEGIN fails on a connection a database restart killed, tortoise
        # leaves the task's connection override on the dead connection (and never returns
        # it to the pool), so the long-lived ingest writers kept answering 503 after
        # PostgreSQL was back. This way the connection is always released.
        async with self._connection().acquire_connection() as connection, \
                connection.transaction():
            inserted: set[tuple[str, str]] = set()
            for sql, params in inserts:
                for row in await connection.fetch(sql, *params):
                    inserted.add((row["source"], row["dedup_key"]))
            for sql, params in then(inserted):
                await connection.execute(sql, *params)

    def _event_statements(self, events: list[NewEvent], now: datetime) -> list[Statement]:
        stamp = self._db_time(now)
        statements = []
        for start in range(0, len(events), ROWS_PER_STATEMENT):
            rows = [
                (e.source, e.dedup_key, e.event_type, self._db_time(e.event_time),
                 e.fields_json, e.payload, "pending", 0, stamp, stamp, stamp)
                for e in events[start : start + ROWS_PER_STATEMENT]
            ]
            statements.append(insert_rows(
                self.dialect,
                "nudgespot_event",
                EVENT_INSERT_COLUMNS,
                rows,
                suffix="ON CONFLICT (source, dedup_key) DO NOTHING RETURNING source, dedup_key",
            ))
        return statements

    def _reject_statements(self, rejects: list[NewReject], now: datetime) -> list[Statement]:
        stamp = self._db_time(now)
        return [
            insert_rows(
                self.dialect,
                "nudgespot_rejected",
                REJECT_INSERT_COLUMNS,
                [(r.source, r.body_index, r.payload, r.reason, stamp)
                 for r in rejects[start : start + ROWS_PER_STATEMENT]],
            )
            for start in range(0, len(rejects), ROWS_PER_STATEMENT)
        ]

    def _counter_statements(
        self, duplicates: dict[str, int], ignored: dict[str, int]
    ) -> list[Statement]:
        return [
            insert_rows(
                self.dialect,
                "nudgespot_source_counter",
                ("source", "duplicates", "ignored"),
                [(source, duplicates.get(source, 0), ignored.get(source, 0))],
                suffix=(
                    "ON CONFLICT (source) DO UPDATE SET "
                    "duplicates = nudgespot_source_counter.duplicates + excluded.duplicates, "
                    "ignored = nudgespot_source_counter.ignored + excluded.ignored"
                ),
            )
            for source in sorted(duplicates.keys() | ignored.keys())
        ]

    # --- the publisher's side -------------------------------------------------------------

    @bound
    async def claim(
        self, source: str, *, owner: str, limit: int, lease_s: float
    ) -> list[ClaimedEvent]:
        """Lease up to `limit` due events of `source` to `owner`, oldest first."""
        sql = outbox.claim_sql(self.dialect)
        params = outbox.claim_params(owner, source, limit, lease_s, utcnow())
        rows = await self._connection().execute_query_dict(sql, params)
        events = [outbox.claimed_from_row(row) for row in rows]
        events.sort(key=lambda e: (e.event_time, e.id))
        return events

    @bound
    async def mark_delivered(self, ids: Sequence[int]) -> None:
        """Record that Segment accepted these events."""
        for chunk in _chunks(ids):
            sql, params = outbox.delivered_sql(self.dialect, chunk, utcnow())
            await self._connection().execute_query_dict(sql, params)

    @bound
    async def mark_failed(
        self,
        ids: Sequence[int],
        *,
        owner: str,
        error: str,
        next_attempt_at: datetime,
        max_attempts: int,
    ) -> tuple[int, int]:
        """Count a failed attempt for events `owner` holds: retry later, or dead when spent.

        Returns (retrying, dead): how many of the events went each way.
        """
        retrying = dead = 0
        for chunk in _chunks(ids):
            sql, params = outbox.failed_sql(
                self.dialect, chunk, owner=owner, error=error[:2000],
                next_attempt_at=next_attempt_at, max_attempts=max_attempts, now=utcnow(),
            )
            for row in await self._connection().execute_query_dict(sql, params):
                if row["status"] == "dead":
                    dead += 1
                else:
                    retrying += 1
        return retrying, dead

    @bound
    async def mark_dead(self, errors: dict[int, str]) -> None:
        """Mark each event dead with its own reason."""
        now = utcnow()
        statements = [
            outbox.dead_sql(self.dialect, event_id, error=error[:2000], now=now)
            for event_id, error in errors.items()
        ]
        await self._write([], lambda inserted: statements)

    @bound
    async def release(
        self, ids: Sequence[int], *, owner: str, until: datetime | None = None
    ) -> None:
        """Give back leased events without counting an attempt (claimable from `until`)."""
        for chunk in _chunks(ids):
            sql, params = outbox.release_sql(self.dialect, owner, chunk, until)
            await self._connection().execute_query_dict(sql, params)

    @bound
    async def hold_source(self, source: str, until: datetime) -> None:
        """Keep every publisher from claiming `source` before `until`."""
        sql, params = outbox.hold_sql(self.dialect, source, until)
        await self._connection().execute_query_dict(sql, params)

    @bound
    async def identified(self, source: str, keys: Sequence[str]) -> set[str]:
        """Return which of these users already had their identify call delivered."""
        found: set[str] = set()
        for chunk in _chunks(keys):
            sql, params = outbox.identified_sql(self.dialect, source, chunk)
            rows = await self._connection().execute_query_dict(sql, params)
            found.update(row["user_key"] for row in rows)
        return found

    @bound
    async def remember_identified(self, source: str, keys: Sequence[str]) -> None:
        """Record that these users' identify calls were delivered."""
        for chunk in _chunks(keys):
            sql, params = outbox.remember_identified_sql(self.dialect, source, chunk, utcnow())
            await self._connection().execute_query_dict(sql, params)


def _chunks(items: Sequence[Any], size: int = ROWS_PER_STATEMENT) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _sqlite_write(
    connection: sqlite3.Connection,
    inserts: list[Statement],
    then: Callable[[set[tuple[str, str]]], list[Statement]],
) -> None:
    """Run a write transaction on the SQLite connection's own thread (see Store._write)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        inserted: set[tuple[str, str]] = set()
        for sql, params in inserts:
            inserted.update((row[0], row[1]) for row in connection.execute(sql, params))
        for sql, params in then(inserted):
            connection.execute(sql, params)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _attribute(
    batches: Sequence[IngestBatch],
    firsts: dict[tuple[str, str], NewEvent],
    inserted: set[tuple[str, str]],
) -> tuple[list[IngestResult], dict[str, int]]:
    """Decide per event whether it was stored now; the first occurrence of a new key wins."""
    claimed: set[tuple[str, str]] = set()
    duplicates: dict[str, int] = {}
    results = []
    for batch in batches:
        result = IngestResult()
        for event in batch.events:
            key = (event.source, event.dedup_key)
            is_new = key in inserted and firsts[key] is event and key not in claimed
            if is_new:
                claimed.add(key)
            else:
                duplicates[event.source] = duplicates.get(event.source, 0) + 1
            result.stored.append(is_new)
        results.append(result)
    return results, duplicates


