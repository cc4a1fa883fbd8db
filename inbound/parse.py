"""Pure parsing of Nudgespot webhook bodies into accepted events and rejections."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from inbound.aliases import EVENT_ALIASES

MAX_ID_CHARS = 255
MAX_EMAIL_CHARS = 320
MS_THRESHOLD = 10**12  # numeric timestamps at or above this are Unix milliseconds
MAX_UNIX_MS = 10**15  # far beyond any valid instant; bounds the arithmetic on huge numbers
MAX_NUMERIC_CHARS = 24
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
MAX_FUTURE = timedelta(days=1)

# (normalized name, object key, top-level aliases): object value wins over a top-level alias.
MESSAGE_FIELDS = (
    ("message_id", "id", ("mail_id", "message_id"), True),
    ("subject", "subject", ("subject",), False),
    ("campaign_id", "campaign_id", ("campaign_id",), True),
    ("campaign_name", "campaign_name", ("campaign_name",), False),
)
LINK_FIELDS = (("link_id", "id", (), True), ("link_url", "url", ("url",), False))
LIST_FIELDS = (("list_id", "id", (), True), ("list_name", "name", (), False))
BOUNCE_FIELDS = (("bounce_type", "type", (), False), ("bounce_reason", "reason", (), False))
SUBSCRIBER_FIELDS = (
    ("user_id", "uid", True),
    ("email", "email", False),
    ("first_name", "first_name", False),
    ("last_name", "last_name", False),
    ("name", "name", False),
)


class BodyError(ValueError):
    """The body as a whole cannot be read as webhook events."""


class Invalid(ValueError):
    """One event is not acceptable; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """An event that passed validation, normalized."""

    index: int
    event_type: str
    dedup_key: str
    event_time: datetime
    fields: dict[str, Any]
    payload: str
    fields_json: str = ""


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event the source's format drops on purpose (listed under `ignore`); never stored."""

    index: int
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event that failed validation, with the reason and what was received."""

    index: int
    reason: str
    payload: str


Parsed = Accepted | Rejected | Ignored


def _reject_constant(name: str) -> Any:
    raise BodyError(f"body is not valid JSON: {name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_ANY_SPACE = re.compile(r"\s")


def decode_body(raw: bytes) -> Any:
    """Return the JSON document of a webhook body, or raise BodyError saying why not."""
    if not raw.strip():
        raise BodyError("body is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise BodyError(f"body is not valid JSON: {exc.msg} at {where}") from None
    except RecursionError:
        raise BodyError("body is not acceptable JSON: nested too deeply") from None
    except BodyError:
        raise
    except ValueError:  # e.g. an integer literal longer than Python's digit limit
        raise BodyError("body is not acceptable JSON: a number is too long") from None


def event_objects(document: Any) -> list[Any]:
    """Return the list of event candidates in a body: one object, an array, or {"events": [...]}."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        if "events" in document and "event" not in document:
            events = document["events"]
            if not isinstance(events, list):
                raise BodyError("'events' must be an array of event objects")
            return events
        return [document]
    raise BodyError("body must be an event object, an array of events, or {\"events\": [...]}")


def parse_body(raw: bytes, now: datetime) -> list[Accepted | Rejected]:
    """Parse a whole webhook body; raise BodyError when it is not JSON events at all."""
    pieces = _array_pieces(raw)
    if pieces is None:
        pieces = [(obj, None) for obj in event_objects(decode_body(raw))]
    if not pieces:
        raise BodyError("body contains no events")
    return [parse_event(obj, index, now, text) for index, (obj, text) in enumerate(pieces)]


def _array_pieces(raw: bytes) -> list[tuple[Any, str]] | None:
    """Return each element of a top-level JSON array with its exact text, else None.

    The element's own text becomes its stored payload: it is exactly what was received,
    and it spares serializing every event again. Anything unusual (not an array, invalid
    JSON) returns None, and decode_body then gives the precise error.
    """
    try:
        text = raw.decode("utf-8")
        i = _skip_ws(text, 0)
        if text[i : i + 1] != "[":
            return None
        pieces: list[tuple[Any, str]] = []
        i = _skip_ws(text, i + 1)
        if text[i : i + 1] == "]":
            return pieces if _skip_ws(text, i + 1) == len(text) else None
        while True:
            obj, end = _DECODER.raw_decode(text, i)
            pieces.append((obj, text[i:end]))
            i = _skip_ws(text, end)
            if text[i : i + 1] == ",":
                i = _skip_ws(text, i + 1)
            elif text[i : i + 1] == "]":
                return pieces if _skip_ws(text, i + 1) == len(text) else None
            else:
                return None
    except (ValueError, RecursionError, BodyError):
        return None


def _skip_ws(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    return match.end() if match else position


def parse_event(
    obj: Any, index: int, now: datetime, payload: str | None = None
) -> Accepted | Rejected:
    """Validate and normalize one event candidate; `payload` is its text as received."""
    if payload is None:
        try:
            payload = dump(obj)
        except (ValueError, RecursionError):
            payload = json.dumps(repr(obj)[:10000])
    try:
        event_type, event_time, fields = _normalize(obj, now)
        dedup_key = _explicit_id(obj) or fallback_key(event_type, event_time, fields)
        fields_json = dump(fields)
    except Invalid as exc:
        return Rejected(index, str(exc), payload)
    except (ValueError, RecursionError):
        return Rejected(index, "event cannot be stored as JSON (a value out of range?)", payload)
    return Accepted(index, event_type, dedup_key, event_time, fields, payload, fields_json)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def dump(value: Any) -> str:
    """Serialize to compact ASCII JSON (safe for any database text column).

    Raises ValueError (non-finite numbers) or RecursionError (absurd nesting).
    """
    return _ENCODER.encode(value)


def _normalize(obj: Any, now: datetime) -> tuple[str, datetime, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise Invalid(f"event must be a JSON object, not {json_type(obj)}")
    event_type = _event_type(obj)
    event_time = parse_timestamp(obj.get("timestamp"), now)
    fields: dict[str, Any] = {}
    _subscriber(obj, fields)
    _nested(obj, "message", MESSAGE_FIELDS, fields)
    _nested(obj, "link", LINK_FIELDS, fields)
    _nested(obj, "list", LIST_FIELDS, fields)
    _nested(obj, "bounce", BOUNCE_FIELDS, fields)
    for key in ("ip", "user_agent"):
        _put(fields, key, text_value(obj.get(key), key, is_id=False))
    properties = obj.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            raise Invalid(f"'properties' must be an object, not {json_type(properties)}")
        check_values(properties, "properties")
        if properties:
            fields["properties"] = properties
    return event_type, event_time, fields


def _event_type(obj: dict[str, Any]) -> str:
    value = obj.get("event")
    if value is None:
        raise Invalid("missing required field 'event'")
    if not isinstance(value, str):
        raise Invalid(f"'event' must be a string, not {json_type(value)}")
    canonical = EVENT_ALIASES.get(value.strip().lower())
    if canonical is None:
        raise Invalid(f"unknown event {value[:80]!r}")
    return canonical


def parse_timestamp(value: Any, now: datetime, unit: str = "auto") -> datetime:
    """Return the aware UTC instant of an ISO 8601 string (with zone) or a Unix time.

    `unit` says how numbers are read: "s", "ms", or "auto" (ms at or above 10^12).
    """
    if value is None:
        raise Invalid("missing required field 'timestamp'")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid(f"'timestamp' must be ISO 8601 or Unix time, not {json_type(value)}")
    if isinstance(value, str):
        instant = _parse_timestamp_text(value.strip(), unit)
    else:
        instant = _from_unix(value, unit)
    if instant < EARLIEST or instant > now + MAX_FUTURE:
        shown = instant.isoformat()
        raise Invalid(f"'timestamp' {shown} is out of range (2000-01-01 to now + 1 day)")
    return instant


def _parse_timestamp_text(text: str, unit: str) -> datetime:
    if _is_number(text):
        if len(text) > MAX_NUMERIC_CHARS:
            raise Invalid(f"'timestamp' {text[:40]!r} is out of range")
        return _from_unix(float(text) if "." in text else int(text), unit)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(f"'timestamp' {text[:40]!r} is not ISO 8601 or Unix time") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise Invalid(f"'timestamp' {text[:40]!r} has no time zone")
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        raise Invalid(f"'timestamp' {text[:40]!r} is out of range") from None


def _is_number(text: str) -> bool:
    digits = text.replace(".", "", 1)
    return digits.isascii() and digits.isdigit()


def _from_unix(value: int | float, unit: str) -> datetime:
    if value < 0 or value > MAX_UNIX_MS or not math.isfinite(value):
        raise Invalid(f"'timestamp' {str(value)[:40]} is out of range")
    in_ms = unit == "ms" or (unit == "auto" and value >= MS_THRESHOLD)
    seconds = value / 1000 if in_ms else value
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise Invalid(f"'timestamp' {value!r} is out of range") from None


def _subscriber(obj: dict[str, Any], fields: dict[str, Any]) -> None:
    key = "subscriber" if obj.get("subscriber") is not None else "user"
    subscriber = obj.get(key)
    if subscriber is None:
        raise Invalid("missing required field 'subscriber' (or 'user')")
    if not isinstance(subscriber, dict):
        raise Invalid(f"'{key}' must be an object, not {json_type(subscriber)}")
    for name, field, is_id in SUBSCRIBER_FIELDS:
        _put(fields, name, text_value(subscriber.get(field), f"{key}.{field}", is_id=is_id))
    if "user_id" not in fields and "email" not in fields:
        raise Invalid(f"'{key}' needs a 'uid' or an 'email'")
    email = fields.get("email")
    if email is not None and not looks_like_email(email):
        raise Invalid(f"'{key}.email' is not an email address")


def looks_like_email(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return (
        bool(at and local and domain)
        and len(text) <= MAX_EMAIL_CHARS
        and _ANY_SPACE.search(text) is None
    )


def _nested(
    obj: dict[str, Any],
    key: str,
    spec: tuple[tuple[str, str, tuple[str, ...], bool], ...],
    fields: dict[str, Any],
) -> None:
    inner = obj.get(key)
    if inner is not None and not isinstance(inner, dict):
        raise Invalid(f"'{key}' must be an object, not {json_type(inner)}")
    for name, inner_key, aliases, is_id in spec:
        value = None
        if inner:
            value = text_value(inner.get(inner_key), f"{key}.{inner_key}", is_id=is_id)
        for alias in aliases:
            if value is not None:
                break
            value = text_value(obj.get(alias), alias, is_id=is_id)
        _put(fields, name, value)


def text_value(value: Any, where: str, *, is_id: bool) -> str | None:
    """Return a field's text; ids may also be integers. None and "" mean absent."""
    if value is None:
        return None
    if is_id and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        kind = "a string or integer" if is_id else "a string"
        raise Invalid(f"'{where}' must be {kind}, not {json_type(value)}")
    check_text(value, where)
    return value or None


def check_text(value: str, where: str) -> None:
    """Raise Invalid for text no database column or message can carry (NUL, lone surrogate)."""
    if "\x00" in value:
        raise Invalid(f"'{where}' contains a NUL character")
    if value.isascii():  # the common case: no surrogate can hide in ASCII
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"'{where}' contains invalid Unicode (a lone surrogate)") from None


def check_values(value: Any, where: str) -> None:
    """Refuse what no message can carry: lone surrogates, numbers beyond a double (1e400)."""
    for item in _leaves(value):
        if isinstance(item, float) and not math.isfinite(item):
            raise Invalid(f"'{where}' holds a number out of range")
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise Invalid(f"'{where}' contains invalid Unicode (a lone surrogate)") from None


def _leaves(value: Any) -> Iterator[Any]:
    """Yield every scalar and key inside a JSON value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield from item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def _put(fields: dict[str, Any], name: str, value: str | None) -> None:
    if value is not None:
        fields[name] = value


def _explicit_id(obj: dict[str, Any]) -> str | None:
    for key in ("id", "event_id", "message_event_id"):
        value = text_value(obj.get(key), key, is_id=True)
        if value is not None:
            if len(value) > MAX_ID_CHARS:
                raise Invalid(f"'{key}' is longer than {MAX_ID_CHARS} characters")
            return value
    return None


def fallback_key(event_type: str, event_time: datetime, fields: dict[str, Any]) -> str:
    """Return the dedup key of an event without an id: a hash of what identifies it."""
    email = fields.get("email")
    recipient = f"email:{email.lower()}" if email else f"uid:{fields.get('user_id')}"
    parts = [
        event_type,
        recipient,
        fields.get("message_id", ""),
        event_time.isoformat(timespec="milliseconds"),
        fields.get("link_url", ""),
    ]
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=True).encode()).hexdigest()
    return f"sha256:{digest}"


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
