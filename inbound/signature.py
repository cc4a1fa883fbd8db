"""Webhook authentication: source tokens, and each sender format's own signature scheme."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

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


# --- each sender's own scheme -----------------------------------------------------------------
# A Verifier returns why a request is not authentic, or None. Built once per source from its
# secret (which is checked then, so a bad key stops start-up rather than every request).

Verifier = Callable[[Mapping[str, str], bytes, float], "str | None"]

SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
CUSTOMERIO_SIGNATURE_HEADER = "X-CIO-Signature"
CUSTOMERIO_TIMESTAMP_HEADER = "X-CIO-Timestamp"
MAX_TIMESTAMP_CHARS = 12


class SecretError(ValueError):
    """A configured secret cannot be used by its scheme (e.g. not a public key)."""


def verifier(scheme: str, secret: str) -> Verifier | None:
    """Return the check for `scheme` with this secret; None when no secret is set."""
    if not secret:
        return None
    build = _SCHEMES.get(scheme)
    if build is None:
        raise SecretError(f"format's auth {scheme!r} takes no secret")
    return build(secret)


def _nudgespot(secret: str) -> Verifier:
    def check(headers: Mapping[str, str], body: bytes, now_s: float) -> str | None:
        return signature_problem(secret, headers.get(SIGNATURE_HEADER), body, now_s)

    return check


def _sendgrid(secret: str) -> Verifier:
    key = _p256_public_key(secret)

    def check(headers: Mapping[str, str], body: bytes, now_s: float) -> str | None:
        found = _fresh_signature(headers, SENDGRID_SIGNATURE_HEADER, SENDGRID_TIMESTAMP_HEADER,
                                 now_s)
        if isinstance(found, str):
            return found
        signature, stamp = found
        try:
            key.verify(base64.b64decode(signature, validate=True), stamp.encode() + body,
                       ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return "signature does not match the body"
        return None

    return check


def _p256_public_key(secret: str) -> ec.EllipticCurvePublicKey:
    """Read SendGrid's verification key: base64 DER (as its settings page shows it) or PEM."""
    text = secret.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SecretError("not an ECDSA public key (base64 DER or PEM)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise SecretError("not an ECDSA P-256 public key")
    return key


def _mailgun(secret: str) -> Verifier:
    def check(headers: Mapping[str, str], body: bytes, now_s: float) -> str | None:
        found = _mailgun_signature(body)
        if found is None:
            return "missing Mailgun 'signature' object (timestamp, token, signature) in the body"
        stamp, token, given = found
        problem = _stale(stamp, now_s)
        if problem:
            return problem
        expected = _hmac_hex(secret, f"{stamp}{token}".encode())
        return None if hmac.compare_digest(expected, given.lower()) else (
            "signature does not match the body")

    return check


def _mailgun_signature(body: bytes) -> tuple[str, str, str] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    signature = document.get("signature") if isinstance(document, dict) else None
    if not isinstance(signature, dict):
        return None
    parts = [signature.get(key) for key in ("timestamp", "token", "signature")]
    if not all(isinstance(p, str | int) and not isinstance(p, bool) for p in parts):
        return None
    stamp, token, given = (str(p) for p in parts)
    return (stamp, token, given) if given.isascii() else None


def _customerio(secret: str) -> Verifier:
    def check(headers: Mapping[str, str], body: bytes, now_s: float) -> str | None:
        found = _fresh_signature(headers, CUSTOMERIO_SIGNATURE_HEADER,
                                 CUSTOMERIO_TIMESTAMP_HEADER, now_s)
        if isinstance(found, str):
            return found
        given, stamp = found
        expected = _hmac_hex(secret, f"v0:{stamp}:".encode() + body)
        matched = given.isascii() and hmac.compare_digest(expected, given.strip().lower())
        return None if matched else "signature does not match the body"

    return check


def basic_auth_problem(expected: str, header: str | None) -> str | None:
    """Return why an Authorization header does not carry `expected` ("user:password")."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return "missing HTTP Basic credentials"
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return "malformed HTTP Basic credentials"
    return None if hmac.compare_digest(given, expected.encode()) else "wrong HTTP Basic credentials"


def _fresh_signature(
    headers: Mapping[str, str], signature_header: str, stamp_header: str, now_s: float
) -> tuple[str, str] | str:
    """Return (signature, timestamp) from a sender's two headers, or why they do not do."""
    signature, stamp = headers.get(signature_header), headers.get(stamp_header)
    if not signature or not stamp:
        return f"missing {signature_header} or {stamp_header} header"
    return _stale(stamp, now_s) or (signature, stamp)


def _stale(stamp: str, now_s: float) -> str | None:
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= MAX_TIMESTAMP_CHARS):
        return "malformed signature timestamp"
    if abs(now_s - int(stamp)) > TOLERANCE_S:
        return f"signature timestamp is more than {TOLERANCE_S} s from now"
    return None


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


_SCHEMES: dict[str, Callable[[str], Verifier]] = {
    "nudgespot": _nudgespot,
    "sendgrid": _sendgrid,
    "mailgun": _mailgun,
    "customerio": _customerio,
}
