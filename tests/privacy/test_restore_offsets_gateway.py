# ruff: noqa: F811  (pytest passes the imported fixtures by parameter name)
"""End to end, through a running gateway: a redacted completion's ``logprobs.text_offset``s
point into the text the client gets (the restored one), echoed prompt or not, streamed or not,
against the simulator (vLLM's way: offsets from the start of the text, no prompt tokens) and
the mock provider (OpenAI's way: offsets from the start of the prompt, echoed or not, the
echoed prompt's tokens listed)."""

from __future__ import annotations

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


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    settings = config(simulator)
    settings["providers"]["mock"] = {"type": "mock", "trust": "third_party"}
    settings["models"]["mock-redacted"] = {
        "targets": [{"provider": "mock", "model": "m"}], "privacy": {"action": "redact"}}
    with run_gateway(settings) as running:
        yield running


def completion(gw: RunningGateway, model: str, prompt: str | list[str], *, echo: bool,
               stream: bool, n: int = 1) -> dict[int, tuple[str, list[str], list[int]]]:
    """Each choice's text, tokens and offsets, as the client gets them."""
    out: dict[int, tuple[str, list[str], list[int]]] = {}
    kwargs: dict[str, Any] = {"model": model, "prompt": prompt, "echo": echo, "logprobs": 1,
                              "max_tokens": 12, "n": n}
    client = gw.client()
    chunks = client.completions.create(stream=True, **kwargs) if stream \
        else [client.completions.create(**kwargs)]
    for chunk in chunks:
        for choice in chunk.choices:
            text, tokens, offsets = out.setdefault(choice.index, ("", [], []))
            if choice.logprobs is not None:
                tokens += choice.logprobs.tokens or []
                offsets += choice.logprobs.text_offset or []
            out[choice.index] = (text + choice.text, tokens, offsets)
    return out


@pytest.mark.parametrize("stream", [False, True])
def test_echoed_prompt_offsets_simulator(gw: RunningGateway, upstream: Upstream,
                                         stream: bool) -> None:
    """The simulator echoes the redacted prompt and counts the generated tokens' offsets after
    it: the client's offsets count after the restored prompt, and each points at its token."""
    prompt = f"{EMAIL} is {upstream.marker}"
    choices = completion(gw, "redacted", prompt, echo=True, stream=stream, n=2)
    upstream.assert_never_saw_planted()
    assert sorted(choices) == [0, 1]
    for text, tokens, offsets in choices.values():
        assert text.startswith(prompt) and len(text) > len(prompt)
        assert tokens and len(offsets) == len(tokens)
        if not stream:  # the simulator's streamed offsets count from each frame's piece
            assert offsets[0] == len(prompt)
            assert all(text.startswith(t, o) for t, o in zip(tokens, offsets, strict=True))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("echo", [False, True])
def test_offsets_mock_openai_way(gw: RunningGateway, stream: bool, echo: bool) -> None:
    """The mock counts offsets from the start of the prompt, echoed or not (the echoed prompt's
    tokens listed first): each offset points at its token in the restored prompt and text, each
    choice's by its own prompt (two prompts, two choices each)."""
    prompts = [f"write to {EMAIL} today, {EMAIL} said", "plain words, nothing found"]
    choices = completion(gw, "mock-redacted", prompts, echo=echo, stream=stream, n=2)
    assert sorted(choices) == [0, 1, 2, 3]
    for index, (text, tokens, offsets) in choices.items():
        prompt = prompts[index // 2]
        whole = text if echo else prompt + text
        assert whole.startswith(prompt) and (EMAIL in text) == (index < 2)
        assert "".join(tokens) == text and len(offsets) == len(tokens)
        assert not any("<EMAIL" in t for t in tokens)
        assert offsets[0] == (0 if echo else len(prompt))
        assert all(whole.startswith(t, o) for t, o in zip(tokens, offsets, strict=True))
