"""Webhook authentication: source tokens and the optional HMAC signature."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Nudgespot-Signature"
TOLERANCE_S = 300


def tokens_equal(given: str, expected: str) -> bool:
    """Compare two secrets in constant time."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the header value Nudgespot sends for this body at this Unix time."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def signature_problem(secret: str, header: str | None, body: bytes, now_s: float) -> str | None:
    """Return why the signature header does not authenticate the body, or None when it does."""
    if not header:
        return f"missing {SIGNATURE_HEADER} header"
    timestamp, candidates = _parse_header(header)
    if timestamp is None or not candidates:
        return f"malformed {SIGNATURE_HEADER} header (expected t=<unix seconds>,v1=<hex>)"
    if abs(now_s - timestamp) > TOLERANCE_S:
        return f"signature timestamp is more than {TOLERANCE_S} s from now"
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    # Check every candidate so the time taken does not depend on which one matched.
    matched = [hmac.compare_digest(expected, c) for c in candidates]
    return None if any(matched) else "signature does not match the body"


def _parse_header(header: str) -> tuple[int | None, list[str]]:
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and value.isascii():
            candidates.append(value.lower())
    return timestamp, candidates
