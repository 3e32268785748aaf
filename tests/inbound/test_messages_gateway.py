# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""``/v1/messages`` translated for non-Anthropic targets, end to end with the anthropic SDK: the
top-level hints it sends, parallel tool calls an OpenAI-style upstream interleaves (or sends
without ``index``), and a target's refusal told in the client's terms."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import orjson
import pytest

from app.simulator.gemini import API_KEY as GEMINI_KEY
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    MASTER_KEY,
    GatewayFactory,
    RunningGateway,
    run_gateway,
)
from tests.hardening_upstreams import canned, sse_answer

USER: Any = [{"role": "user", "content": "weather in Oslo and Bergen?"}]
TOOLS: Any = [{"name": name, "description": "d", "input_schema": {"type": "object"}}
              for name in ("f", "g")]


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return orjson.dumps({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
                         "model": "m", "choices": [{"index": 0, "delta": delta,
                                                    "finish_reason": finish}]})


def tool(arguments: str, *, index: int | None = None, **start: str) -> bytes:
    """A chunk of one tool call's delta (``start``: its ``id`` and ``name``)."""
    call: dict[str, Any] = {"function": {"arguments": arguments}}
    if start:
        call.update(id=start["id"], type="function")
        call["function"]["name"] = start["name"]
    if index is not None:
        call["index"] = index
    return chunk({"tool_calls": [call]})


USAGE = orjson.dumps({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
                      "model": "m", "choices": [],
                      "usage": {"prompt_tokens": 10, "completion_tokens": 20,
                                "total_tokens": 30}})
INTERLEAVED = (chunk({"role": "assistant", "content": None}),
               tool("", index=0, id="call_a", name="f"), tool("", index=1, id="call_b", name="g"),
               tool('{"x":', index=0), tool('{"y":2}', index=1), tool("1}", index=0),
               chunk({}, "tool_calls"), USAGE, b"[DONE]")
"""Two parallel calls whose argument deltas interleave (the tester's report, D2)."""
WITHOUT_INDEX = (chunk({"role": "assistant", "content": None}),
                 tool("{}", id="call_a", name="f"), tool('{"y":2}', id="call_b", name="g"),
                 chunk({}, "tool_calls"), USAGE, b"[DONE]")
"""Two calls sent without ``index``, as some OpenAI-compatible servers do."""


def sdk(gw: RunningGateway) -> Any:
    """An anthropic SDK client of the gateway (typed loosely: it is sent public model names)."""
    client = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)
    gw.opened.append(client)  # type: ignore[arg-type]  # closed with the gateway's clients
    return client


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    raw = {
        "providers": {
            "sim": {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-s"},
            "google": {"type": "gemini", "api_key": GEMINI_KEY,
                       "base_url": simulator + "/gemini/v1beta"},
        },
        "models": {
            "gpt": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
            "gem": {"targets": [{"provider": "google", "model": "gemini-2.5-flash"}]},
        },
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }
    with run_gateway(raw) as running:
        yield running


@pytest.mark.parametrize(("name", "value"), [
    ("cache_control", {"type": "ephemeral"}), ("speed", "standard"), ("inference_geo", "us"),
    ("diagnostics", {"previous_message_id": None}),
], ids=["cache_control", "speed", "inference_geo", "diagnostics"])
def test_top_level_hints_reach_a_translated_target(gw: RunningGateway, name: str,
                                                   value: Any) -> None:
    """The SDK's top-level ``cache_control``, ``speed`` and ``inference_geo`` on a model with
    no Anthropic target: answered (the hint dropped), not a 400."""
    reply = sdk(gw).messages.create(model="gpt", max_tokens=10, messages=USER,
                                    **{name: value})
    assert reply.type == "message" and reply.content[0].type == "text"


@pytest.mark.parametrize("chunks", [INTERLEAVED, WITHOUT_INDEX],
                         ids=["interleaved", "without-index"])
def test_each_tool_use_block_is_whole_at_its_stop(run_gateway: GatewayFactory,
                                                  chunks: tuple[bytes, ...]) -> None:
    """The SDK's ``messages.stream()`` hands each ``tool_use`` block over at its
    ``content_block_stop`` with its whole input, for interleaved calls and calls without
    ``index`` alike, and the final message has both."""
    with canned(sse_answer(*chunks)) as upstream, run_gateway({
        "providers": {"odd": {"type": "openai", "base_url": upstream.url + "/v1",
                              "api_key": "sk-o"}},
        "models": {"odd": {"targets": [{"provider": "odd", "model": "m"}]}},
        "drift": {"embedding": {"sample_rate": 0}}, "retries": {"attempts": 0},
    }) as running, sdk(running).messages.stream(model="odd", max_tokens=50, messages=USER,
                                                tools=TOOLS) as stream:
        stopped = [(e.content_block.id, e.content_block.input) for e in stream
                   if e.type == "content_block_stop"]
        final = stream.get_final_message()
    expected = [("call_a", {"x": 1}), ("call_b", {"y": 2})] if chunks is INTERLEAVED \
        else [("call_a", {}), ("call_b", {"y": 2})]
    assert stopped == expected
    assert [(b.id, b.input) for b in final.content] == expected
    assert final.stop_reason == "tool_use"


def test_a_refusal_of_a_translated_field_names_the_clients(gw: RunningGateway) -> None:
    """Gemini cannot be told to avoid parallel calls: the 400 names the field the Messages
    client sent (``tool_choice.disable_parallel_tool_use``), beside the chat call's name."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(gw).messages.create(model="gem", max_tokens=10, messages=USER, tools=TOOLS,
                                tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    message = caught.value.body["error"]["message"]  # type: ignore[index]
    assert message.startswith("tool_choice.disable_parallel_tool_use (sent to this target as "
                              "parallel_tool_calls): Gemini cannot")


def test_a_vllm_stop_sequence_is_the_messages_stop_sequence(run_gateway: GatewayFactory,
                                                            simulator: str) -> None:
    """vLLM names the stop string that ended a choice in its ``stop_reason`` (the simulated
    vLLM too): ``/v1/messages`` on a vLLM target answers ``stop_reason: "stop_sequence"`` and
    the sequence, whole and streamed."""
    raw = {"providers": {"gpu": {"type": "vllm", "base_url": simulator + "/v1",
                                 "structured_output": "structured_outputs"}},
           "models": {"vl": {"targets": [{"provider": "gpu", "model": "m"}]}},
           "retries": {"attempts": 0}}
    with run_gateway(raw) as gw:
        client = sdk(gw)
        reply = client.messages.create(model="vl", max_tokens=50, messages=USER,
                                       stop_sequences=["nothing", "reply"])
        assert (reply.stop_reason, reply.stop_sequence) == ("stop_sequence", "reply")
        assert reply.content[0].text == "Simulated "
        with client.messages.stream(model="vl", max_tokens=50, messages=USER,
                                    stop_sequences=["nothing", "reply"]) as stream:
            final = stream.get_final_message()
        assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "reply")
        plain = client.messages.create(model="vl", max_tokens=50, messages=USER)
        assert (plain.stop_reason, plain.stop_sequence) == ("end_turn", None)
