"""Upstream waits no number can hold: Google's ``retryDelay`` of 400 digits and an infinite
or NaN wait are never a 500 (``app.providers.gemini_response``, ``app.api.wire``)."""

from __future__ import annotations

import math

from app import errors
from app.api.wire import MAX_RETRY_AFTER_S, upstream_retry_after
from app.providers.gemini_response import error_mapper


def _limited(wait: float | None) -> errors.UpstreamRateLimited:
    error = errors.UpstreamRateLimited("slow down")
    error.retry_after_s = wait
    return error


def test_an_infinite_wait_is_answered_as_the_longest() -> None:
    """An infinite wait is the longest ``retry-after`` (``math.ceil(inf)`` raised
    OverflowError, a 500 to the client); NaN says nothing."""
    assert upstream_retry_after(_limited(math.inf)) == MAX_RETRY_AFTER_S
    assert upstream_retry_after(_limited(math.nan)) is None
    assert upstream_retry_after(_limited(0.2)) == 1


def test_a_retry_delay_too_long_for_a_float_is_dropped() -> None:
    """A ``RetryInfo.retryDelay`` of 400 digits is no wait at all (as an unreadable
    ``Retry-After`` header), not infinity; a usual one is read."""
    mapper = error_mapper("Gemini")

    def wait(delay: str) -> float | None:
        payload = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
                             "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                          "retryDelay": delay}]}}
        error = mapper(429, payload, "")
        assert isinstance(error, errors.UpstreamRateLimited)
        return error.retry_after_s

    assert wait("1" + "0" * 400 + "s") is None
    assert wait("37s") == 37.0
