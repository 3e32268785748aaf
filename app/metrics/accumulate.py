"""Per-request counts kept in plain Python numbers, pushed into Prometheus children in bulk.

``prometheus_client`` takes a lock (and, with several workers, writes an mmap'd file) on every
increment; a request touches about a dozen values, which measured 11 us per request, ~5% of the
gateway's CPU per call (bench/README.md). Here a request only adds to ints and floats; ``flush``
moves the sums into the real children once a second and before every ``/metrics`` answer, so a
scrape sees every request its own process finished before it (another worker's, with several,
as of that worker's last flush: up to a second behind). Everything runs on the event loop thread.
"""

from __future__ import annotations

import bisect
import math
from typing import Any


class Count:
    """A counter child's pending increments."""

    __slots__ = ("child", "n")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.n: float = 0

    def flush(self) -> None:
        """Add the pending sum to the child. A sum no counter can take (negative, NaN,
        infinite) is dropped and raises ``ValueError``: kept, it would fail every later flush."""
        n, self.n = self.n, 0
        if n:
            if not 0 < n < math.inf:
                raise ValueError(f"a counter cannot be incremented by {n}")
            self.child.inc(n)


class Hist:
    """A histogram child's pending observations: per-bucket counts and their sum."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        # The child's upper bounds, +Inf last; an observation goes to the first bound >= it,
        # as ``Histogram.observe`` does.
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        counts = self.counts
        if not any(counts):
            return
        # prometheus-client has no public bulk observe: add to the child's bucket and sum
        # values directly (its layout since 0.1; tests/metrics pin the resulting samples).
        buckets = self.child._buckets
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
                counts[i] = 0
        self.child._sum.inc(self.total)
        self.total = 0.0


class Level:
    """A gauge's current value, kept in a plain number and copied into the child at flush."""

    __slots__ = ("child", "n")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.n: float = 0

    def flush(self) -> None:
        self.child.set(self.n)


class Pending:
    """Every accumulator of one registry, flushed together."""

    def __init__(self) -> None:
        self._all: list[Count | Hist | Level] = []

    def count(self, child: Any) -> Count:
        acc = Count(child)
        self._all.append(acc)
        return acc

    def hist(self, child: Any) -> Hist:
        acc = Hist(child)
        self._all.append(acc)
        return acc

    def level(self, child: Any) -> Level:
        acc = Level(child)
        self._all.append(acc)
        return acc

    def discard(self, accumulators: list[Count | Hist | Level]) -> None:
        """Flush ``accumulators`` and stop keeping them (their series are being removed)."""
        gone = {id(acc) for acc in accumulators}
        for acc in accumulators:
            acc.flush()
        self._all = [acc for acc in self._all if id(acc) not in gone]

    def flush(self) -> int:
        """Move every pending value into its child; returns how many were dropped because
        their child refused them (``Count.flush``: a bug before this point, which must not stop
        the other values, or the next flush, from reaching the families)."""
        dropped = 0
        for acc in self._all:
            try:
                acc.flush()
            except ValueError:
                dropped += 1
        return dropped
