"""OpenAI's x-ratelimit-* headers, with resets as Go durations."""

from __future__ import annotations

import pytest

from app.limits import ADMITTED, Decision
from app.limits.headers import go_duration
from app.limits.redis import _CreditDecision
from tests.limits.text import text_headers


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (-3, "0s"), (0.059, "1s"), (0.0004, "1s"), (1, "1s"), (1.5, "2s"),
    (17.123, "18s"), (59.9996, "1m0s"), (60, "1m0s"), (61.5, "1m2s"), (119, "1m59s"),
    (360, "6m0s"), (3600, "1h0m0s"), (3725.25, "1h2m6s"), (0.9994, "1s"),
])
def test_go_duration(seconds: float, text: str) -> None:
    """Durations print as Go's time.Duration.String() does, rounded up to the whole second."""
    assert go_duration(seconds) == text.encode()


def test_no_limits_no_headers() -> None:
    """A call with no buckets gets no headers."""
    assert ADMITTED.headers() == []


def test_request_and_token_trios() -> None:
    """Both trios appear when both limits apply; remaining never goes negative."""
    decision = Decision(True, "ok", None, 0.0, 60, 59, 60.25, 1000, -5, 0.059)
    assert text_headers(decision.headers()) == {
        "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1m1s", "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1s"}


def test_budget_refusal_says_do_not_retry() -> None:
    """A budget refusal carries x-should-retry: false and no rate-limit trio."""
    assert Decision(False, "budget", "team", 3600.0).headers() == [(b"x-should-retry", b"false")]
    assert "x-should-retry" not in text_headers(
        Decision(False, "rate_limit", "key", 1.0, 1, 0, 1.0).headers())


def test_a_credits_headers_are_shared_until_a_reset_changes_its_second() -> None:
    """A credit's calls share one list of headers while both resets stay in their whole second;
    each reset then counts down by the second (``_CreditDecision`` is this project's own)."""
    now = [100.0]
    granted = Decision(True, "ok", None, 0.0, 600, 500, 59.25, 10_000, 9_000, 0.5)
    credit = _CreditDecision(granted, 7, 100.0, lambda: now[0])
    first = credit.headers()
    assert text_headers(first) == {
        "x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "500",
        "x-ratelimit-reset-requests": "1m0s", "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-tokens": "9000", "x-ratelimit-reset-tokens": "1s"}
    now[0] = 100.2
    assert credit.headers() is first
    now[0] = 100.25  # the request reset reaches 59 s
    second = credit.headers()
    assert second is not first
    assert text_headers(second)["x-ratelimit-reset-requests"] == "59s"
    assert text_headers(second)["x-ratelimit-reset-tokens"] == "1s"
    now[0] = 100.5  # the token window has emptied
    assert text_headers(credit.headers())["x-ratelimit-reset-tokens"] == "0s"
    now[0] = 130.0
    assert text_headers(credit.headers())["x-ratelimit-reset-requests"] == "30s"
    assert credit.headers() is credit.headers()
