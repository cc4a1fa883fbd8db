"""The publisher job: claims due events, sends them to Segment, records each outcome."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol
from urllib.parse import urlsplit

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from segment.analytics import request as segment_request

from models import ClaimedEvent, DatabaseUnavailable
from outbound import mapping
from outbound.packing import (
    Batch,
    Unit,
    deserialize,
    encoded_size,
    oversize_reason,
    pack,
)
from outbound.policy import Backoff, Failure, Verdict, classify
from outbound.settings import PublisherOptions

logger = logging.getLogger(__name__)

JOB_ID = "nudgespot-publisher"

# Sends one batch to Segment; blocking; raises on anything but a 2xx (as request.post does).
Sender = Callable[[str, list[dict[str, Any]]], None]


class Outbox(Protocol):
    """What the publisher needs of the store: leased claims and their outcomes."""

    async def claim(
        self, source: str, *, owner: str, limit: int, lease_s: float, with_fields: bool = True
    ) -> list[ClaimedEvent]: ...

    async def mark_delivered(self, ids: Sequence[int]) -> None: ...

    async def mark_failed(
        self, ids: Sequence[int], *, owner: str, error: str, next_attempt_at: datetime,
        max_attempts: int,
    ) -> tuple[int, int]: ...

    async def mark_dead(self, errors: dict[int, str]) -> None: ...

    async def release(
        self, ids: Sequence[int], *, owner: str, until: datetime | None = None
    ) -> None: ...

    async def hold_source(self, source: str, until: datetime) -> None: ...

    async def identified(self, source: str, keys: Sequence[str]) -> set[str]: ...

    async def remember_identified(self, source: str, keys: Sequence[str]) -> None: ...


class PublishObserver(Protocol):
    """Told what the publisher did, for metrics."""

    def batch_sent(self, source: str, outcome: str, events: int, seconds: float) -> None: ...

    def delivered(self, source: str, received_at: Sequence[datetime | None]) -> None: ...

    def failed(self, source: str, retrying: int, dead: int) -> None: ...


class NullObserver:
    """An observer that ignores everything."""

    def batch_sent(self, source: str, outcome: str, events: int, seconds: float) -> None:
        return None

    def delivered(self, source: str, received_at: Sequence[datetime | None]) -> None:
        return None

    def failed(self, source: str, retrying: int, dead: int) -> None:
        return None


@dataclass(frozen=True)
class SourceTarget:
    """Where one source's events go."""

    name: str
    write_key: str
    identify: bool = False

    def __repr__(self) -> str:
        return f"SourceTarget(name={self.name!r}, identify={self.identify!r})"


def segment_sender(endpoint: str, timeout_s: float) -> Sender:
    """Return a Sender that posts through segment-analytics-python, gzip on."""

    def send(write_key: str, messages: list[dict[str, Any]]) -> None:
        segment_request.post(write_key, endpoint, gzip=True, timeout=timeout_s, batch=messages)

    return send


class SegmentPublisher:
    """Republishes stored events to Segment from an APScheduler job, one run at a time."""

    def __init__(
        self,
        sources: Sequence[SourceTarget],
        options: PublisherOptions,
        *,
        sender: Sender | None = None,
        owner: str | None = None,
        observer: PublishObserver | None = None,
    ) -> None:
        self._sources = {s.name: s for s in sources}
        self._options = options
        self._sender = sender or segment_sender(options.endpoint, options.timeout_s)
        self._backoff = Backoff(options.retry_base_s, options.retry_max_s)
        self._observer: PublishObserver = observer or NullObserver()
        self.owner = owner or f"publisher-{uuid.uuid4().hex[:12]}"
        self._rotation = itertools.cycle(list(self._sources))
        self._held: dict[str, datetime] = {}
        self._host = urlsplit(options.endpoint).netloc
        self._outages = Outages()
        self._inflight: set[int] = set()
        self._outbox: Outbox | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._run_lock = asyncio.Lock()
        self._wakes = 0  # counts wake() calls; workers compare it to notice new events
        self._woken = asyncio.Event()  # set (and replaced) by each wake()
        self._busy: collections.Counter[str] = collections.Counter()  # batches in flight
        self._sending_since: dict[asyncio.Task[Any] | None, float] = {}  # worker -> monotonic
        # With several sources, one (perhaps hanging) source never takes every worker.
        concurrency = options.concurrency
        self._per_source_limit = concurrency if len(sources) < 2 else max(1, concurrency - 1)
        self._wake_scheduled = False
        self._stopping = False
        self._run_task: asyncio.Task[Any] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, outbox: Outbox) -> None:
        """Start the scheduled job against `outbox`."""
        self._outbox = outbox
        self._stopping = False
        self._executor = ThreadPoolExecutor(
            max_workers=self._options.concurrency, thread_name_prefix="segment-post"
        )
        scheduler = AsyncIOScheduler(timezone=timezone.utc)
        scheduler.add_job(
            self.run_once,
            "interval",
            seconds=self._options.interval_s,
            id=JOB_ID,
            # run_once itself refuses to overlap; 2 keeps APScheduler from warning each tick
            # that a long drain is still running.
            max_instances=2,
            coalesce=True,
            misfire_grace_time=max(30, int(self._options.interval_s * 10)),
            next_run_time=datetime.now(timezone.utc),
        )
        scheduler.start()
        self._scheduler = scheduler

    async def stop(self) -> None:
        """Stop claiming; let the running pass finish within the bound, else release leases."""
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.pause()
        running = self._run_task
        if running is not None and not running.done():
            try:
                await asyncio.wait_for(asyncio.shield(running), self._options.stop_timeout_s)
            except (TimeoutError, asyncio.CancelledError):
                # Cancelling unwinds the workers, which forget what they hold: keep a copy
                # so those leases are released below rather than left to expire.
                leased = set(self._inflight)
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                self._inflight |= leased
        released = await self._release_inflight()
        logger.info("publisher stopped: in-flight batches %s",
                    f"did not finish, {released} leased event(s) released" if released
                    else "finished")
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def wake(self, source: str) -> None:
        """Note that `source` has new events; run the job now if it is idle."""
        self._wakes += 1
        self._woken.set()
        self._woken = asyncio.Event()
        if self._run_lock.locked() or self._wake_scheduled or self._stopping:
            return
        job = self._scheduler.get_job(JOB_ID) if self._scheduler is not None else None
        if job is not None:
            self._wake_scheduled = True
            job.modify(next_run_time=datetime.now(timezone.utc))

    # --- one run of the job ---------------------------------------------------------------

    async def run_once(self) -> None:
        """Publish until no source has due events (the scheduled job's body)."""
        if self._run_lock.locked():
            return
        async with self._run_lock:
            self._run_task = asyncio.current_task()
            try:
                while not self._stopping:
                    self._wake_scheduled = False
                    seen = self._wakes
                    await self._run_workers()
                    if self._wakes == seen:  # nothing was stored while the workers finished
                        break
            except asyncio.CancelledError:
                logger.info("publisher run cancelled at shutdown; unsettled leases are released")
            except DatabaseUnavailable as exc:
                logger.warning("publisher run stopped, the database is unavailable (%s); "
                               "leases expire and the events retry", exc)
            except Exception:  # noqa: BLE001 - a failed run must not kill the job
                logger.exception("publisher run failed; leases expire and the events retry")
            finally:
                self._run_task = None

    async def _run_workers(self) -> None:
        """Run the workers until they are done; if one fails, cancel the others first, so
        that no worker outlives the run (and stop() waits for everything in flight).

        A worker that finds nothing to do leaves the run. If every worker left is stuck
        sending (a source that hangs until segment.timeout_s), one is added, so that the
        other sources' events do not wait for that timeout.
        """
        tasks: set[asyncio.Task[None]] = set()
        started = 0

        def start() -> None:
            nonlocal started
            tasks.add(asyncio.create_task(self._worker(), name=f"publisher-worker-{started}"))
            started += 1

        for _ in range(self._options.concurrency):
            start()
        try:
            while tasks:
                done, _ = await asyncio.wait(tasks, timeout=self._options.interval_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    tasks.discard(task)
                    if not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if (tasks and len(tasks) < self._options.concurrency and not self._stopping
                        and self._all_stuck(tasks)):
                    start()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _all_stuck(self, tasks: set[asyncio.Task[None]]) -> bool:
        """Whether each of these workers has been sending one batch for over interval_s."""
        since = time.monotonic() - self._options.interval_s
        return all(self._sending_since.get(task, since) < since for task in tasks)

    async def _worker(self) -> None:
        """Claim and publish until nothing is due and no other worker is still sending."""
        while not self._stopping:
            # Taken before the claim: a wake after this point is never missed.
            seen, woken = self._wakes, self._woken
            claim = await self._claim_next()
            if claim is None:
                if not self._busy and self._wakes == seen:
                    return
                # Another worker is still sending (maybe to a slow endpoint): stay, so that
                # events stored meanwhile, of any source, do not wait for it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), self._options.interval_s)
                continue
            source, events = claim  # _claim_next counted the batch in _busy already
            self._inflight.update(e.id for e in events)
            worker = asyncio.current_task()
            self._sending_since[worker] = time.monotonic()
            try:
                await self._publish(source, events)
            finally:
                self._sending_since.pop(worker, None)
                self._inflight.difference_update(e.id for e in events)
                self._not_busy(source.name)
            if len(events) < self._options.batch_max_events and self._options.linger_s:
                await asyncio.sleep(self._options.linger_s)

    async def _claim_next(self) -> tuple[SourceTarget, list[ClaimedEvent]] | None:
        outbox = self._require_outbox()
        for _ in range(len(self._sources)):
            source = self._sources[next(self._rotation)]
            if self._held_until(source.name) is not None:
                continue
            if self._busy[source.name] >= self._per_source_limit:
                continue  # leave a worker for the other sources
            # Counted before the await: workers claiming at the same moment see this one.
            self._busy[source.name] += 1
            events: list[ClaimedEvent] = []
            try:
                events = await outbox.claim(
                    source.name,
                    owner=self.owner,
                    limit=self._options.batch_max_events,
                    lease_s=self._options.lease_s,
                    with_fields=source.identify,
                )
            finally:
                if not events:
                    self._not_busy(source.name)
            if events:
                return source, events
        return None

    def _not_busy(self, source: str) -> None:
        self._busy[source] -= 1
        if not self._busy[source]:
            del self._busy[source]

    async def _publish(self, source: SourceTarget, events: list[ClaimedEvent]) -> None:
        outbox = self._require_outbox()
        units, dead = await self._units(source, events)
        if dead:
            await outbox.mark_dead(dead)
            self._observer.failed(source.name, 0, len(dead))
            for reason, count in collections.Counter(dead.values()).items():
                log_dead(source.name, count, reason)
        batches = pack(units, write_key=source.write_key, max_events=self._options.batch_max_events)
        for position, batch in enumerate(batches):
            until = self._held_until(source.name)
            if until is not None:  # Segment asked us to wait: give the rest back untouched
                rest = [i for b in batches[position:] for i in b.event_ids]
                await outbox.release(rest, owner=self.owner, until=until)
                return
            await self._send(source, batch)

    async def _units(
        self, source: SourceTarget, events: list[ClaimedEvent]
    ) -> tuple[list[Unit], dict[int, str]]:
        version = self._options.service_version
        needs_identify = await self._unidentified(source, events)
        units: list[Unit] = []
        dead: dict[int, str] = {}
        for event in events:
            key = mapping.user_key(event.fields) if needs_identify else None
            identifies = key if key in needs_identify else None
            try:
                # The identify goes right before this user's first track.
                messages, sizes = self._messages(source, event, identifies, version)
            except mapping.MAPPING_ERRORS as exc:
                # A stored event that cannot become a message fails alone, not its batch.
                dead[event.id] = f"cannot map event: {type(exc).__name__}: {str(exc)[:200]}"
                continue
            unit = Unit(event.id, messages, attempts=event.attempts, identifies=identifies,
                        received_at=event.received_at, sizes=sizes)
            reason = oversize_reason(unit)
            if reason is not None:  # dead here: the user's next event carries the identify
                dead[event.id] = reason
                continue
            if identifies:
                needs_identify.discard(key)
            units.append(unit)
        return units, dead

    @staticmethod
    def _messages(
        source: SourceTarget, event: ClaimedEvent, identifies: str | None, version: str
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """Return an event's messages (its user's identify first, when due) and their sizes."""
        if event.message is not None:  # made at ingest, with its size
            track, size = deserialize(event.message), len(event.message)
        else:  # stored before messages were made at ingest
            track = mapping.track(source.name, event.dedup_key, event.event_type,
                                  event.event_time, event.fields, version)
            size = encoded_size(track)
        if not identifies:
            return [track], [size]
        identify = mapping.identify(source.name, event.event_time, event.fields, version)
        return [identify, track], [encoded_size(identify), size]

    async def _unidentified(self, source: SourceTarget, events: list[ClaimedEvent]) -> set[str]:
        if not source.identify:
            return set()
        keys = sorted({mapping.user_key(e.fields) for e in events})
        known = await self._require_outbox().identified(source.name, keys)
        return set(keys) - known

    async def _send(self, source: SourceTarget, batch: Batch) -> None:
        started = time.perf_counter()
        try:
            await self._post(source.write_key, batch.messages)
        except Exception as exc:  # noqa: BLE001 - every failure is classified below
            failure = classify(exc, self._host)
            self._report(source.name, batch, failure.error, started)
            await self._settle_failure(source, batch, failure)
            return
        self._report(source.name, batch, "delivered", started)
        self._outages.recovered(source.name)
        outbox = self._require_outbox()
        await outbox.mark_delivered(batch.event_ids)
        self._observer.delivered(source.name, [unit.received_at for unit in batch.units])
        identified = [unit.identifies for unit in batch.units if unit.identifies]
        if identified:
            await outbox.remember_identified(source.name, identified)

    async def _post(self, write_key: str, messages: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._sender, write_key, messages)

    async def _settle_failure(self, source: SourceTarget, batch: Batch, failure: Failure) -> None:
        outbox = self._require_outbox()
        if failure.verdict is Verdict.BISECT:
            if len(batch.units) == 1:
                await outbox.mark_dead({batch.units[0].event_id: failure.error})
                self._observer.failed(source.name, 0, 1)
                log_dead(source.name, 1, failure.error)
                return
            middle = len(batch.units) // 2
            for half in (batch.units[:middle], batch.units[middle:]):
                until = self._held_until(source.name)
                if until is not None:  # a half was answered 429: hold the rest back too
                    ids = [unit.event_id for unit in half]
                    await outbox.release(ids, owner=self.owner, until=until)
                    continue
                await self._send(source, Batch.of(half))
            return
        now = datetime.now(timezone.utc)
        if failure.retry_after_s:
            until = now + timedelta(seconds=failure.retry_after_s)
            self._held[source.name] = until
            await outbox.hold_source(source.name, until)
        attempt = 1 + max(unit.attempts for unit in batch.units)
        retrying, dead = await outbox.mark_failed(
            batch.event_ids,
            owner=self.owner,
            error=failure.error,
            next_attempt_at=self._backoff.next_attempt_at(now, attempt, failure.retry_after_s),
            max_attempts=self._options.max_attempts,
        )
        self._observer.failed(source.name, retrying, dead)
        self._outages.failed(source.name, failure.error, batch.event_ids)
        if dead:
            log_dead(source.name, dead, f"{failure.error.splitlines()[0]} "
                                        f"(after {self._options.max_attempts} attempts)")

    async def _release_inflight(self) -> int:
        """Give back the leases of events still in flight; return how many."""
        if not self._inflight or self._outbox is None:
            return 0
        ids = sorted(self._inflight)
        self._inflight.clear()
        try:
            await self._outbox.release(ids, owner=self.owner)
        except Exception:  # noqa: BLE001 - the leases expire on their own
            logger.warning("could not release %d leased event(s); they retry after the lease",
                           len(ids))
        return len(ids)

    def _held_until(self, source: str) -> datetime | None:
        until = self._held.get(source)
        return until if until is not None and until > datetime.now(timezone.utc) else None

    def _require_outbox(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError("publisher is not started")
        return self._outbox

    def _report(self, source: str, batch: Batch, outcome: str, started: float) -> None:
        seconds = time.perf_counter() - started
        delivered = outcome == "delivered"
        # Failures are told once per outage (Outages); each failed batch only at DEBUG.
        logger.log(
            logging.INFO if delivered else logging.DEBUG,
            "batch source=%s events=%d bytes=%d outcome=%s ms=%.1f",
            source, len(batch.units), batch.size, outcome.replace("\n", " | "), seconds * 1000,
        )
        self._observer.batch_sent(source, "delivered" if delivered else "failed",
                                  len(batch.units), seconds)


def log_dead(source: str, count: int, reason: str) -> None:
    """Say at WARNING that events went dead (replayable), how many, and why."""
    logger.warning("source %s: %d event(s) went dead (replayable): %s",
                   source, count, reason.splitlines()[0] if reason else "no reason")


@dataclass
class _Outage:
    since: float
    events: set[int]


class Outages:
    """One WARNING when a source starts failing, one when it recovers (how long, and how
    many events waited), instead of a line per failed batch."""

    def __init__(self) -> None:
        self._current: dict[str, _Outage] = {}

    def failed(self, source: str, error: str, event_ids: Sequence[int]) -> None:
        outage = self._current.get(source)
        if outage is None:
            outage = self._current[source] = _Outage(time.monotonic(), set())
            logger.warning("source %s: sending to Segment is failing: %s; retrying with backoff",
                           source, error.splitlines()[0])
        outage.events.update(event_ids)

    def recovered(self, source: str) -> None:
        outage = self._current.pop(source, None)
        if outage is not None:
            logger.warning("source %s: sending to Segment recovered after %.0f s; "
                           "%d event(s) waited", source, time.monotonic() - outage.since,
                           len(outage.events))
