"""Unit tests of inbound.signature: the X-Nudgespot-Signature HMAC check and token comparison."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from inbound.signature import SIGNATURE_HEADER, TOLERANCE_S, sign, signature_problem, tokens_equal

SECRET = "whsec-test-0123456789"
BODY = b'[{"id":"ev-1","event":"sent","timestamp":1795167000,"subscriber":{"uid":"42"}}]'
NOW = 1_795_167_000


def hex_mac(secret: str, t: int, body: bytes) -> str:
    """HMAC-SHA256(secret, "<t>." + body) in hex, computed independently of the project."""
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def header(t: int = NOW, secret: str = SECRET, body: bytes = BODY) -> str:
    return f"t={t},v1={hex_mac(secret, t, body)}"


def test_header_name_is_the_contract_one():
    assert SIGNATURE_HEADER == "X-Nudgespot-Signature"


def test_tolerance_is_300_seconds():
    assert TOLERANCE_S == 300


def test_sign_matches_the_contract_formula():
    assert sign(SECRET, NOW, BODY) == f"t={NOW},v1={hex_mac(SECRET, NOW, BODY)}"


def test_good_signature_is_accepted():
    assert signature_problem(SECRET, header(), BODY, NOW) is None


def test_good_signature_is_accepted_with_fractional_now():
    assert signature_problem(SECRET, header(), BODY, NOW + 0.75) is None


def test_good_signature_of_an_empty_body_is_accepted():
    assert signature_problem(SECRET, header(body=b""), b"", NOW) is None


def test_uppercase_hex_is_accepted():
    t, _, mac = header().partition(",v1=")
    assert signature_problem(SECRET, f"{t},v1={mac.upper()}", BODY, NOW) is None


def test_spaces_around_header_parts_are_accepted():
    assert (
        signature_problem(SECRET, f" t={NOW} , v1={hex_mac(SECRET, NOW, BODY)} ", BODY, NOW) is None
    )


def test_v1_before_t_is_accepted():
    assert signature_problem(SECRET, f"v1={hex_mac(SECRET, NOW, BODY)},t={NOW}", BODY, NOW) is None


def test_wrong_secret_is_refused():
    problem = signature_problem(SECRET, header(secret="another-secret"), BODY, NOW)
    assert problem == "signature does not match the body"


def test_tampered_body_is_refused():
    tampered = BODY.replace(b'"42"', b'"43"')
    assert signature_problem(SECRET, header(), tampered, NOW) == "signature does not match the body"


def test_extra_byte_in_body_is_refused():
    assert signature_problem(SECRET, header(), BODY + b" ", NOW) is not None


def test_signature_for_another_timestamp_is_refused():
    forged = f"t={NOW},v1={hex_mac(SECRET, NOW - 1, BODY)}"
    assert signature_problem(SECRET, forged, BODY, NOW) == "signature does not match the body"


def test_signature_older_than_300_seconds_is_refused_even_if_it_matches():
    problem = signature_problem(SECRET, header(t=NOW - 301), BODY, NOW)
    assert problem is not None
    assert "300 s" in problem


def test_signature_more_than_300_seconds_in_the_future_is_refused():
    problem = signature_problem(SECRET, header(t=NOW + 301), BODY, NOW)
    assert problem is not None
    assert "300 s" in problem


def test_very_old_signature_is_refused():
    assert signature_problem(SECRET, header(t=0), BODY, NOW) is not None


@pytest.mark.parametrize("offset", [-300, 300])
def test_signature_exactly_300_seconds_off_is_accepted(offset):
    assert signature_problem(SECRET, header(t=NOW + offset), BODY, NOW) is None


@pytest.mark.parametrize("offset", [-300.001, 300.001])
def test_signature_just_over_300_seconds_off_is_refused(offset):
    assert signature_problem(SECRET, header(t=NOW), BODY, NOW - offset) is not None


@pytest.mark.parametrize("value", [None, ""])
def test_missing_header_is_refused(value):
    problem = signature_problem(SECRET, value, BODY, NOW)
    assert problem == "missing X-Nudgespot-Signature header"


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        hex_mac(SECRET, NOW, BODY),
        f"v1={hex_mac(SECRET, NOW, BODY)}",
        f"t={NOW}",
        f"t={NOW},v0={hex_mac(SECRET, NOW, BODY)}",
        f"t=abc,v1={hex_mac(SECRET, NOW, BODY)}",
        f"t=-{NOW},v1={hex_mac(SECRET, NOW, BODY)}",
        f"t={NOW}.5,v1={hex_mac(SECRET, NOW, BODY)}",
        f"t=١٧٩٥١٦٧٠٠٠,v1={hex_mac(SECRET, NOW, BODY)}",
        f"t={NOW};v1={hex_mac(SECRET, NOW, BODY)}",
        f"T={NOW},V1={hex_mac(SECRET, NOW, BODY)}",
    ],
)
def test_malformed_header_is_refused_as_malformed(value):
    problem = signature_problem(SECRET, value, BODY, NOW)
    assert problem is not None
    assert problem.startswith("malformed X-Nudgespot-Signature header")


def test_non_hex_v1_is_refused():
    assert signature_problem(SECRET, f"t={NOW},v1=not-hex", BODY, NOW) is not None


def test_empty_v1_is_refused():
    assert signature_problem(SECRET, f"t={NOW},v1=", BODY, NOW) is not None


def test_non_ascii_v1_is_refused_without_error():
    assert signature_problem(SECRET, f"t={NOW},v1=é{'0' * 63}", BODY, NOW) is not None


@pytest.mark.parametrize("position", [0, 1, 2])
def test_one_matching_v1_among_several_is_accepted(position):
    candidates = ["0" * 64, hex_mac("old-secret", NOW, BODY)]
    candidates.insert(position, hex_mac(SECRET, NOW, BODY))
    value = f"t={NOW}," + ",".join(f"v1={c}" for c in candidates)
    assert signature_problem(SECRET, value, BODY, NOW) is None


def test_several_v1_none_matching_is_refused():
    value = f"t={NOW},v1={'0' * 64},v1={hex_mac('old-secret', NOW, BODY)}"
    assert signature_problem(SECRET, value, BODY, NOW) == "signature does not match the body"


def test_timestamp_too_large_for_a_float_is_refused_not_raised():
    # now_s is a float in production (time.time()), so the subtraction converts t to float.
    value = f"t=1{'0' * 400},v1={hex_mac(SECRET, NOW, BODY)}"
    assert signature_problem(SECRET, value, BODY, NOW + 0.5) is not None


def test_timestamp_over_the_int_digit_limit_is_refused_not_raised():
    value = f"t=1{'0' * 5000},v1={hex_mac(SECRET, NOW, BODY)}"
    assert signature_problem(SECRET, value, BODY, NOW + 0.5) is not None


# --- tokens_equal ---------------------------------------------------------------------------


def test_tokens_equal_for_the_same_token():
    assert tokens_equal("tok-0123456789", "tok-0123456789") is True


@pytest.mark.parametrize(
    "given",
    ["tok-0123456788", "tok-012345678", "tok-01234567890", "", "TOK-0123456789", " tok-0123456789"],
)
def test_tokens_differ_for_a_different_token(given):
    assert tokens_equal(given, "tok-0123456789") is False


def test_tokens_equal_for_non_ascii_tokens():
    assert tokens_equal("clé-ünïcode", "clé-ünïcode") is True
    assert tokens_equal("cle-unicode", "clé-ünïcode") is False


def test_tokens_equal_with_a_lone_surrogate_in_the_given_token_is_false():
    assert tokens_equal("tok-\udcff", "tok-0123456789") is False
