"""A/B experiments: a public model's calls split between named variants by weight, each call
assigned by a hash of what keeps its caller on one variant (``ExperimentConfig.sticky``), so
one end user (or key) always sees the same variant while the weights and variants stay the
same. The call row records the experiment and the variant (``experiment``, ``variant``); the
answer says it in ``x-switchboard-variant``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the routing table builds experiments
    from app.routing.table import Route

VARIANT_KEY_HEADER = "x-switchboard-variant-key"
"""The header a ``sticky: header`` experiment assigns by."""


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float
    route: Route


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    model: str
    sticky: str
    variants: tuple[Variant, ...]

    def assign(self, key: str) -> Variant:
        """The variant of the caller known by ``key`` (the same key, the same variant)."""
        digest = hashlib.blake2b(f"{self.name}\0{key}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") / 2**64 * sum(v.weight for v in self.variants)
        for variant in self.variants:
            point -= variant.weight
            if point < 0:
                return variant
        return self.variants[-1]
