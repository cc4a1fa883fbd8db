"""Preloads a backlog of pending events straight into the database (run as its own process)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from bench.loadgen import event
from inbound.parse import Accepted, parse_event
from models import IngestBatch, NewEvent, Store
from service.config import load_settings
from service.wiring import prepare_message

CHUNK = 5000


def accepted_events(count: int, run: str) -> Iterator[Accepted]:
    now = datetime.now(timezone.utc)
    for n in range(count):
        parsed = parse_event(event(run, n), n, now)
        assert isinstance(parsed, Accepted), parsed
        yield parsed


def messages_for(count: int, run: str) -> list[dict[str, Any]]:
    """The track messages the publisher would send for this backlog."""
    from outbound.mapping import track
    from service import __version__

    return [
        track("default", a.dedup_key, a.event_type, a.event_time, a.fields, __version__)
        for a in accepted_events(count, run)
    ]


async def preload(config: str, count: int, run: str) -> None:
    settings = load_settings(config)
    async with Store(settings.database.url) as store:
        chunk: list[NewEvent] = []
        for a in accepted_events(count, run):
            chunk.append(NewEvent("default", a.dedup_key, a.event_type, a.event_time,
                                  a.fields_json, a.payload, prepare_message("default", a)))
            if len(chunk) == CHUNK:
                await store.ingest.write([IngestBatch(events=chunk)])
                chunk = []
        if chunk:
            await store.ingest.write([IngestBatch(events=chunk)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--run", required=True)
    args = parser.parse_args()
    asyncio.run(preload(args.config, args.count, args.run))


if __name__ == "__main__":
    main()
