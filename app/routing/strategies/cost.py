"""``cost``: the cheapest target first for this call's estimated tokens (its prompt, and its
max tokens or the model's default as output), priced from the price table; a target whose
model has no price comes after those that have one. Fallback follows the same order."""

from __future__ import annotations

import math

from app.providers.base import Target
from app.routing.strategies.base import Choice
from app.usage import Usage


def order(choice: Choice) -> list[Target]:
    usage = Usage(prompt_tokens=choice.prompt_tokens, completion_tokens=choice.output_tokens)

    def price(target: Target) -> float:
        cost = choice.prices.cost(target.model, usage)
        return math.inf if cost is None else cost

    return sorted(choice.targets, key=price)
