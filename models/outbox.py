"""The publisher's queries on the event table: claim with a lease, settle each outcome,
release, hold a source, and remember who was identified."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from models.counters import counter_upsert
from models.database import Database, Row, Transaction
from models.schema import (
    COUNTERS,
    DEAD,
    DELIVERED,
    DELIVERIES,
    EVENTS,
    IDENTIFIED,
    MAX_ERROR_CHARS,
    PENDING,
    ROWS_PER_STATEMENT,
)
from models.sql import in_list, insert_rows
from models.time import as_datetime, minute_of, utcnow

CLAIM_COLUMNS = (
    "id, source, dedup_key, event_type, event_time, fields_json, message, attempts, received_at"
)


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """A due event leased to one publisher."""

    id: int
    source: str
    dedup_key: str
    event_type: str
    event_time: datetime
    fields: dict[str, Any]
    attempts: int
    received_at: datetime | None = None
    message: str | None = None  # the track message made at ingest (None: map it now)


class OutboxQueries:
    """What the publisher asks of the database; every method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._p = db.placeholder

    async def claim(
        self, source: str, *, owner: str, limit: int, lease_s: float, with_fields: bool = True
    ) -> list[ClaimedEvent]:
        """Lease up to `limit` due events of `source` to `owner`, oldest first.

        `fields` are decoded only where they are needed: with_fields, or an event stored
        without its message; otherwise they are left empty.

        One UPDATE ... RETURNING, so a claim is atomic; on PostgreSQL the inner SELECT skips
        rows that another replica is claiming at this moment instead of waiting for them.
        """
        p, now = self._p, utcnow()
        sql = (
            f"UPDATE {EVENTS} SET lease_owner = {p(1)}, lease_expires_at = {p(2)}, "
            f"updated_at = {p(3)} WHERE id IN ("
            f"SELECT id FROM {EVENTS} WHERE source = {p(4)} AND status = '{PENDING}' "
            f"AND next_attempt_at <= {p(3)} "
            f"AND (lease_expires_at IS NULL OR lease_expires_at <= {p(3)}) "
            f"AND NOT EXISTS (SELECT 1 FROM {COUNTERS} h "
            f"WHERE h.source = {p(4)} AND h.held_until > {p(3)}) "
            f"ORDER BY next_attempt_at, id LIMIT {p(5)}{self._db.skip_locked}) "
            f"RETURNING {CLAIM_COLUMNS}"
        )
        t = self._db.time
        rows = await self._db.fetch(
            sql, [owner, t(now + timedelta(seconds=lease_s)), t(now), source, limit])
        events = [_claimed(row, with_fields) for row in rows]
        events.sort(key=lambda e: (e.event_time, e.id))
        return events

    async def mark_delivered(self, ids: Sequence[int]) -> None:
        """Record that Segment accepted these events (whoever holds their lease)."""
        if not ids:
            return
        p, now = self._p, utcnow()
        async with self._db.transaction() as tx:
            per_source: dict[str, int] = {}
            for chunk in _chunks(ids):
                rows = await tx.fetch(
                    f"UPDATE {EVENTS} SET status = '{DELIVERED}', delivered_at = {p(1)}, "
                    f"updated_at = {p(1)}, attempts = attempts + 1, last_error = NULL, "
                    f"lease_owner = NULL, lease_expires_at = NULL "
                    f"WHERE status = '{PENDING}' AND id IN ({in_list(self._db.dialect, chunk, 2)}) "
                    f"RETURNING source",
                    [self._db.time(now), *chunk],
                )
                for row in rows:
                    per_source[row["source"]] = per_source.get(row["source"], 0) + 1
            for source, count in sorted(per_source.items()):
                self._count_deliveries(tx, source, count, now)

    def _count_deliveries(self, tx: Transaction, source: str, count: int, now: datetime) -> None:
        t = self._db.time
        tx.execute(*counter_upsert(self._db.dialect, source, add={"delivered": count},
                                   assign={"last_delivery_at": t(now)}))
        tx.execute(*insert_rows(
            self._db.dialect, DELIVERIES, ("source", "minute", "delivered"),
            [(source, t(minute_of(now)), count)],
            suffix=(f"ON CONFLICT (source, minute) DO UPDATE SET "
                    f"delivered = {DELIVERIES}.delivered + excluded.delivered"),
        ))

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
        p, now, t = self._p, utcnow(), self._db.time
        error = error[:MAX_ERROR_CHARS]
        retrying = dead = 0
        sources: set[str] = set()
        async with self._db.transaction() as tx:
            for chunk in _chunks(ids):
                rows = await tx.fetch(
                    f"UPDATE {EVENTS} SET attempts = attempts + 1, last_error = {p(1)}, "
                    f"next_attempt_at = {p(2)}, updated_at = {p(3)}, "
                    f"status = CASE WHEN attempts + 1 >= {p(4)} THEN '{DEAD}' "
                    f"ELSE '{PENDING}' END, lease_owner = NULL, lease_expires_at = NULL "
                    f"WHERE lease_owner = {p(5)} AND status = '{PENDING}' "
                    f"AND id IN ({in_list(self._db.dialect, chunk, 6)}) RETURNING source, status",
                    [error, t(next_attempt_at), t(now), max_attempts, owner, *chunk],
                )
                for row in rows:
                    sources.add(row["source"])
                    if row["status"] == DEAD:
                        dead += 1
                    else:
                        retrying += 1
            for source in sorted(sources):
                self._remember_error(tx, source, error, now)
        return retrying, dead

    async def mark_dead(self, errors: dict[int, str]) -> None:
        """Mark each event dead with its own reason (Segment refused it, or it cannot fit)."""
        if not errors:
            return
        p, now = self._p, utcnow()
        async with self._db.transaction() as tx:
            last: dict[str, str] = {}
            for event_id, error in errors.items():
                rows = await tx.fetch(
                    f"UPDATE {EVENTS} SET status = '{DEAD}', attempts = attempts + 1, "
                    f"last_error = {p(1)}, updated_at = {p(2)}, lease_owner = NULL, "
                    f"lease_expires_at = NULL WHERE id = {p(3)} AND status = '{PENDING}' "
                    f"RETURNING source",
                    [error[:MAX_ERROR_CHARS], self._db.time(now), event_id],
                )
                for row in rows:
                    last[row["source"]] = error[:MAX_ERROR_CHARS]
            for source, error in sorted(last.items()):
                self._remember_error(tx, source, error, now)

    def _remember_error(self, tx: Transaction, source: str, error: str, now: datetime) -> None:
        tx.execute(*counter_upsert(
            self._db.dialect, source,
            assign={"last_error": error, "last_error_at": self._db.time(now)}))

    async def release(
        self, ids: Sequence[int], *, owner: str, until: datetime | None = None
    ) -> None:
        """Give back leased events without counting an attempt (claimable from `until`)."""
        p = self._p
        params: list[Any] = [owner]
        later = ""
        if until is not None:
            params.append(self._db.time(until))
            later = f", next_attempt_at = {p(2)}"
        for chunk in _chunks(ids):
            await self._db.fetch(
                f"UPDATE {EVENTS} SET lease_owner = NULL, lease_expires_at = NULL{later} "
                f"WHERE lease_owner = {p(1)} AND status = '{PENDING}' "
                f"AND id IN ({in_list(self._db.dialect, chunk, len(params) + 1)})",
                [*params, *chunk],
            )

    async def hold_source(self, source: str, until: datetime) -> None:
        """Keep every publisher from claiming `source` before `until` (Segment's Retry-After)."""
        await self._db.fetch(*counter_upsert(
            self._db.dialect, source, assign={"held_until": self._db.time(until)}))

    async def identified(self, source: str, keys: Sequence[str]) -> set[str]:
        """Return which of these users already had their identify call delivered."""
        found: set[str] = set()
        for chunk in _chunks(keys):
            rows = await self._db.fetch(
                f"SELECT user_key FROM {IDENTIFIED} WHERE source = {self._p(1)} "
                f"AND user_key IN ({in_list(self._db.dialect, chunk, 2)})",
                [source, *chunk],
            )
            found.update(row["user_key"] for row in rows)
        return found

    async def remember_identified(self, source: str, keys: Sequence[str]) -> None:
        """Record that these users' identify calls were delivered."""
        now = self._db.time(utcnow())
        for chunk in _chunks(keys):
            await self._db.fetch(*insert_rows(
                self._db.dialect, IDENTIFIED, ("source", "user_key", "identified_at"),
                [(source, key, now) for key in chunk],
                suffix="ON CONFLICT (source, user_key) DO NOTHING",
            ))


def _claimed(row: Row, with_fields: bool) -> ClaimedEvent:
    event_time = as_datetime(row["event_time"])
    assert event_time is not None
    message = row["message"]
    return ClaimedEvent(
        id=int(row["id"]),
        source=row["source"],
        dedup_key=row["dedup_key"],
        event_type=row["event_type"],
        event_time=event_time,
        fields=_fields(row["fields_json"]) if with_fields or message is None else {},
        attempts=int(row["attempts"]),
        received_at=as_datetime(row["received_at"]),
        message=message,
    )


def _fields(text: str) -> dict[str, Any]:
    """Decode stored fields; something unreadable becomes {} and fails mapping on its own."""
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return fields if isinstance(fields, dict) else {}


def _chunks(items: Sequence[Any], size: int = ROWS_PER_STATEMENT) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
