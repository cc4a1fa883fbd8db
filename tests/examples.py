"""The worked example of the contract (docs/examples.md): one webhook body and the three
track messages it must become (without messageId and context.library, which are checked
separately)."""

from __future__ import annotations

from typing import Any

from service import __version__ as SERVICE_VERSION

EXAMPLE_BODY: list[dict[str, Any]] = [
    {
        "id": "ev-1001",
        "event": "email_delivered",
        "timestamp": "2026-11-20T09:30:00Z",
        "subscriber": {"uid": "42", "email": "ada@example.com", "first_name": "Ada"},
        "message": {
            "id": "msg-77",
            "subject": "Your receipt",
            "campaign_id": "c-9",
            "campaign_name": "Receipts",
        },
    },
    {
        "id": "ev-1002",
        "event": "click",
        "timestamp": 1795167060,
        "user": {"email": "bob@example.com"},
        "mail_id": "msg-78",
        "subject": "Spring sale",
        "link": {"id": "l-3", "url": "https://shop.example.com/sale"},
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0",
        "properties": {"variant": "B", "campaign_id": "ignored"},
    },
    {
        "event": "unsubscribed",
        "timestamp": 1795167120000,
        "subscriber": {"uid": "42", "email": "ada@example.com"},
        "message": {"id": "msg-77"},
        "list": {"id": "news", "name": "Newsletter"},
    },
]

INTEGRATION = {"name": "nudgespot", "version": SERVICE_VERSION}

# The three track messages of examples.md, without messageId and context.library.
EXAMPLE_TRACKS: list[dict[str, Any]] = [
    {
        "type": "track",
        "event": "Email Delivered",
        "userId": "42",
        "timestamp": "2026-11-20T09:30:00.000Z",
        "properties": {
            "email_id": "msg-77",
            "email_subject": "Your receipt",
            "campaign_id": "c-9",
            "campaign_name": "Receipts",
        },
        "context": {
            "traits": {"email": "ada@example.com", "first_name": "Ada"},
            "integration": INTEGRATION,
        },
        "integrations": {"Nudgespot": False},
    },
    {
        "type": "track",
        "event": "Email Link Clicked",
        "anonymousId": "bob@example.com",
        "timestamp": "2026-11-20T09:31:00.000Z",
        "properties": {
            "email_id": "msg-78",
            "email_subject": "Spring sale",
            "link_id": "l-3",
            "link_url": "https://shop.example.com/sale",
            "variant": "B",
            "campaign_id": "ignored",
        },
        "context": {
            "traits": {"email": "bob@example.com"},
            "ip": "203.0.113.9",
            "userAgent": "Mozilla/5.0",
            "integration": INTEGRATION,
        },
        "integrations": {"Nudgespot": False},
    },
    {
        "type": "track",
        "event": "Email Unsubscribed",
        "userId": "42",
        "timestamp": "2026-11-20T09:32:00.000Z",
        "properties": {"email_id": "msg-77", "list_id": "news", "list_name": "Newsletter"},
        "context": {"traits": {"email": "ada@example.com"}, "integration": INTEGRATION},
        "integrations": {"Nudgespot": False},
    },
]

