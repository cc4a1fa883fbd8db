"""Nudgespot event names and the aliases accepted for them (case-insensitive)."""

from __future__ import annotations

EVENT_TYPES = (
    "email_sent",
    "email_delivered",
    "email_opened",
    "email_clicked",
    "email_bounced",
    "email_unsubscribed",
    "email_marked_as_spam",
)

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
