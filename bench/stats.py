"""Latency summaries and the one result shape every load driver (wrk or Python) reports."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

QUANTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile of an ascending list (0.0 when it is empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize_ms(seconds: Iterable[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean of durations given in seconds, in milliseconds."""
    ordered = sorted(s * 1000.0 for s in seconds)
    out = {name: round(percentile(ordered, q), 3) for name, q in QUANTILES.items()}
    out["max"] = round(ordered[-1], 3) if ordered else 0.0
    out["mean"] = round(sum(ordered) / len(ordered), 3) if ordered else 0.0
    return out


@dataclass
class LoadReport:
    """What one load run measured.

    ``latency_ms``: request latency (closed loop: from send; open loop: from the *scheduled*
    send time, so a stalled server cannot hide its queue; ttft mode: to the first body byte).
    ``errors`` counts non-2xx answers and failed requests together, ``errors_detail`` by kind.
    ``lag_ms``: how late the open-loop generator itself sent, a check on its own fidelity.
    ``overhead_ms``: the gateway's ``x-switchboard-overhead-ms`` header, when it sends one.
    ``cpu_busy_pct``: how busy each core was during the run: the server's core should be near
    100% in a throughput run, or the load side was the limit.
    ``server_cpu_us``: CPU time the server spent per request (throughput runs): unlike requests/s
    it hardly moves when other processes share the machine.
    """

    tool: str
    mode: str
    requests: int
    errors: int
    duration_s: float
    latency_ms: dict[str, float]
    errors_detail: dict[str, int] = field(default_factory=dict)
    lag_ms: dict[str, float] | None = None
    overhead_ms: dict[str, float] | None = None
    cpu_busy_pct: dict[str, float] | None = None
    server_cpu_us: float | None = None

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``rps`` included."""
        return {**asdict(self), "rps": round(self.rps, 1)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadReport:
        """Inverse of ``to_dict`` (extra keys such as ``rps`` are ignored)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})
