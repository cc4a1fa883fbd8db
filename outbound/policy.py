"""What a failed send means for its events: retry (when), bisect, or give up."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from segment.analytics.request import APIError, parse_retry_after

BISECT_STATUSES = frozenset({400, 413})


class Verdict(enum.Enum):
    RETRY = "retry"  # the batch may succeed later: back off and try again
    BISECT = "bisect"  # Segment refused the content: find the offending event(s)


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified send failure."""

    verdict: Verdict
    error: str
    retry_after_s: float | None = None


def classify(exc: BaseException, host: str = "") -> Failure:
    """Classify an exception raised by segment.analytics.request.post.

    The error's first line says what happened in words an operator reads at a glance (the
    status page shows it); what the library raised follows on the next line.
    """
    if isinstance(exc, APIError):
        status = int(exc.status) if str(exc.status).isdigit() else 0
        error = _answered(status, str(exc.message))
        if status in BISECT_STATUSES:
            return Failure(Verdict.BISECT, error)
        retry_after = parse_retry_after(exc.response) if exc.response is not None else None
        return Failure(Verdict.RETRY, error, float(retry_after) if retry_after else None)
    where = f" ({host})" if host else ""
    raw = f"{type(exc).__name__}: {str(exc)[:300]}"
    return Failure(Verdict.RETRY, f"Segment unreachable{where}: {network_problem(exc)}\n{raw}")


def _answered(status: int, message: str) -> str:
    """Segment's own reason stays on the first line; a body that is no reason (an HTML page
    from a proxy in front of Segment) goes to the second."""
    text = message.strip()[:300]
    if not text or "\n" in text or ("<" in text and ">" in text):
        return f"Segment answered {status}" + (f"\n{text}" if text else "")
    return f"Segment answered {status}: {text}"


def network_problem(exc: BaseException) -> str:
    """Name what went wrong on the way to Segment, in a few words."""
    chain = list(_causes(exc))
    text = " ".join(f"{type(e).__name__} {e}" for e in chain).lower()
    if any(isinstance(e, requests.Timeout | TimeoutError) for e in chain) or "timed out" in text:
        return "timed out"
    if any("SSL" in type(e).__name__ for e in chain):
        return "TLS handshake failed"
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text:
        return "connection refused"
    if "resolve" in text or "name or service not known" in text or "nodename" in text:
        return "host name not found"
    if any(isinstance(e, ConnectionResetError) for e in chain) or any(
            word in text for word in ("reset", "aborted", "remotedisconnected")):
        return "connection dropped"
    return "network error"


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        nested = [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        current = current.__cause__ or current.__context__ or (nested[0] if nested else None)
    return seen


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter, between base_s and max_s."""

    base_s: float
    max_s: float

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the wait before retry number `attempt` (1 for the first retry)."""
        ceiling = min(self.max_s, self.base_s * 2 ** min(max(attempt - 1, 0), 62))
        return (rng or random).uniform(self.base_s, max(ceiling, self.base_s))

    def next_attempt_at(
        self, now: datetime, attempt: int, retry_after_s: float | None = None
    ) -> datetime:
        """Return when to try again: after the backoff, and never before Retry-After."""
        delay = self.delay_s(attempt)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return now + timedelta(seconds=delay)
