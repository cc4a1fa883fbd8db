"""The `mailgun` preset (inbound/formats/mailgun.yaml) on Mailgun's own published samples.

Fixtures: tests/fixtures/formats/mailgun/*.json, each sample copied from
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads
(the "event-data" objects) and Mailgun's signature test vector (mailgun-php).
Every expected Segment message below is written out by hand from the sample.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from inbound.formats import builtin_format
from inbound.parse import Accepted, Ignored, Rejected
from inbound.signature import verifier
from outbound import mapping

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "formats" / "mailgun"
VERSION = "9.9.9"
INTEGRATION = {"name": "mailgun", "version": VERSION}

# The signature object published on Mailgun's "Securing Webhooks" page
# (https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks).
DOC_SIGNATURE = {
    "token": "e0b5477167110d68991efc6b9f89f0a11066af27834600e123",
    "timestamp": "1770920772",
    "signature": "12d99f5a15355c180971bed7494d578b093c958f57766f3fe750761baed12345",
}

MAC_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/144.0.0.0 Safari/537.36"
)
ANDROID_UA = (
    "Mozilla/5.0 (Linux; Android 9; itel A27) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/133.0.6943.143 Mobile Safari/537.36"
)
BOUNCE_MESSAGE = (
    "5.5.0 Requested action not taken: mailbox unavailable (S2017062302). "
    "[BN3PEPF0000B36D.namprd21.prod.outlook.com 2026-02-12T17:42:55.527Z 08DE657A58651558]"
)


def _message(
    event: str,
    email: str,
    timestamp: str,
    properties: dict[str, Any],
    *,
    ip: str | None = None,
    user_agent: str | None = None,
) -> dict[str, Any]:
    context: dict[str, Any] = {"traits": {"email": email}}
    if ip is not None:
        context["ip"] = ip
    if user_agent is not None:
        context["userAgent"] = user_agent
    context["integration"] = INTEGRATION
    return {
        "type": "track",
        "event": event,
        "anonymousId": email,
        "timestamp": timestamp,
        "properties": properties,
        "context": context,
        "integrations": {"Nudgespot": False},
    }


# fixture name -> (the event's Mailgun id, the Segment message it must become)
EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "accepted": (
        "CCXMjJ7nQi2N3BPigGOdgQ",
        _message(
            "Email Sent",
            "recipient@sample.mailgun.com",
            "2026-02-03T19:26:38.372Z",
            {
                "email_id": "20260203192638.000be97f99f8cea1@sample.mailgun.com",
                "email_subject": "Sample webhook payload",
                "tags": ["webhook_payload"],
            },
        ),
    ),
    "delivered": (
        "MXcc2gEpS-eN8HfkOnmK2w",
        _message(
            "Email Delivered",
            "recipient@sample.mailgun.com",
            "2026-02-03T19:20:31.658Z",
            {
                "email_id": "20260203192030.53383e583ab41f62@sample.mailgun.com",
                "email_subject": "Sample webhook payload",
                "tags": ["webhook_payload"],
            },
        ),
    ),
    "opened": (
        "q7DMpbLFRKW1QuiLC9XV4Q",
        _message(
            "Email Opened",
            "recipient@sample.mailgun.com",
            "2026-02-05T21:31:14.554Z",
            {
                "email_id": "20260205213049.8e3a7bf607f78309@sample.mailgun.com",
                "tags": ["webhook_payload"],
            },
            ip="38.142.208.162",
            user_agent=MAC_UA,
        ),
    ),
    "clicked": (
        "A9dLUrCXQjK92TlnW3zkIA",
        _message(
            "Email Link Clicked",
            "recipient@sample.mailgun.com",
            "2026-02-05T21:31:58.664Z",
            {
                "email_id": "20260205213049.8e3a7bf607f78309@sample.mailgun.com",
                "link_url": "https://sample.mailgun.com",
                "tags": ["webhook_payload"],
            },
            ip="9.169.124.21",
            user_agent=ANDROID_UA,
        ),
    ),
    "failed-permanent": (
        "2kFItcrLQuKTdp-Ia2Xr7w",
        _message(
            "Email Bounced",
            "badrecipient@sample.mailgun.com",
            "2026-02-12T17:42:55.592Z",
            {
                "email_id": "20260212174255.58bbb7ce85a423e5@mailgun.com",
                "email_subject": "Sample webhook payload",
                "bounce_type": "hard",
                "bounce_reason": BOUNCE_MESSAGE,
                "failure_reason": "bounce",
                "tags": ["webhook_payload"],
            },
        ),
    ),
    "unsubscribed": (
        "89QcW8YuSv6lhSeN3n4qnA",
        _message(
            "Email Unsubscribed",
            "recipient@sample.mailgun.com",
            "2026-02-05T21:31:30.465Z",
            {
                "email_id": "20260205213049.8e3a7bf607f78309@sample.mailgun.com",
                "tags": ["*"],
            },
            ip="38.142.208.162",
            user_agent=MAC_UA,
        ),
    ),
    "complained": (
        "rIVDlyk8SY-mJauQoYmNFA",
        _message(
            "Email Marked as Spam",
            "recipient@sample.mailgun.com",
            "2026-02-12T18:26:12.268Z",
            {
                "email_id": "20260212182531.0d5ed3254c319957@sample.mailgun.com",
                "email_subject": "Sample webhook payload",
                "tags": ["webhook_payload"],
            },
        ),
    ),
}


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def body(name: str) -> dict[str, Any]:
    return fixture(name)["body"]


def wrapped(event_data: Any) -> dict[str, Any]:
    """A request body as Mailgun posts it: the signature object beside the event."""
    return {"signature": dict(DOC_SIGNATURE), "event-data": event_data}


def parse(document: Any) -> list[Any]:
    now = datetime.now(timezone.utc)
    return builtin_format("mailgun").parse(json.dumps(document).encode(), now)


def track(result: Any) -> dict[str, Any]:
    assert isinstance(result, Accepted), result
    message = mapping.track(
        "src", result.dedup_key, result.event_type, result.event_time, result.fields, VERSION
    )
    message["context"].pop("library", None)
    return message


def test_every_sample_has_a_fixture() -> None:
    names = {p.stem for p in FIXTURES.glob("*.json")}
    assert names == set(EXPECTED) | {"failed-temporary", "signature-vector"}
    for name in names - {"signature-vector"}:
        assert fixture(name)["source_url"] == (
            "https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads"
        )


def test_preset_metadata() -> None:
    fmt = builtin_format("mailgun")
    assert fmt.name == "mailgun"
    assert fmt.auth == "mailgun"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_sample_as_posted(name: str) -> None:
    event_id, expected = EXPECTED[name]
    results = parse(wrapped(body(name)))
    assert len(results) == 1
    message = track(results[0])
    assert message.pop("messageId") == mapping.message_id("src", event_id)
    assert results[0].dedup_key == event_id
    assert message == expected


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_sample_bare_event_data(name: str) -> None:
    """The docs show the event-data object alone; it reads the same as the posted body."""
    event_id, expected = EXPECTED[name]
    results = parse(body(name))
    assert len(results) == 1
    message = track(results[0])
    assert message.pop("messageId") == mapping.message_id("src", event_id)
    assert message == expected


def test_temporary_failure_is_ignored() -> None:
    for document in (body("failed-temporary"), wrapped(body("failed-temporary"))):
        [result] = parse(document)
        assert isinstance(result, Ignored), result
        assert result.index == 0
        assert result.name == "failed.temporary"


def test_failure_without_severity_is_rejected() -> None:
    event = body("failed-permanent")
    del event["severity"]
    [result] = parse(wrapped(event))
    assert isinstance(result, Rejected), result
    assert "failed.unknown" in result.reason


@pytest.mark.parametrize("name", ["stored", "rejected", "no-such-event"])
def test_unknown_event_is_rejected(name: str) -> None:
    event = body("delivered")
    event["event"] = name
    [result] = parse(wrapped(event))
    assert isinstance(result, Rejected), result
    assert "unknown event" in result.reason
    assert name in result.reason


def test_event_without_recipient_is_rejected() -> None:
    event = body("delivered")
    del event["recipient"]
    [result] = parse(wrapped(event))
    assert isinstance(result, Rejected), result
    assert "recipient" in result.reason


def test_event_with_a_non_address_recipient_is_rejected() -> None:
    event = body("delivered")
    event["recipient"] = "not an address"
    [result] = parse(wrapped(event))
    assert isinstance(result, Rejected), result
    assert "email" in result.reason


def test_several_events_keep_their_order() -> None:
    events = [body("opened"), body("clicked"), body("failed-temporary"), body("delivered")]
    results = parse(events)
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert isinstance(results[2], Ignored)
    kept = [results[0], results[1], results[3]]
    assert [r.dedup_key for r in kept] == [
        "q7DMpbLFRKW1QuiLC9XV4Q",
        "A9dLUrCXQjK92TlnW3zkIA",
        "MXcc2gEpS-eN8HfkOnmK2w",
    ]
    assert [track(r)["event"] for r in kept] == [
        "Email Opened",
        "Email Link Clicked",
        "Email Delivered",
    ]


def test_user_variables_travel_as_properties() -> None:
    event = body("opened")
    event["user-variables"] = {"order": "1234"}
    message = track(parse(wrapped(event))[0])
    assert message["properties"] == {
        "email_id": "20260205213049.8e3a7bf607f78309@sample.mailgun.com",
        "tags": ["webhook_payload"],
        "user_variables": {"order": "1234"},
    }


def test_the_sample_is_not_modified_by_parsing() -> None:
    event = body("clicked")
    before = copy.deepcopy(event)
    parse(wrapped(event))
    assert event == before


def test_signature_vector_from_mailgun() -> None:
    vector = fixture("signature-vector")
    check = verifier("mailgun", vector["signing_key"])
    assert check is not None
    now_s = float(vector["valid"]["timestamp"]) + 5

    def signed(sig: dict[str, Any]) -> bytes:
        signature = {
            "timestamp": str(sig["timestamp"]),
            "token": sig["token"],
            "signature": sig["signature"],
        }
        return json.dumps({"signature": signature, "event-data": body("delivered")}).encode()

    assert check({}, signed(vector["valid"]), now_s) is None
    assert check({}, signed(vector["invalid"]), now_s) == "signature does not match the body"
    assert check({}, json.dumps(body("delivered")).encode(), now_s) is not None
