"""`nudgespot-segment preview`: what a captured webhook body would become, with nothing stored
or sent. How an operator checks a format against what a sender really posts."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TextIO

from inbound.parse import Accepted, BodyError, Ignored, Rejected
from outbound import mapping
from service import __version__
from service.config import Settings

EXIT_MAPPED = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


def preview(
    settings: Settings, source_name: str, raw: bytes, now: datetime, out: TextIO, err: TextIO
) -> int:
    """Print the track message of every event (one JSON per line on `out`) and every rejection
    or ignore with its reason (on `err`); return 0 when nothing would be rejected, else 1."""
    source = next((s for s in settings.sources if s.name == source_name), None)
    if source is None:
        known = ", ".join(s.name for s in settings.sources)
        print(f"preview: unknown source {source_name!r} (configured: {known})", file=err)
        return EXIT_USAGE
    fmt = settings.format_of(source)
    if len(raw) > settings.server.max_body_bytes:
        print(f"note: the body is larger than server.max_body_bytes "
              f"({settings.server.max_body_bytes}); the webhook would answer 413", file=err)
    try:
        parsed = fmt.parse(raw, now)
    except BodyError as exc:
        print(f"rejected body: {exc}", file=err)
        return EXIT_REJECTED
    counts = {"mapped": 0, "rejected": 0, "ignored": 0, "duplicates": 0}
    first_with_key: dict[str, int] = {}
    for item in parsed:
        if isinstance(item, Accepted):
            first = first_with_key.setdefault(item.dedup_key, item.index)
            if first != item.index:
                print(f"event {item.index} duplicates event {first} (same dedup key): "
                      "the webhook stores it once", file=err)
                counts["duplicates"] += 1
                continue
            message = mapping.track(source.name, item.dedup_key, item.event_type,
                                    item.event_time, item.fields, __version__)
            print(json.dumps(message, ensure_ascii=False), file=out)
            counts["mapped"] += 1
        elif isinstance(item, Ignored):
            print(f"event {item.index} ignored: {item.reason}", file=err)
            counts["ignored"] += 1
        elif isinstance(item, Rejected):
            print(f"event {item.index} rejected: {item.reason}", file=err)
            counts["rejected"] += 1
    duplicates = f", {counts['duplicates']} duplicate(s)" if counts["duplicates"] else ""
    print(f"format {fmt.name}: {counts['mapped']} message(s){duplicates}, "
          f"{counts['ignored']} ignored, {counts['rejected']} rejected", file=err)
    return EXIT_REJECTED if counts["rejected"] else EXIT_MAPPED
