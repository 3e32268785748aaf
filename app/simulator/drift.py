"""Process-wide drift: how the one simulated model answers, changed while the process runs.

The ``X-Sim-*`` headers change one request; a gateway under test does not relay its clients'
headers upstream, so a test that wants the *same* model to change its behaviour mid-run sets these
fields instead, through ``POST /_sim/state`` (partial updates; the answer shows every field).
``POST /_sim/reset`` restores the defaults and reseeds the draws.

- ``completion_tokens``: an int >= 1, or null (default: ``default_completion_tokens``): the
  natural answer length of requests without ``X-Sim-Completion-Tokens``. ``max_tokens`` and stop
  sequences still cut it.
- ``length_spread``: s in [0, 1] (default 0): the natural length L of each answer is drawn
  uniformly from the integers in [round(L*(1-s)), round(L*(1+s))], at least 1. Only the
  process-wide length spreads; the header's length is exact.
- ``refusal_rate``: in [0, 1] (default 0): that share of answers is the refusal sentence, as with
  ``X-Sim-Refusal: 1`` (which still forces one).
- ``fingerprint``: a string, or null (default): the ``system_fingerprint`` reported when no
  ``X-Sim-Fingerprint`` is sent (OpenAI/vLLM only: Anthropic has none).
- ``model``: a non-empty string, or null (default): the ``model`` reported when no ``X-Sim-Model``
  is sent.

Drift reaches chat completions, legacy completions and Anthropic messages, not embeddings. Draws
are one per request (the ``n`` choices of a request share them), from two generators seeded with
``--seed`` (lengths and refusals apart, so setting one does not shift the other's sequence): the
same request order gives the same answers. With every field at its default a request pays one
attribute check (``active``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from app.simulator.faults import Knobs
from app.simulator.options import SimOptions


def _length(key: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be int or null")
    if value < 1:
        raise ValueError(f"{key} must be at least 1")
    return value


def _share(key: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be float")
    if not 0 <= value <= 1:
        raise ValueError(f"{key} must be between 0 and 1")
    return float(value)


def _text(key: str, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be str or null")
    if key == "model" and not value:
        raise ValueError(f"{key} must not be empty")
    return value


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "completion_tokens": _length, "length_spread": _share, "refusal_rate": _share,
    "fingerprint": _text, "model": _text}
FIELDS = frozenset(_CHECKS)


class Drift:
    """The drift fields, their seeded draws, and ``active``: whether any field is set."""

    __slots__ = ("_default_length", "_lengths", "_refusals", "_seed", "active",
                 "completion_tokens", "fingerprint", "length_spread", "model", "refusal_rate")

    def __init__(self, options: SimOptions) -> None:
        self._seed = options.seed
        self._default_length = options.default_completion_tokens
        self._lengths = random.Random()
        self._refusals = random.Random()
        self.reset()

    def reset(self) -> None:
        """Back to the defaults (no drift), both draw sequences restarted."""
        self.completion_tokens: int | None = None
        self.length_spread = 0.0
        self.refusal_rate = 0.0
        self.fingerprint: str | None = None
        self.model: str | None = None
        self.active = False
        self._lengths.seed(f"length:{self._seed}")
        self._refusals.seed(f"refusal:{self._seed}")

    @staticmethod
    def parse(values: dict[str, Any]) -> dict[str, Any]:
        """The drift fields among ``values``, checked; raises ValueError naming the first bad one
        (other keys are left to the caller)."""
        return {key: check(key, values[key]) for key, check in _CHECKS.items() if key in values}

    def update(self, parsed: dict[str, Any]) -> None:
        """Apply fields ``parse`` returned."""
        for key, value in parsed.items():
            setattr(self, key, value)
        self.active = (self.completion_tokens is not None or self.length_spread > 0
                       or self.refusal_rate > 0 or self.fingerprint is not None
                       or self.model is not None)

    def as_dict(self) -> dict[str, Any]:
        """The current values."""
        return {key: getattr(self, key) for key in _CHECKS}

    def apply(self, knobs: Knobs) -> Knobs:
        """``knobs`` with the drift filled in where the headers left a field unset (call only
        when ``active``)."""
        length = knobs.completion_tokens
        if length is None:
            length = self.completion_tokens
            if self.length_spread > 0:
                length = self._spread(self._default_length if length is None else length)
        refusal = knobs.refusal
        if self.refusal_rate > 0:
            drawn = self._refusals.random() < self.refusal_rate
            refusal = refusal or drawn
        return replace(knobs, completion_tokens=length, refusal=refusal,
                       fingerprint=self.fingerprint if knobs.fingerprint is None
                       else knobs.fingerprint,
                       model=knobs.model or self.model)

    def _spread(self, length: int) -> int:
        low = max(1, round(length * (1 - self.length_spread)))
        high = max(low, round(length * (1 + self.length_spread)))
        return self._lengths.randint(low, high)
