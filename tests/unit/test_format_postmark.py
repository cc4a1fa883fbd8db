"""The `postmark` preset (inbound/formats/postmark.yaml) on Postmark's published webhook samples.

Each fixture in tests/fixtures/formats/postmark/ is a sample from Postmark's webhook docs; each
test states, written out by hand, the Segment track message it must become. Postmark gives no
event id except a Bounce's `ID`: every other record is keyed by the hash rule.
"""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from inbound.formats import builtin_format
from inbound.parse import Accepted, Ignored, Rejected
from outbound import mapping

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "formats" / "postmark"
UTC = timezone.utc
now = datetime.now(UTC)
INTEGRATION = {"name": "postmark", "version": "9.9.9"}
FORMAT_DOC_PREFIX = "https://postmarkapp.com/developer/webhooks/"


# --- helpers ------------------------------------------------------------------------------------


def body_of(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))["body"]


def parse(body: Any) -> list[Any]:
    return builtin_format("postmark").parse(json.dumps(body).encode(), now)


def accepted(body: Any) -> Accepted:
    [result] = parse(body)
    assert isinstance(result, Accepted), result
    return result


def track(a: Accepted) -> dict[str, Any]:
    message = mapping.track("src", a.dedup_key, a.event_type, a.event_time, a.fields, "9.9.9")
    message["context"].pop("library")
    return message


def without_message_id(message: dict[str, Any]) -> dict[str, Any]:
    message = dict(message)
    message.pop("messageId")
    return message


# --- the fixtures themselves --------------------------------------------------------------------


def test_every_fixture_names_its_postmark_docs_page():
    names = sorted(path.stem for path in FIXTURES.glob("*.json"))
    assert names == [
        "bounce", "click", "delivery", "open", "spam-complaint", "subscription-change",
    ]
    for path in FIXTURES.glob("*.json"):
        fixture = json.loads(path.read_text(encoding="utf-8"))
        assert fixture["source_url"].startswith(FORMAT_DOC_PREFIX), path.name
        assert isinstance(fixture["body"], dict) and "RecordType" in fixture["body"]


def test_the_preset_declares_no_signature_scheme():
    fmt = builtin_format("postmark")
    assert fmt.auth == "none"  # Postmark does not sign; HTTP Basic (source basic_auth) instead
    assert fmt.doc.startswith(FORMAT_DOC_PREFIX)


# --- one published sample -> one Segment message -------------------------------------------------


def test_delivery():
    a = accepted(body_of("delivery"))
    message = track(a)
    assert without_message_id(message) == {
        "type": "track",
        "event": "Email Delivered",
        "anonymousId": "john@example.com",
        "timestamp": "2019-11-05T16:33:54.907Z",
        "properties": {
            "email_id": "883953f4-6105-42a2-a16a-77a8eac79483",
            "tag": "welcome-email",
            "message_stream": "outbound",
            "metadata": {"a_key": "a_value", "b_key": "b_value"},
        },
        "context": {"traits": {"email": "john@example.com"}, "integration": INTEGRATION},
        "integrations": {"Nudgespot": False},
    }
    assert a.dedup_key.startswith("sha256:")
    assert message["messageId"] == mapping.message_id("src", a.dedup_key)


def test_delivery_key_is_the_documented_hash_of_what_identifies_the_event():
    # The hash rule (no id): sha256 of [type, recipient, message id, time to the ms, link url].
    parts = [
        "email_delivered",
        "email:john@example.com",
        "883953f4-6105-42a2-a16a-77a8eac79483",
        "2019-11-05T16:33:54.907+00:00",
        "",
    ]
    expected = "sha256:" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    assert accepted(body_of("delivery")).dedup_key == expected


def test_bounce_is_keyed_by_its_bounce_id():
    a = accepted(body_of("bounce"))
    message = track(a)
    assert without_message_id(message) == {
        "type": "track",
        "event": "Email Bounced",
        "anonymousId": "john@example.com",
        "timestamp": "2019-11-05T16:33:54.907Z",
        "properties": {
            "email_id": "883953f4-6105-42a2-a16a-77a8eac79483",
            "email_subject": "Test subject",
            "bounce_type": "HardBounce",
            "bounce_reason": "Test bounce details",
            "tag": "Test",
            "message_stream": "outbound",
            "metadata": {"a_key": "a_value", "b_key": "b_value"},
            "from": "sender@example.com",
            "inactive": True,
            "can_activate": True,
        },
        "context": {"traits": {"email": "john@example.com"}, "integration": INTEGRATION},
        "integrations": {"Nudgespot": False},
    }
    # The 64-bit ID (beyond a double's exact range) is kept to the last digit.
    assert a.dedup_key == "4323372036854775807"
    assert message["messageId"] == mapping.message_id("src", "4323372036854775807")


def test_bounce_reason_falls_back_to_the_bounce_type_description():
    body = body_of("bounce")
    del body["Details"]
    properties = track(accepted(body))["properties"]
    assert properties["bounce_reason"] == (
        "The server was unable to deliver your message (ex: unknown user, mailbox not found)."
    )


def test_a_soft_bounce_is_an_email_bounced_too():
    body = dict(body_of("bounce"), Type="SoftBounce", TypeCode=4096, ID=4323372036854775806)
    message = track(accepted(body))
    assert message["event"] == "Email Bounced"
    assert message["properties"]["bounce_type"] == "SoftBounce"


def test_spam_complaint_is_not_keyed_by_its_id():
    a = accepted(body_of("spam-complaint"))
    message = track(a)
    assert without_message_id(message) == {
        "type": "track",
        "event": "Email Marked as Spam",
        "anonymousId": "john@example.com",
        "timestamp": "2019-11-05T16:33:54.907Z",
        "properties": {
            "email_id": "00000000-0000-0000-0000-000000000000",
            "email_subject": "Test subject",
            "tag": "Test",
            "message_stream": "outbound",
            "metadata": {"a_key": "a_value", "b_key": "b_value"},
            "from": "sender@example.com",
            "inactive": True,
            "can_activate": False,
        },
        "context": {"traits": {"email": "john@example.com"}, "integration": INTEGRATION},
        "integrations": {"Nudgespot": False},
    }
    # A SpamComplaint carries "ID": 42 too; only a Bounce's ID is an event id.
    assert a.dedup_key != "42"
    assert a.dedup_key.startswith("sha256:")
    assert "bounce_type" not in a.fields and "bounce_reason" not in a.fields
    assert message["messageId"] == mapping.message_id("src", a.dedup_key)


def test_open():
    a = accepted(body_of("open"))
    message = track(a)
    assert without_message_id(message) == {
        "type": "track",
        "event": "Email Opened",
        "anonymousId": "john@example.com",
        "timestamp": "2019-11-05T16:33:54.907Z",
        "properties": {
            "email_id": "883953f4-6105-42a2-a16a-77a8eac79483",
            "tag": "welcome-email",
            "message_stream": "outbound",
            "metadata": {"a_key": "a_value", "b_key": "b_value"},
            "first_open": True,
            "platform": "WebMail",
            "client": "Chrome 35.0.1916.153",
            "os": "OS X 10.7 Lion",
            "country": "Serbia",
            "region": "Autonomna Pokrajina Vojvodina",
            "city": "Novi Sad",
        },
        "context": {
            "traits": {"email": "john@example.com"},
            "ip": "188.2.95.4",
            "userAgent": (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_5) AppleWebKit/537.36 "
                "(KHTML, like Gecko) Chrome/35.0.1916.153 Safari/537.36"
            ),
            "integration": INTEGRATION,
        },
        "integrations": {"Nudgespot": False},
    }
    assert a.dedup_key.startswith("sha256:")
    assert message["messageId"] == mapping.message_id("src", a.dedup_key)


def test_click():
    a = accepted(body_of("click"))
    message = track(a)
    assert without_message_id(message) == {
        "type": "track",
        "event": "Email Link Clicked",
        "anonymousId": "john@example.com",
        "timestamp": "2017-10-25T15:21:11.906Z",
        "properties": {
            "email_id": "00000000-0000-0000-0000-000000000000",
            "link_url": "https://example.com",
            "tag": "welcome-email",
            "message_stream": "outbound",
            "metadata": {"a_key": "a_value", "b_key": "b_value"},
            "click_location": "HTML",
            "platform": "Desktop",
            "client": "Chrome 35.0.1916.153",
            "os": "OS X 10.7 Lion",
            "country": "Serbia",
            "region": "Autonomna Pokrajina Vojvodina",
            "city": "Novi Sad",
        },
        "context": {
            "traits": {"email": "john@example.com"},
            "ip": "8.8.8.8",
            "userAgent": (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_5) AppleWebKit/537.36 "
                "(KHTML, like Gecko) Chrome/35.0.1916.153 Safari/537.36"
            ),
            "integration": INTEGRATION,
        },
        "integrations": {"Nudgespot": False},
    }
    assert a.dedup_key.startswith("sha256:")
    assert message["messageId"] == mapping.message_id("src", a.dedup_key)


def test_subscription_change_that_suppresses_is_an_unsubscribe():
    a = accepted(body_of("subscription-change"))
    message = track(a)
    assert without_message_id(message) == {
        "type": "track",
        "event": "Email Unsubscribed",
        "anonymousId": "bounced-address@wildbit.com",
        "timestamp": "2020-02-01T10:53:34.416Z",
        "properties": {
            "email_id": "883953f4-6105-42a2-a16a-77a8eac79483",
            "list_id": "outbound",
            "tag": "my-tag",
            "message_stream": "outbound",
            "metadata": {"example": "value", "example_2": "value"},
            "suppression_reason": "HardBounce",
            "origin": "Recipient",
        },
        "context": {
            "traits": {"email": "bounced-address@wildbit.com"},
            "integration": INTEGRATION,
        },
        "integrations": {"Nudgespot": False},
    }
    assert a.dedup_key.startswith("sha256:")
    assert message["messageId"] == mapping.message_id("src", a.dedup_key)


def test_a_manual_suppression_without_message_id_is_still_an_unsubscribe():
    # Documented: MessageID is null for manual suppressions (Origin Customer or Admin).
    body = dict(body_of("subscription-change"), MessageID=None, Origin="Customer",
                SuppressionReason="ManualSuppression")
    message = track(accepted(body))
    assert message["event"] == "Email Unsubscribed"
    assert "email_id" not in message["properties"]
    assert message["properties"]["suppression_reason"] == "ManualSuppression"


def test_event_times_keep_the_sub_millisecond_digits_postmark_sends():
    assert accepted(body_of("delivery")).event_time == datetime(
        2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC
    )
    assert accepted(body_of("subscription-change")).event_time == datetime(
        2020, 2, 1, 10, 53, 34, 416071, tzinfo=UTC
    )


# --- ignored, rejected ---------------------------------------------------------------------------


def reactivation() -> dict[str, Any]:
    # As documented for SuppressSending = false: SuppressionReason and Tag null, Metadata empty,
    # MessageID null.
    return dict(body_of("subscription-change"), SuppressSending=False, SuppressionReason=None,
                Tag=None, Metadata={}, MessageID=None, Origin="Customer")


def test_a_reactivation_is_ignored_not_stored_nor_rejected():
    [result] = parse(reactivation())
    assert isinstance(result, Ignored)
    assert result.index == 0
    assert result.name == "SubscriptionChange.Reactivated"


def test_a_subscription_change_without_suppress_sending_is_rejected():
    body = body_of("subscription-change")
    del body["SuppressSending"]
    [result] = parse(body)
    assert isinstance(result, Rejected)
    assert "unknown event" in result.reason
    assert "SubscriptionChange" in result.reason


def test_an_unknown_record_type_is_rejected():
    [result] = parse(dict(body_of("delivery"), RecordType="Transmogrified"))
    assert isinstance(result, Rejected)
    assert "unknown event 'Transmogrified'" in result.reason


def test_a_record_without_record_type_is_rejected():
    # e.g. an inbound-email webhook pointed at this source: it has no RecordType.
    body = body_of("delivery")
    del body["RecordType"]
    [result] = parse(body)
    assert isinstance(result, Rejected)
    assert "event" in result.reason


@pytest.mark.parametrize(
    ("fixture", "recipient_key"),
    [
        ("delivery", "Recipient"),
        ("open", "Recipient"),
        ("click", "Recipient"),
        ("subscription-change", "Recipient"),
        ("bounce", "Email"),
        ("spam-complaint", "Email"),
    ],
)
def test_a_record_without_recipient_is_rejected_with_a_reason(fixture, recipient_key):
    body = body_of(fixture)
    del body[recipient_key]
    [result] = parse(body)
    assert isinstance(result, Rejected)
    assert "no recipient" in result.reason
    assert json.loads(result.payload) == body


def test_a_recipient_that_is_not_an_address_is_rejected():
    [result] = parse(dict(body_of("delivery"), Recipient="john at example"))
    assert isinstance(result, Rejected)
    assert "'email' is not an email address" in result.reason


def test_a_record_without_its_time_is_rejected():
    body = body_of("open")
    del body["ReceivedAt"]
    [result] = parse(body)
    assert isinstance(result, Rejected)
    assert "timestamp" in result.reason


# --- several records, dedup ----------------------------------------------------------------------


def test_a_body_with_several_records_keeps_their_order():
    body = [body_of("delivery"), reactivation(), body_of("open"), body_of("bounce"),
            body_of("click")]
    results = parse(body)
    assert [type(r).__name__ for r in results] == [
        "Accepted", "Ignored", "Accepted", "Accepted", "Accepted",
    ]
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.event_type for r in results if isinstance(r, Accepted)] == [
        "email_delivered", "email_opened", "email_bounced", "email_clicked",
    ]


def test_the_same_body_parsed_twice_gives_the_same_key():
    for name in ("delivery", "open", "click", "spam-complaint", "subscription-change", "bounce"):
        first = accepted(body_of(name)).dedup_key
        again = accepted(copy.deepcopy(body_of(name))).dedup_key
        assert first == again, name


def test_different_records_get_different_keys():
    keys = {
        name: accepted(body_of(name)).dedup_key
        for name in ("delivery", "open", "click", "spam-complaint", "subscription-change", "bounce")
    }
    assert len(set(keys.values())) == len(keys)
    # Two opens of the same message at different times are two events.
    later_open = dict(body_of("open"), FirstOpen=False, ReceivedAt="2019-11-05T17:00:00.0000000Z")
    assert accepted(later_open).dedup_key != keys["open"]
    # The same click on another link is another event.
    other_link = dict(body_of("click"), OriginalLink="https://example.com/pricing")
    assert accepted(other_link).dedup_key != keys["click"]
    # Two bounces are told apart by their IDs.
    other_bounce = dict(body_of("bounce"), ID=4323372036854775806)
    assert accepted(other_bounce).dedup_key == "4323372036854775806"
