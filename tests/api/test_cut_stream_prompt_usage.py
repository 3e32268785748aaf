"""A stream cut before its end (the upstream drops it, or the client leaves) is accounted with the
prompt's counts its upstream already reported (Anthropic's ``message_start``, the
``usageMetadata`` of Gemini's every chunk), the completion estimated; only a stream whose upstream
reported none estimates the prompt too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from app.calllog import CallRecord
from app.simulator.gemini import API_KEY as GEMINI_KEY
from tests.api.conftest import MASTER_KEY, GatewayFactory, RunningGateway

CLAUDE_MODEL = "claude-sonnet-4-20250514"
CACHED = 7
"""Prompt tokens the simulator reports read from the cache (``X-Sim-Cache-Read-Tokens``)."""
BODY: dict[str, Any] = {
    "max_tokens": 300, "stream": True,
    "system": [{"type": "text", "text": "You answer questions about switchboards. " * 8,
                "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "Tell me about switchboards"}]}
ANTHROPIC = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}


def _provider(simulator: str, **headers: str) -> dict[str, Any]:
    return {"type": "anthropic", "base_url": simulator, "api_key": "sk-ant",
            "headers": {"X-Sim-Cache-Read-Tokens": str(CACHED), **headers}}


def three_ways(provider: Callable[..., dict[str, Any]], simulator: str, model: str
               ) -> dict[str, Any]:
    """Models ``whole``, ``dropped`` (cut after 3 chunks) and ``slow`` (200 tokens, 50 ms
    each), each one target of ``provider`` asked for ``model``; no retries."""
    return {
        "providers": {
            "whole": provider(simulator),
            "dropped": provider(simulator, **{"X-Sim-Cut-After": "3"}),
            "slow": provider(simulator, **{"X-Sim-TPOT-Ms": "50",
                                           "X-Sim-Completion-Tokens": "200"}),
        },
        "models": {name: {"targets": [{"provider": name, "model": model}]}
                   for name in ("whole", "dropped", "slow")},
        "retries": {"attempts": 0},
    }


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    with run_gateway(three_ways(_provider, simulator, CLAUDE_MODEL)) as running:
        yield running


OPENAI_BODY: dict[str, Any] = {
    "max_tokens": 300, "stream": True,
    "messages": [{"role": "system", "content": BODY["system"]}, *BODY["messages"]]}
"""The same call for ``/v1/chat/completions`` (its system part keeps ``cache_control``)."""


def _streamed(gw: RunningGateway, model: str, request_id: str, *, openai: bool = False
              ) -> tuple[str, CallRecord]:
    """Stream a call to ``model`` to its end (``openai``: on ``/v1/chat/completions``); what
    the client got, and the call's record."""
    path, body, headers = ("/v1/chat/completions", OPENAI_BODY,
                           {"Authorization": f"Bearer {MASTER_KEY}"}) if openai \
        else ("/v1/messages", BODY, ANTHROPIC)
    with httpx.stream("POST", gw.url + path, json={**body, "model": model}, timeout=10,
                      headers={**headers, "x-request-id": request_id}) as answer:
        text = "\n".join(answer.iter_lines())
    return text, gw.sink.by_id(request_id)


def test_a_dropped_native_stream_keeps_the_reported_prompt(gw: RunningGateway) -> None:
    """An Anthropic stream that the upstream drops mid-answer is recorded with the input and
    cache-read tokens ``message_start`` reported (those of the same call streamed whole), and
    an estimated completion."""
    whole = _streamed(gw, "whole", "whole")[1].usage
    assert whole is not None and not whole.estimated and whole.cached_tokens == CACHED
    _, record = _streamed(gw, "dropped", "dropped")
    assert record.status == "error"
    usage = record.usage
    assert usage is not None and usage.estimated
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens) == \
        (whole.prompt_tokens, whole.cached_tokens, whole.cache_write_tokens)
    assert 0 < usage.completion_tokens < whole.completion_tokens


def test_a_left_native_stream_keeps_the_reported_prompt(gw: RunningGateway,
                                                        simulator: str) -> None:
    """A ``/v1/messages`` stream the client leaves is recorded cancelled, with the prompt's
    counts from ``message_start``."""
    whole = _streamed(gw, "whole", "whole")[1].usage
    assert whole is not None
    assert gw.leave_a_stream(simulator, request_id="gone", path="/v1/messages", lines=12,
                             headers=ANTHROPIC, body={**BODY, "model": "slow"}) == 1
    record = gw.sink.by_id("gone")
    assert record.status == "cancelled"
    usage = record.usage
    assert usage is not None and usage.estimated
    assert (usage.prompt_tokens, usage.cached_tokens) == (whole.prompt_tokens, CACHED)


def test_a_dropped_translated_stream_keeps_the_reported_prompt(gw: RunningGateway) -> None:
    """The same for an OpenAI client's stream to an Anthropic target (translated): the
    prompt's counts come from ``message_start``, and the chunks it got carry no trace of them
    beyond OpenAI's fields."""
    whole = _streamed(gw, "whole", "whole", openai=True)[1].usage
    assert whole is not None and not whole.estimated and whole.cached_tokens == CACHED
    text, record = _streamed(gw, "dropped", "dropped", openai=True)
    assert "prompt_usage" not in text
    usage = record.usage
    assert usage is not None and usage.estimated
    assert (usage.prompt_tokens, usage.cached_tokens) == (whole.prompt_tokens, CACHED)


def _gemini(simulator: str, **headers: str) -> dict[str, Any]:
    return {"type": "gemini", "base_url": simulator + "/gemini/v1beta", "api_key": GEMINI_KEY,
            "headers": {"X-Sim-Cache-Read-Tokens": str(CACHED), **headers}}


@pytest.fixture
def gemini(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    with run_gateway(three_ways(_gemini, simulator, "gemini-2.5-flash")) as running:
        yield running


def test_a_dropped_gemini_stream_keeps_the_reported_prompt(gemini: RunningGateway) -> None:
    """A Gemini stream the upstream drops mid-answer is recorded with the prompt and cached
    tokens its chunks reported (those of the same call streamed whole), and an estimated
    completion; the client's chunks carry no trace of them."""
    whole = _streamed(gemini, "whole", "whole", openai=True)[1].usage
    assert whole is not None and not whole.estimated and whole.cached_tokens == CACHED
    text, record = _streamed(gemini, "dropped", "dropped", openai=True)
    assert record.status == "error" and "prompt_usage" not in text
    usage = record.usage
    assert usage is not None and usage.estimated
    assert (usage.prompt_tokens, usage.cached_tokens) == (whole.prompt_tokens, CACHED)
    assert 0 < usage.completion_tokens < whole.completion_tokens


def test_a_left_gemini_stream_keeps_the_reported_prompt(gemini: RunningGateway,
                                                        simulator: str) -> None:
    """A Gemini stream the client leaves (on ``/v1/messages``, translated) is recorded
    cancelled, with the prompt's counts its chunks reported."""
    whole = _streamed(gemini, "whole", "whole")[1].usage
    assert whole is not None and whole.cached_tokens == CACHED
    assert gemini.leave_a_stream(simulator, request_id="gone", path="/v1/messages", lines=12,
                                 headers=ANTHROPIC, body={**BODY, "model": "slow"}) == 1
    record = gemini.sink.by_id("gone")
    assert record.status == "cancelled"
    usage = record.usage
    assert usage is not None and usage.estimated
    assert (usage.prompt_tokens, usage.cached_tokens) == (whole.prompt_tokens, CACHED)



def test_a_dropped_stream_keeps_its_hour_long_cache_writes(gw: RunningGateway) -> None:
    """Every prompt-side count ``message_start`` reported survives the cut, the 1-hour cache
    writes (priced above the 5-minute ones) included."""
    hour = {**BODY, "system": [{**BODY["system"][0],
                                "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}

    def streamed(model: str, request_id: str) -> CallRecord:
        with httpx.stream("POST", gw.url + "/v1/messages", json={**hour, "model": model},
                          timeout=10, headers={**ANTHROPIC, "x-request-id": request_id}
                          ) as answer:
            for _ in answer.iter_lines():
                pass
        return gw.sink.by_id(request_id)

    whole = streamed("whole", "whole-1h").usage
    assert whole is not None and not whole.estimated and whole.cache_write_1h_tokens > 0
    usage = streamed("dropped", "dropped-1h").usage
    assert usage is not None and usage.estimated
    assert (usage.prompt_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens) == \
        (whole.prompt_tokens, whole.cache_write_tokens, whole.cache_write_1h_tokens)
