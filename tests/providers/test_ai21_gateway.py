"""AI21 targets behind a running gateway, driven by the OpenAI SDK, against the simulator."""

# The gateway fixture lives in tests/api/conftest.py, outside this directory: imported here so
# pytest finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    MASTER_KEY,
    GatewayFactory,
    run_gateway,
    sim_config,
)

KEY = "ai21-upstream-secret-0123456789"
USER: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Tell me about switchboards"},
]
LOOKUP: Any = {"type": "function", "function": {
    "name": "lookup", "description": "Look a word up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                   "required": ["q"]}}}


def config(simulator: str, **headers: str) -> dict[str, Any]:
    raw = sim_config(simulator, jamba={"targets": [{"provider": "ai21", "model": "jamba-mini"}]})
    raw["providers"]["ai21"] = {"type": "ai21", "base_url": simulator + "/studio/v1",
                                "api_key": KEY, "headers": headers}
    return raw


def _until(check: Callable[[], bool], timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def _stats(simulator: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(simulator + "/_sim/stats").json()
    return stats


def _last_body(simulator: str) -> dict[str, Any]:
    (record,) = httpx.get(simulator + "/_sim/requests", params={"limit": "1"}).json()
    body: dict[str, Any] = record["body"]
    return body


def test_chat_and_stream_with_usage_and_cost(run_gateway: GatewayFactory,
                                             simulator: str) -> None:
    """Plain and streamed chat through an AI21 target; the stream ends with a usage chunk and
    both calls are priced from AI21's own token counts."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="jamba", messages=USER, max_tokens=20)
        assert (reply.object, reply.model) == ("chat.completion", "jamba-mini")
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.completion_tokens == 16
        chunks = list(client.chat.completions.create(
            model="jamba", messages=USER, stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("Simulated reply to: Tell me about switchboards")
        first = chunks[0].choices[0].delta
        assert (first.role, first.content) == ("assistant", "")
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
        assert all(c.usage is None for c in chunks[:-1])
        plain = list(client.chat.completions.create(model="jamba", messages=USER, stream=True))
        assert all(c.usage is None and c.choices for c in plain)
        records = gw.sink.records
        assert [(r.usage.completion_tokens, r.usage.estimated) for r in records if r.usage] \
            == [(16, False)] * 3
        assert all(r.cost_usd is not None and r.cost_usd > 0 for r in records)


def test_tools_plain_and_streamed(run_gateway: GatewayFactory, simulator: str) -> None:
    """An AI21 tool call comes back as OpenAI tool_calls, complete and streamed."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="jamba", messages=USER, tools=[LOOKUP])
        calls = reply.choices[0].message.tool_calls
        assert reply.choices[0].finish_reason == "tool_calls"
        assert calls and calls[0].type == "function" and calls[0].function.name == "lookup"
        assert json.loads(calls[0].function.arguments) == {"q": ""}
        chunks = list(client.chat.completions.create(model="jamba", messages=USER,
                                                     tools=[LOOKUP], stream=True))
        deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
        assert deltas[0].id and deltas[0].function and deltas[0].function.name == "lookup"
        assert json.loads("".join(d.function.arguments or "" for d in deltas if d.function)) \
            == {"q": ""}
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="jamba", messages=USER, tools=[LOOKUP],
                                           tool_choice="required")
        assert raised.value.body["param"] == "tool_choice"  # type: ignore[index]


def test_json_mode_and_documents(run_gateway: GatewayFactory, simulator: str) -> None:
    """json_object is AI21's JSON mode; json_schema is refused; documents reach AI21."""
    documents = [{"content": "Switchboards route calls.", "metadata": {"topic": "phones"}}]
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(
            model="jamba", messages=USER, response_format={"type": "json_object"},
            extra_body={"documents": documents})
        assert json.loads(reply.choices[0].message.content or "") == {
            "reply": "Simulated reply to: Tell me about switchboards"}
        sent = _last_body(simulator)
        assert (sent["documents"], sent["response_format"]) == (documents,
                                                                 {"type": "json_object"})
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(
                model="jamba", messages=USER, response_format={
                    "type": "json_schema", "json_schema": {"name": "x", "schema": {}}})
        assert raised.value.body["param"] == "response_format"  # type: ignore[index]


def test_image_part_is_refused_before_reaching_ai21(run_gateway: GatewayFactory,
                                                    simulator: str) -> None:
    """An image part: 400 naming it, and nothing is sent upstream."""
    before = _stats(simulator)["requests"]
    with run_gateway(config(simulator)) as gw, pytest.raises(openai.BadRequestError) as raised:
        gw.client().chat.completions.create(model="jamba", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}])
    assert raised.value.body["param"] == "messages[0].content[1]"  # type: ignore[index]
    assert _stats(simulator)["requests"] == before


def test_embeddings_are_not_routed_to_ai21(run_gateway: GatewayFactory, simulator: str) -> None:
    """AI21 has no Jamba embeddings: a model served only by AI21 refuses them with a 400."""
    with run_gateway(config(simulator)) as gw, pytest.raises(openai.BadRequestError) as raised:
        gw.client().embeddings.create(model="jamba", input="hi")
    assert raised.value.code == "unsupported_endpoint"


def test_upstream_429_stays_429_with_retry_after(run_gateway: GatewayFactory,
                                                 simulator: str) -> None:
    """AI21's 429 reaches the client as a 429 with Retry-After."""
    with run_gateway(config(simulator, **{"X-Return-Error": "429"})) as gw, \
            pytest.raises(openai.RateLimitError) as raised:
        gw.client().chat.completions.create(model="jamba", messages=USER)
    assert raised.value.status_code == 429
    assert raised.value.response.headers["retry-after"] == "1"


def test_upstream_401_never_leaks_the_key(run_gateway: GatewayFactory, simulator: str) -> None:
    """An AI21 401 that echoes the key: a 502 to the client, the key nowhere in it."""
    headers = {"X-Return-Error": "401", "X-Sim-Echo-Key": "1"}
    with run_gateway(config(simulator, **headers)) as gw, \
            pytest.raises(openai.APIStatusError) as raised:
        gw.client().chat.completions.create(model="jamba", messages=USER)
    assert raised.value.status_code == 502
    assert "upstream refused" in raised.value.message
    assert KEY not in raised.value.response.text
    record = gw.sink.records[-1]
    assert record.error_message and KEY not in record.error_message


def test_stream_failing_before_its_first_token_falls_back(run_gateway: GatewayFactory,
                                                         simulator: str) -> None:
    """AI21's role chunk is held until the first token: a stream that fails before that token
    is served by the next target, the client seeing none of the failed one."""
    raw = config(simulator, **{"X-Sim-Error-After": "0"})
    raw["models"]["jamba"]["targets"].append({"provider": "sim", "model": "gpt-4o-mini"})
    with run_gateway(raw) as gw:
        chunks = list(gw.client().chat.completions.create(model="jamba", messages=USER,
                                                          max_tokens=5, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert next(c.choices[0].delta.role for c in chunks if c.choices) == "assistant"
        record = gw.sink.records[-1]
        assert [a.provider for a in record.attempts] == ["ai21", "sim"]
        assert record.status == "ok"


def test_client_leaving_a_stream_cancels_the_ai21_request(run_gateway: GatewayFactory,
                                                          simulator: str) -> None:
    """A streaming client that leaves before the first token: the AI21 stream is closed."""
    raw = config(simulator, **{"X-Sim-TTFT-Ms": "60000"})
    raw["streaming"] = {"keepalive_s": 0.1}
    before = _stats(simulator)["streams_cancelled"]
    with run_gateway(raw) as gw:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {MASTER_KEY}"},
                          json={"model": "jamba", "messages": USER, "stream": True}) as answer:
            assert answer.status_code == 200
            assert next(answer.iter_lines()) == ": keep-alive"
        assert _until(lambda: bool(gw.sink.records))
        assert gw.sink.records[-1].status == "cancelled"
        assert _until(lambda: _stats(simulator)["streams_cancelled"] > before)
