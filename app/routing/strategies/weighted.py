"""``weighted``: a random order drawn by the targets' ``weight`` (a target of weight 3 comes
first three times as often as one of weight 1); the rest follow, drawn the same way, as
fallbacks."""

from __future__ import annotations

from app.providers.base import Target
from app.routing.strategies.base import Choice


def order(choice: Choice) -> list[Target]:
    left = list(choice.targets)
    out: list[Target] = []
    while left:
        pick = choice.rng.random() * sum(t.weight for t in left)
        for i, target in enumerate(left):
            pick -= target.weight
            if pick < 0 or i == len(left) - 1:
                out.append(left.pop(i))
                break
    return out
