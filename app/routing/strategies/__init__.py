"""Routing strategies: how a public model's targets are ordered for one call (``strategy:`` per
model in the config). The call tries them in that order, falling back to the next one on a
retryable failure, as before.

A strategy is a pure function of a ``Choice`` (the targets and what is known about them)
returning the targets in the order to try; adding one is a module here and a line in
``STRATEGIES``.
"""

from __future__ import annotations

from app.routing.strategies import cost, latency, least_busy, ordered, vllm_load, weighted
from app.routing.strategies.base import Choice, Strategy

STRATEGIES: dict[str, Strategy] = {
    "ordered": ordered.order,
    "weighted": weighted.order,
    "least_busy": least_busy.order,
    "latency": latency.order,
    "cost": cost.order,
    "vllm_load": vllm_load.order,
}

__all__ = ["STRATEGIES", "Choice", "Strategy"]
