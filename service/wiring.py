"""Builds the production collaborators that create_app accepts."""

from __future__ import annotations

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
    """Return the publisher's options from the settings."""
    p = settings.publisher
    return PublisherOptions(
        endpoint=settings.segment.endpoint,
        timeout_s=settings.segment.timeout_s,
        interval_s=p.interval_s,
        max_attempts=p.max_attempts,
        retry_base_s=p.retry_base_s,
        retry_max_s=p.retry_max_s,
        lease_s=p.lease_s,
        concurrency=p.concurrency,
        batch_max_events=p.batch_max_events,
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
