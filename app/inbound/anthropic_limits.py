"""Anthropic's rate-limit response headers on ``/v1/messages``: the gateway's limits, which the
limiter writes as OpenAI's ``x-ratelimit-*`` (``app.limits.headers``), also as
``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``, the reset an RFC 3339 UTC
instant to the second (``2025-08-21T12:40:59Z``), as Anthropic's API sends them. Only a
Messages call with limits pays for it (``app.api.messages``)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from app.limits.headers import (
    LIMIT_REQUESTS,
    LIMIT_TOKENS,
    REMAINING_REQUESTS,
    REMAINING_TOKENS,
    RESET_REQUESTS,
    RESET_TOKENS,
    Header,
)

PREFIX = b"anthropic-ratelimit-"

_NAMES: dict[bytes, bytes] = {
    LIMIT_REQUESTS: PREFIX + b"requests-limit",
    REMAINING_REQUESTS: PREFIX + b"requests-remaining",
    RESET_REQUESTS: PREFIX + b"requests-reset",
    LIMIT_TOKENS: PREFIX + b"tokens-limit",
    REMAINING_TOKENS: PREFIX + b"tokens-remaining",
    RESET_TOKENS: PREFIX + b"tokens-reset",
}
_RESETS = frozenset({RESET_REQUESTS, RESET_TOKENS})
_DURATION = re.compile(rb"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def seconds_of(duration: bytes) -> int:
    """A Go duration of whole seconds (``1h0m0s``, ``1m1s``, ``0s``: ``go_duration``'s) in
    seconds; 0 for anything else."""
    found = _DURATION.fullmatch(duration)
    if found is None:
        return 0
    hours, minutes, secs = (int(part or 0) for part in found.groups())
    return hours * 3600 + minutes * 60 + secs


def rfc3339(epoch_s: float) -> bytes:
    """``epoch_s`` as an RFC 3339 UTC instant to the second, as Anthropic writes resets."""
    return datetime.fromtimestamp(int(epoch_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()


def anthropic_ratelimit(headers: list[Header], *, now: float | None = None) -> list[Header]:
    """Anthropic's names for the ``x-ratelimit-*`` among ``headers`` (none when they carry
    none, or carry Anthropic's already): a reset ``N`` seconds away is the instant ``now + N``
    cut to the second, the second the window empties (windows count in whole-second slots,
    and ``N`` is rounded up)."""
    out: list[Header] = []
    for name, value in headers:
        if name.startswith(PREFIX):
            return []
        renamed = _NAMES.get(name)
        if renamed is None:
            continue
        if name in _RESETS:
            value = rfc3339((time.time() if now is None else now) + seconds_of(value))
        out.append((renamed, value))
    return out
