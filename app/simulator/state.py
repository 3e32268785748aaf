"""The simulator's mutable state: traffic stats, the request log, admin-set gauges, vLLM metrics.

One instance per app, built in ``create_app`` and touched only from the event loop's thread, so
plain attributes suffice (no locks).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Any

REQUEST_LOG_SIZE = 200

# vLLM's bucket boundaries (seconds) for its three latency histograms.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
               10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
               120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


class Histogram:
    """A Prometheus histogram: per-bucket counts (non-cumulative until rendered), sum, count."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        """Record ``value`` ``times`` times (one bisect however many)."""
        if times <= 0:
            return
        self.counts[bisect_left(self.bounds, value)] += times
        self.total += value * times
        self.count += times

    def lines(self, name: str, labels: str) -> list[str]:
        """Exposition lines: cumulative ``_bucket`` series, then ``_sum`` and ``_count``."""
        out: list[str] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append(f'{name}_bucket{{{labels},le="{bound}"}} {float(running)}')
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {float(self.count)}')
        out.append(f"{name}_sum{{{labels}}} {self.total}")
        out.append(f"{name}_count{{{labels}}} {float(self.count)}")
        return out


GAUGE_CASTS: dict[str, type] = {"num_requests_waiting": int, "num_requests_running": int,
                               "kv_cache_usage_perc": float, "prefix_cache_hit_rate": float,
                               "healthy": bool}


class Gauges:
    """Values an admin sets through ``POST /_sim/state`` (reflected in ``/metrics``)."""

    __slots__ = ("healthy", "kv_cache_usage_perc", "num_requests_running",
                 "num_requests_waiting", "prefix_cache_hit_rate")

    def __init__(self) -> None:
        self.num_requests_waiting = 0
        self.num_requests_running = 0
        self.kv_cache_usage_perc = 0.0
        self.prefix_cache_hit_rate = 0.0
        self.healthy = True

    @staticmethod
    def parse(values: dict[str, Any]) -> dict[str, Any]:
        """``values`` checked and cast; raises ValueError naming the first bad field."""
        parsed: dict[str, Any] = {}
        for key, value in values.items():
            cast = GAUGE_CASTS.get(key)
            if cast is None:
                raise ValueError(f"unknown field {key!r}; expected one of {sorted(GAUGE_CASTS)}")
            wrong = (isinstance(value, bool) != (cast is bool)
                     or not isinstance(value, int if cast is int else int | float))
            if wrong:
                raise ValueError(f"{key} must be {cast.__name__}")
            if cast is not bool and value < 0:
                raise ValueError(f"{key} must not be negative")
            parsed[key] = cast(value)
        return parsed

    def update(self, values: dict[str, Any]) -> None:
        """Apply a subset of fields (all or none); raises ValueError naming the first bad one."""
        for key, value in self.parse(values).items():
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        """The current values."""
        return {key: getattr(self, key) for key in self.__slots__}


class SimState:
    """Everything the simulator counts. ``reset()`` clears all but the live in-flight count."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Forget traffic, the request log, admin gauges and metrics."""
        self.requests: dict[str, int] = {}
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_cancelled = 0
        self.streams_faulted = 0
        self.requests_cancelled = 0
        # (path, query, raw headers, raw body): decoded only when someone reads the log.
        self.log: deque[tuple[str, str, list[tuple[bytes, bytes]], bytes]] = deque(
            maxlen=REQUEST_LOG_SIZE)
        self.gauges = Gauges()
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.prefix_queries = 0
        self.prefix_hits = 0.0
        self.finished: dict[str, int] = {"stop": 0, "length": 0, "abort": 0}
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)

    def record(self, *, path: str, query: str, headers: list[tuple[bytes, bytes]],
               body: bytes) -> None:
        """Count a request and keep it, undecoded, in the bounded log."""
        self.requests[path] = self.requests.get(path, 0) + 1
        self.log.append((path, query, headers, body))

    def finish(self, *, prompt: int, completion: int, reason: str, ttft: float, e2e: float,
               itl: float, itl_count: int) -> None:
        """Account one finished generation (``reason``: ``stop``, ``length`` or ``abort``).

        ``ttft``/``e2e`` in seconds; ``itl`` is the mean inter-token gap, observed
        ``itl_count`` times (one per token after the first), as vLLM does per token.
        """
        self.prompt_tokens += prompt
        self.generation_tokens += completion
        self.prefix_queries += prompt
        self.prefix_hits += prompt * self.gauges.prefix_cache_hit_rate
        self.finished[reason] = self.finished.get(reason, 0) + 1
        if completion:
            self.ttft.observe(ttft)
        self.itl.observe(itl, itl_count)
        self.e2e.observe(e2e)

    def stats(self) -> dict[str, Any]:
        """The ``GET /_sim/stats`` document."""
        return {"requests": dict(self.requests), "streams_started": self.streams_started,
                "streams_completed": self.streams_completed,
                "streams_cancelled": self.streams_cancelled,
                "streams_faulted": self.streams_faulted,
                "requests_cancelled": self.requests_cancelled, "in_flight": self.in_flight}
