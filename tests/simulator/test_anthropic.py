"""The Anthropic Messages dialect through the official SDK, streaming and errors included."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import orjson
import pytest

from app.usage import estimate_tokens

USER: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Explain the tides"}]
TOOL: anthropic.types.ToolParam = {
    "name": "lookup", "description": "Look something up.",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"},
                                                      "limit": {"type": "integer"}},
                     "required": ["query"]}}
HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def test_message_shape_and_usage(claude: anthropic.Anthropic, http: httpx.Client) -> None:
    """A message answers text with end_turn, and usage agrees with the content."""
    message = claude.messages.create(model="claude-x", max_tokens=100, messages=USER,
                                     system="Be brief.")
    block = message.content[0]
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == "claude-x"
    assert block.type == "text" and block.text.startswith("Simulated reply to: Explain the")
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens == estimate_tokens(block.text) == 16
    prompt = estimate_tokens("Be brief.") + 3 + estimate_tokens("Explain the tides") + 3
    assert message.usage.input_tokens == prompt
    assert message.usage.cache_read_input_tokens == 0
    raw = http.post("/v1/messages", headers=HEADERS, json={
        "model": "c", "max_tokens": 5, "messages": USER}).json()
    assert set(raw) == {"id", "type", "role", "model", "content", "stop_reason",
                        "stop_sequence", "usage"}
    assert set(raw["usage"]) == {"input_tokens", "output_tokens", "cache_creation",
                                 "cache_creation_input_tokens", "cache_read_input_tokens"}


def test_max_tokens_and_stop_sequences(claude: anthropic.Anthropic) -> None:
    """max_tokens cuts with stop_reason max_tokens; a stop sequence sets stop_sequence."""
    cut = claude.messages.create(model="c", max_tokens=3, messages=USER)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    stopped = claude.messages.create(model="c", max_tokens=50, messages=USER,
                                     stop_sequences=["zzz", " tides"])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == " tides"
    assert stopped.content[0].type == "text"
    assert stopped.content[0].text == "Simulated reply to: Explain the"


def test_content_blocks_and_images_are_accepted(claude: anthropic.Anthropic) -> None:
    """Text, image, tool_use and tool_result blocks and a block-list system are accepted."""
    message = claude.messages.create(model="c", max_tokens=20, system=[
        {"type": "text", "text": "System text."}], tools=[TOOL], messages=[
        {"role": "user", "content": [{"type": "text", "text": "Look at"}, {
            "type": "image", "source": {"type": "base64", "media_type": "image/png",
                                        "data": "iVBORw0KGgo="}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                           "name": "lookup", "input": {"query": "q"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "found it"}]}])
    assert message.stop_reason == "end_turn"


def test_tool_use(claude: anthropic.Anthropic) -> None:
    """tool_choice any, tool, auto or none given: a tool_use block from the input schema,
    stop_reason tool_use; none answers text."""
    choices: list[anthropic.types.ToolChoiceParam] = [{"type": "any"},
                                                      {"type": "tool", "name": "lookup"},
                                                      {"type": "auto"}]
    for choice in choices:
        message = claude.messages.create(model="c", max_tokens=100, messages=USER,
                                         tools=[TOOL], tool_choice=choice)
        block = message.content[0]
        assert message.stop_reason == "tool_use"
        assert block.type == "tool_use" and block.name == "lookup"
        assert block.id.startswith("toolu_") and block.input == {"query": "", "limit": 0}
    default = claude.messages.create(model="c", max_tokens=100, messages=USER, tools=[TOOL])
    assert default.stop_reason == "tool_use" and default.content[0].type == "tool_use"
    none = claude.messages.create(model="c", max_tokens=100, messages=USER, tools=[TOOL],
                                  tool_choice={"type": "none"})
    assert none.stop_reason == "end_turn" and none.content[0].type == "text"


def test_output_config_format_answers_schema_json(claude: anthropic.Anthropic,
                                                  http: httpx.Client) -> None:
    """output_config.format (structured outputs) answers a text block holding an instance of
    the schema, plain and streamed; a malformed format is a 400 naming the field."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}
    message = claude.messages.create(
        model="c", max_tokens=100, messages=USER,
        output_config={"format": {"type": "json_schema", "schema": schema}})
    block = message.content[0]
    assert block.type == "text" and orjson.loads(block.text) == {"a": 0}
    assert message.stop_reason == "end_turn"
    with claude.messages.stream(
            model="c", max_tokens=100, messages=USER,
            output_config={"format": {"type": "json_schema", "schema": schema}}) as stream:
        assert orjson.loads("".join(stream.text_stream)) == {"a": 0}
    bad = http.post("/v1/messages", headers=HEADERS, json={
        "model": "c", "max_tokens": 5, "messages": USER,
        "output_config": {"format": {"type": "json_object"}}})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"].startswith("output_config.format.type:")


def test_stream_events_in_order(http: httpx.Client) -> None:
    """A stream sends Anthropic's events in order, each as event: NAME and data: JSON."""
    raw = http.post("/v1/messages", headers=HEADERS, json={
        "model": "c", "max_tokens": 4, "messages": USER, "stream": True}).text
    frames = [f for f in raw.split("\n\n") if f]
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert names == ["message_start", "content_block_start", "ping", *["content_block_delta"] * 4,
                     "content_block_stop", "message_delta", "message_stop"]
    for frame, name in zip(frames, names, strict=True):
        assert orjson.loads(frame.split("\n")[1].removeprefix("data: "))["type"] == name
    delta = orjson.loads(frames[-2].split("\n")[1].removeprefix("data: "))
    assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"]["output_tokens"] == 4


def test_sdk_stream_accumulates_text(claude: anthropic.Anthropic) -> None:
    """The SDK's stream helper rebuilds the same message as a non-streaming call."""
    with claude.messages.stream(model="c", max_tokens=100, messages=USER) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) == 16
    assert final.content[0].type == "text" and final.content[0].text == "".join(pieces)
    assert final.usage.output_tokens == 16 and final.stop_reason == "end_turn"


def test_sdk_stream_tool_use(claude: anthropic.Anthropic) -> None:
    """A streamed tool_use block sends input_json_delta pieces that parse into the input."""
    with claude.messages.stream(model="c", max_tokens=100, messages=USER, tools=[TOOL],
                                tool_choice={"type": "any"}) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use" and block.input == {"query": "", "limit": 0}
    assert final.stop_reason == "tool_use"


def test_stream_tool_without_parameters_sends_one_empty_input_delta(http: httpx.Client) -> None:
    """A streamed tool_use of a tool without parameters has one empty partial_json, as
    Anthropic streams it (not "{" and "}")."""
    raw = http.post("/v1/messages", headers=HEADERS, json={
        "model": "c", "max_tokens": 100, "messages": USER, "stream": True,
        "tools": [{"name": "now", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "any"}}).text
    datas = [orjson.loads(f.split("\n")[1].removeprefix("data: "))
             for f in raw.split("\n\n") if f]
    deltas = [d["delta"] for d in datas if d["type"] == "content_block_delta"]
    assert deltas == [{"type": "input_json_delta", "partial_json": ""}]


THINKING: anthropic.types.ThinkingConfigEnabledParam = {"type": "enabled", "budget_tokens": 1024}


def test_thinking_puts_a_signed_thinking_block_first(claude: anthropic.Anthropic) -> None:
    """thinking on: a thinking block with a signature before the answer, plain and streamed
    (thinking_delta pieces, then a signature_delta), its tokens counted as output."""
    plain = claude.messages.create(model="c", max_tokens=2048, messages=USER, thinking=THINKING)
    assert [b.type for b in plain.content] == ["thinking", "text"]
    assert plain.content[0].type == "thinking" and plain.content[0].signature
    with claude.messages.stream(model="c", max_tokens=2048, messages=USER,
                                thinking=THINKING) as stream:
        final = stream.get_final_message()
    assert final.content[0] == plain.content[0]
    assert final.usage.output_tokens == plain.usage.output_tokens


def test_thinking_tool_loop_needs_the_signed_thinking_block_back(
        claude: anthropic.Anthropic, http: httpx.Client) -> None:
    """With thinking on, the tool-result call must send the assistant's thinking block first,
    with its own signature: Anthropic's 400 otherwise."""
    first = claude.messages.create(model="c", max_tokens=2048, messages=USER, tools=[TOOL],
                                   tool_choice={"type": "auto"}, thinking=THINKING)
    thinking, use = first.content
    assert thinking.type == "thinking" and use.type == "tool_use"
    result: Any = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                "content": "found"}]}
    kept = [thinking.model_dump(), use.model_dump()]
    history: Any = [*USER, {"role": "assistant", "content": kept}, result]
    answer = claude.messages.create(model="c", max_tokens=2048, thinking=THINKING, tools=[TOOL],
                                    messages=history)
    assert answer.content[-1].type == "text"
    for blocks, expected in (([use.model_dump()], "Expected `thinking` or `redacted_thinking`"),
                             ([{**kept[0], "thinking": "changed"}, kept[1]],
                              "Invalid `signature`")):
        refused = http.post("/v1/messages", headers=HEADERS, json={
            "model": "c", "max_tokens": 2048, "thinking": THINKING, "tools": [TOOL],
            "messages": [*USER, {"role": "assistant", "content": blocks}, result]})
        assert refused.status_code == 400 and expected in refused.json()["error"]["message"]


def test_thinking_comes_once_per_turn_and_is_needed_only_on_its_first_message(
        claude: anthropic.Anthropic, http: httpx.Client) -> None:
    """As Claude without interleaved thinking: no thinking in the answer to tool results, and a
    multi-step tool loop needs the thinking block only on the turn's first assistant message."""
    first = claude.messages.create(model="c", max_tokens=2048, messages=USER, tools=[TOOL],
                                   tool_choice={"type": "any"}, thinking=THINKING)
    blocks = [b.model_dump() for b in first.content]
    history: Any = [*USER, {"role": "assistant", "content": blocks},
                    {"role": "user", "content": [{"type": "tool_result",
                                                  "tool_use_id": blocks[1]["id"],
                                                  "content": "found"}]}]
    second = claude.messages.create(model="c", max_tokens=2048, messages=history, tools=[TOOL],
                                    tool_choice={"type": "any"}, thinking=THINKING)
    assert [b.type for b in second.content] == ["tool_use"]
    call = second.content[0].model_dump()
    history += [{"role": "assistant", "content": [call]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"],
                                              "content": "found again"}]}]
    third = claude.messages.create(model="c", max_tokens=2048, messages=history, tools=[TOOL],
                                   thinking=THINKING)
    assert [b.type for b in third.content] == ["text"]
    history[1] = {"role": "assistant", "content": blocks[1:]}
    refused = http.post("/v1/messages", headers=HEADERS, json={
        "model": "c", "max_tokens": 2048, "thinking": THINKING, "tools": [TOOL],
        "messages": history})
    assert refused.status_code == 400
    assert "messages.1.content.0.type: Expected `thinking`" in refused.json()["error"]["message"]


def test_cache_control_reports_cache_tokens(claude: anthropic.Anthropic) -> None:
    """cache_control marks a cached prefix: creation by default, reads up to the header's N."""
    system: list[anthropic.types.TextBlockParam] = [{
        "type": "text", "text": "A long and stable system prompt. " * 20,
        "cache_control": {"type": "ephemeral"}}]
    prefix = estimate_tokens(system[0]["text"]) + 3
    written = claude.messages.create(model="c", max_tokens=5, system=system, messages=USER)
    assert written.usage.cache_creation_input_tokens == prefix
    assert written.usage.cache_read_input_tokens == 0
    assert written.usage.input_tokens == estimate_tokens("Explain the tides") + 3
    read = claude.messages.create(model="c", max_tokens=5, system=system, messages=USER,
                                  extra_headers={"X-Sim-Cache-Read-Tokens": "40"})
    assert read.usage.cache_read_input_tokens == 40
    assert read.usage.cache_creation_input_tokens == prefix - 40


def test_cache_writes_are_split_by_ttl(claude: anthropic.Anthropic) -> None:
    """usage.cache_creation splits the writes as the API does: up to the last ttl 1h block
    into ephemeral_1h_input_tokens, the rest into ephemeral_5m_input_tokens; reads first."""
    hour: anthropic.types.TextBlockParam = {
        "type": "text", "text": "Stable instructions kept for an hour. " * 20,
        "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    minutes: anthropic.types.TextBlockParam = {
        "type": "text", "text": "Context that changes more often. " * 10,
        "cache_control": {"type": "ephemeral"}}
    hour_tokens = estimate_tokens(hour["text"]) + 3
    prefix = hour_tokens + estimate_tokens(minutes["text"])
    written = claude.messages.create(model="c", max_tokens=5, system=[hour, minutes],
                                     messages=USER)
    split = written.usage.cache_creation
    assert written.usage.cache_creation_input_tokens == prefix and split is not None
    assert split.ephemeral_1h_input_tokens == hour_tokens
    assert split.ephemeral_5m_input_tokens == prefix - hour_tokens
    read = claude.messages.create(model="c", max_tokens=5, system=[hour, minutes],
                                  messages=USER, extra_headers={"X-Sim-Cache-Read-Tokens": "40"})
    assert read.usage.cache_creation is not None
    assert read.usage.cache_creation.ephemeral_1h_input_tokens == hour_tokens - 40
    assert read.usage.cache_creation.ephemeral_5m_input_tokens == prefix - hour_tokens


def test_authentication_and_version_headers_required(http: httpx.Client) -> None:
    """Without a key the answer is 401 authentication_error; without a version, 400."""
    body = {"model": "c", "max_tokens": 5, "messages": USER}
    no_key = http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert no_key.status_code == 401
    assert no_key.json() == {"type": "error", "error": {
        "type": "authentication_error", "message": "x-api-key header is required"}}
    no_version = http.post("/v1/messages", json=body, headers={"x-api-key": "k"})
    assert no_version.status_code == 400
    assert no_version.json()["error"]["type"] == "invalid_request_error"


def test_validation_errors(http: httpx.Client) -> None:
    """A missing max_tokens or an unknown role is a 400 invalid_request_error."""
    missing = http.post("/v1/messages", headers=HEADERS, json={"model": "c", "messages": USER})
    assert missing.status_code == 400
    assert missing.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: Field required"}}
    bad_role = http.post("/v1/messages", headers=HEADERS, json={
        "model": "c", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]})
    assert bad_role.status_code == 400
    assert bad_role.json()["error"]["message"].startswith("messages.0.role:")


@pytest.mark.parametrize(("status", "kind", "error"), [
    (429, "rate_limit_error", anthropic.RateLimitError),
    (529, "overloaded_error", anthropic.InternalServerError),
    (500, "api_error", anthropic.InternalServerError),
    (404, "not_found_error", anthropic.NotFoundError),
])
def test_injected_errors_use_anthropic_shape(
    claude: anthropic.Anthropic, status: int, kind: str, error: type[anthropic.APIStatusError]
) -> None:
    """X-Return-Error answers Anthropic's error body and type for the status."""
    with pytest.raises(error) as caught:
        claude.messages.create(model="c", max_tokens=5, messages=USER,
                               extra_headers={"X-Return-Error": str(status)})
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict) and caught.value.body["error"]["type"] == kind


def test_mid_stream_error_event(claude: anthropic.Anthropic) -> None:
    """X-Sim-Error-After sends N deltas then an event: error the SDK raises."""
    pieces: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught, claude.messages.stream(
            model="c", max_tokens=100, messages=USER,
            extra_headers={"X-Sim-Error-After": "3"}) as stream:
        pieces.extend(stream.text_stream)
    assert len(pieces) == 3
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "overloaded_error"


def test_cut_stream_has_no_message_stop(http: httpx.Client) -> None:
    """X-Sim-Cut-After drops the connection after N deltas, before message_stop."""
    seen: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError), http.stream(
            "POST", "/v1/messages", headers={**HEADERS, "X-Sim-Cut-After": "2"},
            json={"model": "c", "max_tokens": 50, "messages": USER, "stream": True}) as response:
        seen.extend(line for line in response.iter_lines() if line.startswith("event: "))
    assert seen.count("event: content_block_delta") == 2
    assert "event: message_stop" not in seen
