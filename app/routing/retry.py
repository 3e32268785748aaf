"""Retries of one target before the next is tried, and the budget that caps them.

A failed attempt is retried on the same target when the failure is one a moment may cure (429,
502, 503, a refused or broken connection, a stream closed before its first chunk among them), not
a timeout (a black-holed target would be waited for again), not a refused credential
(``UpstreamAuthFailed``: the same credential would be refused again; the next target is tried),
not an answer the gateway cannot use (``BadUpstreamResponse``: invalid JSON, the wrong shape; the
same target would most likely answer the same, and may have billed it; the next target is tried)
and not a 4xx. The wait is the upstream's
``Retry-After`` when it sent one (past ``max_retry_after_s``, no retry: the next target), else
an exponential backoff with equal jitter (half fixed, half random: ``backoff_s``, doubling, up
to ``max_backoff_s``). Every retry needs the budget's leave (``RetryBudget``: retries stay under
``budget`` of the calls of the last 10 seconds, or ``min_retries``, as Envoy's retry budget
does, so that retries cannot multiply an upstream's overload) and must fit the call's deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from app import errors
from app.config import RetryConfig

WINDOW_S = 10
_SAME_TARGET = (errors.UpstreamRateLimited, errors.UpstreamUnavailable,
                errors.UpstreamConnectError)
"""The failures a retry on the same target may cure."""


def retry_delay(exc: errors.GatewayError, retry: int, config: RetryConfig,
                rng: random.Random) -> float | None:
    """Seconds to wait before retry number ``retry`` (1-based) after ``exc``, or ``None`` when
    ``exc`` is not worth retrying on the same target."""
    if not isinstance(exc, _SAME_TARGET) or exc.status_code == 504:
        return None
    wait: float | None = exc.retry_after_s
    if wait is not None:
        return wait if wait <= config.max_retry_after_s else None
    cap = min(config.max_backoff_s, config.backoff_s * 2.0 ** (retry - 1))
    return cap / 2 + rng.random() * cap / 2


class RetryBudget:
    """Calls and retries of the last ``WINDOW_S`` seconds, in 1-second slots (per process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._calls = [0] * WINDOW_S
        self._retries = [0] * WINDOW_S
        self._second = int(clock())

    def called(self) -> None:
        self._roll()
        self._calls[self._second % WINDOW_S] += 1

    def allow(self, config: RetryConfig) -> bool:
        """Whether one more retry fits; if so it is counted."""
        self._roll()
        if sum(self._retries) >= max(config.min_retries, config.budget * sum(self._calls)):
            return False
        self._retries[self._second % WINDOW_S] += 1
        return True

    def _roll(self) -> None:
        now = int(self._clock())
        for second in range(max(self._second + 1, now - WINDOW_S + 1), now + 1):
            self._calls[second % WINDOW_S] = self._retries[second % WINDOW_S] = 0
        self._second = max(self._second, now)
