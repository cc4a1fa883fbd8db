"""Nudgespot event names and the aliases accepted for them (case-insensitive)."""

from __future__ import annotations

from models.schema import SEGMENT_EVENT_NAMES

EVENT_TYPES = tuple(SEGMENT_EVENT_NAMES)

_ALIASES = {
    "email_sent": ("sent",),
    "email_delivered": ("delivered",),
    "email_opened": ("open", "opened"),
    "email_clicked": ("click", "clicked", "email_link_clicked"),
    "email_bounced": ("bounce", "bounced"),
    "email_unsubscribed": ("unsubscribe", "unsubscribed"),
    "email_marked_as_spam": ("spam", "spamreport", "spam_report", "marked_as_spam"),
}

EVENT_ALIASES: dict[str, str] = {
    name: canonical
    for canonical in EVENT_TYPES
    for name in (canonical, *_ALIASES[canonical])
}

