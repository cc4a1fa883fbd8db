"""Group commit: many concurrent requests' events written in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from models.database import DatabaseUnavailable
from models.ingest import IngestBatch, IngestQueries, IngestResult

logger = logging.getLogger(__name__)

# Events per transaction: large enough to amortise the commit, small enough to keep latency low.
MAX_EVENTS_PER_COMMIT = 5000


@dataclass(slots=True)
class _Pending:
    batch: IngestBatch
    done: asyncio.Future[IngestResult]


class GroupWriter:
    """Hands each submitted batch to a writer task that commits queued batches together.

    A submitter's await returns only after the transaction holding its batch has committed,
    so answering the webhook after `submit` keeps the store-before-acknowledge promise.
    """

    def __init__(self, ingest: IngestQueries, *, writers: int = 1) -> None:
        self._ingest = ingest
        self._writers = writers
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        """Start the writer tasks."""
        self._closing = False
        self._tasks = [asyncio.create_task(self._run(), name=f"ingest-writer-{i}")
                       for i in range(self._writers)]

    async def stop(self) -> None:
        """Commit what is queued, then stop the writer tasks."""
        self._closing = True
        for _ in self._tasks:
            self._queue.put_nowait(None)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def submit(self, batch: IngestBatch) -> IngestResult:
        """Return what became of the batch's events once they are committed."""
        if self._closing or not self._tasks:
            raise DatabaseUnavailable("the service is shutting down")
        done: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(batch, done))
        return await asyncio.shield(done)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            group = [first]
            size = len(first.batch.events)
            while size < MAX_EVENTS_PER_COMMIT and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:  # a stop request: finish this group, then stop
                    self._queue.put_nowait(None)
                    break
                group.append(item)
                size += len(item.batch.events)
            await self._commit(group)

    async def _commit(self, group: list[_Pending]) -> None:
        try:
            results = await self._ingest.write([p.batch for p in group])
        except DatabaseUnavailable as exc:  # each request answers 503
            logger.warning("ingest commit of %d request(s) failed: %s", len(group), exc)
            _fail(group, exc)
            return
        except Exception as exc:  # noqa: BLE001 - a bug, perhaps in one request's data
            if len(group) == 1:
                _fail(group, exc)
                return
            # Commit each request on its own, so that only the one that hits the bug fails.
            for pending in group:
                await self._commit([pending])
            return
        for pending, result in zip(group, results, strict=True):
            if not pending.done.done():
                pending.done.set_result(result)


def _fail(group: list[_Pending], exc: BaseException) -> None:
    for pending in group:
        if not pending.done.done():
            pending.done.set_exception(exc)
