"""OpenAI's rate-limit response headers: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``
with resets written as Go durations (``time.Duration.String()``: ``1s``, ``6m0s``, ``59ms``,
``1h0m0s``), rounded to the millisecond. Built as the raw (bytes) pairs the server writes: every
admitted call of a key with limits carries six, and building them as text, merging them into a
dict and encoding them again cost a keyed call more than its admission (bench/README.md)."""

from __future__ import annotations

_WRITTEN: dict[int, bytes] = {}
"""``go_duration``'s answers by millisecond. A call admitted by Redis has resets within a second
of a minute; a credit's calls see theirs age over the credit's life, and about two in three find
their value here (bench/README.md)."""
_WRITTEN_MAX = 8192


def go_duration(seconds: float) -> bytes:
    """``seconds`` as Go prints a duration, to the millisecond (``0s`` for zero or less)."""
    ms = round(seconds * 1000)
    written = _WRITTEN.get(ms)
    if written is None:
        written = _go_duration(ms).encode()
        if len(_WRITTEN) >= _WRITTEN_MAX:
            _WRITTEN.clear()
        _WRITTEN[ms] = written
    return written


def _go_duration(ms: int) -> str:
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
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
_SHOULD_NOT_RETRY = (b"x-should-retry", b"false")

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
        out.append(_SHOULD_NOT_RETRY)
    return out
