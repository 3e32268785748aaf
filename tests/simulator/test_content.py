"""Pure pieces: token splitting, schema instances, regex samples, versions, jitter."""

from __future__ import annotations

import random
import re

import pytest

from app.simulator.content import reply_pieces, shape, split_tokens
from app.simulator.faults import NO_KNOBS, Latency
from app.simulator.options import Dialect, SimOptions, parse_version
from app.simulator.schema import grammar_sample, instance, regex_sample
from app.usage import estimate_tokens


def test_pieces_are_one_token_each() -> None:
    """Pieces rebuild the text, and any prefix of n pieces is estimated as n tokens."""
    rng = random.Random(5)
    alphabet = "ab cdefghij,.!?\n\t  éß中_9"
    for _ in range(600):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        pieces = split_tokens(text)
        assert "".join(pieces) == text
        counted = [p for p in pieces if not p.isspace()]
        assert len(counted) == estimate_tokens(text)
        for n in range(len(counted) + 1):
            assert estimate_tokens("".join(pieces[:n])) == n


def test_reply_length_and_cuts() -> None:
    """Replies are exactly the asked length; shape cuts at limit, then before stop strings."""
    pieces = reply_pieces("a question about the weather", 30, 0)
    assert len(pieces) == 30 and estimate_tokens("".join(pieces)) == 30
    assert shape(pieces, limit=5, stops=()).finish == "length"
    stopped = shape(pieces, limit=None, stops=(" about",))
    assert stopped.finish == "stop_sequence" and stopped.text == "Simulated reply to: a question"
    assert stopped.tokens == estimate_tokens(stopped.text)


def test_schema_instances_are_minimal_and_valid() -> None:
    """instance() fills declared properties by type and follows refs, enums and bounds."""
    schema = {"type": "object", "$defs": {"P": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1}}}},
        "properties": {"n": {"type": "number", "minimum": 2.5}, "p": {"$ref": "#/$defs/P"},
                       "e": {"enum": ["x"]}, "b": {"type": ["null", "boolean"]},
                       "when": {"type": "string", "format": "date"},
                       "one": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                       "code": {"type": "string", "pattern": "^[a-f]{3}$"}}}
    assert instance(schema) == {"n": 2.5, "p": {"tags": [""]}, "e": "x", "b": False,
                                "when": "2024-01-01", "one": 0, "code": "aaa"}


@pytest.mark.parametrize("pattern", [r"\d{3}-\d{4}", r"(yes|no)!", r"[^abc]x", r"(ab)+\1",
                                     r"\w+@\w+\.com", r"[A-Z][a-z]{2,}\s?"])
def test_regex_samples_match(pattern: str) -> None:
    """regex_sample() returns a string the pattern fully matches."""
    assert re.fullmatch(pattern, regex_sample(pattern))


def test_grammar_sample_takes_first_literal() -> None:
    """grammar_sample() returns the first quoted literal of a grammar."""
    assert grammar_sample('root ::= "yes" | "no"') == "yes"


def test_versions_compare_numerically() -> None:
    """Versions compare as numbers, and pick the dialect's boundaries."""
    assert parse_version("0.10.1rc2") == (0, 10, 1) and parse_version("v1") == (1, 0, 0)
    assert parse_version("0.9.2") < parse_version("0.10.0")
    assert Dialect.of("0.10.0") == Dialect(flat_errors=True, structured_outputs=False,
                                           legacy_metric_names=False)
    assert Dialect.of("0.9.9").legacy_metric_names
    assert Dialect.of("0.11.2") == Dialect(flat_errors=False, structured_outputs=False)
    assert Dialect.of("0.12.0") == Dialect()


def test_jitter_is_deterministic_and_bounded() -> None:
    """Jittered waits repeat for the same seed and stay within +/- jitter."""
    options = SimOptions(ttft_ms=100, jitter=0.2, seed=3)
    one = [Latency(options).ttft(NO_KNOBS) for _ in range(1)]
    first, second = Latency(options), Latency(options)
    waits = [first.ttft(NO_KNOBS) for _ in range(50)]
    assert waits == [second.ttft(NO_KNOBS) for _ in range(50)] and one[0] == waits[0]
    assert all(0.08 <= w <= 0.12 for w in waits) and len(set(waits)) > 1
    assert Latency(SimOptions()).ttft(NO_KNOBS) == 0.0
