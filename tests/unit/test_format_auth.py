"""Unit tests of each sender format's signature scheme (inbound.signature.verifier) and of the
HTTP Basic check, with keys, signatures and MACs made here independently of the project.

The nudgespot scheme itself is covered in tests/unit/test_signature.py; here it is only checked
that verifier("nudgespot", ...) wires it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from inbound.signature import SecretError, basic_auth_problem, verifier

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
NOW = 1_795_167_000
MISMATCH = "signature does not match the body"
STALE = "signature timestamp is more than 300 s from now"
SCHEMES = ("nudgespot", "sendgrid", "mailgun", "customerio", "none")


def fixture(provider: str, name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / provider / f"{name}.json").read_text(encoding="utf-8"))


# --- sendgrid: ECDSA P-256 over timestamp + body ------------------------------------------------

SG_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SG_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
SG_MISSING = (
    "missing X-Twilio-Email-Event-Webhook-Signature or X-Twilio-Email-Event-Webhook-Timestamp "
    "header"
)
SG_BODY = (
    b'[{"email":"alex@example.com","timestamp":1795166990,"event":"processed",'
    b'"sg_event_id":"rbtnWrG1DVDGGGFHFyun0A=="}]\r\n'
)
SG_KEY = ec.generate_private_key(ec.SECP256R1())
SG_OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def der_base64(public_key: Any) -> str:
    """A public key as SendGrid's settings page shows it: base64 of DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def pem(public_key: Any) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def sendgrid_headers(
    body: bytes = SG_BODY, *, key: ec.EllipticCurvePrivateKey = SG_KEY, at: int = NOW
) -> dict[str, str]:
    stamp = str(at)
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SG_SIGNATURE: base64.b64encode(signature).decode("ascii"), SG_TIMESTAMP: stamp}


def sendgrid_check(secret: str | None = None) -> Any:
    check = verifier("sendgrid", der_base64(SG_KEY.public_key()) if secret is None else secret)
    assert check is not None
    return check


def test_sendgrid_signature_verifies_with_the_base64_der_key() -> None:
    assert sendgrid_check()(sendgrid_headers(), SG_BODY, NOW) is None


def test_sendgrid_signature_verifies_with_the_pem_key() -> None:
    check = sendgrid_check(pem(SG_KEY.public_key()))

    assert check(sendgrid_headers(), SG_BODY, NOW) is None


def test_sendgrid_signature_made_with_another_key_is_refused() -> None:
    headers = sendgrid_headers(key=SG_OTHER_KEY)

    assert sendgrid_check()(headers, SG_BODY, NOW) == MISMATCH


def test_sendgrid_body_changed_after_signing_is_refused() -> None:
    headers = sendgrid_headers()
    changed = SG_BODY.replace(b"processed", b"delivered")

    assert sendgrid_check()(headers, changed, NOW) == MISMATCH


def test_sendgrid_signature_of_another_timestamp_is_refused() -> None:
    headers = {**sendgrid_headers(at=NOW - 1), SG_TIMESTAMP: str(NOW)}

    assert sendgrid_check()(headers, SG_BODY, NOW) == MISMATCH


@pytest.mark.parametrize("dropped", [SG_SIGNATURE, SG_TIMESTAMP, "both"])
def test_sendgrid_missing_header_is_refused(dropped: str) -> None:
    headers = sendgrid_headers()
    for name in (SG_SIGNATURE, SG_TIMESTAMP) if dropped == "both" else (dropped,):
        del headers[name]

    assert sendgrid_check()(headers, SG_BODY, NOW) == SG_MISSING


@pytest.mark.parametrize("offset", [-301, 301], ids=["301-s-old", "301-s-ahead"])
def test_sendgrid_timestamp_more_than_300_s_from_now_is_refused(offset: int) -> None:
    headers = sendgrid_headers(at=NOW + offset)

    assert sendgrid_check()(headers, SG_BODY, NOW) == STALE


@pytest.mark.parametrize("offset", [-300, 300], ids=["300-s-old", "300-s-ahead"])
def test_sendgrid_timestamp_exactly_300_s_from_now_is_accepted(offset: int) -> None:
    headers = sendgrid_headers(at=NOW + offset)

    assert sendgrid_check()(headers, SG_BODY, NOW) is None


@pytest.mark.parametrize(
    "signature",
    ["not base64 at all!", "MEUCIQ", base64.b64encode(b"not a DER signature").decode()],
    ids=["not-base64", "truncated-base64", "base64-not-der"],
)
def test_sendgrid_malformed_signature_is_refused(signature: str) -> None:
    headers = {**sendgrid_headers(), SG_SIGNATURE: signature}

    assert sendgrid_check()(headers, SG_BODY, NOW) == MISMATCH


def test_sendgrid_non_numeric_timestamp_is_refused() -> None:
    headers = {**sendgrid_headers(), SG_TIMESTAMP: "yesterday"}

    assert sendgrid_check()(headers, SG_BODY, NOW) == "malformed signature timestamp"


def rsa_public() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()


@pytest.mark.parametrize(
    "make_secret",
    [
        lambda: "not-a-key",
        lambda: base64.b64encode(b"base64 of something that is not DER").decode(),
        lambda: "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
        lambda: der_base64(rsa_public()),
        lambda: pem(rsa_public()),
        lambda: der_base64(ec.generate_private_key(ec.SECP384R1()).public_key()),
        lambda: pem(ec.generate_private_key(ec.SECP384R1()).public_key()),
    ],
    ids=["text", "base64-not-der", "pem-not-a-key", "rsa-der", "rsa-pem", "p384-der",
         "p384-pem"],
)
def test_sendgrid_verification_key_that_is_not_a_p256_public_key_is_a_secret_error(
    make_secret: Any,
) -> None:
    with pytest.raises(SecretError):
        verifier("sendgrid", make_secret())


def test_sendgrid_private_key_pem_as_verification_key_is_a_secret_error() -> None:
    private_pem = SG_KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")

    with pytest.raises(SecretError):
        verifier("sendgrid", private_pem)


def test_sendgrid_published_vector_verifies_at_its_own_timestamp() -> None:
    vector = fixture("sendgrid", "signed-webhook-vector")
    check = sendgrid_check(vector["public_key"])
    headers = {SG_SIGNATURE: vector["signature"], SG_TIMESTAMP: vector["timestamp"]}

    assert check(headers, vector["payload"].encode(), 1600112502) is None


def test_sendgrid_published_vector_without_its_trailing_crlf_is_refused() -> None:
    vector = fixture("sendgrid", "signed-webhook-vector")
    check = sendgrid_check(vector["public_key"])
    headers = {SG_SIGNATURE: vector["signature"], SG_TIMESTAMP: vector["timestamp"]}

    assert check(headers, vector["payload"].rstrip("\r\n").encode(), 1600112502) == MISMATCH


def test_sendgrid_published_vector_checked_today_is_stale() -> None:
    vector = fixture("sendgrid", "signed-webhook-vector")
    check = sendgrid_check(vector["public_key"])
    headers = {SG_SIGNATURE: vector["signature"], SG_TIMESTAMP: vector["timestamp"]}

    assert check(headers, vector["payload"].encode(), NOW) == STALE


# --- mailgun: the body's "signature" object -----------------------------------------------------

MG_KEY = "key-0123456789abcdef0123456789abcdef"
MG_TOKEN = "5egbgr1vjgqxtrnp65xfznchgdccwh5d6i09vijqi3whgowmn6"
MG_MISSING = "missing Mailgun 'signature' object (timestamp, token, signature) in the body"
MG_EVENT = {"event": "delivered", "id": "ev-1", "timestamp": NOW - 10,
            "recipient": "alice@example.com"}


def mailgun_body(
    *, key: str = MG_KEY, at: int = NOW, token: str = MG_TOKEN, event: Any = MG_EVENT
) -> bytes:
    mac = hmac.new(key.encode(), f"{at}{token}".encode(), hashlib.sha256).hexdigest()
    signature = {"timestamp": str(at), "token": token, "signature": mac}
    return json.dumps({"signature": signature, "event-data": event}).encode()


def mailgun_check(key: str = MG_KEY) -> Any:
    check = verifier("mailgun", key)
    assert check is not None
    return check


def test_mailgun_signature_object_made_with_the_key_is_accepted() -> None:
    assert mailgun_check()({}, mailgun_body(), NOW) is None


def test_mailgun_signature_object_made_with_another_key_is_refused() -> None:
    body = mailgun_body(key="key-not-the-signing-key")

    assert mailgun_check()({}, body, NOW) == MISMATCH


def test_mailgun_signature_object_with_another_token_is_refused() -> None:
    document = json.loads(mailgun_body())
    document["signature"]["token"] = "another-token"

    assert mailgun_check()({}, json.dumps(document).encode(), NOW) == MISMATCH


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"event-data": MG_EVENT}).encode(),
        json.dumps(MG_EVENT).encode(),
        json.dumps([MG_EVENT]).encode(),
        json.dumps({"signature": "abc", "event-data": MG_EVENT}).encode(),
        json.dumps({"signature": {"timestamp": str(NOW), "token": MG_TOKEN},
                    "event-data": MG_EVENT}).encode(),
    ],
    ids=["wrapper-without-signature", "bare-event", "array", "signature-not-object",
         "signature-without-mac"],
)
def test_mailgun_body_without_a_signature_object_is_refused(body: bytes) -> None:
    assert mailgun_check()({}, body, NOW) == MG_MISSING


@pytest.mark.parametrize("body", [b"", b"not json", b'{"signature": {'])
def test_mailgun_body_that_is_not_json_is_refused(body: bytes) -> None:
    assert mailgun_check()({}, body, NOW) == MG_MISSING


@pytest.mark.parametrize("offset", [-301, 301], ids=["301-s-old", "301-s-ahead"])
def test_mailgun_signature_timestamp_more_than_300_s_from_now_is_refused(offset: int) -> None:
    body = mailgun_body(at=NOW + offset)

    assert mailgun_check()({}, body, NOW) == STALE


def mailgun_vector_body(signature: dict[str, Any], timestamp: Any) -> bytes:
    wrapped = {"timestamp": timestamp, "token": signature["token"],
               "signature": signature["signature"]}
    return json.dumps({"signature": wrapped, "event-data": MG_EVENT}).encode()


@pytest.mark.parametrize("as_text", [True, False], ids=["timestamp-string", "timestamp-integer"])
def test_mailgun_published_valid_vector_is_accepted(as_text: bool) -> None:
    vector = fixture("mailgun", "signature-vector")
    valid = vector["valid"]
    stamp = str(valid["timestamp"]) if as_text else valid["timestamp"]

    check = mailgun_check(vector["signing_key"])

    assert check({}, mailgun_vector_body(valid, stamp), 1403645220) is None


def test_mailgun_published_invalid_vector_is_refused() -> None:
    vector = fixture("mailgun", "signature-vector")
    invalid = vector["invalid"]

    check = mailgun_check(vector["signing_key"])

    assert check({}, mailgun_vector_body(invalid, str(invalid["timestamp"])), 1403645220) == (
        MISMATCH)


# --- customerio: X-CIO-Signature over "v0:<timestamp>:" + body ---------------------------------

CIO_SIGNATURE = "X-CIO-Signature"
CIO_TIMESTAMP = "X-CIO-Timestamp"
CIO_SECRET = "cio-webhook-signing-secret-0001"
CIO_MISSING = "missing X-CIO-Signature or X-CIO-Timestamp header"
CIO_BODY = (b'{"event_id":"01ER4R5WB62QWCNREKFB4DYXGR","object_type":"email","metric":"opened",'
            b'"timestamp":1795166990,"data":{"recipient":"test@example.com"}}')


def customerio_headers(
    body: bytes = CIO_BODY, *, secret: str = CIO_SECRET, at: int = NOW
) -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"v0:{at}:".encode() + body, hashlib.sha256).hexdigest()
    return {CIO_SIGNATURE: mac, CIO_TIMESTAMP: str(at)}


def customerio_check() -> Any:
    check = verifier("customerio", CIO_SECRET)
    assert check is not None
    return check


def test_customerio_signature_made_with_the_secret_is_accepted() -> None:
    assert customerio_check()(customerio_headers(), CIO_BODY, NOW) is None


def test_customerio_signature_made_with_another_secret_is_refused() -> None:
    headers = customerio_headers(secret="not-the-secret")

    assert customerio_check()(headers, CIO_BODY, NOW) == MISMATCH


def test_customerio_signature_of_another_timestamp_is_refused() -> None:
    headers = {**customerio_headers(at=NOW - 1), CIO_TIMESTAMP: str(NOW)}

    assert customerio_check()(headers, CIO_BODY, NOW) == MISMATCH


def test_customerio_hmac_without_the_v0_prefix_is_refused() -> None:
    mac = hmac.new(CIO_SECRET.encode(), f"{NOW}:".encode() + CIO_BODY, hashlib.sha256)
    headers = {CIO_SIGNATURE: mac.hexdigest(), CIO_TIMESTAMP: str(NOW)}

    assert customerio_check()(headers, CIO_BODY, NOW) == MISMATCH


@pytest.mark.parametrize("dropped", [CIO_SIGNATURE, CIO_TIMESTAMP, "both"])
def test_customerio_missing_header_is_refused(dropped: str) -> None:
    headers = customerio_headers()
    for name in (CIO_SIGNATURE, CIO_TIMESTAMP) if dropped == "both" else (dropped,):
        del headers[name]

    assert customerio_check()(headers, CIO_BODY, NOW) == CIO_MISSING


@pytest.mark.parametrize("offset", [-301, 301], ids=["301-s-old", "301-s-ahead"])
def test_customerio_timestamp_more_than_300_s_from_now_is_refused(offset: int) -> None:
    headers = customerio_headers(at=NOW + offset)

    assert customerio_check()(headers, CIO_BODY, NOW) == STALE


def test_customerio_body_changed_after_signing_is_refused() -> None:
    headers = customerio_headers()
    changed = CIO_BODY.replace(b"opened", b"clicked")

    assert customerio_check()(headers, changed, NOW) == MISMATCH


def test_customerio_uppercase_hex_signature_is_accepted() -> None:
    headers = customerio_headers()
    headers[CIO_SIGNATURE] = headers[CIO_SIGNATURE].upper()
    assert headers[CIO_SIGNATURE] != headers[CIO_SIGNATURE].lower()

    assert customerio_check()(headers, CIO_BODY, NOW) is None


def test_customerio_non_ascii_signature_is_refused() -> None:
    headers = {**customerio_headers(), CIO_SIGNATURE: "é" * 64}

    assert customerio_check()(headers, CIO_BODY, NOW) == MISMATCH


# --- nudgespot through verifier() ----------------------------------------------------------------

NS_SECRET = "whsec-test-0123456789"
NS_BODY = b'[{"id":"ev-1","event":"sent","timestamp":1795167000,"subscriber":{"uid":"42"}}]'


def nudgespot_header(secret: str) -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"{NOW}.".encode() + NS_BODY, hashlib.sha256).hexdigest()
    return {"X-Nudgespot-Signature": f"t={NOW},v1={mac}"}


def test_nudgespot_verifier_accepts_its_signature() -> None:
    check = verifier("nudgespot", NS_SECRET)
    assert check is not None

    assert check(nudgespot_header(NS_SECRET), NS_BODY, NOW) is None


def test_nudgespot_verifier_refuses_a_signature_made_with_another_secret() -> None:
    check = verifier("nudgespot", NS_SECRET)
    assert check is not None

    assert check(nudgespot_header("another-secret"), NS_BODY, NOW) == MISMATCH


# --- verifier() itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_verifier_without_a_secret_is_none(scheme: str) -> None:
    assert verifier(scheme, "") is None


def test_verifier_for_auth_none_with_a_secret_is_a_secret_error() -> None:
    with pytest.raises(SecretError):
        verifier("none", "x")


# --- HTTP Basic ----------------------------------------------------------------------------------

CREDENTIALS = "hook:s3cret"


def basic(text: str, scheme: str = "Basic") -> str:
    return f"{scheme} {base64.b64encode(text.encode()).decode('ascii')}"


def test_basic_auth_with_the_right_credentials_passes() -> None:
    assert basic_auth_problem(CREDENTIALS, basic("hook:s3cret")) is None


def test_basic_auth_scheme_name_is_case_insensitive() -> None:
    assert basic_auth_problem(CREDENTIALS, basic("hook:s3cret", scheme="basic")) is None


@pytest.mark.parametrize("given", ["hook:wrong", "other:s3cret", "hook:s3cret ", "hook:",
                                   "hook", ":s3cret"])
def test_basic_auth_with_wrong_credentials_is_refused(given: str) -> None:
    assert basic_auth_problem(CREDENTIALS, basic(given)) == "wrong HTTP Basic credentials"


@pytest.mark.parametrize("header", [None, "", "Basic", "Basic "])
def test_basic_auth_missing_is_refused(header: str | None) -> None:
    assert basic_auth_problem(CREDENTIALS, header) == "missing HTTP Basic credentials"


@pytest.mark.parametrize(
    "header",
    ["Bearer aG9vazpzM2NyZXQ=", basic("hook:s3cret", scheme="Digest"), "aG9vazpzM2NyZXQ="],
    ids=["bearer", "digest", "no-scheme"],
)
def test_basic_auth_with_another_scheme_is_refused(header: str) -> None:
    assert basic_auth_problem(CREDENTIALS, header) == "missing HTTP Basic credentials"


@pytest.mark.parametrize("encoded", ["not base64!", "aG9vazpzM2NyZXQ", "aG9v*azpz", "hök"])
def test_basic_auth_with_bad_base64_is_refused(encoded: str) -> None:
    problem = basic_auth_problem(CREDENTIALS, f"Basic {encoded}")

    assert problem == "malformed HTTP Basic credentials"


def test_basic_auth_password_containing_a_colon_passes_whole() -> None:
    expected = "hook:s3:cr:et"

    assert basic_auth_problem(expected, basic("hook:s3:cr:et")) is None
    assert basic_auth_problem(expected, basic("hook:s3")) == "wrong HTTP Basic credentials"
    assert basic_auth_problem(expected, basic("hook:s3:cr")) == "wrong HTTP Basic credentials"
