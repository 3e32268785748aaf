"""``latency``: the target with the lowest recent time to first byte first (a moving average,
``app.routing.state``). A target whose last attempt failed goes last until one succeeds, whether
or not it was ever measured, and however old its last measurement is. Exploration, so that a
target that was slow, or failed and recovered, is measured again: a target with no sample, or
none for ``STALE_S``, that has not failed since comes first, and ``EXPLORE`` of calls try a
random one first."""

from __future__ import annotations

import math
import time

from app.providers.base import Target
from app.routing.strategies.base import Choice

EXPLORE = 0.05
STALE_S = 30.0


def order(choice: Choice) -> list[Target]:
    targets = list(choice.targets)
    if len(targets) > 1 and choice.rng.random() < EXPLORE:
        first = targets.pop(choice.rng.randrange(len(targets)))
        return [first, *sorted(targets, key=lambda t: _score(choice, t))]
    return sorted(targets, key=lambda t: _score(choice, t))


def _score(choice: Choice, target: Target) -> float:
    stats = choice.stats_of(target)
    if stats.failures:
        # Failing now: last, until an attempt succeeds. Checked first: a target that has only
        # ever failed (a spent quota's 429s) has no sample, and one that has failed since its
        # last success longer than STALE_S has a stale one; "unknown" would put either first
        # on every call.
        return math.inf
    if stats.ewma_ms is None or time.monotonic() - stats.sampled_at > STALE_S:
        return -math.inf  # unknown: measure it
    return stats.ewma_ms
