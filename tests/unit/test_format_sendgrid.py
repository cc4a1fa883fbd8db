"""The `sendgrid` preset on SendGrid's own published Event Webhook samples.

Each fixture in tests/fixtures/formats/sendgrid is a sample as SendGrid's Event Webhook
Reference publishes it; each test states, written out by hand, the Segment track message it
must become (context.library left out) and the dedup id its messageId is made from.
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
from outbound import mapping

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats" / "sendgrid"
NOW = datetime.now(timezone.utc)
VERSION = "9.9.9"
INTEGRATION = {"name": "sendgrid", "version": VERSION}
INTEGRATIONS = {"Nudgespot": False}
MSG_ID = "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"
PROCESSED_MSG_ID = "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.000000000000000000000"
UA_MSIE = "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322; .NET CLR 2.0.50727)"
UA_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 7_1_2 like Mac OS X) AppleWebKit/537.51.2 "
    "(KHTML, like Gecko) Version/7.0 Mobile/11D257 Safari/9537.53"
)


def fixture_body(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))["body"]


def parse(body: Any) -> list[Any]:
    return builtin_format("sendgrid").parse(json.dumps(body).encode(), NOW)


def track(accepted: Accepted) -> dict[str, Any]:
    message = mapping.track(
        "src",
        accepted.dedup_key,
        accepted.event_type,
        accepted.event_time,
        accepted.fields,
        VERSION,
    )
    message["context"].pop("library", None)
    return message


def only_accepted(name: str) -> Accepted:
    results = parse(fixture_body(name))
    assert len(results) == 1
    assert isinstance(results[0], Accepted), results[0]
    return results[0]


def check(name: str, expected: dict[str, Any], dedup_id: str | None) -> Accepted:
    accepted = only_accepted(name)
    message = track(accepted)
    message_id = message.pop("messageId")
    assert message == expected
    if dedup_id is not None:
        assert accepted.dedup_key == dedup_id
        assert message_id == mapping.message_id("src", dedup_id)
    return accepted


def test_preset_checks_sendgrid_signatures() -> None:
    assert builtin_format("sendgrid").auth == "sendgrid"


# --- one test per published sample ------------------------------------------------------------


def test_processed() -> None:
    check(
        "processed",
        {
            "type": "track",
            "event": "Email Sent",
            "anonymousId": "alex@example.com",
            "timestamp": "2017-12-15T00:59:29.000Z",
            "properties": {
                "category": "cat facts",
                "email_id": PROCESSED_MSG_ID,
            },
            "context": {"traits": {"email": "alex@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "rbtnWrG1DVDGGGFHFyun0A==",
    )


def test_processed_with_ip_pool() -> None:
    check(
        "processed-pool",
        {
            "type": "track",
            "event": "Email Sent",
            "anonymousId": "alex@example.com",
            "timestamp": "2015-03-26T22:39:38.000Z",
            "properties": {"email_id": "14c583da911.2c36.1c804d.filter-406.22375.55148AA99.0"},
            "context": {"traits": {"email": "alex@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "RHFZB1IrTD2Y9Q7bUdZxUw",
    )


def test_delivered() -> None:
    check(
        "delivered",
        {
            "type": "track",
            "event": "Email Delivered",
            "anonymousId": "alex@example.com",
            "timestamp": "2017-12-15T00:59:29.000Z",
            "properties": {"category": "cat facts", "email_id": MSG_ID},
            "context": {"traits": {"email": "alex@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "rWVYmVk90MjZJ9iohOBa3w==",
    )


def test_open() -> None:
    check(
        "open",
        {
            "type": "track",
            "event": "Email Opened",
            "anonymousId": "alex@example.com",
            "timestamp": "2017-12-15T00:59:29.000Z",
            "properties": {"category": "cat facts", "machine_open": False, "email_id": MSG_ID},
            "context": {
                "traits": {"email": "alex@example.com"},
                "ip": "255.255.255.255",
                "userAgent": UA_MSIE,
                "integration": INTEGRATION,
            },
            "integrations": INTEGRATIONS,
        },
        "FOTFFO0ecsBE-zxFXfs6WA==",
    )


def test_click() -> None:
    check(
        "click",
        {
            "type": "track",
            "event": "Email Link Clicked",
            "anonymousId": "email@example.com",
            "timestamp": "2009-08-11T00:00:00.000Z",
            "properties": {
                "category": ["category1", "category2"],
                "email_id": "sendgrid_internal_message_id",
                "link_id": "0",
                "link_url": "http://example.com/blog/news.html",
            },
            "context": {
                "traits": {"email": "email@example.com"},
                "ip": "255.255.255.255",
                "userAgent": UA_IPHONE,
                "integration": INTEGRATION,
            },
            "integrations": INTEGRATIONS,
        },
        "sendgrid_internal_event_id",
    )


def test_bounce() -> None:
    check(
        "bounce",
        {
            "type": "track",
            "event": "Email Bounced",
            "anonymousId": "alex@example.com",
            "timestamp": "2017-12-15T00:59:29.000Z",
            "properties": {
                "category": "cat facts",
                "bounce_classification": "Invalid Address",
                "smtp_status": "5.0.0",
                "email_id": MSG_ID,
                "bounce_type": "bounce",
                "bounce_reason": "500 unknown recipient",
            },
            "context": {"traits": {"email": "alex@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "6g4ZI7SA-xmRDv57GoPIPw==",
    )


def test_blocked_bounce_is_a_bounce_of_type_blocked() -> None:
    check(
        "blocked",
        {
            "type": "track",
            "event": "Email Bounced",
            "anonymousId": "alex@example.com",
            "timestamp": "2017-12-15T00:59:29.000Z",
            "properties": {
                "category": "cat facts",
                "bounce_classification": "Invalid Address",
                "smtp_status": "5.0.0",
                "email_id": MSG_ID,
                "bounce_type": "blocked",
                "bounce_reason": "500 unknown recipient",
            },
            "context": {"traits": {"email": "alex@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "6g4ZI7SA-xmRDv57GoPIPw==",
    )


def test_spamreport() -> None:
    check(
        "spamreport",
        {
            "type": "track",
            "event": "Email Marked as Spam",
            "anonymousId": "alex@example.com",
            "timestamp": "2017-12-15T00:59:29.000Z",
            "properties": {"email_id": MSG_ID},
            "context": {"traits": {"email": "alex@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "37nvH5QBz858KGVYCM4uOA==",
    )


def test_unsubscribe() -> None:
    check(
        "unsubscribe",
        {
            "type": "track",
            "event": "Email Unsubscribed",
            "anonymousId": "alex@example.com",
            "timestamp": "2017-12-15T00:59:29.000Z",
            "properties": {"category": "cat facts", "email_id": MSG_ID},
            "context": {"traits": {"email": "alex@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "zz_BjPgU_5pS-J8vlfB1sg==",
    )


def test_group_unsubscribe() -> None:
    check(
        "group_unsubscribe",
        {
            "type": "track",
            "event": "Email Unsubscribed",
            "anonymousId": "alex@example.com",
            "timestamp": "2017-12-15T00:59:29.000Z",
            "properties": {"category": "cat facts", "email_id": MSG_ID, "list_id": "10"},
            "context": {
                "traits": {"email": "alex@example.com"},
                "ip": "255.255.255.255",
                "userAgent": UA_MSIE,
                "integration": INTEGRATION,
            },
            "integrations": INTEGRATIONS,
        },
        "ahSCB7xYcXFb-hEaawsPRw==",
    )


def test_single_send_open_with_millisecond_timestamp() -> None:
    check(
        "open-single-send",
        {
            "type": "track",
            "event": "Email Opened",
            "anonymousId": "alex@example.com",
            "timestamp": "2020-06-09T18:19:12.372Z",
            "properties": {
                "template_id": "sendgrid_template_id",
                "template_name": "sendgrid_template_name",
                "email_id": "sendgrid_internal_message_id",
                "campaign_id": "sendgrid_singlesend_id",
                "campaign_name": "Example Single Send",
            },
            "context": {
                "traits": {"email": "alex@example.com"},
                "ip": "127.0.0.1",
                "userAgent": UA_MSIE,
                "integration": INTEGRATION,
            },
            "integrations": INTEGRATIONS,
        },
        "sendgrid_internal_event_id",
    )


def test_marketing_campaign_processed_single_object_body() -> None:
    check(
        "processed-marketing-campaign",
        {
            "type": "track",
            "event": "Email Sent",
            "anonymousId": "alex@example.com",
            "timestamp": "2015-09-15T20:37:08.000Z",
            "properties": {
                "email_id": "sendgrid_internal_message_id",
                "campaign_id": "12345",
                "campaign_name": "campaign name",
            },
            "context": {"traits": {"email": "alex@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "sendgrid_internal_event_id",
    )


def test_ab_test_processed() -> None:
    email = "tadpole_0010@stbase-018.sjc1.sendgrid.net"
    check(
        "processed-ab-test",
        {
            "type": "track",
            "event": "Email Sent",
            "anonymousId": email,
            "timestamp": "2015-09-15T20:44:08.000Z",
            "properties": {
                "campaign_version": "B",
                "email_id": "5lFl7Fr1Rjme_EyzNNB_5A.stfilter-015.5185.55F883172.0",
                "campaign_id": "23314",
                "campaign_name": "unique args ab",
            },
            "context": {"traits": {"email": email}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "qNOzbkTuTNCdxa1eXEpnXg",
    )


def test_ab_test_winner_delivered() -> None:
    email = "tadpole_0001@stbase-018.sjc1.sendgrid.net"
    check(
        "delivered-ab-test-winner",
        {
            "type": "track",
            "event": "Email Delivered",
            "anonymousId": email,
            "timestamp": "2015-09-15T20:45:11.000Z",
            "properties": {
                "email_id": "fPJrJPIRTxC_obpgfTy74w.stfilter-015.5185.55F883564.0",
                "campaign_id": "23314",
                "campaign_name": "unique args ab",
            },
            "context": {"traits": {"email": email}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        "X2M1IUfMRhuAhWM0CbmFqQ",
    )


def test_legacy_marketing_unsubscribe_without_ids() -> None:
    accepted = check(
        "unsubscribe-legacy-marketing",
        {
            "type": "track",
            "event": "Email Unsubscribed",
            "anonymousId": "nick@sendgrid.com",
            "timestamp": "2013-10-03T17:47:17.000Z",
            "properties": {"category": ["Tests", "Newsletter"], "list_id": "10557865"},
            "context": {"traits": {"email": "nick@sendgrid.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        None,
    )
    # No sg_event_id: the key is the hash rule's, and stable.
    assert accepted.dedup_key.startswith("sha256:")
    assert only_accepted("unsubscribe-legacy-marketing").dedup_key == accepted.dedup_key


def test_click_with_unique_args_keeps_the_mapped_fields_only() -> None:
    # SendGrid flattens unique args ("userid", "template") into the event; the preset cannot
    # tell them from its own keys, so they are not carried.
    accepted = check(
        "click-unique-args",
        {
            "type": "track",
            "event": "Email Link Clicked",
            "anonymousId": "alex@example.com",
            "timestamp": "2012-05-25T17:26:55.000Z",
            "properties": {
                "email_id": "sendgrid_internal_message_id",
                "link_url": "https://example.com",
            },
            "context": {"traits": {"email": "alex@example.com"}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        },
        None,
    )
    assert accepted.dedup_key.startswith("sha256:")


def test_reserved_keys_sample_is_matched_case_insensitively_then_rejected_for_its_time() -> None:
    # The docs' sample has event "Processed" and timestamp "123456789" (1973): the name is
    # known (matching ignores case), the time is before 2000 and so out of range.
    [result] = parse(fixture_body("processed-reserved-keys"))
    assert isinstance(result, Rejected)
    assert "timestamp" in result.reason
    assert "unknown event" not in result.reason


@pytest.mark.parametrize("name", ["categories-string", "categories-array"])
def test_category_samples_keep_order(name: str) -> None:
    results = parse(fixture_body(name))
    assert [type(r) for r in results] == [Accepted, Accepted]
    first, second = (track(r) for r in results)
    expected_category = "newuser" if name == "categories-string" else ["newuser", "transactional"]
    for message, email, category in (
        (first, "alex@example.com", expected_category),
        (second, "bobby@example.com", "olduser"),
    ):
        message.pop("messageId")
        assert message == {
            "type": "track",
            "event": "Email Opened",
            "anonymousId": email,
            "timestamp": "2012-05-25T17:26:55.000Z",
            "properties": {"category": category},
            "context": {"traits": {"email": email}, "integration": INTEGRATION},
            "integrations": INTEGRATIONS,
        }
    assert results[0].dedup_key != results[1].dedup_key


# --- ignored, rejected, order ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sender_event"),
    [
        ("deferred", "deferred"),
        ("dropped", "dropped"),
        ("group_resubscribe", "group_resubscribe"),
        ("account_status_change", "account_status_change"),
    ],
)
def test_ignored_events(name: str, sender_event: str) -> None:
    [result] = parse(fixture_body(name))
    assert isinstance(result, Ignored), result
    assert result.index == 0
    assert result.name == sender_event


def test_unknown_event_name_is_rejected() -> None:
    body = copy.deepcopy(fixture_body("delivered"))
    body[0]["event"] = "delivered_twice"
    [result] = parse(body)
    assert isinstance(result, Rejected)
    assert "unknown event" in result.reason
    assert "delivered_twice" in result.reason


def test_event_without_recipient_is_rejected_with_reason() -> None:
    body = copy.deepcopy(fixture_body("delivered"))
    del body[0]["email"]
    [result] = parse(body)
    assert isinstance(result, Rejected)
    assert "email" in result.reason


def test_all_events_sample_keeps_order() -> None:
    results = parse(fixture_body("all-events"))
    outcome = [
        r.event_type if isinstance(r, Accepted) else (type(r).__name__, getattr(r, "name", None))
        for r in results
    ]
    assert outcome == [
        "email_sent",
        ("Ignored", "deferred"),
        "email_delivered",
        "email_opened",
        "email_clicked",
        "email_bounced",
        ("Ignored", "dropped"),
        "email_marked_as_spam",
        "email_unsubscribed",
        "email_unsubscribed",
        ("Ignored", "group_resubscribe"),
        ("Ignored", "account_status_change"),
    ]
    assert [r.index for r in results] == list(range(12))
    # The published combined sample uses the placeholder sg_event_id "sg_event_id" throughout.
    assert {r.dedup_key for r in results if isinstance(r, Accepted)} == {"sg_event_id"}


def test_sending_ip_of_delivery_events_is_not_the_recipients() -> None:
    # In the combined sample, delivered and bounce carry "ip": "168.1.1.1", SendGrid's
    # sending IP; it must not become context.ip.
    results = parse(fixture_body("all-events"))
    delivered, bounced = track(results[2]), track(results[5])
    delivered.pop("messageId")
    bounced.pop("messageId")
    assert delivered == {
        "type": "track",
        "event": "Email Delivered",
        "anonymousId": "example@test.com",
        "timestamp": "2017-12-15T00:59:29.000Z",
        "properties": {"category": "cat facts", "email_id": "sg_message_id"},
        "context": {"traits": {"email": "example@test.com"}, "integration": INTEGRATION},
        "integrations": INTEGRATIONS,
    }
    assert bounced == {
        "type": "track",
        "event": "Email Bounced",
        "anonymousId": "example@test.com",
        "timestamp": "2017-12-15T00:59:29.000Z",
        "properties": {
            "category": "cat facts",
            "bounce_classification": "Invalid Address",
            "smtp_status": "5.0.0",
            "email_id": "sg_message_id",
            "bounce_reason": "500 unknown recipient",
        },
        "context": {"traits": {"email": "example@test.com"}, "integration": INTEGRATION},
        "integrations": INTEGRATIONS,
    }
