"""``least_busy``: the target with the fewest calls in flight from this gateway process first
(ties in the config's order)."""

from __future__ import annotations

from app.providers.base import Target
from app.routing.strategies.base import Choice


def order(choice: Choice) -> list[Target]:
    return sorted(choice.targets, key=lambda t: choice.stats_of(t).in_flight)
