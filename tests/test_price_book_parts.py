"""Price-book entries and usage parts that providers bill apart from plain tokens: older OpenAI
snapshots, Anthropic's 1-hour cache writes and web searches, Gemini's audio input and Bedrock
ARNs. Each expected figure is the provider's published rate, worked by hand."""

from __future__ import annotations

import pytest

from app.pricing import Price, PriceBook, shipped_prices
from app.providers.anthropic_response import read_usage as anthropic_usage
from app.providers.gemini_response import read_usage as gemini_usage
from app.usage import Usage

BOOK = PriceBook(shipped_prices())
MILLION = 1_000_000
HAIKU = "anthropic.claude-haiku-4-5-20251001-v1:0"


@pytest.mark.parametrize(("model", "rates"), [
    ("gpt-4o-2024-05-13", (5.00, 15.00)),
    ("gpt-4o-2024-08-06", (2.50, 10.00)),
    ("gpt-3.5-turbo-1106", (1.00, 2.00)),
    ("gpt-3.5-turbo-0613", (1.50, 2.00)),
    ("gpt-3.5-turbo-0301", (1.50, 2.00)),
    ("gpt-3.5-turbo-16k", (3.00, 4.00)),
    ("gpt-3.5-turbo-16k-0613", (3.00, 4.00)),
    ("gpt-35-turbo-16k", (3.00, 4.00)),
    ("gpt-3.5-turbo-0125", (0.50, 1.50)),
    ("gpt-3.5-turbo-instruct-0914", (1.50, 2.00)),
])
def test_older_openai_snapshots_keep_their_own_price(model: str,
                                                     rates: tuple[float, float]) -> None:
    """A snapshot OpenAI prices above the model it is named after is not priced as that model
    by the prefix rule (gpt-4o-2024-05-13 is $5/$15, not gpt-4o's $2.50/$10)."""
    cost = BOOK.cost(model, Usage(prompt_tokens=MILLION, completion_tokens=MILLION))
    assert cost == pytest.approx(sum(rates))


def test_anthropic_one_hour_writes_and_web_searches() -> None:
    """usage.cache_creation's 1-hour part is priced at 2x input, the rest of the writes at
    1.25x; server_tool_use.web_search_requests at $10 per 1,000 (Claude Sonnet 4)."""
    usage = anthropic_usage({
        "input_tokens": 6, "output_tokens": 10, "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 100_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 40_000,
                           "ephemeral_1h_input_tokens": 60_000},
        "server_tool_use": {"web_search_requests": 3}})
    assert usage is not None
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens,
            usage.cache_write_1h_tokens, usage.web_searches) == (101_006, 1000, 100_000,
                                                                 60_000, 3)
    expected = (6 * 3.00 + 1000 * 0.30 + 40_000 * 3.75 + 60_000 * 6.00 + 10 * 15.00) / MILLION \
        + 3 * 10.00 / 1000
    assert BOOK.cost("claude-sonnet-4-20250514", usage) == pytest.approx(expected)
    assert Usage.from_openai(usage.to_openai()) == usage  # how a stream's usage travels


def test_usage_without_the_split_prices_writes_as_five_minutes() -> None:
    """An answer without cache_creation (older API versions, Bedrock Converse) prices every
    write at the 5-minute rate; a price without cache_write_1h does the same."""
    usage = anthropic_usage({"input_tokens": 0, "output_tokens": 0,
                             "cache_creation_input_tokens": MILLION})
    assert usage is not None and usage.cache_write_1h_tokens == 0
    assert BOOK.cost("claude-haiku-4-5", usage) == pytest.approx(1.25)
    hour = Usage(prompt_tokens=MILLION, cache_write_tokens=MILLION, cache_write_1h_tokens=MILLION)
    assert BOOK.cost("claude-haiku-4-5", hour) == pytest.approx(2.00)
    assert Price(input=1.0, cache_write=1.25).cost(hour) == pytest.approx(1.25)


def test_gemini_audio_input_has_its_own_rate() -> None:
    """promptTokensDetails' AUDIO tokens, less those read from the cache, are priced at the
    model's audio rate where it has one (2.5 Flash $1.00, Flash-Lite $0.30; Pro: its text
    rate); the rest of the prompt at the text rate."""
    usage = gemini_usage({
        "promptTokenCount": 1_200_000, "candidatesTokenCount": 0,
        "cachedContentTokenCount": 200_000,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 100_000},
                                {"modality": "AUDIO", "tokenCount": 1_100_000}],
        "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 100_000},
                               {"modality": "TEXT", "tokenCount": 100_000}]})
    assert usage is not None and usage.audio_tokens == MILLION
    fresh_text = 1_200_000 - 200_000 - MILLION
    assert fresh_text == 0
    assert BOOK.cost("gemini-2.5-flash", usage) == pytest.approx(1.00 + 0.2 * 0.03)
    assert BOOK.cost("gemini-2.5-flash-lite", usage) == pytest.approx(0.30 + 0.2 * 0.01)
    assert BOOK.cost("gemini-2.5-pro", usage) == pytest.approx(1.25 + 0.2 * 0.125)
    text = gemini_usage({"promptTokenCount": MILLION, "candidatesTokenCount": 0,
                         "promptTokensDetails": [{"modality": "TEXT", "tokenCount": MILLION}]})
    assert text is not None and text.audio_tokens == 0
    assert BOOK.cost("gemini-2.5-flash", text) == pytest.approx(0.30)
    assert Usage.from_openai(usage.to_openai()) == usage


@pytest.mark.parametrize(("model", "expected"), [
    (f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}", 1.00),
    (f"arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.{HAIKU}", 1.10),
    (f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/global.{HAIKU}", 1.00),
    ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3", None),
    ("arn:aws:bedrock:us-east-1::foundation-model/", None),
    ("arn:aws:bedrock:us-east-1::foundation-model/no-such-model", None),
])
def test_bedrock_arns_take_the_price_of_the_id_inside(model: str,
                                                      expected: float | None) -> None:
    """A foundation-model or system inference profile ARN is priced as the model or profile id
    it ends in; an application inference profile's ARN (an opaque id) is unpriced."""
    cost = BOOK.cost(model, Usage(prompt_tokens=MILLION))
    assert cost == (None if expected is None else pytest.approx(expected))


def test_a_configured_arn_wins() -> None:
    """An application inference profile ARN listed under pricing: is priced by that entry."""
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"
    book = PriceBook({**shipped_prices(), arn: Price(input=2.0)})
    assert book.cost(arn, Usage(prompt_tokens=MILLION)) == pytest.approx(2.0)
