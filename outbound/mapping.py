"""Pure mapping of stored Nudgespot events to Segment messages."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

from segment.analytics.version import VERSION as LIBRARY_VERSION

from models.schema import DEFAULT_FORMAT, EVENT_NAME_KEY, FORMAT_KEY, SEGMENT_EVENT_NAMES
from outbound.packing import serialize

INTEGRATIONS = {"Nudgespot": False}  # keep the events from looping back into Nudgespot
MESSAGE_ID_PREFIX = "nudgespot-"
# What mapping a stored event that cannot become a message raises (it then fails alone).
MAPPING_ERRORS = (KeyError, TypeError, ValueError, AttributeError, RecursionError)

# (normalized field, Segment property) for every event, then per event type.
COMMON_PROPERTIES = (
    ("message_id", "email_id"),
    ("subject", "email_subject"),
    ("campaign_id", "campaign_id"),
    ("campaign_name", "campaign_name"),
)
TYPE_PROPERTIES = {
    "email_clicked": (("link_id", "link_id"), ("link_url", "link_url")),
    "email_unsubscribed": (("list_id", "list_id"), ("list_name", "list_name")),
    "email_bounced": (("bounce_type", "bounce_type"), ("bounce_reason", "bounce_reason")),
}
# A custom event name is sent with every mapped property the event has.
ALL_TYPE_PROPERTIES = tuple(pair for pairs in TYPE_PROPERTIES.values() for pair in pairs)
TRAIT_FIELDS = ("email", "first_name", "last_name", "name")


def message_id(source: str, dedup_key: str, kind: str = "track") -> str:
    """Return the messageId of an event: a function of source and dedup key only (74 chars)."""
    material = f"{kind}\x00{source}\x00{dedup_key}".encode("utf-8", "surrogatepass")
    return MESSAGE_ID_PREFIX + hashlib.sha256(material).hexdigest()


def user_key(fields: dict[str, Any]) -> str:
    """Return the identity a message is sent under: 'user:<uid>' or 'anon:<email>'."""
    uid = fields.get("user_id")
    return f"user:{uid}" if uid else f"anon:{fields.get('email')}"


def segment_timestamp(instant: datetime) -> str:
    """Return an instant as Segment expects it: UTC ISO 8601 with milliseconds and 'Z'."""
    utc = instant.astimezone(timezone.utc)
    if utc.year >= 1000:  # isoformat pads the year to 4 digits, strftime does not
        return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def track(
    source: str,
    dedup_key: str,
    event_type: str,
    event_time: datetime,
    fields: dict[str, Any],
    service_version: str,
) -> dict[str, Any]:
    """Return the Segment track message for a stored event."""
    message: dict[str, Any] = {"type": "track", "event": event_name(event_type, fields)}
    message.update(_identity(fields))
    message["timestamp"] = segment_timestamp(event_time)
    message["properties"] = _properties(event_type, fields)
    message["context"] = _context(fields, service_version)
    message["integrations"] = dict(INTEGRATIONS)
    message["messageId"] = message_id(source, dedup_key)
    return message


def track_text(
    source: str,
    dedup_key: str,
    event_type: str,
    event_time: datetime,
    fields: dict[str, Any],
    service_version: str,
) -> str | None:
    """Return the track message as it goes into a batch (stored at ingest, so the publisher
    neither maps nor measures it), or None when the event cannot be mapped: the publisher
    then tries again and says why."""
    try:
        return serialize(track(source, dedup_key, event_type, event_time, fields,
                               service_version))
    except MAPPING_ERRORS:
        return None


def event_name(event_type: str, fields: dict[str, Any]) -> str:
    """Return the Segment event name: the Email spec's, or the custom name a format chose."""
    return SEGMENT_EVENT_NAMES.get(event_type) or fields[EVENT_NAME_KEY]


def identify(
    source: str, event_time: datetime, fields: dict[str, Any], service_version: str
) -> dict[str, Any]:
    """Return the identify message that introduces an event's recipient, with their traits."""
    message: dict[str, Any] = {"type": "identify"}
    message.update(_identity(fields))
    message["traits"] = _traits(fields)
    message["timestamp"] = segment_timestamp(event_time)
    context = _context(fields, service_version)
    context.pop("ip", None)
    context.pop("userAgent", None)
    message["context"] = context
    message["integrations"] = dict(INTEGRATIONS)
    message["messageId"] = message_id(source, user_key(fields), kind="identify")
    return message


def _identity(fields: dict[str, Any]) -> dict[str, str]:
    uid = fields.get("user_id")
    return {"userId": uid} if uid else {"anonymousId": fields["email"]}


def _properties(event_type: str, fields: dict[str, Any]) -> dict[str, Any]:
    properties = dict(fields.get("properties") or {})
    for field, name in COMMON_PROPERTIES + _type_properties(event_type):
        value = fields.get(field)
        if value is not None:
            properties[name] = value
    return properties


def _type_properties(event_type: str) -> tuple[tuple[str, str], ...]:
    if event_type in SEGMENT_EVENT_NAMES:
        return TYPE_PROPERTIES.get(event_type, ())
    return ALL_TYPE_PROPERTIES


def _traits(fields: dict[str, Any]) -> dict[str, str]:
    return {name: fields[name] for name in TRAIT_FIELDS if fields.get(name) is not None}


def _context(fields: dict[str, Any], service_version: str) -> dict[str, Any]:
    context: dict[str, Any] = {}
    traits = _traits(fields)
    if traits:
        context["traits"] = traits
    if fields.get("ip") is not None:
        context["ip"] = fields["ip"]
    if fields.get("user_agent") is not None:
        context["userAgent"] = fields["user_agent"]
    name = fields.get(FORMAT_KEY) or DEFAULT_FORMAT
    context["integration"] = {"name": name, "version": service_version}
    context["library"] = {"name": "analytics-python", "version": LIBRARY_VERSION}
    return context
