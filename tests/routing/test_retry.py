"""Retry delays and the retry budget (``app.routing.retry``), what a refused credential leads
to, and ``Retry-After`` parsing."""

from __future__ import annotations

import email.utils
import math
import random
import time

import pytest

from app import errors
from app.config import ConfigError, RetryConfig, parse_config
from app.providers import gemini_response
from app.providers.aws_http import aws_error
from app.providers.http import read_error_body, retry_after
from app.routing.retry import RetryBudget, retry_delay
from app.routing.router import unhealthy


def test_which_failures_are_retried_and_how_long_after() -> None:
    config, rng = RetryConfig(backoff_s=0.1, max_backoff_s=0.3), random.Random(1)
    unavailable = errors.UpstreamUnavailable("down", status=503)
    delays = [retry_delay(unavailable, n, config, rng) for n in (1, 2, 3, 4)]
    assert all(d is not None for d in delays)
    caps = [0.1, 0.2, 0.3, 0.3]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))  # type: ignore[operator]
    limited = errors.UpstreamRateLimited("slow down")
    limited.retry_after_s = 3.0
    assert retry_delay(limited, 1, config, rng) == 3.0
    limited.retry_after_s = 11.0  # past max_retry_after_s (10)
    assert retry_delay(limited, 1, config, rng) is None
    for never in (errors.UpstreamTimeout("slow"), errors.UpstreamRejected("bad", status=400),
                  errors.BadUpstreamResponse("garbage"),
                  errors.UpstreamUnavailable("gateway timeout", status=504)):
        assert retry_delay(never, 1, config, rng) is None


def test_a_refused_credential_is_for_the_next_target_only() -> None:
    """A refused credential, as each mapping reads it (401, 403, Gemini's API_KEY_INVALID,
    AWS's AccessDeniedException), is a 502 that lets the next target be tried, is never retried
    on the same target, and counts as a failure of the target's health (its breaker)."""
    config, rng = RetryConfig(), random.Random(1)
    gemini = gemini_response.error_mapper("Gemini API")(400, {"error": {
        "code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                     "reason": "API_KEY_INVALID"}]}}, "")
    denied = aws_error(403, "AccessDeniedException", {"message": "no"}, "",
                       service="AWS Bedrock (us-east-1)")
    for refused in (errors.from_upstream_status(401, "bad key"),
                    errors.from_upstream_status(403, "forbidden"), gemini, denied):
        assert isinstance(refused, errors.UpstreamAuthFailed), refused
        assert refused.status_code == 502 and refused.retryable
        assert retry_delay(refused, 1, config, rng) is None
        assert unhealthy(refused) is True


def test_retry_after_seconds_and_dates() -> None:
    assert retry_after("2") == 2.0
    assert retry_after("0.5") == 0.5
    for unreadable in (None, "", "soon", "inf", "nan", "-3"):  # delay-seconds has no sign
        assert retry_after(unreadable) is None
    later = retry_after(email.utils.formatdate(time.time() + 30, usegmt=True))
    assert later is not None and 28 <= later <= 31


def test_the_budget_is_a_share_of_recent_calls_with_a_floor() -> None:
    now = [100.0]
    budget = RetryBudget(clock=lambda: now[0])
    config = RetryConfig(budget=0.2, min_retries=2)
    assert [budget.allow(config) for _ in range(3)] == [True, True, False]  # the floor
    for _ in range(20):
        budget.called()
    assert [budget.allow(config) for _ in range(3)] == [True, True, False]  # 20% of 20 = 4
    now[0] += 11  # the window moved past all of it
    assert budget.allow(config) and budget.allow(config) and not budget.allow(config)


def test_unbounded_durations_are_refused_with_their_keys() -> None:
    """``.inf`` for the deadline, the backoffs, the longest ``Retry-After`` or the keep-alive
    is refused, each problem naming its key (accepted, an upstream's ``Retry-After: 1e300``
    parked a call for as long)."""
    raw = {"providers": {"p": {"type": "openai", "base_url": "http://x/v1", "api_key": "k"}},
           "models": {"m": {"targets": [{"provider": "p", "model": "x"}]}},
           "retries": {"deadline_s": math.inf, "backoff_s": math.inf,
                       "max_backoff_s": math.inf, "max_retry_after_s": math.inf},
           "streaming": {"keepalive_s": math.inf}}
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, {})
    problems = str(refused.value).splitlines()
    for key in ("retries.deadline_s", "retries.backoff_s", "retries.max_backoff_s",
                "retries.max_retry_after_s", "streaming.keepalive_s"):
        assert [p for p in problems if p.startswith(key + ": ")], key


def test_an_upstream_error_code_that_is_a_number_is_no_code() -> None:
    """vLLM's error body carries the HTTP status as its ``code``; OpenAI's codes are names or
    null, so a number (or a string of digits) is relayed as no code."""
    for code in (400, "400", 400.0):
        assert read_error_body({"error": {"message": "bad", "code": code}}, "x") == (
            "bad", None, None)
    assert read_error_body({"object": "error", "message": "m", "type": "BadRequestError",
                            "param": None, "code": 400}, "x") == ("m", None, None)
    assert read_error_body({"error": {"message": "m", "code": "invalid_value",
                                      "param": "n"}}, "x") == ("m", "invalid_value", "n")
