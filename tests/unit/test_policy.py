"""Unit tests of outbound.policy: what a failed send means, and when to try again."""

from __future__ import annotations

import random
import statistics
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import requests
from segment.analytics.request import APIError

from outbound.policy import Backoff, Verdict, classify

UTC = timezone.utc
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def api_error(
    status: int,
    message: str = "scripted",
    headers: dict[str, str] | None = None,
    code: str = "error",
) -> APIError:
    """An APIError as request.post raises it, with a real requests.Response."""
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    return APIError(status, code, message, response)


# --- classify -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 413])
def test_content_refusal_is_bisected(status: int) -> None:
    failure = classify(api_error(status))
    assert failure.verdict is Verdict.BISECT


def test_bisect_error_keeps_segments_reason() -> None:
    failure = classify(api_error(400, "property 'x' is not valid"))
    assert "property 'x' is not valid" in failure.error
    assert "400" in failure.error


def test_429_with_retry_after_seconds_is_retried_after_that_long() -> None:
    failure = classify(api_error(429, headers={"Retry-After": "7"}))
    assert failure.verdict is Verdict.RETRY
    assert failure.retry_after_s == 7


def test_429_with_retry_after_http_date_is_retried_after_that_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=60)
    failure = classify(api_error(429, headers={"Retry-After": format_datetime(when, usegmt=True)}))
    assert failure.verdict is Verdict.RETRY
    assert failure.retry_after_s is not None
    assert 50 <= failure.retry_after_s <= 61


def test_429_without_retry_after_is_retried_by_backoff() -> None:
    failure = classify(api_error(429))
    assert failure.verdict is Verdict.RETRY
    assert failure.retry_after_s is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_and_timeouts_are_retried(status: int) -> None:
    failure = classify(api_error(status))
    assert failure.verdict is Verdict.RETRY
    assert str(status) in failure.error


def test_503_with_retry_after_carries_the_wait() -> None:
    failure = classify(api_error(503, headers={"Retry-After": "12"}))
    assert failure.verdict is Verdict.RETRY
    assert failure.retry_after_s == 12


@pytest.mark.parametrize(
    "exc",
    [
        requests.ConnectionError("connection reset by peer"),
        requests.Timeout("read timed out"),
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.ConnectTimeout("connect timed out"),
    ],
    ids=["connection-error", "timeout", "read-timeout", "connect-timeout"],
)
def test_network_errors_are_retried(exc: Exception) -> None:
    failure = classify(exc)
    assert failure.verdict is Verdict.RETRY
    assert failure.retry_after_s is None
    assert failure.error


# --- backoff -------------------------------------------------------------------------------------


def samples(backoff: Backoff, attempt: int, n: int = 1000, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [backoff.delay_s(attempt, rng) for _ in range(n)]


@pytest.mark.parametrize("base, cap", [(1.0, 600.0), (0.05, 0.2), (2.0, 2.0)])
def test_backoff_delay_stays_between_base_and_the_exponential_ceiling(
    base: float, cap: float
) -> None:
    backoff = Backoff(base, cap)
    for attempt in range(1, 20):
        ceiling = min(cap, base * 2 ** (attempt - 1))
        for delay in samples(backoff, attempt, n=300, seed=attempt):
            assert base <= delay <= ceiling, (attempt, delay)


def test_backoff_is_jittered() -> None:
    delays = samples(Backoff(1.0, 600.0), 6)
    assert len(set(delays)) > 100


def test_backoff_grows_with_the_attempt() -> None:
    backoff = Backoff(1.0, 600.0)
    means = [statistics.fmean(samples(backoff, attempt, seed=attempt)) for attempt in range(1, 10)]
    assert all(later > earlier for earlier, later in zip(means, means[1:], strict=False)), means


def test_backoff_caps_at_max() -> None:
    backoff = Backoff(1.0, 60.0)
    for attempt in (8, 20, 100, 10_000):
        delays = samples(backoff, attempt, seed=attempt)
        assert max(delays) <= 60.0
        assert max(delays) > 50.0  # it does reach up to the cap, not some smaller ceiling


def test_next_attempt_is_never_earlier_than_retry_after() -> None:
    backoff = Backoff(0.05, 0.2)
    for attempt in range(1, 6):
        for retry_after in (0.5, 2.0, 30.0, 300.0):
            for _ in range(50):
                at = backoff.next_attempt_at(NOW, attempt, retry_after)
                assert at >= NOW + timedelta(seconds=retry_after)


def test_next_attempt_keeps_a_longer_backoff_than_retry_after() -> None:
    backoff = Backoff(10.0, 600.0)
    for _ in range(50):
        at = backoff.next_attempt_at(NOW, 3, retry_after_s=1.0)
        assert at >= NOW + timedelta(seconds=10.0)


def test_next_attempt_without_retry_after_follows_the_backoff() -> None:
    backoff = Backoff(1.0, 8.0)
    for _ in range(100):
        at = backoff.next_attempt_at(NOW, 3)
        assert NOW + timedelta(seconds=1.0) <= at <= NOW + timedelta(seconds=4.0)
