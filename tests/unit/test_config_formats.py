"""Config loading of sender formats: sources[].format, the `formats:` section, `extends:`,
and the secrets each format takes (verification_key, signing_secret, basic_auth).

Every error must name the key path an operator has to fix. What a format does is checked by
parsing events with the loaded `settings.formats[name]`, never by looking at its internals.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from inbound.parse import Accepted, Ignored, Rejected
from outbound import mapping
from service import cli
from service.config import ConfigError, Settings, load_settings, parse_settings

TOKEN = "webhook-token-0001"
OTHER_TOKEN = "webhook-token-0002"
WRITE_KEY = "segment-write-key-0001"
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
VERSION = "9.9.9"
PRESETS = ("sendgrid", "mailgun", "postmark", "customerio")
BUILTINS = ("nudgespot", *PRESETS)

# SendGrid's published test key (sendgrid-python test_eventwebhook.py): base64 DER, P-256.
SENDGRID_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+"
    "2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SIGNING = "signing-secret-0001"
BASIC = "hook-user:hook-password-0001"

# A custom format: the worked example of docs/formats.md ("Parcelmail").
PARCELMAIL: dict[str, Any] = {
    "events": "data.items",
    "timestamp_unit": "ms",
    "fields": {
        "id": "uuid",
        "event": "kind",
        "timestamp": "at",
        "email": "to.address",
        "user_id": "to.customer_id",
        "message_id": "mail.id",
        "subject": "mail.subject",
        "list_id": "list.id",
        "list_name": "list.title",
        "properties": "meta",
    },
    "event_names": {"opened": "Email Opened", "list.left": "Email Unsubscribed"},
    "ignore": ["queued"],
}
PARCELMAIL_BODY = {"data": {"items": [
    {"uuid": "pm-71", "kind": "opened", "at": 1795167060000,
     "to": {"address": "ada@example.com", "customer_id": "42"},
     "mail": {"id": "m-9", "subject": "Your receipt"}, "meta": {"variant": "B"}},
    {"uuid": "pm-72", "kind": "list.left", "at": 1795167120000,
     "to": {"address": "bob@example.com"}, "list": {"id": "news", "title": "Newsletter"}},
    {"uuid": "pm-73", "kind": "queued", "at": 1795167130000, "to": {"address": "cy@example.com"}},
]}}

# SendGrid-shaped events, written by hand.
SG_PROCESSED = {"email": "alex@example.com", "timestamp": 1513299569, "event": "processed",
                "sg_event_id": "sg-processed-1", "sg_message_id": "msg-1",
                "subject_line": "Welcome"}
SG_OPEN = {"email": "alex@example.com", "timestamp": 1513299570, "event": "open",
           "sg_event_id": "sg-open-1", "sg_message_id": "msg-1", "useragent": "Mozilla/4.0",
           "ip": "203.0.113.9", "subject_line": "Welcome"}
SG_DEFERRED = {"email": "alex@example.com", "timestamp": 1513299571, "event": "deferred",
               "sg_event_id": "sg-deferred-1", "sg_message_id": "msg-1"}
SG_DROPPED = {"email": "alex@example.com", "timestamp": 1513299572, "event": "dropped",
              "sg_event_id": "sg-dropped-1", "sg_message_id": "msg-1"}


# --- helpers -------------------------------------------------------------------------------------


def source(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "default", "token": TOKEN, "write_key": WRITE_KEY}
    entry.update(overrides)
    return entry


def document(*sources: dict[str, Any], formats: Any = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"sources": list(sources) or [source()]}
    if formats is not None:
        doc["formats"] = formats
    return doc


def acme(**overrides: Any) -> dict[str, Any]:
    """The Parcelmail definition with some top-level keys replaced (None removes a key)."""
    definition = copy.deepcopy(PARCELMAIL)
    for key, value in overrides.items():
        if value is None:
            definition.pop(key, None)
        else:
            definition[key] = value
    return definition


def acme_fields(**overrides: Any) -> dict[str, Any]:
    """The Parcelmail definition with some fields replaced (None removes a field)."""
    fields = dict(PARCELMAIL["fields"])
    for key, value in overrides.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return acme(fields=fields)


def load(doc: dict[str, Any]) -> Settings:
    return parse_settings(doc, {})


def error_of(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(doc, {})
    return str(info.value)


def format_error(definition: Any, name: str = "acme") -> str:
    return error_of(document(formats={name: definition}))


def parse(settings: Settings, name: str, body: Any) -> list[Any]:
    return settings.formats[name].parse(json.dumps(body).encode(), NOW)


def parse_one(settings: Settings, name: str, event: dict[str, Any]) -> Any:
    results = parse(settings, name, [event])
    assert len(results) == 1
    return results[0]


def track(accepted: Accepted, source_name: str = "src") -> dict[str, Any]:
    message = mapping.track(source_name, accepted.dedup_key, accepted.event_type,
                            accepted.event_time, accepted.fields, VERSION)
    message["context"].pop("library", None)
    return message


def extending(base: str, **definition: Any) -> Settings:
    return load(document(formats={"mine": {"extends": base, **definition}}))


# --- sources[].format ----------------------------------------------------------------------------


def test_source_without_format_uses_nudgespot():
    settings = load(document())
    assert settings.sources[0].format == "nudgespot"
    assert settings.format_of(settings.sources[0]).name == "nudgespot"


def test_source_without_format_parses_nudgespot_events():
    settings = load(document())
    event = {"id": "ev-1", "event": "open", "timestamp": 1700000000, "subscriber": {"uid": "7"}}
    result = settings.format_of(settings.sources[0]).parse(json.dumps(event).encode(), NOW)
    assert [(r.event_type, r.dedup_key) for r in result] == [("email_opened", "ev-1")]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_format_is_accepted(preset):
    settings = load(document(source(format=preset)))
    assert settings.sources[0].format == preset
    assert settings.format_of(settings.sources[0]).name == preset


def test_unknown_format_names_the_source_key():
    message = error_of(document(source(format="nope")))
    assert message.startswith("sources[0].format:")
    assert "'nope'" in message


@pytest.mark.parametrize("known", BUILTINS)
def test_unknown_format_error_lists_every_known_format(known):
    assert known in error_of(document(source(format="nope")))


def test_unknown_format_error_lists_the_custom_formats_too():
    message = error_of(document(source(format="nope"), formats={"acme": acme()}))
    assert "acme" in message


def test_unknown_format_in_the_second_source_names_its_index():
    doc = document(source(), source(name="other", token=OTHER_TOKEN, format="nope"))
    assert error_of(doc).startswith("sources[1].format:")


def test_source_may_use_a_custom_format():
    settings = load(document(source(format="acme"), formats={"acme": acme()}))
    assert settings.format_of(settings.sources[0]).name == "acme"


def test_format_from_the_environment_is_read():
    doc = document(source(format="${HOOK_FORMAT}"))
    settings = parse_settings(doc, {"HOOK_FORMAT": "mailgun"})
    assert settings.sources[0].format == "mailgun"


# --- formats: a custom format --------------------------------------------------------------------


def test_custom_format_of_the_example_parses_the_example_body():
    settings = load(document(formats={"parcelmail": acme()}))
    results = parse(settings, "parcelmail", PARCELMAIL_BODY)

    assert [type(r) for r in results] == [Accepted, Accepted, Ignored]
    assert [r.index for r in results] == [0, 1, 2]
    assert results[2].name == "queued"


def test_custom_format_of_the_example_maps_the_open_as_documented():
    settings = load(document(formats={"parcelmail": acme()}))
    opened = parse(settings, "parcelmail", PARCELMAIL_BODY)[0]

    message = track(opened)
    message.pop("messageId")
    assert opened.dedup_key == "pm-71"
    assert message == {
        "type": "track",
        "event": "Email Opened",
        "userId": "42",
        "timestamp": "2026-11-20T09:31:00.000Z",
        "properties": {"variant": "B", "email_id": "m-9", "email_subject": "Your receipt"},
        "context": {"traits": {"email": "ada@example.com"},
                    "integration": {"name": "parcelmail", "version": VERSION}},
        "integrations": {"Nudgespot": False},
    }


def test_custom_format_of_the_example_maps_the_list_leave_to_an_unsubscribe():
    settings = load(document(formats={"parcelmail": acme()}))
    left = parse(settings, "parcelmail", PARCELMAIL_BODY)[1]

    message = track(left)
    assert message["event"] == "Email Unsubscribed"
    assert message["anonymousId"] == "bob@example.com"
    assert message["timestamp"] == "2026-11-20T09:32:00.000Z"
    assert message["properties"] == {"list_id": "news", "list_name": "Newsletter"}


def test_custom_format_loads_from_a_yaml_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document(source(format="parcelmail"),
                                            formats={"parcelmail": acme()})), encoding="utf-8")
    settings = load_settings(path, env={})
    assert settings.format_of(settings.sources[0]).name == "parcelmail"


def test_formats_section_that_is_not_a_mapping_is_refused():
    assert error_of(document(formats=["acme"])).startswith("formats:")


def test_format_definition_that_is_not_a_mapping_is_named():
    assert format_error("data.items").startswith("formats.acme:")


def test_invalid_field_expression_names_the_field_key():
    message = format_error(acme_fields(email="to.address["))
    assert message.startswith("formats.acme.fields.email:")


def test_invalid_field_expression_is_quoted_in_the_error():
    assert "'to.address['" in format_error(acme_fields(email="to.address["))


def test_invalid_events_expression_names_the_events_key():
    message = format_error(acme(events="data.[items"))
    assert message.startswith("formats.acme.events:")
    assert "'data.[items'" in message


@pytest.mark.parametrize("value", [5, "", "   ", ["kind"], True])
def test_field_expression_that_is_not_a_non_empty_string_names_the_field(value):
    assert format_error(acme_fields(subject=value)).startswith("formats.acme.fields.subject:")


def test_unknown_field_name_is_named():
    message = format_error(acme_fields(mail_subject="mail.subject"))
    assert message.startswith("formats.acme.fields.mail_subject:")


def test_unknown_field_error_lists_the_allowed_fields():
    message = format_error(acme_fields(mail_subject="mail.subject"))
    assert "subject" in message and "bounce_reason" in message


def test_unknown_top_level_key_of_a_format_is_named():
    assert format_error(acme(evnets="data.items")).startswith("formats.acme.evnets:")


def test_fields_that_is_not_a_mapping_is_named():
    assert format_error(acme(fields=["kind", "at"])).startswith("formats.acme.fields:")


@pytest.mark.parametrize("required", ["event", "timestamp"])
def test_missing_required_field_is_named(required):
    message = format_error(acme_fields(**{required: None}))
    assert message.startswith(f"formats.acme.fields.{required}:")


def test_format_without_email_or_user_id_is_refused_naming_fields():
    message = format_error(acme_fields(email=None, user_id=None))
    assert message.startswith("formats.acme.fields:")
    assert "email" in message and "user_id" in message


@pytest.mark.parametrize("kept", ["email", "user_id"])
def test_email_or_user_id_alone_is_enough(kept):
    dropped = "user_id" if kept == "email" else "email"
    settings = load(document(formats={"acme": acme_fields(**{dropped: None})}))
    assert settings.formats["acme"].name == "acme"


@pytest.mark.parametrize("names", [None, {}])
def test_missing_or_empty_event_names_is_named(names):
    assert format_error(acme(event_names=names)).startswith("formats.acme.event_names:")


@pytest.mark.parametrize("target", [5, True, "", "  ", ["Email Opened"], {"a": "b"}])
def test_event_name_that_is_not_a_non_empty_string_is_named(target):
    message = format_error(acme(event_names={"opened": target}))
    assert message.startswith("formats.acme.event_names.opened:")


def test_event_names_that_is_not_a_mapping_is_named():
    message = format_error(acme(event_names=["opened"]))
    assert message.startswith("formats.acme.event_names:")


def test_timestamp_unit_hours_is_named():
    message = format_error(acme(timestamp_unit="hours"))
    assert message.startswith("formats.acme.timestamp_unit:")
    assert "'hours'" in message


@pytest.mark.parametrize("unit", ["s", "ms", "auto"])
def test_timestamp_units_are_accepted(unit):
    assert load(document(formats={"acme": acme(timestamp_unit=unit)})).formats["acme"]


def test_unknown_auth_is_named():
    message = format_error(acme(auth="bogus"))
    assert message.startswith("formats.acme.auth:")
    assert "'bogus'" in message


@pytest.mark.parametrize("auth", ["nudgespot", "sendgrid", "mailgun", "customerio", "none"])
def test_known_auth_schemes_are_accepted(auth):
    assert load(document(formats={"acme": acme(auth=auth)})).formats["acme"].auth == auth


@pytest.mark.parametrize("ignore", [5, [5], ["queued", None], [""], {"queued": True}, [["a"]]])
def test_ignore_that_is_not_a_list_of_strings_is_named(ignore):
    assert format_error(acme(ignore=ignore)).startswith("formats.acme.ignore:")


def test_custom_format_without_ignore_rejects_the_unlisted_event():
    settings = load(document(formats={"acme": acme(ignore=None)}))
    assert isinstance(parse(settings, "acme", PARCELMAIL_BODY)[2], Rejected)


def test_first_bad_format_is_the_one_named():
    doc = document(formats={"good": acme(), "bad": acme_fields(subject="mail.[")})
    assert error_of(doc).startswith("formats.bad.fields.subject:")


# --- extends -------------------------------------------------------------------------------------


def test_extends_a_preset_replaces_the_one_field_given():
    settings = extending("sendgrid", fields={"subject": "subject_line"})
    result = parse_one(settings, "mine", SG_PROCESSED)

    assert isinstance(result, Accepted)
    assert result.fields["subject"] == "Welcome"


def test_extends_a_preset_keeps_the_fields_not_given():
    settings = extending("sendgrid", fields={"subject": "subject_line"})
    result = parse_one(settings, "mine", SG_PROCESSED)

    assert result.dedup_key == "sg-processed-1"  # the preset's id field
    assert result.fields["email"] == "alex@example.com"
    assert result.fields["message_id"] == "msg-1"
    assert result.event_type == "email_sent"


def test_extends_a_preset_with_a_field_set_to_null_removes_that_field():
    plain = parse_one(load(document()), "sendgrid", SG_OPEN)
    settings = extending("sendgrid", fields={"user_agent": None})
    result = parse_one(settings, "mine", SG_OPEN)

    assert plain.fields["user_agent"] == "Mozilla/4.0"  # the preset reads it...
    assert "user_agent" not in result.fields  # ...the extension does not
    assert "userAgent" not in track(result)["context"]


def test_extends_a_preset_cannot_remove_a_required_field():
    message = error_of(document(formats={"mine": {"extends": "sendgrid",
                                                  "fields": {"timestamp": None}}}))
    assert message.startswith("formats.mine.fields.timestamp:")


def test_extends_merges_event_names_adding_one():
    settings = extending("sendgrid", event_names={"deferred": "Email Deferred"})
    deferred, processed = parse(settings, "mine", [SG_DEFERRED, SG_PROCESSED])

    assert track(deferred)["event"] == "Email Deferred"
    assert track(processed)["event"] == "Email Sent"


def test_extends_with_an_event_name_set_to_null_removes_it():
    settings = extending("sendgrid", event_names={"open": None})
    result = parse_one(settings, "mine", SG_OPEN)

    assert isinstance(result, Rejected)
    assert "unknown event 'open'" in result.reason


def test_extends_replaces_ignore():
    settings = extending("sendgrid", ignore=["dropped"])
    deferred, dropped = parse(settings, "mine", [SG_DEFERRED, SG_DROPPED])

    assert isinstance(deferred, Rejected)  # the preset ignored it; the replacement does not
    assert isinstance(dropped, Ignored)


def test_extends_keeps_ignore_when_not_given():
    settings = extending("sendgrid", fields={"subject": "subject_line"})
    assert isinstance(parse_one(settings, "mine", SG_DEFERRED), Ignored)


def test_extends_a_preset_gives_the_event_the_new_format_name():
    settings = extending("sendgrid", fields={"subject": "subject_line"})
    message = track(parse_one(settings, "mine", SG_PROCESSED))
    assert message["context"]["integration"]["name"] == "mine"


def test_extends_a_preset_inherits_its_auth():
    assert extending("sendgrid").formats["mine"].auth == "sendgrid"


def test_extends_a_preset_may_replace_its_auth():
    assert extending("sendgrid", auth="none").formats["mine"].auth == "none"


def test_extends_nudgespot_with_another_email_field():
    settings = extending("nudgespot", fields={"email": "recipient.email_address"})
    event = {"id": "ev-1", "event": "open", "timestamp": 1700000000,
             "recipient": {"email_address": "ada@example.com"}}
    result = parse_one(settings, "mine", event)

    assert isinstance(result, Accepted)
    assert result.fields["email"] == "ada@example.com"
    assert result.event_type == "email_opened"


def test_extends_a_chain_custom_on_custom_on_preset():
    formats = {
        "base": {"extends": "sendgrid", "fields": {"subject": "subject_line"}},
        "top": {"extends": "base", "event_names": {"deferred": "Email Deferred"}},
    }
    settings = load(document(formats=formats))
    deferred, processed = parse(settings, "top", [SG_DEFERRED, SG_PROCESSED])

    assert track(deferred)["event"] == "Email Deferred"  # from top
    assert processed.fields["subject"] == "Welcome"  # from base
    assert processed.dedup_key == "sg-processed-1"  # from sendgrid


def test_extends_chain_child_field_wins_over_the_parents():
    formats = {
        "base": {"extends": "sendgrid", "fields": {"subject": "subject_line"}},
        "top": {"extends": "base", "fields": {"subject": "sg_message_id"}},
    }
    settings = load(document(formats=formats))
    assert parse_one(settings, "top", SG_PROCESSED).fields["subject"] == "msg-1"


def test_extends_chain_leaves_the_parent_format_unchanged():
    formats = {
        "base": {"extends": "sendgrid", "fields": {"subject": "subject_line"}},
        "top": {"extends": "base", "fields": {"subject": None}},
    }
    settings = load(document(formats=formats))
    assert "subject" not in parse_one(settings, "top", SG_PROCESSED).fields
    assert parse_one(settings, "base", SG_PROCESSED).fields["subject"] == "Welcome"


def test_extends_loop_of_two_formats_is_refused():
    formats = {"a": {"extends": "b"}, "b": {"extends": "a"}}
    message = error_of(document(formats=formats))
    assert message.startswith("formats.a.extends:")
    assert "loop" in message


def test_format_extending_itself_is_refused():
    message = error_of(document(formats={"a": {**acme(), "extends": "a"}}))
    assert message.startswith("formats.a.extends:")
    assert "loop" in message


def test_extends_an_unknown_format_names_the_extends_key():
    message = error_of(document(formats={"acme": {**acme(), "extends": "zzz"}}))
    assert message.startswith("formats.acme.extends:")
    assert "'zzz'" in message


def test_extends_that_is_not_a_name_is_named():
    message = error_of(document(formats={"acme": {**acme(), "extends": ["sendgrid"]}}))
    assert message.startswith("formats.acme.extends:")


def test_extends_unknown_in_a_chain_names_the_format_whose_extends_is_wrong():
    formats = {"a": {"extends": "b"}, "b": {**acme(), "extends": "zzz"}}
    assert error_of(document(formats=formats)).startswith("formats.b.extends:")


def test_bad_expression_in_a_parent_is_named_under_the_parent():
    formats = {"a": {"extends": "b"}, "b": acme_fields(subject="mail.[")}
    assert error_of(document(formats=formats)).startswith("formats.b.fields.subject:")


@pytest.mark.parametrize("builtin", BUILTINS)
def test_custom_format_named_like_a_builtin_is_refused(builtin):
    message = error_of(document(formats={builtin: acme()}))
    assert message.startswith(f"formats.{builtin}:")
    assert "built-in" in message


# --- secrets per format --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["nudgespot", "mailgun", "postmark", "customerio"])
def test_verification_key_on_a_non_sendgrid_source_is_named(fmt):
    message = error_of(document(source(format=fmt, verification_key=SENDGRID_KEY)))
    assert message.startswith("sources[0].verification_key:")
    assert SENDGRID_KEY not in message


def test_verification_key_on_the_second_source_names_its_index():
    doc = document(source(), source(name="other", token=OTHER_TOKEN,
                                    verification_key=SENDGRID_KEY))
    assert error_of(doc).startswith("sources[1].verification_key:")


def test_signing_secret_on_a_sendgrid_source_is_named():
    message = error_of(document(source(format="sendgrid", signing_secret=SIGNING)))
    assert message.startswith("sources[0].signing_secret:")
    assert SIGNING not in message


def test_signing_secret_on_a_custom_format_with_sendgrid_auth_is_named():
    doc = document(source(format="mine", signing_secret=SIGNING),
                   formats={"mine": {"extends": "sendgrid"}})
    assert error_of(doc).startswith("sources[0].signing_secret:")


def test_verification_key_on_a_custom_format_with_sendgrid_auth_loads():
    doc = document(source(format="mine", verification_key=SENDGRID_KEY),
                   formats={"mine": {"extends": "sendgrid"}})
    assert load(doc).sources[0].verification_key == SENDGRID_KEY


def test_sendgrid_base64_der_verification_key_loads():
    settings = load(document(source(format="sendgrid", verification_key=SENDGRID_KEY)))
    assert settings.sources[0].verification_key == SENDGRID_KEY


def test_sendgrid_pem_verification_key_loads():
    settings = load(document(source(format="sendgrid", verification_key=_pem(SENDGRID_KEY))))
    assert settings.sources[0].verification_key.startswith("-----BEGIN PUBLIC KEY-----")


def test_sendgrid_without_verification_key_loads():
    assert load(document(source(format="sendgrid"))).sources[0].verification_key == ""


def _pem(base64_der: str) -> str:
    key = serialization.load_der_public_key(base64.b64decode(base64_der))
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _base64_der(key: Any) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def _not_p256_keys() -> list[tuple[str, str]]:
    return [
        ("text", "not-a-key-secret-0001"),
        ("base64 of no key", base64.b64encode(b"secret-bytes-that-are-no-key").decode()),
        ("P-384", _base64_der(ec.generate_private_key(ec.SECP384R1()))),
        ("RSA", _base64_der(rsa.generate_private_key(public_exponent=65537, key_size=1024))),
        ("truncated P-256", SENDGRID_KEY[:40]),
    ]


@pytest.mark.parametrize(("label", "key"), _not_p256_keys(), ids=lambda v: str(v)[:20])
def test_verification_key_that_is_not_a_p256_public_key_is_named(label, key):
    message = error_of(document(source(format="sendgrid", verification_key=key)))
    assert message.startswith("sources[0].verification_key:"), label


@pytest.mark.parametrize(("label", "key"), _not_p256_keys(), ids=lambda v: str(v)[:20])
def test_verification_key_error_does_not_show_the_key(label, key):
    message = error_of(document(source(format="sendgrid", verification_key=key)))
    assert key not in message, label
    assert key[:16] not in message, label


def test_signing_secret_on_postmark_is_refused_naming_it():
    message = error_of(document(source(format="postmark", signing_secret=SIGNING)))
    assert message.startswith("sources[0].signing_secret:")
    assert SIGNING not in message


def test_signing_secret_on_a_custom_format_with_auth_none_is_refused():
    doc = document(source(format="acme", signing_secret=SIGNING),
                   formats={"acme": acme(auth="none")})
    assert error_of(doc).startswith("sources[0].signing_secret:")


@pytest.mark.parametrize("fmt", ["nudgespot", "mailgun", "customerio"])
def test_signing_secret_on_a_format_that_uses_it_loads(fmt):
    settings = load(document(source(format=fmt, signing_secret=SIGNING)))
    assert settings.sources[0].signing_secret == SIGNING


@pytest.mark.parametrize("fmt", BUILTINS)
def test_basic_auth_works_with_every_format(fmt):
    settings = load(document(source(format=fmt, basic_auth=BASIC)))
    assert settings.sources[0].basic_auth == BASIC


def test_basic_auth_without_a_colon_is_named():
    message = error_of(document(source(format="postmark", basic_auth="hookpassword0001")))
    assert message.startswith("sources[0].basic_auth:")
    assert "hookpassword0001" not in message


def test_postmark_with_basic_auth_and_no_secret_loads():
    settings = load(document(source(format="postmark", basic_auth=BASIC)))
    assert settings.format_of(settings.sources[0]).auth == "none"


# --- check-config --------------------------------------------------------------------------------


@pytest.fixture
def root_logging():
    """cli.main configures the root logger on success: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def write_config(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return str(path)


def test_check_config_exits_2_naming_a_bad_format_expression(tmp_path, capsys):
    path = write_config(tmp_path, document(source(format="acme"),
                                           formats={"acme": acme_fields(email="to.address[")}))
    status = cli.main(["check-config", "--config", path])

    captured = capsys.readouterr()
    assert status == 2
    assert "formats.acme.fields.email" in captured.err
    assert "'to.address['" in captured.err
    assert "config ok" not in captured.out


def test_check_config_exits_2_naming_a_bad_verification_key_without_showing_it(tmp_path, capsys):
    key = "not-a-key-secret-0002"
    path = write_config(tmp_path, document(source(format="sendgrid", verification_key=key)))
    status = cli.main(["check-config", "--config", path])

    captured = capsys.readouterr()
    assert status == 2
    assert "sources[0].verification_key" in captured.err
    assert key not in captured.err + captured.out


def test_check_config_accepts_a_custom_format(tmp_path, capsys, root_logging):
    path = write_config(tmp_path, document(source(format="acme"), formats={"acme": acme()}))
    status = cli.main(["check-config", "--config", path])

    assert status == 0
    assert "config ok" in capsys.readouterr().out


# --- secrets never in reprs ----------------------------------------------------------------------


@pytest.fixture
def secret_settings() -> Settings:
    return load(document(
        source(name="grid", format="sendgrid", verification_key=SENDGRID_KEY,
               basic_auth=BASIC),
        source(name="gun", token=OTHER_TOKEN, format="mailgun", signing_secret=SIGNING),
    ))


FORMAT_SECRETS = [SENDGRID_KEY, SENDGRID_KEY[20:60], SIGNING, BASIC, "hook-password-0001"]


@pytest.mark.parametrize("secret", FORMAT_SECRETS)
def test_settings_repr_hides_format_secrets(secret_settings, secret):
    assert secret not in repr(secret_settings)
    assert secret not in str(secret_settings)


@pytest.mark.parametrize("secret", FORMAT_SECRETS)
def test_source_repr_hides_format_secrets(secret_settings, secret):
    for src in secret_settings.sources:
        assert secret not in repr(src)
        assert secret not in str(src)


def test_source_repr_still_names_the_source_and_its_format(secret_settings):
    assert "grid" in repr(secret_settings.sources[0])
    assert "sendgrid" in repr(secret_settings.sources[0])
