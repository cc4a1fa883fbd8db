"""Tortoise models: the durable state of the pipeline, from which migrations are made.

The service's queries are SQL in ingest.py, outbox.py and admin.py; tests and tools may read
these models through Database.orm().
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from models.schema import (
    BACKLOG_SAMPLES,
    BODIES,
    COUNTERS,
    DELIVERIES,
    EVENTS,
    IDENTIFIED,
    PENDING,
    REJECTS,
)


class Event(Model):
    """One accepted Nudgespot event, from receipt until Segment has it (or it is dead)."""

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=100)
    dedup_key = fields.CharField(max_length=255)
    event_type = fields.CharField(max_length=32)
    event_time = fields.DatetimeField()
    status = fields.CharField(max_length=16, default=PENDING)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField()
    last_error = fields.TextField(null=True)
    lease_owner = fields.CharField(max_length=64, null=True)
    lease_expires_at = fields.DatetimeField(null=True)
    received_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()
    delivered_at = fields.DatetimeField(null=True)

    class Meta:
        table = EVENTS
        unique_together = (("source", "dedup_key"),)
        # Claims look up due events per source; status counts group by source and status.
        indexes = (("source", "status", "next_attempt_at"),)


class EventBody(Model):
    """What an event carries (fields, payload, message), written once at ingest.

    Kept out of Event, whose rows claims and outcomes rewrite: an update rewrites a whole
    row, and these columns are most of it.
    """

    id = fields.BigIntField(primary_key=True)  # the Event's id
    fields_json = fields.TextField()  # normalized fields, JSON
    payload = fields.TextField()  # the event object as received, JSON
    # The Segment track message, serialized as it goes into a batch (ASCII: its length is its
    # size), made once at ingest; null for events stored before migration 0004, mapped when
    # they are published.
    message = fields.TextField(null=True)

    class Meta:
        table = BODIES


class RejectedEvent(Model):
    """A webhook event (or whole body) that could not be accepted, kept with its reason."""

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=100)
    body_index = fields.IntField(null=True)  # position in the webhook body; null for a whole body
    payload = fields.TextField()
    reason = fields.TextField()
    received_at = fields.DatetimeField()

    class Meta:
        table = REJECTS
        indexes = (("source", "received_at"),)


class SourceCounter(Model):
    """Per-source figures kept in the transactions that change them, and a Retry-After hold.

    (Pending and dead counts come from a partial index instead: see migration 0003.)
    """

    source = fields.CharField(max_length=100, primary_key=True)
    duplicates = fields.BigIntField(default=0)
    # db_default: rows written before this column existed read 0 (SQLite cannot add a NOT
    # NULL column without a default).
    ignored = fields.BigIntField(default=0, db_default=0)  # dropped on purpose by the format
    delivered = fields.BigIntField(default=0, db_default=0)
    rejected = fields.BigIntField(default=0, db_default=0)  # quarantined now
    last_delivery_at = fields.DatetimeField(null=True)
    last_error = fields.TextField(null=True)  # the latest failure of a send
    last_error_at = fields.DatetimeField(null=True)
    held_until = fields.DatetimeField(null=True)  # Segment asked us to wait until then

    class Meta:
        table = COUNTERS


class IdentifiedUser(Model):
    """A user who has had an identify call sent for a source, so it is not sent again."""

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=100)
    user_key = fields.CharField(max_length=255)
    identified_at = fields.DatetimeField()

    class Meta:
        table = IDENTIFIED
        unique_together = (("source", "user_key"),)


class DeliveryMinute(Model):
    """Events delivered per source and minute (status figures, the day's chart)."""

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=100)
    minute = fields.DatetimeField()
    delivered = fields.BigIntField(default=0, db_default=0)

    class Meta:
        table = DELIVERIES
        unique_together = (("source", "minute"),)


class BacklogMinute(Model):
    """Pending events per source, sampled once a minute (the day's chart)."""

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=100)
    minute = fields.DatetimeField()
    pending = fields.BigIntField(default=0, db_default=0)

    class Meta:
        table = BACKLOG_SAMPLES
        unique_together = (("source", "minute"),)
