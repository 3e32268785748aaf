# ruff: noqa: F811  (pytest passes the imported fixtures by parameter name)
"""End to end, through a running gateway against the simulator: the legacy OpenAI shapes are
restored, a completion's ``logprobs`` (streamed or not) and a chat answer's ``function_call``
(streamed or not); the upstream saw placeholders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    RunningGateway,
    run_gateway,
)
from tests.privacy.test_gateway import (  # noqa: F401  (upstream: the fixture, used by name)
    EMAIL,
    Upstream,
    config,
    upstream,
)
from tests.privacy.test_restore_gateway import PEM


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    with run_gateway(config(simulator)) as running:
        yield running


def no_placeholder_pieces(tokens: list[str]) -> bool:
    return not any("<EMAIL" in t or "_1>" in t or t.strip() == "<" for t in tokens)


def test_completion_logprobs_restored(gw: RunningGateway, upstream: Upstream) -> None:
    """A completion with logprobs: its tokens hold the value, never a placeholder's pieces,
    spell the text, and each offset points at its token in the restored text."""
    answer = gw.client().completions.create(
        model="redacted", prompt=f"{EMAIL} is {upstream.marker}", logprobs=2)
    upstream.assert_never_saw_planted()
    choice = answer.choices[0]
    assert choice.logprobs is not None
    tokens = choice.logprobs.tokens or []
    offsets = choice.logprobs.text_offset or []
    top = choice.logprobs.top_logprobs or []
    assert EMAIL in choice.text and "".join(tokens) == choice.text
    assert no_placeholder_pieces(tokens) and any(EMAIL in t for t in tokens)
    assert len(offsets) == len(tokens) == len(top) == len(choice.logprobs.token_logprobs or [])
    assert all(choice.text.startswith(t, o) for t, o in zip(tokens, offsets, strict=True))


def test_completion_stream_logprobs_restored(gw: RunningGateway, upstream: Upstream) -> None:
    """A streamed completion with logprobs: its tokens hold the value, never a placeholder's
    pieces, and spell the text."""
    text, tokens = "", []
    for chunk in gw.client().completions.create(
            model="redacted", prompt=f"{EMAIL} is {upstream.marker}", logprobs=1, stream=True):
        for choice in chunk.choices:
            text += choice.text
            if choice.logprobs is not None:
                tokens += choice.logprobs.tokens or []
    upstream.assert_never_saw_planted()
    assert EMAIL in text and "".join(tokens) == text
    assert no_placeholder_pieces(tokens)


def functions(marker: str) -> dict[str, Any]:
    """Legacy ``functions`` (no ``tools``): one whose only argument is fixed to the PEM key
    (the simulator answers with the schema's instance), called by name."""
    return {"functions": [{"name": "store", "description": f"store a key {marker}",
                           "parameters": {"type": "object", "required": ["key"], "properties": {
                               "key": {"type": "string", "const": PEM}}}}],
            "function_call": {"name": "store"}}


@pytest.mark.parametrize("streamed", [False, True])
def test_function_call_arguments_restored(gw: RunningGateway, upstream: Upstream,
                                          streamed: bool) -> None:
    """A legacy ``function_call``'s arguments holding a restored PEM key parse and hold the
    key, streamed (``delta.function_call``) or not; the upstream saw a placeholder."""
    kwargs: dict[str, Any] = {
        "model": "redacted", "extra_body": functions(upstream.marker),
        "messages": [{"role": "user", "content": f"store it {upstream.marker}"}]}
    client = gw.client()
    if streamed:
        names, arguments = "", ""
        for chunk in client.chat.completions.create(stream=True, **kwargs):
            for choice in chunk.choices:
                call = choice.delta.function_call
                names += (call.name or "") if call is not None else ""
                arguments += (call.arguments or "") if call is not None else ""
        assert names == "store"
    else:
        message = client.chat.completions.create(**kwargs).choices[0].message
        assert message.function_call is not None
        arguments = message.function_call.arguments
    assert json.loads(arguments) == {"key": PEM}
    assert PEM not in str(upstream.received()[0]["body"])
    assert "<SECRET_1>" in str(upstream.received()[0]["body"])
