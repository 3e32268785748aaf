"""Reported token counts: what the gateway accepts as usage a provider could have billed."""

from __future__ import annotations

from typing import Any

import pytest

from app.providers.anthropic_response import read_usage as anthropic_usage
from app.providers.bedrock_response import read_usage as bedrock_usage
from app.providers.cohere_response import read_usage as cohere_usage
from app.providers.gemini_embed import read_predict
from app.providers.gemini_response import read_usage as gemini_usage
from app.providers.huggingface_tgi import to_text_completion
from app.providers.replicate_output import read_usage as replicate_usage
from app.usage import MAX_REPORTED_TOKENS, Usage, token_count

NOT_COUNTS = [16.5, "16", True, False, {}, [], -1, MAX_REPORTED_TOKENS + 1]
"""Values no provider could bill as a token count (``token_count`` is None for each; so is
null, which a reader takes as the count's absence)."""


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0), (7, 7), (MAX_REPORTED_TOKENS, MAX_REPORTED_TOKENS), (5.0, 5), (0.0, 0),
    *((value, None) for value in NOT_COUNTS), (None, None), (float("nan"), None),
    (float("inf"), None), (1e300, None),
])
def test_token_count(value: Any, expected: int | None) -> None:
    """A whole number from 0 to MAX_REPORTED_TOKENS is a count, an int or a float such as 5.0
    (JSON has one number type); a fraction, a negative or larger one, a bool, a string, null
    or an object is not."""
    got = token_count(value)
    assert got == expected
    assert got is None or type(got) is int


@pytest.mark.parametrize("bad", NOT_COUNTS)
@pytest.mark.parametrize(("read", "counts", "key"), [
    (anthropic_usage, {"input_tokens": 13, "output_tokens": 16}, "input_tokens"),
    (anthropic_usage, {"input_tokens": 13, "output_tokens": 16}, "output_tokens"),
    (anthropic_usage, {"input_tokens": 13, "output_tokens": 16, "cache_read_input_tokens": 4,
                       "cache_creation_input_tokens": 2}, "cache_read_input_tokens"),
    (anthropic_usage, {"input_tokens": 13, "output_tokens": 16, "cache_read_input_tokens": 4,
                       "cache_creation_input_tokens": 2}, "cache_creation_input_tokens"),
    (bedrock_usage, {"inputTokens": 13, "outputTokens": 16}, "inputTokens"),
    (bedrock_usage, {"inputTokens": 13, "outputTokens": 16}, "outputTokens"),
    (bedrock_usage, {"inputTokens": 13, "outputTokens": 16, "cacheReadInputTokens": 4},
     "cacheReadInputTokens"),
    (gemini_usage, {"promptTokenCount": 13, "candidatesTokenCount": 16}, "promptTokenCount"),
    (gemini_usage, {"promptTokenCount": 13, "candidatesTokenCount": 16},
     "candidatesTokenCount"),
    (gemini_usage, {"promptTokenCount": 13, "candidatesTokenCount": 16,
                    "thoughtsTokenCount": 3}, "thoughtsTokenCount"),
    (gemini_usage, {"promptTokenCount": 13, "candidatesTokenCount": 16,
                    "toolUsePromptTokenCount": 3}, "toolUsePromptTokenCount"),
    (lambda metrics: replicate_usage({"metrics": metrics}),
     {"input_token_count": 13, "output_token_count": 16}, "input_token_count"),
    (lambda metrics: replicate_usage({"metrics": metrics}),
     {"input_token_count": 13, "output_token_count": 16}, "output_token_count"),
    (lambda counts: cohere_usage({"billed_units": counts}),
     {"input_tokens": 13, "output_tokens": 16}, "input_tokens"),
    (lambda counts: cohere_usage({"tokens": counts}),
     {"input_tokens": 13, "output_tokens": 16}, "output_tokens"),
], ids=["anthropic-input", "anthropic-output", "anthropic-cache-read", "anthropic-cache-write",
        "bedrock-input", "bedrock-output", "bedrock-cache-read", "gemini-prompt",
        "gemini-candidates", "gemini-thoughts", "gemini-tool-use", "replicate-input",
        "replicate-output", "cohere-billed-input", "cohere-tokens-output"])
def test_a_provider_count_that_is_not_one_means_no_usage(
        read: Any, counts: dict[str, Any], key: str, bad: Any) -> None:
    """Every provider's reader takes its counts by ``token_count``: a count given that is not
    one (a fraction, a string, a bool, null, an object, out of range) makes the report none,
    and the gateway estimates the call, never reading that count as 0 (or ``true`` as 1).
    A prompt count absent (null included) is no report either; an output count absent is 0."""
    good = read(counts)
    assert good is not None and good.plausible() and good.prompt_tokens >= 13
    assert read({**counts, key: bad}) is None


@pytest.mark.parametrize(("read", "prompt"), [
    (anthropic_usage, "input_tokens"), (bedrock_usage, "inputTokens"),
    (gemini_usage, "promptTokenCount"),
    (lambda m: replicate_usage({"metrics": m}), "input_token_count")])
def test_a_report_without_its_prompt_count_is_none(read: Any, prompt: str) -> None:
    """A prompt count absent or null: none reported (not a prompt of 0 tokens)."""
    assert read({prompt: None}) is None
    assert read({"output_tokens": 3, "outputTokens": 3, "candidatesTokenCount": 3,
                 "output_token_count": 3}) is None


@pytest.mark.parametrize("read", [anthropic_usage, bedrock_usage, gemini_usage,
                                  lambda m: replicate_usage({"metrics": m}), cohere_usage])
def test_an_empty_usage_object_is_no_usage(read: Any) -> None:
    """``{}`` reports nothing: estimated, not zeros accounted as real."""
    assert read({}) is None


def test_whole_floats_count_for_every_provider() -> None:
    """16.0 is 16 whichever provider sends it (JSON has one number type)."""
    expected = (13, 16)
    for usage in (
            anthropic_usage({"input_tokens": 13.0, "output_tokens": 16.0}),
            bedrock_usage({"inputTokens": 13.0, "outputTokens": 16.0}),
            gemini_usage({"promptTokenCount": 13.0, "candidatesTokenCount": 16.0}),
            replicate_usage({"metrics": {"input_token_count": 13.0,
                                         "output_token_count": 16.0}}),
            cohere_usage({"billed_units": {"input_tokens": 13.0, "output_tokens": 16.0}}),
            Usage.from_openai({"prompt_tokens": 13.0, "completion_tokens": 16.0})):
        assert usage is not None and usage.plausible()
        assert (usage.prompt_tokens, usage.completion_tokens) == expected
        assert type(usage.prompt_tokens) is int and type(usage.completion_tokens) is int


def test_cohere_units_that_cannot_be_read_fall_back_to_tokens() -> None:
    """Billed units first; unreadable ones give way to ``tokens``, as absent ones do."""
    usage = cohere_usage({"billed_units": {"input_tokens": "5", "output_tokens": 2},
                          "tokens": {"input_tokens": 9, "output_tokens": 2}})
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (9, 2)


def test_breakdowns_that_are_not_counts_read_as_zero_and_are_capped() -> None:
    """Anthropic's thinking, 1-hour writes and searches, Gemini's cached and audio tokens:
    a part that is not a count reads 0, one above its whole reads as the whole."""
    usage = anthropic_usage({
        "input_tokens": 10, "output_tokens": 4, "cache_creation_input_tokens": 6,
        "cache_creation": {"ephemeral_1h_input_tokens": 60},
        "output_tokens_details": {"thinking_tokens": True},
        "server_tool_use": {"web_search_requests": 2.5}})
    assert usage == Usage(prompt_tokens=16, completion_tokens=4, cache_write_tokens=6,
                          cache_write_1h_tokens=6)
    gemini = gemini_usage({
        "promptTokenCount": 10, "candidatesTokenCount": 2, "cachedContentTokenCount": 99,
        "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 50}]})
    assert gemini == Usage(prompt_tokens=10, completion_tokens=2, cached_tokens=10,
                           audio_tokens=10)
    assert gemini_usage({"promptTokenCount": 10, "cachedContentTokenCount": "3",
                         "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": True}]}
                        ) == Usage(prompt_tokens=10)


def test_tgi_and_vertex_predict_counts_that_are_not_counts_are_estimated() -> None:
    """TGI's generated tokens and Vertex's embedding token counts go by the same rule."""
    _, usage = to_text_completion(
        {"generated_text": "Hello there", "details": {"generated_tokens": True}},
        completion_id="c", model="m", created=0, prompt="Hi", echo=False)
    assert usage.estimated and usage.completion_tokens == 2
    answer = {"predictions": [{"embeddings": {"values": [0.5],
                                              "statistics": {"token_count": 2.5}}}]}
    assert read_predict(answer, expected=1) == ([[0.5]], None)


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": -5, "completion_tokens": 3},
    {"prompt_tokens": 5, "completion_tokens": 1_000_000_000_000_000},
    {"prompt_tokens": True, "completion_tokens": 3},
    {"prompt_tokens": 5, "completion_tokens": "3"},
    {"prompt_tokens": 5.5, "completion_tokens": 3},
    {"prompt_tokens": None, "completion_tokens": 3},
])
def test_openai_usage_with_a_nonsense_count_is_malformed(usage: dict[str, Any]) -> None:
    """A prompt or completion count that is not a token count makes the usage unreadable."""
    assert Usage.from_openai(usage) is None


def test_openai_usage_breakdowns_that_are_not_counts_read_as_zero() -> None:
    """Cached, cache-written and reasoning counts that are nonsense are dropped, not kept, and
    corrected in the usage object itself (which the gateway relays to the client)."""
    reported: dict[str, Any] = {
        "prompt_tokens": 10, "completion_tokens": 4, "total_tokens": "lots",
        "prompt_tokens_details": {"cached_tokens": -3, "cache_write_tokens": 10**15,
                                  "audio_tokens": None},
        "completion_tokens_details": {"reasoning_tokens": True,
                                      "accepted_prediction_tokens": 1}}
    usage = Usage.from_openai(reported)
    assert usage == Usage(prompt_tokens=10, completion_tokens=4)
    assert reported["prompt_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0,
                                                 "audio_tokens": None}
    assert reported["completion_tokens_details"] == {"reasoning_tokens": 0,
                                                     "accepted_prediction_tokens": 1}


def test_openai_usage_breakdowns_above_their_whole_are_capped() -> None:
    """A cached count above the prompt reads (and is relayed) as the prompt; writes as what
    the reads leave of it; 1-hour writes as the writes; reasoning as the completion: the
    stored row and the metrics never say more cached input than input."""
    reported: dict[str, Any] = {
        "prompt_tokens": 13, "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 999, "cache_write_tokens": 5,
                                  "cache_write_1h_tokens": 5, "audio_tokens": 20},
        "completion_tokens_details": {"reasoning_tokens": 7}}
    usage = Usage.from_openai(reported)
    assert usage == Usage(prompt_tokens=13, completion_tokens=4, cached_tokens=13,
                          audio_tokens=13, reasoning_tokens=4)
    assert reported["prompt_tokens_details"] == {"cached_tokens": 13, "cache_write_tokens": 0,
                                                 "cache_write_1h_tokens": 0, "audio_tokens": 13}
    assert reported["completion_tokens_details"] == {"reasoning_tokens": 4}
    plain = {"prompt_tokens": 13, "completion_tokens": 4,
             "prompt_tokens_details": {"cached_tokens": 8.0, "audio_tokens": 0}}
    assert Usage.from_openai(plain) == Usage(prompt_tokens=13, completion_tokens=4,
                                             cached_tokens=8)
    assert plain["prompt_tokens_details"] == {"cached_tokens": 8.0, "audio_tokens": 0}


def test_plausible() -> None:
    """Every count of a usage must be a token count."""
    assert Usage(prompt_tokens=3, completion_tokens=MAX_REPORTED_TOKENS).plausible()
    assert not Usage(prompt_tokens=-1).plausible()
    assert not Usage(completion_tokens=MAX_REPORTED_TOKENS + 1).plausible()
    assert not Usage(prompt_tokens=1, cached_tokens=-1).plausible()


def test_translated_usage_with_nonsense_counts_is_not_plausible() -> None:
    """Counts that are each a count but sum past the top are left to ``plausible``."""
    half = MAX_REPORTED_TOKENS // 2 + 1
    anthropic = anthropic_usage({"input_tokens": half, "cache_read_input_tokens": half,
                                 "output_tokens": 3})
    gemini = gemini_usage({"promptTokenCount": 3, "candidatesTokenCount": half,
                           "thoughtsTokenCount": half})
    assert anthropic is not None and not anthropic.plausible()
    assert gemini is not None and not gemini.plausible()
