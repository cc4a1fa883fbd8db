"""The operator's side of the store: status figures, replay, retention, quarantine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from models.base import bound, utcnow
from models.outbox import as_datetime
from models.sql import Dialect, in_list

PURGE_CHUNK = 1000
REPLAY_CHUNK = 1000
REPLAYABLE = ("pending", "delivered", "dead")


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

    def oldest_pending_age_s(self, now: datetime) -> float | None:
        if self.oldest_pending_at is None:
            return None
        return max(0.0, (now - self.oldest_pending_at).total_seconds())


@dataclass(frozen=True)
class ReplayFilter:
    """Which stored events a replay puts back to pending."""

    source: str | None = None
    statuses: tuple[str, ...] = ("dead",)
    since: datetime | None = None
    until: datetime | None = None
    events: tuple[str, ...] = ()
    ids: tuple[str, ...] = field(default=())  # dedup keys (the Nudgespot event ids)

    def where(self, dialect: Dialect, first: int = 1) -> tuple[str, list[Any]]:
        """Return a SQL condition on nudgespot_event and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []

        def add(column: str, op: str, values: Sequence[Any]) -> None:
            markers = [dialect.placeholder(first + len(params) + i) for i in range(len(values))]
            right = f"({', '.join(markers)})" if op == "IN" else markers[0]
            clauses.append(f"{column} {op} {right}")
            params.extend(values)

        add("status", "IN", self.statuses)
        if self.source is not None:
            add("source", "=", [self.source])
        if self.since is not None:
            add("received_at", ">=", [self.since])
        if self.until is not None:
            add("received_at", "<", [self.until])
        if self.events:
            add("event_type", "IN", self.events)
        if self.ids:
            add("dedup_key", "IN", self.ids)
        return " AND ".join(clauses), params


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
    """Mixed into Store: queries that serve operators rather than the pipeline."""

    dialect: Dialect

    def _connection(self) -> Any:  # provided by Store
        raise NotImplementedError

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return await self._connection().execute_query_dict(sql, list(params))

    @bound
    async def source_stats(self, now: datetime | None = None) -> dict[str, SourceStats]:
        """Return the figures of every source that has data."""
        now = now or utcnow()
        stats: dict[str, SourceStats] = {}

        def of(source: str) -> SourceStats:
            return stats.setdefault(source, SourceStats(source))

        p = self.dialect.placeholder
        for row in await self._rows(
            "SELECT source, status, CASE WHEN attempts > 0 THEN 1 ELSE 0 END AS retrying, "
            "COUNT(*) AS n, MIN(received_at) AS oldest, MAX(delivered_at) AS last_delivery, "
            f"SUM(CASE WHEN delivered_at >= {p(1)} THEN 1 ELSE 0 END) AS last_minute, "
            f"SUM(CASE WHEN delivered_at >= {p(2)} THEN 1 ELSE 0 END) AS last_hour "
            "FROM nudgespot_event GROUP BY source, status, "
            "CASE WHEN attempts > 0 THEN 1 ELSE 0 END",
            [now - timedelta(minutes=1), now - timedelta(hours=1)],
        ):
            _add_status_row(of(row["source"]), row)
        for row in await self._rows(
            "SELECT source, COUNT(*) AS n FROM nudgespot_rejected GROUP BY source"
        ):
            of(row["source"]).rejected = int(row["n"])
        for row in await self._rows(
            "SELECT source, duplicates, ignored, held_until FROM nudgespot_source_counter"
        ):
            s = of(row["source"])
            s.duplicates = int(row["duplicates"])
            s.ignored = int(row["ignored"])
            s.held_until = as_datetime(row["held_until"])
        for source, s in stats.items():
            await self._last_error(source, s)
        return stats

    async def _last_error(self, source: str, stats: SourceStats) -> None:
        p = self.dialect.placeholder
        rows = await self._rows(
            f"SELECT last_error, updated_at FROM nudgespot_event WHERE source = {p(1)} "
            "AND last_error IS NOT NULL ORDER BY updated_at DESC LIMIT 1",
            [source],
        )
        if rows:
            stats.last_error = rows[0]["last_error"]
            stats.last_error_at = as_datetime(rows[0]["updated_at"])

    @bound
    async def latest_dead(self, limit: int = 20) -> list[StoredProblem]:
        """Return the most recently failed dead events, newest first."""
        rows = await self._rows(
            "SELECT id, source, event_type, dedup_key, updated_at, last_error, payload "
            f"FROM nudgespot_event WHERE status = 'dead' ORDER BY updated_at DESC, id DESC "
            f"LIMIT {int(limit)}"
        )
        return [
            StoredProblem(int(r["id"]), r["source"], as_datetime(r["updated_at"]),
                          r["last_error"] or "", r["payload"], r["event_type"], r["dedup_key"])
            for r in rows
        ]

    @bound
    async def latest_rejected(self, limit: int = 20) -> list[StoredProblem]:
        """Return the most recently quarantined rejects, newest first."""
        rows = await self._rows(
            "SELECT id, source, received_at, reason, payload FROM nudgespot_rejected "
            f"ORDER BY received_at DESC, id DESC LIMIT {int(limit)}"
        )
        return [
            StoredProblem(int(r["id"]), r["source"], as_datetime(r["received_at"]),
                          r["reason"], r["payload"])
            for r in rows
        ]

    @bound
    async def replay(
        self,
        selection: ReplayFilter,
        *,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[int, int]:
        """Put matching events back to pending, messageIds unchanged; return (matched, requeued)."""
        where, params = selection.where(self.dialect)
        [count] = await self._rows(f"SELECT COUNT(*) AS n FROM nudgespot_event WHERE {where}",
                                   params)
        matched = int(count["n"])
        if dry_run or matched == 0:
            return matched, 0
        requeued, last_id = 0, 0
        while True:
            ids = await self._matching_ids(selection, after_id=last_id)
            if not ids:
                break
            requeued += await self._requeue(ids)
            last_id = ids[-1]
            if progress is not None:
                progress(requeued, matched)
        return matched, requeued

    async def _matching_ids(self, selection: ReplayFilter, *, after_id: int) -> list[int]:
        where, params = selection.where(self.dialect, first=2)
        p = self.dialect.placeholder
        rows = await self._rows(
            f"SELECT id FROM nudgespot_event WHERE id > {p(1)} AND {where} "
            f"ORDER BY id LIMIT {REPLAY_CHUNK}",
            [after_id, *params],
        )
        return [int(r["id"]) for r in rows]

    async def _requeue(self, ids: Sequence[int]) -> int:
        p = self.dialect.placeholder
        now = utcnow()
        rows = await self._rows(
            f"UPDATE nudgespot_event SET status = 'pending', attempts = 0, "
            f"next_attempt_at = {p(1)}, updated_at = {p(1)}, delivered_at = NULL, "
            f"lease_owner = NULL, lease_expires_at = NULL "
            f"WHERE id IN ({in_list(self.dialect, ids, 2)}) RETURNING id",
            [now, *ids],
        )
        return len(rows)

    @bound
    async def purge(self, *, older_than: datetime) -> tuple[int, int]:
        """Delete delivered events and rejects older than the cutoff, in bounded chunks."""
        p = self.dialect.placeholder
        events = await self._purge_chunks(
            "nudgespot_event",
            f"status = 'delivered' AND delivered_at < {p(1)}",
            older_than,
        )
        rejects = await self._purge_chunks(
            "nudgespot_rejected", f"received_at < {p(1)}", older_than
        )
        return events, rejects

    async def _purge_chunks(self, table: str, condition: str, cutoff: datetime) -> int:
        total = 0
        while True:
            rows = await self._rows(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {condition} "
                f"LIMIT {PURGE_CHUNK}) RETURNING id",
                [cutoff],
            )
            total += len(rows)
            if len(rows) < PURGE_CHUNK:
                return total

    @bound
    async def quarantined(
        self, *, after_id: int = 0, limit: int = 500, source: str | None = None
    ) -> list[QuarantinedEvent]:
        """Return quarantined rejects in id order, for re-parsing."""
        p = self.dialect.placeholder
        condition = f"id > {p(1)}" + (f" AND source = {p(2)}" if source else "")
        params: list[Any] = [after_id] + ([source] if source else [])
        rows = await self._rows(
            "SELECT id, source, body_index, payload FROM nudgespot_rejected "
            f"WHERE {condition} ORDER BY id LIMIT {int(limit)}",
            params,
        )
        return [
            QuarantinedEvent(int(r["id"]), r["source"], r["body_index"], r["payload"])
            for r in rows
        ]

    @bound
    async def forget_rejected(self, ids: Sequence[int]) -> None:
        """Delete quarantined rejects that have been admitted."""
        if ids:
            await self._rows(
                f"DELETE FROM nudgespot_rejected WHERE id IN ({in_list(self.dialect, ids)})",
                ids,
            )


def _add_status_row(stats: SourceStats, row: dict[str, Any]) -> None:
    n = int(row["n"])
    status = row["status"]
    if status == "pending":
        stats.pending += n
        if int(row["retrying"]):
            stats.retrying += n
        oldest = as_datetime(row["oldest"])
        if oldest and (stats.oldest_pending_at is None or oldest < stats.oldest_pending_at):
            stats.oldest_pending_at = oldest
    elif status == "delivered":
        stats.delivered += n
        stats.delivered_last_minute += int(row["last_minute"] or 0)
        stats.delivered_last_hour += int(row["last_hour"] or 0)
        last = as_datetime(row["last_delivery"])
        if last and (stats.last_delivery_at is None or last > stats.last_delivery_at):
            stats.last_delivery_at = last
    elif status == "dead":
        stats.dead += n
