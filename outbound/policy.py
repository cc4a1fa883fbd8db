"""What a failed send means for its events: retry (when), bisect, or give up."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

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


def classify(exc: BaseException) -> Failure:
    """Classify an exception raised by segment.analytics.request.post."""
    if isinstance(exc, APIError):
        status = int(exc.status) if str(exc.status).isdigit() else 0
        error = f"Segment answered {status}: {str(exc.message)[:300]}"
        if status in BISECT_STATUSES:
            return Failure(Verdict.BISECT, error)
        retry_after = parse_retry_after(exc.response) if exc.response is not None else None
        return Failure(Verdict.RETRY, error, float(retry_after) if retry_after else None)
    return Failure(Verdict.RETRY, f"network error: {type(exc).__name__}: {str(exc)[:300]}")


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
