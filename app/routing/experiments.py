"""A/B experiments: a public model's calls split between named variants by weight, each call
assigned by a hash of what keeps its caller on one variant (``ExperimentConfig.sticky``), so
one end user (or key) always sees the same variant while the weights and variants stay the
same. The call row records the experiment and the variant (``experiment``, ``variant``); the
answer says it in ``x-switchboard-variant``.

A variant may pin a prompt template version (``prompt``): a call that names a template is then
assigned its variant when the template is rendered, before routing, and gets that variant's
version (``app.stages.template``), so an experiment can compare two versions of a prompt.

Shadow variants serve no client: once a call of a serving variant has been answered, a
``sample`` of them is copied to each shadow variant in the background (``Gateway._shadow``),
with the original's caller, request and body but not streamed and not admitted (a copy
charges no key's rate limits or budget: its cost is the experiment's, in its own call row,
whose ``shadow_of`` names the original). The client's answer has gone by then: a shadow adds no
latency and no failure to it. A copy runs under its original's privacy policy, applied to the
shadow variant's targets (the stages' ``on_shadow`` hooks: ``app.stages.privacy``). Calls to
``/v1/messages`` are not copied.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the routing table builds experiments
    from app.config import VariantPrompt
    from app.routing.table import Route

VARIANT_KEY_HEADER = "x-switchboard-variant-key"
"""The header a ``sticky: header`` experiment assigns by."""


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float
    route: Route
    shadow: bool = False
    sample: float = 1.0
    prompt: VariantPrompt | None = None
    """The prompt template version its calls render (``app.stages.template``)."""

    def samples(self, call_id: str) -> bool:
        """Whether the call ``call_id`` is copied to this (shadow) variant."""
        digest = hashlib.blake2b(f"{self.name}\0{call_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < self.sample


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    model: str
    sticky: str
    variants: tuple[Variant, ...]
    """The variants that serve calls."""
    shadows: tuple[Variant, ...] = ()

    @property
    def pins_prompts(self) -> bool:
        """Whether a variant renders a prompt version of its own: the template stage then
        assigns template calls their variant (``app.stages.template``)."""
        return any(v.prompt is not None for v in self.variants)

    def assign(self, key: str) -> Variant:
        """The variant of the caller known by ``key`` (the same key, the same variant)."""
        digest = hashlib.blake2b(f"{self.name}\0{key}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") / 2**64 * sum(v.weight for v in self.variants)
        for variant in self.variants:
            point -= variant.weight
            if point < 0:
                return variant
        return self.variants[-1]
