"""Replay: requeue stored events, or re-parse and admit quarantined ones."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from inbound.aliases import EVENT_ALIASES
from inbound.formats import Format, NudgespotFormat
from inbound.parse import Accepted, BodyError, Ignored, Invalid, Parsed, check_text
from models import IngestBatch, NewEvent, Store
from models.admin import REPLAYABLE, ReplayFilter
from models.time import utcnow
from service.wiring import prepare_message

Progress = Callable[[int, int], None]
UNCONFIGURED_SOURCE_FORMAT = NudgespotFormat()  # quarantine of a source no longer configured


class ReplayRequestError(ValueError):
    """A replay request that cannot be understood; the message says which field."""


@dataclass(frozen=True)
class ReplayRequest:
    """A parsed replay request: the filter, and whether to only count."""

    selection: ReplayFilter
    dry_run: bool = False
    rejected: bool = False


@dataclass(frozen=True)
class ReplayResult:
    matched: int
    requeued: int
    still_rejected: int | None = None

    def as_json(self) -> dict[str, int]:
        answer = {"matched": self.matched, "requeued": self.requeued}
        if self.still_rejected is not None:
            answer["still_rejected"] = self.still_rejected
        return answer


def replay_request(document: Any, sources: Collection[str] | None = None) -> ReplayRequest:
    """Validate a /replay JSON document (the CLI builds the same shape from its flags);
    `sources` are the configured source names, which a `source` filter must be one of."""
    if not isinstance(document, dict):
        raise ReplayRequestError("body must be a JSON object")
    allowed = {"source", "status", "since", "until", "event", "ids", "dry_run", "rejected"}
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise ReplayRequestError(f"unknown field {unknown[0]!r}")
    statuses = _strings(document, "status") or ["dead"]
    for status in statuses:
        if status not in REPLAYABLE:
            raise ReplayRequestError(f"status {status!r} is not one of {', '.join(REPLAYABLE)}")
    source = _optional_string(document, "source")
    if source is not None and sources is not None and source not in sources:
        known = ", ".join(sorted(sources))
        raise ReplayRequestError(f"unknown source {source!r} (configured: {known})")
    selection = ReplayFilter(
        source=source,
        statuses=tuple(statuses),
        since=_instant(document, "since"),
        until=_instant(document, "until"),
        events=tuple(_event_type(e) for e in _strings(document, "event")),
        ids=tuple(_strings(document, "ids")),
    )
    return ReplayRequest(selection, _flag(document, "dry_run"), _flag(document, "rejected"))


async def run_replay(
    store: Store,
    request: ReplayRequest,
    *,
    formats: Mapping[str, Format] | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Carry out a replay request; `formats` is each source's current format (for --rejected)."""
    if request.rejected:
        return await admit_rejected(store, request, formats=formats or {}, progress=progress)
    matched, requeued = await store.admin.replay(
        request.selection, dry_run=request.dry_run, progress=progress
    )
    return ReplayResult(matched, requeued)


async def admit_rejected(
    store: Store,
    request: ReplayRequest,
    *,
    formats: Mapping[str, Format],
    progress: Progress | None = None,
) -> ReplayResult:
    """Re-parse quarantined events with their source's current format; store those now
    valid, count those the format now ignores, and drop both from quarantine."""
    matched = admitted = still = 0
    after_id = 0
    source = request.selection.source
    while batch := await store.admin.quarantined(after_id=after_id, source=source):
        after_id = batch[-1].id
        now = utcnow()
        admission = IngestBatch(events=[], ignored={})
        admitted_ids: list[int] = []
        for row in batch:
            fmt = formats.get(row.source, UNCONFIGURED_SOURCE_FORMAT)
            parsed = _reparse(fmt, row.payload, row.body_index, now)
            matched += 1
            if parsed is None:
                still += 1
                continue
            admitted_ids.append(row.id)
            _admit(admission, row.source, parsed)
        if not request.dry_run and admitted_ids:
            await store.ingest.write([admission])
            await store.admin.forget_rejected(admitted_ids)
        admitted += len(admitted_ids)
        if progress is not None:
            progress(matched, matched)
    return ReplayResult(matched, 0 if request.dry_run else admitted, still)


def _reparse(
    fmt: Format, payload: str, body_index: int | None, now: datetime
) -> list[Parsed] | None:
    """Return what a quarantined payload now yields, or None while any of it is rejected."""
    try:
        if body_index is None:
            parsed = fmt.parse(payload.encode("utf-8", "surrogatepass"), now)
        else:
            parsed = [fmt.parse_event(json.loads(payload), body_index, now)]
    except (BodyError, ValueError, RecursionError):
        return None
    if any(not isinstance(p, Accepted | Ignored) for p in parsed):
        return None
    return parsed


def _admit(admission: IngestBatch, source: str, parsed: list[Parsed]) -> None:
    """Add a re-parsed payload's events (and its ignored count) to the batch to store."""
    events = list(admission.events)
    for p in parsed:
        if isinstance(p, Accepted):
            events.append(NewEvent(source, p.dedup_key, p.event_type, p.event_time,
                                   p.fields_json, p.payload, prepare_message(source, p)))
        else:
            admission.ignored[source] = admission.ignored.get(source, 0) + 1
    admission.events = events


def _strings(document: Mapping[str, Any], key: str) -> list[str]:
    value = document.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReplayRequestError(f"'{key}' must be a list of strings")
    for item in value:
        _check_text(item, key)
    return value


def _check_text(value: str, key: str) -> None:
    try:
        check_text(value, key)
    except Invalid as exc:
        raise ReplayRequestError(str(exc)) from None


def _optional_string(document: Mapping[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise ReplayRequestError(f"'{key}' must be a string")
    if value:
        _check_text(value, key)
    return value or None


def _flag(document: Mapping[str, Any], key: str) -> bool:
    value = document.get(key, False)
    if not isinstance(value, bool):
        raise ReplayRequestError(f"'{key}' must be true or false")
    return value


def _instant(document: Mapping[str, Any], key: str) -> datetime | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ReplayRequestError(f"'{key}' must be an ISO 8601 time with a zone")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ReplayRequestError(f"'{key}' must be an ISO 8601 time with a zone") from None
    if parsed.tzinfo is None:
        raise ReplayRequestError(f"'{key}' needs a time zone (e.g. Z)")
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        raise ReplayRequestError(f"'{key}' is out of range") from None


def _event_type(name: str) -> str:
    canonical = EVENT_ALIASES.get(name.strip().lower())
    if canonical is None:
        raise ReplayRequestError(f"unknown event {name!r}")
    return canonical
