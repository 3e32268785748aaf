"""OpenAI's x-ratelimit-* headers, with resets as Go durations."""

from __future__ import annotations

import pytest

from app.limits import ADMITTED, Decision
from app.limits.headers import go_duration
from tests.limits.text import text_headers


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (-3, "0s"), (0.059, "59ms"), (0.0004, "0s"), (1, "1s"), (1.5, "1.5s"),
    (17.123, "17.123s"), (59.9996, "1m0s"), (60, "1m0s"), (61.5, "1m1.5s"), (360, "6m0s"),
    (3600, "1h0m0s"), (3725.25, "1h2m5.25s"), (0.9994, "999ms"),
])
def test_go_duration(seconds: float, text: str) -> None:
    """Durations print as Go's time.Duration.String() does, to the millisecond."""
    assert go_duration(seconds) == text.encode()


def test_no_limits_no_headers() -> None:
    """A call with no buckets gets no headers."""
    assert ADMITTED.headers() == []


def test_request_and_token_trios() -> None:
    """Both trios appear when both limits apply; remaining never goes negative."""
    decision = Decision(True, "ok", None, 0.0, 60, 59, 60.25, 1000, -5, 0.059)
    assert text_headers(decision.headers()) == {
        "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1m0.25s", "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "59ms"}


def test_budget_refusal_says_do_not_retry() -> None:
    """A budget refusal carries x-should-retry: false and no rate-limit trio."""
    assert Decision(False, "budget", "team", 3600.0).headers() == [(b"x-should-retry", b"false")]
    assert "x-should-retry" not in text_headers(
        Decision(False, "rate_limit", "key", 1.0, 1, 0, 1.0).headers())
