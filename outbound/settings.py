"""The publisher's settings: config.yaml's `segment:` and `publisher:` sections are read into
these, and the publisher takes them as they are, so each default is written here only."""

from __future__ import annotations

from dataclasses import dataclass

from outbound.packing import MAX_BATCH_EVENTS


@dataclass(frozen=True)
class SegmentSettings:
    endpoint: str = "https://api.segment.io"
    timeout_s: float = 15.0


@dataclass(frozen=True)
class PublisherSettings:
    interval_s: float = 1.0
    max_attempts: int = 12
    retry_base_s: float = 1.0
    retry_max_s: float = 600.0
    lease_s: float = 120.0
    concurrency: int = 2
    batch_max_events: int = MAX_BATCH_EVENTS


@dataclass(frozen=True)
class PublisherOptions(PublisherSettings, SegmentSettings):
    """Everything the publisher is told: both sections, plus what the service adds."""

    stop_timeout_s: float = 30.0
    service_version: str = "0"
    # After a claim that was not full, wait this long before claiming again: events that
    # trickle in then go out together instead of as many tiny batches and statements.
    linger_s: float = 0.05
