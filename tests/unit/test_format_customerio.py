"""The `customerio` preset (inbound/formats/customerio.yaml) on Customer.io webhook samples.

Fixtures are in tests/fixtures/formats/customerio/. Files named `derived-email-*.json` are NOT
published samples: Customer.io's own example for that metric could not be reached, so each is the
published email-clicked sample with the metric changed (see its "note").
Every expected Segment message below is written out by hand from the sample.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from inbound.formats import builtin_format
from inbound.parse import Accepted, Ignored, Rejected
from outbound import mapping

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats" / "customerio"
SOURCE = "src"
VERSION = "9.9.9"
INTEGRATION = {"name": "customerio", "version": VERSION}
INTEGRATIONS = {"Nudgespot": False}


def body(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))["body"]


def parse(document: Any) -> list[Any]:
    now = datetime.now(timezone.utc)
    return builtin_format("customerio").parse(json.dumps(document).encode(), now)


def track_of(document: Any) -> tuple[dict[str, Any], Accepted]:
    results = parse(document)
    assert len(results) == 1
    accepted = results[0]
    assert isinstance(accepted, Accepted), accepted
    message = mapping.track(
        SOURCE,
        accepted.dedup_key,
        accepted.event_type,
        accepted.event_time,
        accepted.fields,
        VERSION,
    )
    message["context"].pop("library", None)
    return message, accepted


def check(name: str, expected: dict[str, Any], dedup_id: str) -> None:
    message, accepted = track_of(body(name))
    assert accepted.dedup_key == dedup_id
    assert message.pop("messageId") == mapping.message_id(SOURCE, dedup_id)
    assert message == expected


# --- published samples of the mapped email metrics ------------------------------------------


def test_email_sent() -> None:
    check(
        "email-sent",
        {
            "type": "track",
            "event": "Email Sent",
            "userId": "user-123",
            "timestamp": "2022-02-07T09:58:57.000Z",
            "properties": {
                "email_id": "RAECAAFwnUSneIa0ZXkmq8EdkAM==",
                "email_subject": "Thanks for signing up",
                "campaign_id": "23",
                "action_id": 42,
            },
            "context": {"traits": {"email": "test@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "01E2EMRMM6TZ12TF9WGZN0WJQT",
    )


def test_email_delivered_transactional() -> None:
    check(
        "email-delivered",
        {
            "type": "track",
            "event": "Email Delivered",
            "userId": "user-123",
            "timestamp": "2023-01-31T20:26:59.000Z",
            "properties": {
                "email_id": "REAC4wUAAYYJgQgkyRqwwEPeOA6Nfv==",
                "email_subject": "Thanks for signing up",
                "transactional_message_id": 2,
                "cio_id": "7ef807109981",
            },
            "context": {"traits": {"email": "test@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "01ER4R5WB62QWCNREKFB4DYXGR",
    )


def test_email_clicked_broadcast() -> None:
    check(
        "email-clicked",
        {
            "type": "track",
            "event": "Email Link Clicked",
            "userId": "0200102",
            "timestamp": "2020-03-26T20:25:48.000Z",
            "properties": {
                "email_id": "RPILAgABcRhIBqSp7kiPekGBIeVh",
                "email_subject": "hello",
                "link_id": "1",
                "link_url": "http://google.com",
                "broadcast_id": 9,
                "action_id": 36,
            },
            "context": {"traits": {"email": "test@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "01E4C8BES5XT87ZWRJFTB35YJ3",
    )


def test_email_bounced_newsletter() -> None:
    check(
        "email-bounced",
        {
            "type": "track",
            "event": "Email Bounced",
            "userId": "0200102",
            "timestamp": "2009-02-13T23:31:30.000Z",
            "properties": {
                "email_id": "RMehBAAAAXE7r_ONUGXly9DBGkpq1JS31=",
                "email_subject": "Thanks for joining!",
                "bounce_reason": "550 5.5.0 Requested action not taken: mailbox unavailable",
                "newsletter_id": 736,
                "content_id": 1146,
            },
            "context": {"traits": {"email": "test@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "12ASDG7S9P6MAZPTJ78DAND9GDC",
    )


# --- derived bodies (not published) for the other mapped email metrics ----------------------

# The derived bodies share email-clicked's data, event_id and timestamp (href/link_id removed).
DERIVED_PROPERTIES = {
    "email_id": "RPILAgABcRhIBqSp7kiPekGBIeVh",
    "email_subject": "hello",
    "broadcast_id": 9,
    "action_id": 36,
}


@pytest.mark.parametrize(
    ("metric", "event"),
    [
        ("opened", "Email Opened"),
        ("spammed", "Email Marked as Spam"),
        ("unsubscribed", "Email Unsubscribed"),
    ],
)
def test_derived_email_metrics(metric: str, event: str) -> None:
    check(
        f"derived-email-{metric}",
        {
            "type": "track",
            "event": event,
            "userId": "0200102",
            "timestamp": "2020-03-26T20:25:48.000Z",
            "properties": DERIVED_PROPERTIES,
            "context": {"traits": {"email": "test@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "01E4C8BES5XT87ZWRJFTB35YJ3",
    )


# --- ignored: other email metrics and every other channel -----------------------------------


@pytest.mark.parametrize(
    ("name", "sender_event"),
    [
        ("email-drafted", "email.drafted"),
        ("derived-email-attempted", "email.attempted"),
        ("derived-email-converted", "email.converted"),
        ("derived-email-dropped", "email.dropped"),
        ("derived-email-failed", "email.failed"),
        ("customer-subscribed", "customer.subscribed"),
        ("customer-unsubscribed", "customer.unsubscribed"),
        ("push-attempted", "push.attempted"),
        ("push-sent", "push.sent"),
        ("push-delivered", "push.delivered"),
        ("push-clicked", "push.clicked"),
        ("sms-attempted", "sms.attempted"),
        ("sms-clicked", "sms.clicked"),
        ("slack-sent", "slack.sent"),
        ("slack-clicked", "slack.clicked"),
        ("slack-failed", "slack.failed"),
        ("webhook-drafted", "webhook.drafted"),
        ("webhook-attempted", "webhook.attempted"),
        ("webhook-sent", "webhook.sent"),
        ("webhook-clicked", "webhook.clicked"),
        ("webhook-failed", "webhook.failed"),
    ],
)
def test_ignored(name: str, sender_event: str) -> None:
    results = parse(body(name))
    assert len(results) == 1
    assert isinstance(results[0], Ignored), results[0]
    assert results[0].name == sender_event


def test_in_app_is_ignored() -> None:
    # No published in_app sample was reachable; an email sample moved to that channel.
    document = body("email-clicked")
    document["object_type"] = "in_app"
    results = parse(document)
    assert isinstance(results[0], Ignored), results[0]
    assert results[0].name == "in_app.clicked"


# --- rejections ------------------------------------------------------------------------------


def test_unknown_metric_is_rejected() -> None:
    document = body("email-sent")
    document["metric"] = "teleported"
    results = parse(document)
    assert isinstance(results[0], Rejected), results[0]
    assert "unknown event 'email.teleported'" in results[0].reason


def test_unknown_channel_is_rejected() -> None:
    # A channel the preset does not list is reported, not silently dropped.
    document = body("email-sent")
    document["object_type"] = "carrier_pigeon"
    results = parse(document)
    assert isinstance(results[0], Rejected), results[0]
    assert "unknown event 'carrier_pigeon.sent'" in results[0].reason


def test_missing_object_type_is_rejected() -> None:
    document = body("email-sent")
    del document["object_type"]
    results = parse(document)
    assert isinstance(results[0], Rejected), results[0]
    assert "fields.event" in results[0].reason


def test_no_recipient_and_no_customer_is_rejected() -> None:
    document = body("email-sent")
    del document["data"]["recipient"]
    del document["data"]["customer_id"]
    del document["data"]["identifiers"]
    results = parse(document)
    assert isinstance(results[0], Rejected), results[0]
    assert "no recipient" in results[0].reason


def test_no_recipient_address_but_customer_id_goes_by_user_id() -> None:
    document = body("email-sent")
    del document["data"]["recipient"]
    message, _ = track_of(document)
    assert message["userId"] == "user-123"
    assert "traits" not in message["context"]


def test_recipient_that_is_not_an_address_is_rejected() -> None:
    document = body("email-sent")
    document["data"]["recipient"] = "+18008675309"
    results = parse(document)
    assert isinstance(results[0], Rejected), results[0]
    assert "'email' is not an email address" in results[0].reason


def test_customer_id_only_in_identifiers() -> None:
    document = body("email-delivered")
    document["data"]["customer_id"] = ""
    message, _ = track_of(document)
    assert message["userId"] == "user-123"


# --- several events in one body --------------------------------------------------------------


def test_several_events_keep_their_order() -> None:
    # Customer.io posts one event per request; an array is still read in order.
    document = [body("email-clicked"), body("push-sent"), body("email-sent"), body("email-bounced")]
    results = parse(document)
    assert [type(r) for r in results] == [Accepted, Ignored, Accepted, Accepted]
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert [r.dedup_key for r in results if isinstance(r, Accepted)] == [
        "01E4C8BES5XT87ZWRJFTB35YJ3",
        "01E2EMRMM6TZ12TF9WGZN0WJQT",
        "12ASDG7S9P6MAZPTJ78DAND9GDC",
    ]
    assert results[1].name == "push.sent"


def test_preset_settings() -> None:
    fmt = builtin_format("customerio")
    assert fmt.auth == "customerio"
    assert fmt.doc == "https://docs.customer.io/api/webhooks/"


def test_every_fixture_names_its_source() -> None:
    names = sorted(p.stem for p in FIXTURES.glob("*.json"))
    assert names
    for name in names:
        fixture = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
        assert fixture["source_url"].startswith("https://")
        assert isinstance(fixture["body"], dict | list)
        if name.startswith("derived-"):
            assert fixture["note"].startswith("NOT A PUBLISHED SAMPLE")
