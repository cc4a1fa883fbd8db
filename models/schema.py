"""The vocabulary of stored events that both sides of the pipeline share."""

from __future__ import annotations

# Stored event types and the Segment Email spec event each becomes.
SEGMENT_EVENT_NAMES = {
    "email_sent": "Email Sent",
    "email_delivered": "Email Delivered",
    "email_opened": "Email Opened",
    "email_clicked": "Email Link Clicked",
    "email_bounced": "Email Bounced",
    "email_unsubscribed": "Email Unsubscribed",
    "email_marked_as_spam": "Email Marked as Spam",
}
SEGMENT_EVENT_TYPES = {name: event_type for event_type, name in SEGMENT_EVENT_NAMES.items()}
# A format may map a sender event to any other Segment event name: it is stored with this
# type, and the name travels in the event's fields under EVENT_NAME_KEY.
CUSTOM_EVENT_TYPE = "custom"
EVENT_NAME_KEY = "event_name"
# The format an event was parsed with, in its fields; absent means the default format
# (so events stored before formats existed read the same).
FORMAT_KEY = "format"
DEFAULT_FORMAT = "nudgespot"

# --- tables and statuses: the one place each is spelled -----------------------------------
EVENTS = "nudgespot_event"
# What each event carries, written once (see tables.EventBody).
BODIES = "nudgespot_event_body"
REJECTS = "nudgespot_rejected"
COUNTERS = "nudgespot_source_counter"
IDENTIFIED = "nudgespot_identified_user"

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
STATUSES = (PENDING, DELIVERED, DEAD)

# Rows per INSERT statement, and ids per IN (...) list: well under SQLite's and asyncpg's
# 32,766-parameter ceilings.
ROWS_PER_STATEMENT = 500
# Longest error text kept with an event.
MAX_ERROR_CHARS = 2000
DELIVERIES = "nudgespot_delivery_minute"
BACKLOG_SAMPLES = "nudgespot_backlog_minute"
TABLES = (EVENTS, BODIES, REJECTS, COUNTERS, IDENTIFIED, DELIVERIES, BACKLOG_SAMPLES)
# The rows the backlog partial index holds; queries that want the index repeat this exact
# condition (SQLite uses a partial index only for a query that states its WHERE term as is).
BACKLOG = f"status IN ('{PENDING}', '{DEAD}')"
