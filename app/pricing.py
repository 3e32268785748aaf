"""Cost of a call in USD, from the price table shipped with the project plus config overrides."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field

from app.usage import Usage

_PER_MILLION = 1_000_000

MAX_PRICE = 10_000.0
"""The highest rate a price may give: USD 10,000 per million tokens (``web_search``: per 1,000
searches), over a hundred times the dearest model listed (Claude Opus output, $75). A larger
rate is a typo, and an infinite one made a call's cost ``nan``: neither a budget nor the call
log can account it (the log stores up to $10^10 a call), so the config is refused."""

NonNegative = Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)]


class Price(BaseModel):
    """USD per million tokens (``web_search``: USD per 1,000 searches), each a finite number
    from 0 to ``MAX_PRICE``. A rate left out is priced as the one it refines:
    ``cached_input``, ``cache_write`` and ``audio_input`` as ``input``, ``cache_write_1h`` as
    ``cache_write``; ``web_search`` left out charges nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    input: NonNegative
    output: NonNegative = 0.0
    cached_input: NonNegative | None = None
    cache_write: NonNegative | None = None
    """Prompt tokens written to the cache (Anthropic's 5-minute writes)."""
    cache_write_1h: NonNegative | None = None
    """Prompt tokens written to the cache for an hour (Anthropic's ``ttl: 1h``)."""
    audio_input: NonNegative | None = None
    """Audio prompt tokens not read from the cache (Gemini prices them apart)."""
    web_search: NonNegative | None = None
    as_of: str | None = None
    source: str | None = None

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
        hour = min(usage.cache_write_1h_tokens, written)
        fresh = usage.prompt_tokens - cached - written
        audio = min(usage.audio_tokens, fresh)
        write = self.input if self.cache_write is None else self.cache_write
        total = (
            (fresh - audio) * self.input
            + audio * (self.input if self.audio_input is None else self.audio_input)
            + cached * (self.input if self.cached_input is None else self.cached_input)
            + (written - hour) * write
            + hour * (write if self.cache_write_1h is None else self.cache_write_1h)
            + usage.completion_tokens * self.output
        )
        searches = usage.web_searches * (self.web_search or 0.0) / 1000
        return total / _PER_MILLION + searches


def shipped_prices() -> dict[str, Price]:
    """The table in ``app/pricing.yaml`` (a new dict each call; the file is read once)."""
    return dict(_shipped())


@functools.cache
def _shipped() -> Mapping[str, Price]:
    # Parsed once per process: it ships with the code, and parsing it took ~20 ms, which
    # every live reload paid (bench/reload_overhead.py).
    text = resources.files("app").joinpath("pricing.yaml").read_text(encoding="utf-8")
    raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return MappingProxyType({name: Price.model_validate(entry)
                             for name, entry in raw["models"].items()})


_AZURE_35, _OPENAI_35 = "gpt-35-", "gpt-3.5-"
_BEDROCK_ARN_MODELS = (":foundation-model/", ":inference-profile/")
"""The Bedrock ARNs that end in a model id or a system inference profile id (an application
inference profile's ARN ends in an opaque id: unpriced unless the config lists the ARN)."""


def _bedrock_arn_model(model: str) -> str | None:
    """The model or system inference profile id a Bedrock ARN names
    (``arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0``,
    ``arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic...``); None for
    anything else."""
    if not model.startswith("arn:"):
        return None
    for marker in _BEDROCK_ARN_MODELS:
        _, found, rest = model.partition(marker)
        if found and rest:
            return rest
    return None


class PriceBook:
    """Looks up a target model's price: exact name first, then its longest listed prefix
    followed by ``-``. A Vertex AI id (``claude-sonnet-4@20250514``: the model, ``@``, its
    version) not listed as it is takes the price of the name before the ``@`` by the same
    rules (Vertex prices Claude at Anthropic's list prices on its global endpoint). Azure's
    ``gpt-35-...`` (no dot in Azure's model names) not listed as it is takes ``gpt-3.5-...``'s.
    A Bedrock foundation-model or system inference profile ARN not listed as it is takes the
    price of the id it ends in (``_bedrock_arn_model``)."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = dict(prices)
        self._by_length = sorted(self._prices, key=len, reverse=True)
        self._memo: dict[str, Price | None] = {}

    def price(self, model: str) -> Price | None:
        if model in self._memo:
            return self._memo[model]
        found = self._prices.get(model)
        if found is None:
            # Before the prefix rule: claude-opus-4-5@20251101 starts with claude-opus-4-.
            found = self._lookup(model.partition("@")[0])
        if found is None and model.startswith(_AZURE_35):  # Azure's name for gpt-3.5-...
            found = self.price(_OPENAI_35 + model[len(_AZURE_35):])
        if found is None and (inner := _bedrock_arn_model(model)) is not None:
            found = self.price(inner)
        if len(self._memo) < 4096:
            self._memo[model] = found
        return found

    def _lookup(self, model: str) -> Price | None:
        found = self._prices.get(model)
        if found is None:
            for name in self._by_length:
                if model.startswith(name + "-"):
                    return self._prices[name]
        return found

    def cost(self, model: str, usage: Usage, *, reported: str | None = None) -> float | None:
        """USD for ``usage`` on ``model``; when ``model`` has no price, on ``reported`` (the
        model the answer names: an Azure deployment's answer names the deployed model); None
        when neither has one. ``model``'s own price, listed or configured, always wins."""
        price = self.price(model)
        if price is None and reported:
            price = self.price(reported)
        return None if price is None else price.cost(usage)
