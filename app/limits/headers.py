"""OpenAI's rate-limit response headers: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``
with resets written as Go durations (``time.Duration.String()``: ``1s``, ``6m0s``, ``1h0m0s``),
rounded up to the whole second: the windows count in 1-second slots (``app.limits.model``), and a
reset that changes once a second lets a credit's calls share their headers (``app.limits.redis``).
Built as the raw (bytes) pairs the server writes: every admitted call of a key with limits carries
six, and building them as text, merging them into a dict and encoding them again cost a keyed call
more than its admission (bench/README.md)."""

from __future__ import annotations

import math

_WRITTEN: dict[int, bytes] = {}
"""``go_duration``'s answers by whole second (a window's resets are within about 90 s)."""
_WRITTEN_MAX = 4096


def go_duration(seconds: float) -> bytes:
    """``seconds`` rounded up to a whole second, as Go prints a duration (``0s`` for zero or
    less)."""
    whole = math.ceil(seconds)
    written = _WRITTEN.get(whole)
    if written is None:
        written = _go_duration(whole).encode()
        if len(_WRITTEN) >= _WRITTEN_MAX:
            _WRITTEN.clear()
        _WRITTEN[whole] = written
    return written


def _go_duration(whole: int) -> str:
    if whole <= 0:
        return "0s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


LIMIT_REQUESTS = b"x-ratelimit-limit-requests"
REMAINING_REQUESTS = b"x-ratelimit-remaining-requests"
RESET_REQUESTS = b"x-ratelimit-reset-requests"
LIMIT_TOKENS = b"x-ratelimit-limit-tokens"
REMAINING_TOKENS = b"x-ratelimit-remaining-tokens"
RESET_TOKENS = b"x-ratelimit-reset-tokens"
SHOULD_NOT_RETRY = (b"x-should-retry", b"false")

Header = tuple[bytes, bytes]
"""One response header as the server writes it: lower-case name, value (latin-1)."""


def ratelimit_headers(limit_requests: int | None, remaining_requests: int | None,
                      reset_requests_s: float | None, limit_tokens: int | None,
                      remaining_tokens: int | None, reset_tokens_s: float | None,
                      budget_refusal: bool, /) -> list[Header]:
    """The headers for one decision: the request trio when a request limit applies, the token
    trio when a token limit does, ``x-should-retry: false`` for a spent budget (the OpenAI and
    Anthropic SDKs then do not retry). Positional: it runs for every admission Redis or the
    in-process limiter decides (a credit's calls reuse what it built, ``app.limits.redis``)."""
    out: list[Header] = []
    if limit_requests is not None:
        out += ((LIMIT_REQUESTS, b"%d" % limit_requests),
                (REMAINING_REQUESTS, b"%d" % max(0, remaining_requests or 0)),
                (RESET_REQUESTS, go_duration(reset_requests_s or 0.0)))
    if limit_tokens is not None:
        out += ((LIMIT_TOKENS, b"%d" % limit_tokens),
                (REMAINING_TOKENS, b"%d" % max(0, remaining_tokens or 0)),
                (RESET_TOKENS, go_duration(reset_tokens_s or 0.0)))
    if budget_refusal:
        out.append(SHOULD_NOT_RETRY)
    return out
