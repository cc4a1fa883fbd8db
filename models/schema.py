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
