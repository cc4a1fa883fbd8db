"""The publisher's settings: config.yaml's `segment:` and `publisher:` sections are read into
these, and the publisher takes them as they are, so each default is written here only.

`setting()` declares a config key: its default, what it means and its bounds, which both the
config loader's checks and `nudgespot-segment config-schema` read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from outbound.packing import MAX_BATCH_EVENTS


def setting(
    default: Any,
    description: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    choices: tuple[str, ...] = (),
    secret: bool = False,
) -> Any:
    """Return a dataclass field for a config key, with its description and bounds."""
    meta = {"description": description, "minimum": minimum, "maximum": maximum,
            "positive": positive, "choices": choices, "secret": secret}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SegmentSettings:
    endpoint: str = setting(
        "https://api.segment.io",
        "Segment's tracking API; EU workspaces use https://events.eu1.segmentapis.com")
    timeout_s: float = setting(15.0, "seconds to wait for each request to Segment",
                               positive=True)


@dataclass(frozen=True)
class PublisherSettings:
    interval_s: float = setting(
        1.0, "how often the scheduled job looks for due events (ingest also wakes it)",
        positive=True)
    max_attempts: int = setting(12, "failed attempts before an event is dead (replayable)",
                                minimum=1)
    retry_base_s: float = setting(1.0, "shortest wait before a retry", positive=True)
    retry_max_s: float = setting(600.0, "longest wait before a retry (at least retry_base_s)")
    lease_s: float = setting(
        120.0, "a claimed event not settled within this is claimed again "
        "(more than segment.timeout_s)")
    concurrency: int = setting(2, "batches in flight at once", minimum=1, maximum=64)
    batch_max_events: int = setting(MAX_BATCH_EVENTS, "events per batch sent to Segment",
                                    minimum=1, maximum=MAX_BATCH_EVENTS)


@dataclass(frozen=True)
class PublisherOptions(PublisherSettings, SegmentSettings):
    """Everything the publisher is told: both sections, plus what the service adds."""

    stop_timeout_s: float = 30.0
    service_version: str = "0"
    # After a claim that was not full, wait this long before claiming again: events that
    # trickle in then go out together instead of as many tiny batches and statements.
    linger_s: float = 0.05
