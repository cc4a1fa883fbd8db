"""Ingest's queries: store accepted events (the unique key decides duplicates), quarantine
what was rejected, and count duplicates and ignored events per source."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from models.counters import counter_upsert
from models.database import Database, Statement
from models.schema import BODIES, EVENTS, PENDING, REJECTS, ROWS_PER_STATEMENT
from models.sql import insert_rows
from models.time import utcnow

EVENT_INSERT_COLUMNS = (
    "source", "dedup_key", "event_type", "event_time", "status", "attempts", "next_attempt_at",
    "received_at", "updated_at",
)
BODY_INSERT_COLUMNS = ("id", "fields_json", "payload", "message")
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
    message: str | None = None  # the ready Segment track message, when it could be made


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


class IngestQueries:
    """What the webhook's group-commit writer asks of the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def write(self, batches: Sequence[IngestBatch]) -> list[IngestResult]:
        """Store the batches in one transaction; return, per batch, which events were new.

        The database's unique (source, dedup_key) constraint decides what is a duplicate, so
        concurrent writers (other requests, other replicas) cannot both store one event.
        """
        now = utcnow()
        firsts: dict[tuple[str, str], NewEvent] = {}
        for batch in batches:
            for event in batch.events:
                firsts.setdefault((event.source, event.dedup_key), event)
        # Rows go in key order: PostgreSQL locks unique-index entries in statement order, so
        # two transactions inserting shared keys in different orders would deadlock.
        ordered = [firsts[key] for key in sorted(firsts)]
        async with self._db.transaction() as tx:
            inserted: dict[tuple[str, str], int] = {}
            for sql, params in self._event_statements(ordered, now):
                for row in await tx.fetch(sql, params):
                    inserted[(row["source"], row["dedup_key"])] = int(row["id"])
            for statement in self._body_statements(inserted, firsts):
                tx.execute(*statement)
            results, duplicates = _attribute(batches, firsts, inserted.keys())
            rejects = [r for batch in batches for r in batch.rejects]
            for statement in self._reject_statements(rejects, now):
                tx.execute(*statement)
            counts = {"duplicates": duplicates, "ignored": _ignored(batches),
                      "rejected": _per_source(r.source for r in rejects)}
            for statement in self._counter_statements(counts):
                tx.execute(*statement)
        return results

    def _event_statements(self, events: list[NewEvent], now: datetime) -> list[Statement]:
        stamp = self._db.time(now)
        time = self._db.time
        return [
            insert_rows(
                self._db.dialect, EVENTS, EVENT_INSERT_COLUMNS,
                [(e.source, e.dedup_key, e.event_type, time(e.event_time), PENDING, 0, stamp,
                  stamp, stamp)
                 for e in events[start : start + ROWS_PER_STATEMENT]],
                suffix="ON CONFLICT (source, dedup_key) DO NOTHING "
                       "RETURNING id, source, dedup_key",
            )
            for start in range(0, len(events), ROWS_PER_STATEMENT)
        ]

    def _body_statements(
        self, inserted: dict[tuple[str, str], int], firsts: dict[tuple[str, str], NewEvent]
    ) -> list[Statement]:
        """The bodies of the events just inserted, under their ids."""
        rows = [(event_id, firsts[key].fields_json, firsts[key].payload, firsts[key].message)
                for key, event_id in sorted(inserted.items(), key=lambda item: item[1])]
        return [
            insert_rows(self._db.dialect, BODIES, BODY_INSERT_COLUMNS,
                        rows[start : start + ROWS_PER_STATEMENT])
            for start in range(0, len(rows), ROWS_PER_STATEMENT)
        ]

    def _reject_statements(self, rejects: list[NewReject], now: datetime) -> list[Statement]:
        stamp = self._db.time(now)
        return [
            insert_rows(
                self._db.dialect, REJECTS, REJECT_INSERT_COLUMNS,
                [(r.source, r.body_index, r.payload, r.reason, stamp)
                 for r in rejects[start : start + ROWS_PER_STATEMENT]],
            )
            for start in range(0, len(rejects), ROWS_PER_STATEMENT)
        ]

    def _counter_statements(self, counts: dict[str, dict[str, int]]) -> list[Statement]:
        """Add each source's counts to its counter row, in one upsert per source."""
        sources = sorted(set().union(*(per_source.keys() for per_source in counts.values())))
        return [
            counter_upsert(self._db.dialect, source,
                           add={column: counts[column].get(source, 0) for column in counts})
            for source in sources
        ]


def _ignored(batches: Sequence[IngestBatch]) -> dict[str, int]:
    ignored: dict[str, int] = {}
    for batch in batches:
        for source, count in batch.ignored.items():
            ignored[source] = ignored.get(source, 0) + count
    return ignored


def _per_source(sources: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for source in sources:
        counts[source] = counts.get(source, 0) + 1
    return counts


def _attribute(
    batches: Sequence[IngestBatch],
    firsts: dict[tuple[str, str], NewEvent],
    inserted: Collection[tuple[str, str]],
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
