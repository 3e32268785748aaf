"""What the gateway knows about each target right now, for the routing strategies
(``app.routing.strategies``): calls in flight from this process and a moving average of the
time each attempt took to its first byte (a stream's first chunk, a unary call's answer).

Kept per process and per (provider, model), outside the config snapshots, so that a live reload
does not forget it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.providers.base import Target

EWMA_WEIGHT = 0.2
"""The weight of the newest sample in ``TargetStats.ewma_ms``."""


@dataclass(slots=True)
class TargetStats:
    in_flight: int = 0
    """Attempts on this target running now (a committed stream counts until it ends)."""
    ewma_ms: float | None = None
    """Moving average of the time to first byte of successful attempts (``None``: none yet)."""
    sampled_at: float = 0.0
    """``time.monotonic()`` of the last sample."""
    failures: int = 0
    """Consecutive failed attempts."""


class TargetStates:
    """``TargetStats`` by (provider, model)."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], TargetStats] = {}

    @property
    def by_target(self) -> dict[tuple[str, str], TargetStats]:
        """Every target's stats by (provider, model) (``Choice.stats``)."""
        return self._stats

    def of(self, target: Target) -> TargetStats:
        key = (target.provider, target.model)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = TargetStats()
        return stats

    def started(self, target: Target) -> TargetStats:
        stats = self.of(target)
        stats.in_flight += 1
        return stats

    @staticmethod
    def answered(stats: TargetStats, first_byte_ms: float) -> None:
        """An attempt got its first byte after ``first_byte_ms``."""
        stats.failures = 0
        stats.sampled_at = time.monotonic()
        stats.ewma_ms = first_byte_ms if stats.ewma_ms is None else \
            (1 - EWMA_WEIGHT) * stats.ewma_ms + EWMA_WEIGHT * first_byte_ms

    @staticmethod
    def failed(stats: TargetStats) -> None:
        stats.failures += 1

    @staticmethod
    def ended(stats: TargetStats) -> None:
        """The attempt (or the stream it committed to) is over."""
        stats.in_flight -= 1
