"""Prometheus metrics: counters fed by the webhook and the publisher, gauges read at scrape."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from inbound.webhook import RequestOutcome
from models.admin import SourceStats
from models.time import utcnow

disable_created_metrics()  # the *_created series only double what a scrape has to read

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


class Metrics:
    """One registry per application, so several apps in one process never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.webhook_requests = Counter(
            "nudgespot_webhook_requests", "Webhook POSTs by source and HTTP status.",
            ["source", "status"], registry=r,
        )
        self.events = Counter(
            "nudgespot_events", "Webhook events by source and outcome "
            "(accepted, duplicate, rejected, ignored).", ["source", "outcome"], registry=r,
        )
        self.deliveries = Counter(
            "nudgespot_deliveries", "Publisher outcomes per event by source "
            "(delivered, retried, dead).", ["source", "outcome"], registry=r,
        )
        self.batch_seconds = Histogram(
            "nudgespot_batch_send_seconds", "Time to send one batch to Segment.",
            ["source", "outcome"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ingest_to_delivery = Histogram(
            "nudgespot_ingest_to_delivery_seconds",
            "From the webhook committing an event to Segment accepting it.",
            ["source"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.backlog = Gauge(
            "nudgespot_backlog_events", "Events waiting to be delivered (pending).",
            ["source"], registry=r,
        )
        self.dead = Gauge("nudgespot_dead_events", "Dead events (replayable).", ["source"],
                          registry=r)
        self.internal_errors = Counter(
            "nudgespot_internal_errors", "Requests answered 500 because of a bug (logged at "
            "ERROR with a traceback), by route.", ["route"], registry=r,
        )
        self.oldest_pending = Gauge(
            "nudgespot_oldest_pending_age_seconds", "Age of the oldest pending event.",
            ["source"], registry=r,
        )

    # --- the webhook's observer ----------------------------------------------------------

    def request_done(self, outcome: RequestOutcome) -> None:
        self.webhook_requests.labels(outcome.source, str(outcome.status)).inc()
        for name, count in (("accepted", outcome.accepted), ("duplicate", outcome.duplicates),
                            ("rejected", outcome.rejected), ("ignored", outcome.ignored)):
            if count:
                self.events.labels(outcome.source, name).inc(count)

    def internal_error(self, route: str) -> None:
        self.internal_errors.labels(route).inc()

    # --- the publisher's observer ---------------------------------------------------------

    def batch_sent(self, source: str, outcome: str, events: int, seconds: float) -> None:
        self.batch_seconds.labels(source, outcome).observe(seconds)

    def delivered(self, source: str, received_at: Sequence[datetime | None]) -> None:
        self.deliveries.labels(source, "delivered").inc(len(received_at))
        now = utcnow()
        histogram = self.ingest_to_delivery.labels(source)
        for at in received_at:
            if at is not None:
                histogram.observe(max(0.0, (now - at).total_seconds()))

    def failed(self, source: str, retrying: int, dead: int) -> None:
        if retrying:
            self.deliveries.labels(source, "retried").inc(retrying)
        if dead:
            self.deliveries.labels(source, "dead").inc(dead)

    # --- gauges, refreshed from the database at scrape time -------------------------------

    def refresh(self, stats: dict[str, SourceStats], now: datetime) -> None:
        for source, s in stats.items():
            self.backlog.labels(source).set(s.pending)
            self.dead.labels(source).set(s.dead)
            self.oldest_pending.labels(source).set(s.oldest_pending_age_s(now) or 0)
