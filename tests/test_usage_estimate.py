"""The token estimate's ASCII path counts exactly what its regex definition counts."""

from __future__ import annotations

import random

import pytest

from app.usage import _PIECE, estimate_tokens


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
    "café au lait", "naïve façade", "東京都の天気は晴れです", "emoji 🎉 party!",
    "mixed ascii, ÅÄÖ and 中文",
    "\u00a0non-breaking\u2003spaces\u0085",
])
def test_non_ascii_keeps_the_regex(text: str) -> None:
    """Text beyond ASCII is counted by the regex itself (Unicode word and space classes)."""
    assert estimate_tokens(text) == by_the_regex(text)
