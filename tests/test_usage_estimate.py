"""The token estimate counts exactly what its regex definition counts, by whichever path."""

from __future__ import annotations

import random

import pytest

from app.schemas import ChatRequest
from app.usage import _PIECE, estimate_prompt_tokens, estimate_tokens


def by_the_regex(text: str) -> int:
    """The estimate's definition (``app.usage``): each piece of ``_PIECE`` counts
    ``(len + 5) // 6``."""
    return sum((len(piece) + 5) // 6 for piece in _PIECE.findall(text))


ASCII = "".join(map(chr, range(128)))


@pytest.mark.parametrize("text", [
    "", " ", "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f", "a", "ab", "abcdef", "abcdefg", "a" * 12, "a" * 13,
    "a" * 18, "a" * 19, "Hello, world!", "internationalization", "a-b", "...", "a b",
    "snake_case_name 42 x9", "trailing word", " leading", "!wow!", "\x1fword\x1c", ASCII,
    ASCII * 3,
])
def test_ascii_matches_the_regex(text: str) -> None:
    """Boundaries: word lengths around multiples of six, whitespace the regex's \\s includes
    (\\x1c-\\x1f), punctuation runs, words at either end, every ASCII character."""
    assert estimate_tokens(text) == by_the_regex(text)


def test_every_word_length_counts_once_per_six_characters() -> None:
    """Words of 1 to 40 characters, alone, between punctuation and between spaces."""
    for length in range(1, 41):
        word = "w" * length
        for text in (word, f".{word}.", f" {word} {word}"):
            assert estimate_tokens(text) == by_the_regex(text), text


def test_random_ascii_matches_the_regex() -> None:
    """Thousands of random strings over alphabets that make long words, punctuation runs and
    odd whitespace likely."""
    rnd = random.Random(9)
    alphabets = ["ab ", "abcdefghij_0", "a.b c\t", ASCII, "aaaaaaaaaaaaaaa-", "x\x1c y\x1f"]
    for _ in range(5000):
        alphabet = rnd.choice(alphabets)
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 80)))
        assert estimate_tokens(text) == by_the_regex(text), repr(text)


@pytest.mark.parametrize("text", [
    "café au lait", "naïve façade", "emoji 🎉 party!",
    "it\u2019s \u201cquoted\u201d \u2014 and dashed",
    "mixed ascii, ÅÄÖ and 中文", "\u00a0non-breaking\u2003spaces\u0085", "e\u0301 combining",
    "東京都の天気は晴れです", "".join(map(chr, range(0x4E00, 0x4E00 + 40))) + " and words",
    "a lone surrogate \ud800 here",
    "word " * 200 + "".join(map(chr, range(0xC0, 0xC0 + 40))),
])
def test_non_ascii_matches_the_regex(text: str) -> None:
    """A few distinct non-ASCII characters (stood in for by ASCII ones of their class) and more
    than ``_STAND_INS_MAX`` of them (the regex itself) count the same."""
    assert estimate_tokens(text) == by_the_regex(text)


def test_random_non_ascii_matches_the_regex() -> None:
    """Random mixes of ASCII with letters, spaces and punctuation from beyond it."""
    rnd = random.Random(11)
    pool = "ab c.,_9\té\u2019\u201c\u201d\u2014\u00a0\u2003\u0301中文🎉\x85ßΩ"
    for _ in range(3000):
        text = "".join(rnd.choice(pool) for _ in range(rnd.randint(0, 60)))
        assert estimate_tokens(text) == by_the_regex(text), repr(text)


def _chat(**fields: object) -> ChatRequest:
    return ChatRequest.model_validate({"model": "m", **fields})


HI = [{"role": "user", "content": "hi there"}]


def test_a_chats_estimate_counts_tools_tool_calls_and_images() -> None:
    """Tool definitions count as their JSON; a tool call in the history as its name and
    arguments; an image part a fixed 765 (85 at ``detail: low``); text parts as text."""
    bare = estimate_prompt_tokens(_chat(messages=HI))
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    tool_json = '[{"type":"function","function":{"name":"lookup","parameters":{"type":"object",' \
        '"properties":{"city":{"type":"string"}}}}}]'
    assert estimate_prompt_tokens(_chat(messages=HI, tools=[tool])) == \
        bare + estimate_tokens(tool_json)
    call = {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "lookup", "arguments": '{"city": "Paris"}'}}]}
    assert estimate_prompt_tokens(_chat(messages=[*HI, call])) == \
        bare + 3 + estimate_tokens('lookup {"city": "Paris"}')
    for detail, tokens in (("high", 765), ("low", 85), (None, 765)):
        image: dict[str, object] = {"url": "data:image/png;base64,AAAA"}
        if detail is not None:
            image["detail"] = detail
        parts = [{"type": "text", "text": "hi there"}, {"type": "image_url", "image_url": image}]
        assert estimate_prompt_tokens(_chat(messages=[{"role": "user", "content": parts}])) == \
            bare + tokens, detail
