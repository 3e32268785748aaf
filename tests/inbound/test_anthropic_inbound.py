"""The Messages API dialect coming in: request, answer and stream translation, without I/O."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app import errors
from app.api.wire import parse
from app.inbound.anthropic import read_request, to_message
from app.inbound.anthropic_stream import PING, EventWriter
from app.providers.base import NATIVE_EVENTS, Json
from app.schemas import ChatRequest
from app.usage import Usage

PNG = "iVBORw0KGgo="


def request(**body: Any) -> Json:
    body.setdefault("model", "m")
    body.setdefault("max_tokens", 50)
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return body


def chat(**body: Any) -> Json:
    return read_request(request(**body)).body


def events(raw: bytes) -> list[tuple[str, Json]]:
    out = []
    for frame in raw.decode().split("\n\n"):
        if frame:
            name, data = frame.split("\n")
            out.append((name.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


# --- requests --------------------------------------------------------------------------------


def test_a_minimal_request() -> None:
    assert chat() == {"model": "m", "max_tokens": 50,
                      "messages": [{"role": "user", "content": "Hi"}]}


def test_system_blocks_sampling_stops_and_user() -> None:
    out = chat(system=[{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
                       {"type": "text", "text": "B"}],
               temperature=0.5, top_p=0.9, top_k=3, stop_sequences=["END"],
               metadata={"user_id": "u"}, stream=True)
    assert out["messages"][0] == {"role": "system", "content": "A\n\nB"}
    assert (out["temperature"], out["top_p"], out["stop"], out["user"]) == (0.5, 0.9, ["END"],
                                                                          "u")
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert "top_k" not in out


def test_images_and_documents_become_parts() -> None:
    blocks = [
        {"type": "text", "text": "Look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": "JVBER"}, "title": "r.pdf"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                        "data": "plain words"}},
    ]
    parts = chat(messages=[{"role": "user", "content": blocks}])["messages"][0]["content"]
    assert parts == [
        {"type": "text", "text": "Look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBER",
                                  "filename": "r.pdf"}},
        {"type": "text", "text": "plain words"},
    ]


def test_tool_use_and_results_in_openais_order() -> None:
    """tool_use blocks become tool_calls; a user turn's tool results come first, as tool
    messages, then the rest of the turn."""
    out = chat(messages=[
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Thanks"},
            {"type": "tool_result", "tool_use_id": "tu_1",
             "content": [{"type": "text", "text": "Sunny"}, {"type": "text", "text": "21 C"}]}]},
    ])
    assert out["messages"][1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "tu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "tu_1", "content": "Sunny\n\n21 C"},
        {"role": "user", "content": "Thanks"},
    ]


@pytest.mark.parametrize(("given", "expected"), [
    ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
])
def test_tools_and_tool_choice(given: Json, expected: Any) -> None:
    out = chat(tools=[{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
               tool_choice={**given, "disable_parallel_tool_use": True})
    assert out["tools"] == [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object"}, "description": "d"}}]
    assert out["tool_choice"] == expected and out["parallel_tool_calls"] is False


def test_what_only_a_native_target_can_serve_is_listed() -> None:
    inbound = read_request(request(
        tools=[{"type": "web_search_20250305", "name": "web_search"}],
        container="c-1",
        messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "f-1"}},
            {"type": "tool_result", "tool_use_id": "t", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG}}]}]}]))
    assert inbound.native_only == [
        "container (not translatable)",
        "messages[0].content[0] (image with a file source)",
        "messages[0].content[1].content[0] (image in a tool result)",
        "tools[0] (web_search_20250305)",
    ]


@pytest.mark.parametrize(("name", "value"), [
    ("cache_control", {"type": "ephemeral"}), ("speed", "fast"), ("inference_geo", "us"),
    ("service_tier", "auto"), ("diagnostics", {"previous_message_id": "msg_01"}),
], ids=["cache_control", "speed", "inference_geo", "service_tier", "diagnostics"])
def test_top_level_hints_are_dropped_for_a_translated_target(name: str, value: Any) -> None:
    """Top-level ``cache_control`` (the SDK's automatic caching), ``speed`` and
    ``inference_geo`` are hints, as ``service_tier`` is: dropped from the chat call, and no
    reason to need a native target."""
    inbound = read_request(request(**{name: value}))
    assert inbound.native_only == []
    assert name not in inbound.body


def test_output_config_still_needs_a_native_target() -> None:
    """``output_config`` changes the answer (its format): not a hint."""
    inbound = read_request(request(output_config={"format": {"type": "json_schema",
                                                             "schema": {"type": "object"}}}))
    assert inbound.native_only == ["output_config (not translatable)"]


@pytest.mark.parametrize(("source", "what"), [
    ({"type": "url", "url": "https://x.test/a.pdf"}, "document with a url source"),
    ({"type": "file", "file_id": "file_abc"}, "document with a file source"),
    ({"type": "content", "content": [{"type": "text", "text": "words"}]},
     "document with a content source"),
])
def test_a_turn_of_only_a_native_block_is_a_stand_in(source: Json, what: str) -> None:
    """A user turn whose only block needs a native target stays a turn in the chat call (a
    stand-in text naming the block, which the books count and scan), and the block is listed
    with its source type."""
    inbound = read_request(request(messages=[
        {"role": "user", "content": [{"type": "document", "source": source}]}]))
    assert inbound.native_only == [f"messages[0].content[0] ({what})"]
    assert inbound.body["messages"] == [
        {"role": "user", "content": f"[{what}: for a native target]"}]
    parse(ChatRequest, inbound.body)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": None}, "model"), ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": True}, "max_tokens"),
    ({"messages": []}, "messages"), ({"messages": [{"role": "system", "content": "x"}]},
                                     "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"temperature": 1.5}, "temperature"), ({"stream": "yes"}, "stream"),
    ({"stop_sequences": "END"}, "stop_sequences"), ({"tool_choice": {"type": "x"}}, "tool_choice"),
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
     "messages[0].content[0].tool_use_id"),
])
def test_malformed_requests_name_the_parameter(body: Json, param: str) -> None:
    given = request()
    given.update(body)
    given = {k: v for k, v in given.items() if v is not None}
    with pytest.raises(errors.InvalidRequest) as caught:
        read_request(given)
    assert caught.value.param == param


# --- answers ---------------------------------------------------------------------------------


def test_a_completion_becomes_a_message() -> None:
    body = {"id": "chatcmpl-1", "model": "gpt-4o-mini", "choices": [{
        "index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.", "reasoning_content": "think",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}}]}
    usage = Usage(prompt_tokens=100, completion_tokens=20, cached_tokens=60,
                  cache_write_tokens=10)
    assert to_message(body, usage, model="gpt-4o-mini") == {
        "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
        "content": [{"type": "thinking", "thinking": "think", "signature": ""},
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather",
                     "input": {"city": "Oslo"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 20, "cache_read_input_tokens": 60,
                  "cache_creation_input_tokens": 10}}


@pytest.mark.parametrize(("finish", "stop"), [("stop", "end_turn"), ("length", "max_tokens"),
                                              ("content_filter", "refusal"), (None, "end_turn")])
def test_stop_reasons(finish: str | None, stop: str) -> None:
    body = {"choices": [{"finish_reason": finish, "message": {"content": "x"}}]}
    assert to_message(body, None, model="m")["stop_reason"] == stop


def test_tool_arguments_that_are_not_an_object_are_kept() -> None:
    body = {"choices": [{"finish_reason": "tool_calls", "message": {"tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "not json"}}]}}]}
    assert to_message(body, None, model="m")["content"][0]["input"] == {"arguments": "not json"}


def test_tool_arguments_cut_by_max_tokens_are_an_empty_input() -> None:
    """Unfinished JSON, cut at ``max_tokens``, is ``{}`` as Claude and the streamed SDK give it,
    not an ``"arguments"`` key the tool's schema lacks; whole arguments are kept as sent."""
    body = {"choices": [{"finish_reason": "length", "message": {"tool_calls": [
        {"id": "a", "function": {"name": "f", "arguments": '{"city": "Par'}},
        {"id": "b", "function": {"name": "g", "arguments": '{"city": "Rome"}'}}]}}]}
    message = to_message(body, None, model="m")
    assert message["stop_reason"] == "max_tokens"
    assert [block["input"] for block in message["content"]] == [{}, {"city": "Rome"}]


# --- streams ---------------------------------------------------------------------------------


def chunk(delta: Json | None = None, *, finish: str | None = None, **extra: Any) -> Json:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c1", "model": "gpt-4o-mini", "choices": choices, **extra}


def writer_for(model: str, prompt_tokens: int = 4) -> EventWriter:
    """An event writer whose prompt the gateway estimates at ``prompt_tokens``."""
    return EventWriter(model=model, prompt_tokens=lambda: prompt_tokens)


def test_a_translated_stream_has_anthropics_event_sequence() -> None:
    writer = writer_for("public")
    raw = b"".join([
        writer.frame(chunk({"role": "assistant", "content": ""})),
        writer.frame(chunk({"reasoning_content": "hm"})),
        writer.frame(chunk({"content": "Hel"})), writer.frame(chunk({"content": "lo"})),
        writer.frame(None),
        writer.frame(chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {
            "name": "f", "arguments": '{"a"'}}]})),
        writer.frame(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})),
        writer.frame(chunk({}, finish="tool_calls")),
        writer.frame(chunk(None, usage={"prompt_tokens": 7, "completion_tokens": 5})),
        writer.close(),
    ])
    got = events(raw)
    assert [name for name, _ in got] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "ping",
        "content_block_stop", "content_block_start", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert got[0][1]["message"]["id"] == "msg_c1"
    assert got[0][1]["message"]["model"] == "gpt-4o-mini"
    assert [data["content_block"]["type"] for name, data in got
            if name == "content_block_start"] == ["thinking", "text", "tool_use"]
    assert [data["index"] for name, data in got if name == "content_block_delta"] == \
        [0, 1, 1, 2, 2]
    assert got[9][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "f",
                                          "input": {}}
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert got[-2][1]["usage"]["input_tokens"] == 7
    assert got[-2][1]["usage"]["output_tokens"] == 5


def test_a_keep_alive_before_the_first_event_is_a_comment_not_a_ping() -> None:
    """Anthropic's streams begin with ``message_start``: a slow first token's keep-alives come
    before it as SSE comments (skipped by every SSE parser), and as ``ping`` events after."""
    for first in (chunk({"role": "assistant", "content": "Hi"}),
                  {NATIVE_EVENTS: [("message_start", '{"type":"message_start"}')]}):
        writer = writer_for("public")
        raw = writer.frame(None) + writer.frame(None) + writer.frame(first) + writer.frame(None)
        assert raw.startswith(b": keep-alive\n\n: keep-alive\n\nevent: message_start\n")
        assert raw.endswith(b'event: ping\ndata: {"type":"ping"}\n\n')


def test_message_start_carries_the_input_tokens() -> None:
    """``message_start`` reports the prompt's input tokens, as Anthropic's does: the gateway's
    estimate while the upstream has reported none (``message_delta`` then has its count), the
    upstream's own when its first chunk carries usage."""
    writer = writer_for("m", prompt_tokens=9)
    got = events(b"".join([writer.frame(chunk({"content": "hi"})),
                           writer.frame(chunk({}, finish="stop")),
                           writer.frame(chunk(None, usage={"prompt_tokens": 7,
                                                           "completion_tokens": 1})),
                           writer.close()]))
    assert got[0][1]["message"]["usage"] == {"input_tokens": 9, "output_tokens": 0}
    assert got[-2][1]["usage"]["input_tokens"] == 7
    early = writer_for("m", prompt_tokens=9)
    first = events(early.frame(chunk({"content": "hi"}, usage={"prompt_tokens": 12,
                                                               "completion_tokens": 0})))
    assert first[0][1]["message"]["usage"] == {"input_tokens": 12, "output_tokens": 0}
    assert events(writer_for("m", prompt_tokens=3).close())[0][1]["message"]["usage"] == {
        "input_tokens": 3, "output_tokens": 0}


def test_an_empty_translated_stream_still_starts_and_stops() -> None:
    writer = writer_for("m")
    names = [name for name, _ in events(writer.frame(chunk({}, finish="stop")) + writer.close())]
    assert names == ["message_start", "message_delta", "message_stop"]


@pytest.mark.parametrize("chunks", [
    [],
    [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"})],
    [chunk({"refusal": "I can't"})],
    [chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f",
                                                                 "arguments": '{"a": 1}'}}]}),
     chunk(None, usage={"prompt_tokens": 7, "completion_tokens": 5})],
])
def test_a_translated_stream_ended_without_a_finish_reason_is_truncated(
        chunks: list[Json]) -> None:
    """An upstream that ended its stream (``[DONE]``) without ever giving a ``finish_reason``
    cut the answer short: the stream ends with an ``error`` event, as a native one ending
    before ``message_stop`` does, not with ``message_delta`` claiming ``end_turn``."""
    writer = writer_for("m")
    got = events(b"".join([*(writer.frame(c) for c in chunks), writer.close()]))
    names = [name for name, _ in got]
    assert names[0] == "message_start"
    assert "message_delta" not in names and "message_stop" not in names
    assert got[-1] == ("error", {"type": "error", "error": {
        "type": "api_error",
        "message": "upstream stream ended without a finish_reason; the answer is truncated"}})


def test_native_events_are_relayed_as_they_came() -> None:
    """The upstream's own events go out byte for byte; chunks without them (the gateway's
    estimated usage) and the end add nothing."""
    writer = writer_for("m")
    start = '{"type":"message_start","message":{"id":"msg_1"}}'
    first = {**chunk({"role": "assistant"}), NATIVE_EVENTS: [("message_start", start)]}
    assert writer.frame(first) == f"event: message_start\ndata: {start}\n\n".encode()
    assert writer.frame(chunk({"content": "x"})) == b""
    assert writer.frame(None) == PING
    assert writer.close() == b""


def test_an_error_is_an_error_event() -> None:
    frame = writer_for("m").error(errors.UpstreamError("boom"))
    assert events(frame) == [("error", {"type": "error", "error": {
        "type": "api_error", "message": "boom"}})]


def blocks_of(got: list[tuple[str, Json]]) -> list[Json]:
    """The content blocks a stream's events build, checking Anthropic's order on the way: one
    block open at a time, indices in turn, every delta of a block between its start and its
    stop."""
    built: list[Json] = []
    open_index: int | None = None
    for name, data in got:
        if name == "content_block_start":
            assert open_index is None and data["index"] == len(built)
            open_index = data["index"]
            built.append({**data["content_block"], "partial_json": ""})
        elif name == "content_block_delta":
            assert data["index"] == open_index, (name, data)
            delta, block = data["delta"], built[data["index"]]
            if delta["type"] == "input_json_delta":
                block["partial_json"] += delta["partial_json"]
            elif delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                block["thinking"] += delta["thinking"]
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None
    for block in built:
        if block["type"] == "tool_use":
            block["input"] = orjson.loads(block.pop("partial_json") or "{}")
        else:
            block.pop("partial_json")
    return built


def calls(*parts: Json) -> Json:
    return chunk({"tool_calls": list(parts)})


def call(index: int | None = None, arguments: str = "", **extra: Any) -> Json:
    out: Json = {"function": {"arguments": arguments}, **extra}
    if "name" in extra:
        out["function"]["name"] = out.pop("name")
    if index is not None:
        out["index"] = index
    return out


def run(*chunks: Json) -> list[tuple[str, Json]]:
    writer = writer_for("m")
    return events(b"".join([*(writer.frame(c) for c in chunks), writer.close()]))


def test_interleaved_tool_calls_are_sent_one_block_at_a_time() -> None:
    """Two parallel calls whose argument deltas interleave (call 0 starts, call 1 starts, then
    0, 1, 0): block 0 gets all its deltas before its stop, and call 1's, held meanwhile, go
    out when its block starts."""
    got = run(calls(call(0, id="call_a", type="function", name="f")),
              calls(call(1, id="call_b", type="function", name="g")),
              calls(call(0, '{"x":')), calls(call(1, '{"y":2}')), calls(call(0, "1}")),
              chunk({}, finish="tool_calls"))
    assert [(name, data.get("index")) for name, data in got[1:-2]] == [
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_delta", 0),
        ("content_block_stop", 0), ("content_block_start", 1), ("content_block_delta", 1),
        ("content_block_stop", 1)]
    assert blocks_of(got) == [
        {"type": "tool_use", "id": "call_a", "name": "f", "input": {"x": 1}},
        {"type": "tool_use", "id": "call_b", "name": "g", "input": {"y": 2}}]


def test_calls_one_after_the_other_still_stream_live() -> None:
    """An upstream that sends each call whole before the next (OpenAI's order): each block
    stops when the next call begins, its deltas sent as they came."""
    writer = writer_for("m")
    writer.frame(calls(call(0, id="a", name="f")))
    assert [n for n, _ in events(writer.frame(calls(call(0, '{"x": 1}'))))] == [
        "content_block_delta"]
    assert [n for n, _ in events(writer.frame(calls(call(1, '{"y"', id="b", name="g"))))] == [
        "content_block_stop", "content_block_start", "content_block_delta"]


def test_text_after_an_unfinished_tool_call_waits_for_it() -> None:
    """Text that comes while a tool call's arguments are not yet whole is held in a block of
    its own, sent after the call's block has all its arguments and has stopped."""
    got = run(chunk({"content": "Let me look."}),
              calls(call(0, '{"q": ', id="a", name="search")),
              chunk({"content": "One moment"}), calls(call(0, '"x"}')),
              chunk({"content": "."}), chunk({}, finish="tool_calls"))
    assert blocks_of(got) == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "a", "name": "search", "input": {"q": "x"}},
        {"type": "text", "text": "One moment."}]


def test_a_call_whose_arguments_never_finish_keeps_later_blocks_to_the_end() -> None:
    """Arguments that never form a whole JSON value (a call cut at max_tokens) keep the call's
    block open to the end; a later call waits and goes out whole after it."""
    got = run(calls(call(0, '{"x": [1', id="a", name="f")),
              calls(call(1, '{"y": 2}', id="b", name="g")),
              calls(call(0, ", 2")), chunk({}, finish="length"))
    assert [(name, data.get("index")) for name, data in got
            if name.startswith("content_block")] == [
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_delta", 0),
        ("content_block_stop", 0), ("content_block_start", 1), ("content_block_delta", 1),
        ("content_block_stop", 1)]


def test_tool_calls_without_an_index_are_told_apart_by_id() -> None:
    """Calls streamed without ``index`` (non-conforming servers): a new id begins a new call,
    and a delta with neither index nor id goes on the call begun last."""
    got = run(calls(call(None, "{", id="call_a", type="function", name="f")),
              calls(call(None, "}")),
              calls(call(None, '{"b": 1}', id="call_b", type="function", name="g")),
              chunk({}, finish="tool_calls"))
    assert blocks_of(got) == [
        {"type": "tool_use", "id": "call_a", "name": "f", "input": {}},
        {"type": "tool_use", "id": "call_b", "name": "g", "input": {"b": 1}}]
