"""The operator's queries: status figures, replay, retention, quarantine.

Status reads per-source counters (kept in the transactions that change them), per-minute
delivery counts, and, for pending and dead events, a partial index that holds only those rows:
its cost follows the backlog, never the number of delivered events kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from models.counters import counter_upsert
from models.database import Database, Row, Transaction
from models.schema import (
    BACKLOG,
    BACKLOG_SAMPLES,
    BODIES,
    COUNTERS,
    DEAD,
    DELIVERED,
    DELIVERIES,
    EVENTS,
    PENDING,
    REJECTS,
    STATUSES,
)
from models.sql import Dialect, in_list
from models.time import as_datetime, minute_of, utcnow

PURGE_CHUNK = 1000
REPLAY_CHUNK = 1000
REPLAYABLE = STATUSES
# Per-minute figures are kept this long (the status page's chart shows a day).
MINUTES_KEPT = timedelta(days=2)


# The counters as the rows give them (migration 0003 ran the same statements once).
RECOUNT = (
    f"INSERT INTO {COUNTERS} (source, duplicates, delivered, last_delivery_at) "
    f"SELECT source, 0, COUNT(*), MAX(delivered_at) FROM {EVENTS} "
    f"WHERE status = '{DELIVERED}' GROUP BY source "
    "ON CONFLICT (source) DO UPDATE SET delivered = excluded.delivered, "
    "last_delivery_at = excluded.last_delivery_at",
    f"INSERT INTO {COUNTERS} (source, duplicates, rejected) "
    f"SELECT source, 0, COUNT(*) FROM {REJECTS} WHERE id > 0 GROUP BY source "
    "ON CONFLICT (source) DO UPDATE SET rejected = excluded.rejected",
    f"INSERT INTO {COUNTERS} (source, duplicates, last_error, last_error_at) "
    "SELECT source, 0, last_error, updated_at FROM ("
    "SELECT source, last_error, updated_at, ROW_NUMBER() OVER ("
    "PARTITION BY source ORDER BY updated_at DESC, id DESC) AS position "
    f"FROM {EVENTS} WHERE {BACKLOG} AND last_error IS NOT NULL"
    ") latest WHERE position = 1 "
    "ON CONFLICT (source) DO UPDATE SET last_error = excluded.last_error, "
    "last_error_at = excluded.last_error_at",
)


@dataclass
class SourceStats:
    """Per-source figures for the status page, the CLI and the metrics."""

    source: str
    pending: int = 0
    retrying: int = 0
    delivered: int = 0
    dead: int = 0
    rejected: int = 0
    duplicates: int = 0
    ignored: int = 0
    oldest_pending_at: datetime | None = None
    delivered_last_minute: int = 0
    delivered_last_hour: int = 0
    last_delivery_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    held_until: datetime | None = None
    next_retry_at: datetime | None = None  # the earliest retry of a failed event

    def oldest_pending_age_s(self, now: datetime) -> float | None:
        if self.oldest_pending_at is None:
            return None
        return max(0.0, (now - self.oldest_pending_at).total_seconds())


@dataclass(frozen=True)
class ReplayFilter:
    """Which stored events a replay puts back to pending."""

    source: str | None = None
    statuses: tuple[str, ...] = (DEAD,)
    since: datetime | None = None
    until: datetime | None = None
    events: tuple[str, ...] = ()
    ids: tuple[str, ...] = field(default=())  # dedup keys (the Nudgespot event ids)

    def where(self, db: Database, first: int = 1) -> tuple[str, list[Any]]:
        """Return a SQL condition on the event table and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []

        def add(column: str, op: str, values: Sequence[Any]) -> None:
            markers = [db.placeholder(first + len(params) + i) for i in range(len(values))]
            right = f"({', '.join(markers)})" if op == "IN" else markers[0]
            clauses.append(f"{column} {op} {right}")
            params.extend(values)

        add("status", "IN", self.statuses)
        if self.source is not None:
            add("source", "=", [self.source])
        if self.since is not None:
            add("received_at", ">=", [db.time(self.since)])
        if self.until is not None:
            add("received_at", "<", [db.time(self.until)])
        if self.events:
            add("event_type", "IN", self.events)
        if self.ids:
            add("dedup_key", "IN", self.ids)
        return " AND ".join(clauses), params


@dataclass
class MinuteFigures:
    """One source's figures for one minute."""

    minute: datetime
    delivered: int = 0
    pending: int | None = None  # None: no sample that minute


@dataclass(frozen=True)
class StoredProblem:
    """A dead or rejected event as the status page lists it."""

    id: int
    source: str
    at: datetime | None
    reason: str
    payload: str
    event_type: str | None = None
    dedup_key: str | None = None


@dataclass(frozen=True)
class QuarantinedEvent:
    """A rejected event (or whole body, index None) to re-parse."""

    id: int
    source: str
    body_index: int | None
    payload: str


class AdminQueries:
    """What operators (status page, CLI, metrics, replay, retention) ask of the database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._p = db.placeholder

    async def source_stats(self, now: datetime | None = None) -> dict[str, SourceStats]:
        """Return the figures of every source that has data."""
        now = now or utcnow()
        stats: dict[str, SourceStats] = {}

        def of(source: str) -> SourceStats:
            return stats.setdefault(source, SourceStats(source))

        for row in await self._db.fetch(
            "SELECT source, status, CASE WHEN attempts > 0 THEN 1 ELSE 0 END AS retrying, "
            "COUNT(*) AS n, MIN(received_at) AS oldest, MIN(next_attempt_at) AS next_attempt "
            f"FROM {EVENTS} "
            f"WHERE {BACKLOG} "
            "GROUP BY source, status, CASE WHEN attempts > 0 THEN 1 ELSE 0 END"
        ):
            _add_backlog_row(of(row["source"]), row)
        for row in await self._db.fetch(
            "SELECT source, duplicates, ignored, delivered, rejected, last_delivery_at, "
            f"last_error, last_error_at, held_until FROM {COUNTERS}"
        ):
            _add_counter_row(of(row["source"]), row)
        hour_ago, minute_ago = minute_of(now - timedelta(hours=1)), now - timedelta(minutes=1)
        for row in await self._db.fetch(
            f"SELECT source, minute, delivered FROM {DELIVERIES} WHERE minute > {self._p(1)}",
            [self._db.time(hour_ago)],
        ):
            s = of(row["source"])
            s.delivered_last_hour += int(row["delivered"])
            minute = as_datetime(row["minute"])
            if minute is not None and minute >= minute_of(minute_ago):
                s.delivered_last_minute += int(row["delivered"])
        return stats

    async def latest_dead(self, limit: int = 20) -> list[StoredProblem]:
        """Return the most recently failed dead events, newest first."""
        rows = await self._db.fetch(
            "SELECT e.id, e.source, e.event_type, e.dedup_key, e.updated_at, e.last_error, "
            f"b.payload FROM (SELECT * FROM {EVENTS} WHERE {BACKLOG} AND status = '{DEAD}' "
            f"ORDER BY updated_at DESC, id DESC LIMIT {int(limit)}) e "
            f"LEFT JOIN {BODIES} b ON b.id = e.id ORDER BY e.updated_at DESC, e.id DESC"
        )
        return [
            StoredProblem(int(r["id"]), r["source"], as_datetime(r["updated_at"]),
                          r["last_error"] or "", r["payload"] or "", r["event_type"],
                          r["dedup_key"])
            for r in rows
        ]

    async def latest_rejected(self, limit: int = 20) -> list[StoredProblem]:
        """Return the most recently quarantined rejects, newest first."""
        rows = await self._db.fetch(
            f"SELECT id, source, received_at, reason, payload FROM {REJECTS} "
            f"ORDER BY id DESC LIMIT {int(limit)}"
        )
        return [
            StoredProblem(int(r["id"]), r["source"], as_datetime(r["received_at"]),
                          r["reason"], r["payload"])
            for r in rows
        ]

    async def sample_backlog(self, now: datetime | None = None) -> None:
        """Record each source's pending count for this minute (the chart's backlog line)."""
        minute = self._db.time(minute_of(now or utcnow()))
        await self._db.fetch(
            f"INSERT INTO {BACKLOG_SAMPLES} (source, minute, pending) "
            f"SELECT source, {self._p(1)}, COUNT(*) FROM {EVENTS} "
            f"WHERE {BACKLOG} AND status = '{PENDING}' GROUP BY source "
            "ON CONFLICT (source, minute) DO UPDATE SET pending = excluded.pending",
            [minute],
        )

    async def history(self, since: datetime) -> dict[str, list[MinuteFigures]]:
        """Return per source, minute by minute since `since`: deliveries and sampled backlog
        (minutes with neither are left out)."""
        found: dict[str, dict[datetime, MinuteFigures]] = {}
        start = [self._db.time(minute_of(since))]
        for table, column in ((DELIVERIES, "delivered"), (BACKLOG_SAMPLES, "pending")):
            for row in await self._db.fetch(
                f"SELECT source, minute, {column} AS n FROM {table} "
                f"WHERE minute >= {self._p(1)}", start,
            ):
                minute = as_datetime(row["minute"])
                assert minute is not None
                figures = found.setdefault(row["source"], {}).setdefault(
                    minute, MinuteFigures(minute))
                setattr(figures, column, int(row["n"]))
        return {source: sorted(minutes.values(), key=lambda f: f.minute)
                for source, minutes in found.items()}

    # --- replay ---------------------------------------------------------------------------

    async def replay(
        self,
        selection: ReplayFilter,
        *,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[int, int]:
        """Put matching events back to pending, messageIds unchanged; return (matched, requeued)."""
        where, params = selection.where(self._db)
        [count] = await self._db.fetch(f"SELECT COUNT(*) AS n FROM {EVENTS} WHERE {where}",
                                       params)
        matched = int(count["n"])
        if dry_run or matched == 0:
            return matched, 0
        requeued, last_id = 0, 0
        while True:
            ids = await self._matching_ids(selection, after_id=last_id)
            if not ids:
                break
            requeued += await self._requeue(ids, selection)
            last_id = ids[-1]
            if progress is not None:
                progress(requeued, matched)
        return matched, requeued

    async def _matching_ids(self, selection: ReplayFilter, *, after_id: int) -> list[int]:
        where, params = selection.where(self._db, first=2)
        rows = await self._db.fetch(
            f"SELECT id FROM {EVENTS} WHERE id > {self._p(1)} AND {where} "
            f"ORDER BY id LIMIT {REPLAY_CHUNK}",
            [after_id, *params],
        )
        return [int(r["id"]) for r in rows]

    async def _requeue(self, ids: Sequence[int], selection: ReplayFilter) -> int:
        """Put events back to pending; delivered ones leave the delivered count.

        The filter is checked again as each row changes: an event settled since it was
        selected (say, delivered while in flight) no longer matches and is not sent again.
        """
        p, now = self._p, self._db.time(utcnow())
        marks = in_list(self._db.dialect, ids, 2)
        where, params = selection.where(self._db, first=len(ids) + 2)
        async with self._db.transaction() as tx:
            counted, counted_params = selection.where(self._db, first=len(ids) + 1)
            was_delivered = await tx.fetch(
                f"SELECT source, COUNT(*) AS n FROM {EVENTS} WHERE status = '{DELIVERED}' "
                f"AND id IN ({in_list(self._db.dialect, ids, 1)}) AND {counted} GROUP BY source",
                [*ids, *counted_params],
            )
            rows = await tx.fetch(
                f"UPDATE {EVENTS} SET status = '{PENDING}', attempts = 0, "
                f"next_attempt_at = {p(1)}, updated_at = {p(1)}, delivered_at = NULL, "
                f"lease_owner = NULL, lease_expires_at = NULL "
                f"WHERE id IN ({marks}) AND {where} RETURNING id",
                [now, *ids, *params],
            )
            for row in was_delivered:
                _add_to_counter(tx, self._db.dialect, row["source"], "delivered", -int(row["n"]))
        return len(rows)

    # --- retention ------------------------------------------------------------------------

    async def purge(self, *, older_than: datetime) -> tuple[int, int]:
        """Delete delivered events and rejects older than the cutoff, in bounded chunks
        (each its own short transaction, so ingest is never held for long)."""
        cutoff = self._db.time(older_than)
        events = await self._purge_chunks(
            EVENTS, f"status = '{DELIVERED}' AND delivered_at < {self._p(1)}", cutoff,
            counter="delivered")
        rejects = await self._purge_chunks(
            REJECTS, f"received_at < {self._p(1)}", cutoff, counter="rejected")
        for table in (DELIVERIES, BACKLOG_SAMPLES):
            await self._db.fetch(
                f"DELETE FROM {table} WHERE minute < {self._p(1)}",
                [self._db.time(utcnow() - MINUTES_KEPT)],
            )
        return events, rejects

    async def _purge_chunks(self, table: str, condition: str, cutoff: Any, counter: str) -> int:
        total = 0
        while True:
            async with self._db.transaction() as tx:
                rows = await tx.fetch(
                    f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {condition} "
                    f"LIMIT {PURGE_CHUNK}) RETURNING id, source",
                    [cutoff],
                )
                if table == EVENTS and rows:  # and what those events carried
                    ids = [int(r["id"]) for r in rows]
                    tx.execute(f"DELETE FROM {BODIES} WHERE id IN "
                               f"({in_list(self._db.dialect, ids, 1)})", ids)
                for source, count in _per_source(rows).items():
                    _add_to_counter(tx, self._db.dialect, source, counter, -count)
            total += len(rows)
            if len(rows) < PURGE_CHUNK:
                return total

    async def recount(self) -> None:
        """Rebuild the counters from the rows (after rows were changed behind the queries'
        back, e.g. by hand in SQL, or by a test seeding states directly)."""
        async with self._db.transaction() as tx:
            tx.execute(f"UPDATE {COUNTERS} SET delivered = 0, rejected = 0, "
                       "last_delivery_at = NULL, last_error = NULL, last_error_at = NULL")
            for sql in RECOUNT:
                tx.execute(sql)

    # --- quarantine -----------------------------------------------------------------------

    async def quarantined(
        self, *, after_id: int = 0, limit: int = 500, source: str | None = None
    ) -> list[QuarantinedEvent]:
        """Return quarantined rejects in id order, for re-parsing."""
        p = self._p
        condition = f"id > {p(1)}" + (f" AND source = {p(2)}" if source else "")
        params: list[Any] = [after_id] + ([source] if source else [])
        rows = await self._db.fetch(
            f"SELECT id, source, body_index, payload FROM {REJECTS} "
            f"WHERE {condition} ORDER BY id LIMIT {int(limit)}",
            params,
        )
        return [
            QuarantinedEvent(int(r["id"]), r["source"], r["body_index"], r["payload"])
            for r in rows
        ]

    async def forget_rejected(self, ids: Sequence[int]) -> None:
        """Delete quarantined rejects that have been admitted."""
        if not ids:
            return
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                f"DELETE FROM {REJECTS} WHERE id IN ({in_list(self._db.dialect, ids)}) "
                "RETURNING source",
                list(ids),
            )
            for source, count in _per_source(rows).items():
                _add_to_counter(tx, self._db.dialect, source, "rejected", -count)


def _per_source(rows: list[Row]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["source"]] = counts.get(row["source"], 0) + 1
    return counts


def _add_to_counter(tx: Transaction, dialect: Dialect, source: str, column: str, n: int) -> None:
    """Queue `column += n` on the source's counter row (created if missing)."""
    tx.execute(*counter_upsert(dialect, source, add={column: n}))


def _add_backlog_row(stats: SourceStats, row: Row) -> None:
    n = int(row["n"])
    if row["status"] == DEAD:
        stats.dead += n
        return
    stats.pending += n
    if int(row["retrying"]):
        stats.retrying += n
        due = as_datetime(row["next_attempt"])
        if due and (stats.next_retry_at is None or due < stats.next_retry_at):
            stats.next_retry_at = due
    oldest = as_datetime(row["oldest"])
    if oldest and (stats.oldest_pending_at is None or oldest < stats.oldest_pending_at):
        stats.oldest_pending_at = oldest


def _add_counter_row(stats: SourceStats, row: Row) -> None:
    stats.duplicates = int(row["duplicates"] or 0)
    stats.ignored = int(row["ignored"] or 0)
    stats.delivered = int(row["delivered"] or 0)
    stats.rejected = int(row["rejected"] or 0)
    stats.last_delivery_at = as_datetime(row["last_delivery_at"])
    stats.last_error = row["last_error"]
    stats.last_error_at = as_datetime(row["last_error_at"])
    stats.held_until = as_datetime(row["held_until"])
