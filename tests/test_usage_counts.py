"""Reported token counts: what the gateway accepts as usage a provider could have billed."""

from __future__ import annotations

from typing import Any

import pytest

from app.providers.anthropic_response import read_usage as anthropic_usage
from app.providers.gemini_response import read_usage as gemini_usage
from app.usage import MAX_REPORTED_TOKENS, Usage, token_count


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0), (7, 7), (MAX_REPORTED_TOKENS, MAX_REPORTED_TOKENS),
    (-1, None), (MAX_REPORTED_TOKENS + 1, None), (True, None), (False, None), (5.0, None),
    ("5", None), (None, None),
])
def test_token_count(value: Any, expected: int | None) -> None:
    """An int from 0 to MAX_REPORTED_TOKENS is a count; a negative or larger one, a bool, a
    float or a string is not."""
    assert token_count(value) == expected


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": -5, "completion_tokens": 3},
    {"prompt_tokens": 5, "completion_tokens": 1_000_000_000_000_000},
    {"prompt_tokens": True, "completion_tokens": 3},
    {"prompt_tokens": 5, "completion_tokens": "3"},
])
def test_openai_usage_with_a_nonsense_count_is_malformed(usage: dict[str, Any]) -> None:
    """A prompt or completion count that is not a token count makes the usage unreadable."""
    assert Usage.from_openai(usage) is None


def test_openai_usage_breakdowns_that_are_not_counts_read_as_zero() -> None:
    """Cached, cache-written and reasoning counts that are nonsense are dropped, not kept."""
    usage = Usage.from_openai({
        "prompt_tokens": 10, "completion_tokens": 4, "total_tokens": "lots",
        "prompt_tokens_details": {"cached_tokens": -3, "cache_write_tokens": 10**15},
        "completion_tokens_details": {"reasoning_tokens": True}})
    assert usage == Usage(prompt_tokens=10, completion_tokens=4)


def test_plausible() -> None:
    """Every count of a usage must be a token count."""
    assert Usage(prompt_tokens=3, completion_tokens=MAX_REPORTED_TOKENS).plausible()
    assert not Usage(prompt_tokens=-1).plausible()
    assert not Usage(completion_tokens=MAX_REPORTED_TOKENS + 1).plausible()
    assert not Usage(prompt_tokens=1, cached_tokens=-1).plausible()


def test_translated_usage_with_nonsense_counts_is_not_plausible() -> None:
    """Provider readers that keep the upstream's numbers leave the check to ``plausible``."""
    anthropic = anthropic_usage({"input_tokens": -5, "output_tokens": 3})
    gemini = gemini_usage({"promptTokenCount": 3, "candidatesTokenCount": 10**15})
    assert anthropic is not None and not anthropic.plausible()
    assert gemini is not None and not gemini.plausible()
