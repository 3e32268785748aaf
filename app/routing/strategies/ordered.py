"""``ordered``: the targets in the config's order (the default)."""

from __future__ import annotations

from app.providers.base import Target
from app.routing.strategies.base import Choice


def order(choice: Choice) -> list[Target]:
    return list(choice.targets)
