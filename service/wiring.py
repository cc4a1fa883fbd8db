"""Builds the production collaborators that create_app accepts."""

from __future__ import annotations

from dataclasses import asdict

from inbound.parse import Accepted
from outbound import mapping
from outbound.publisher import (
    PublisherOptions,
    PublishObserver,
    SegmentPublisher,
    Sender,
    SourceTarget,
)
from service import __version__
from service.config import Settings


def publisher_options(settings: Settings) -> PublisherOptions:
    """Return the publisher's options: its two config sections as they are, plus what the
    service adds (the shutdown bound and its version)."""
    return PublisherOptions(
        **asdict(settings.publisher),
        **asdict(settings.segment),
        stop_timeout_s=settings.server.shutdown_timeout_s,
        service_version=__version__,
    )


def build_publisher(
    settings: Settings,
    *,
    sender: Sender | None = None,
    owner: str | None = None,
    observer: PublishObserver | None = None,
) -> SegmentPublisher:
    """Return the Segment publisher for every configured source."""
    targets = [SourceTarget(s.name, s.write_key, s.identify) for s in settings.sources]
    return SegmentPublisher(
        targets, publisher_options(settings), sender=sender, owner=owner, observer=observer
    )


def prepare_message(source: str, accepted: Accepted) -> str | None:
    """Return the track message of an accepted event, made once at ingest and stored."""
    return mapping.track_text(source, accepted.dedup_key, accepted.event_type,
                              accepted.event_time, accepted.fields, __version__)
