"""A clock tests move by hand (``clock.t += 61``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Clock:
    t: float = 1_750_000_000.25

    def __call__(self) -> float:
        return self.t
