"""Tortoise models: the durable state of the pipeline."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
STATUSES = (PENDING, DELIVERED, DEAD)


class Event(Model):
    """One accepted Nudgespot event, from receipt until Segment has it (or it is dead)."""

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=100)
    dedup_key = fields.CharField(max_length=255)
    event_type = fields.CharField(max_length=32)
    event_time = fields.DatetimeField()
    fields_json = fields.TextField()  # normalized fields, JSON
    payload = fields.TextField()  # the event object as received, JSON
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
        table = "nudgespot_event"
        unique_together = (("source", "dedup_key"),)
        # Claims look up due events per source; status counts group by source and status.
        indexes = (("source", "status", "next_attempt_at"),)


class RejectedEvent(Model):
    """A webhook event (or whole body) that could not be accepted, kept with its reason."""

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=100)
    body_index = fields.IntField(null=True)  # position in the webhook body; null for a whole body
    payload = fields.TextField()
    reason = fields.TextField()
    received_at = fields.DatetimeField()

    class Meta:
        table = "nudgespot_rejected"
        indexes = (("source", "received_at"),)


class SourceCounter(Model):
    """Per-source state with no row of its own: duplicate and ignored counts, a hold."""

    source = fields.CharField(max_length=100, primary_key=True)
    duplicates = fields.BigIntField(default=0)
    # db_default: rows written before this column existed read 0 (SQLite cannot add a NOT
    # NULL column without a default).
    ignored = fields.BigIntField(default=0, db_default=0)  # dropped on purpose by the format
    held_until = fields.DatetimeField(null=True)  # Segment asked us to wait until then

    class Meta:
        table = "nudgespot_source_counter"


class IdentifiedUser(Model):
    """A user who has had an identify call sent for a source, so it is not sent again."""

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=100)
    user_key = fields.CharField(max_length=255)
    identified_at = fields.DatetimeField()

    class Meta:
        table = "nudgespot_identified_user"
        unique_together = (("source", "user_key"),)
