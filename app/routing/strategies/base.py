"""What a strategy is given (``Choice``) and what it is (``Strategy``)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from app.metrics.backends import BackendState
from app.pricing import PriceBook
from app.providers.base import Target
from app.routing.state import TargetStats


@dataclass(frozen=True, slots=True)
class Choice:
    """One call's targets and what is known about them."""

    targets: Sequence[Target]
    """In the config's order."""
    stats: Mapping[tuple[str, str], TargetStats]
    """By (provider, model): see ``stats_of``."""
    prices: PriceBook
    backends: Mapping[str, BackendState] = field(default_factory=dict)
    """The scraped state of vLLM providers, by provider name."""
    prompt_tokens: int = 0
    """The call's estimated prompt tokens."""
    output_tokens: int = 0
    """The output tokens it may produce (its max tokens, else the model's default)."""
    affinity: int = 0
    """A hash of the prompt's start (system prompt and first messages): calls that share it
    share a prefix cache."""
    rng: random.Random = field(default_factory=random.Random)


    def stats_of(self, target: Target) -> TargetStats:
        """What is known of ``target`` (nothing yet: fresh stats)."""
        return self.stats.get((target.provider, target.model)) or TargetStats()


Strategy = Callable[[Choice], list[Target]]
