"""Usage round trips and cost arithmetic: cached tokens never double-counted."""

from __future__ import annotations

import pytest

from app.pricing import Price, PriceBook, shipped_prices
from app.usage import Usage, estimate_tokens


def test_usage_round_trips_through_the_openai_shape() -> None:
    """Cached, cache-write and reasoning tokens survive to_openai/from_openai."""
    usage = Usage(prompt_tokens=100, completion_tokens=20, cached_tokens=30,
                  cache_write_tokens=10, reasoning_tokens=5)
    assert Usage.from_openai(usage.to_openai()) == usage
    assert Usage.from_openai({"prompt_tokens": "x"}) is None


def test_cached_and_written_tokens_are_priced_once() -> None:
    """Prompt tokens split into fresh, cache-read and cache-write, each at its own price."""
    price = Price(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75)
    usage = Usage(prompt_tokens=1000, completion_tokens=100, cached_tokens=600,
                  cache_write_tokens=300)
    expected = (100 * 3.0 + 600 * 0.3 + 300 * 3.75 + 100 * 15.0) / 1_000_000
    assert price.cost(usage) == pytest.approx(expected)


def test_dated_model_names_take_their_family_price() -> None:
    """gpt-4o-mini-2024-07-18 is priced as gpt-4o-mini, not as gpt-4o; unknown is None."""
    book = PriceBook(shipped_prices())
    assert book.price("gpt-4o-mini-2024-07-18") == book.price("gpt-4o-mini")
    assert book.price("gpt-4o-mini") != book.price("gpt-4o")
    assert book.cost("some-local-model", Usage(prompt_tokens=5)) is None


def test_vertex_versioned_ids_take_the_name_before_the_at() -> None:
    """Vertex's claude-sonnet-4@20250514 is priced as claude-sonnet-4 (and a -v2 variant by
    prefix); an id listed with its @version wins; nothing listed before the @ is None."""
    book = PriceBook(shipped_prices())
    assert book.price("claude-sonnet-4@20250514") == book.price("claude-sonnet-4")
    assert book.price("claude-3-5-haiku@20241022") == book.price("claude-3-5-haiku")
    assert book.price("claude-3-5-haiku@20241022") != book.price("claude-3-haiku")
    assert book.price("claude-3-5-sonnet-v2@20241022") == book.price("claude-3-5-sonnet")
    assert book.price("no-such-model@20250514") is None
    opus = book.price("claude-opus-4-5@20251101")
    assert opus is not None and opus.input == 5.00 and opus != book.price("claude-opus-4")
    own = Price(input=9.0, output=9.0)
    listed = PriceBook({**shipped_prices(), "claude-sonnet-4@20250514": own})
    assert listed.price("claude-sonnet-4@20250514") == own


def test_every_shipped_price_names_its_date_and_source() -> None:
    """Each shipped price carries the date it was read and its public source."""
    for name, price in shipped_prices().items():
        assert price.as_of and price.source and price.source.startswith("https://"), name


def test_token_estimate_is_plausible() -> None:
    """The estimate counts words and punctuation, splitting long words."""
    assert estimate_tokens("") == 0
    assert estimate_tokens("Hello, world!") == 4
    assert estimate_tokens("internationalization") == 4
