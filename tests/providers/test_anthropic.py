"""The Anthropic provider: request and answer translation, streams, errors, and the simulator."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import SecretStr, ValidationError

from app import errors
from app.providers import PROVIDER_TYPES, anthropic
from app.providers.anthropic import AnthropicProvider
from app.providers.anthropic_request import translate_request
from app.providers.anthropic_response import map_error, to_chat_completion
from app.providers.anthropic_stream import StreamTranslator
from app.providers.base import NATIVE_EVENTS, ChatCall, Json, OpeningHold, Target
from app.providers.http import SSEEvent
from app.schemas import ChatRequest

TARGET = Target(provider="claude", model="claude-sonnet-4-20250514")
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
    "rkJggg=="
)
WEATHER_TOOL: Json = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}


def chat_call(**body: Any) -> ChatCall:
    body.setdefault("model", "claude")
    body.setdefault("messages", [{"role": "user", "content": "Hello"}])
    return ChatCall(request=ChatRequest.model_validate(body), body=body)


def payload(target: Target = TARGET, *, stream: bool = False, **body: Any) -> Json:
    return translate_request(chat_call(**body), target=target, max_tokens_default=4096,
                             stream=stream)


# --- request translation -------------------------------------------------------------------


def test_minimal_request_names_target_model_and_provider_max_tokens() -> None:
    """A bare request gets the target's model and the provider's max_tokens default."""
    assert payload() == {"model": TARGET.model, "max_tokens": 4096,
                         "messages": [{"role": "user", "content": "Hello"}]}


def test_max_tokens_prefers_client_then_target_default() -> None:
    """max_tokens: the client's limit, else the target's default, else the provider's."""
    target = Target(provider="claude", model="m", max_tokens_default=256)
    assert payload(target)["max_tokens"] == 256
    assert payload(target, max_tokens=99)["max_tokens"] == 99
    assert payload(target, max_completion_tokens=77, max_tokens=99)["max_tokens"] == 77


def test_default_max_tokens_goes_above_the_thinking_budget() -> None:
    """With thinking enabled and no client limit, a default at or below budget_tokens (which
    Anthropic refuses) is sent as the budget plus the default; a larger default, a client's
    limit and adaptive thinking are left alone."""
    thinking = {"type": "enabled", "budget_tokens": 5000}
    assert payload(thinking=thinking)["max_tokens"] == 5000 + 4096
    assert payload(thinking={**thinking, "budget_tokens": 4096})["max_tokens"] == 4096 + 4096
    assert payload(thinking={**thinking, "budget_tokens": 1024})["max_tokens"] == 4096
    assert payload(thinking=thinking, max_tokens=8000)["max_tokens"] == 8000
    assert payload(thinking={"type": "adaptive"})["max_tokens"] == 4096
    target = Target(provider="claude", model="m", max_tokens_default=1000,
                    params={"thinking": {"type": "enabled", "budget_tokens": 2000}})
    assert payload(target)["max_tokens"] == 3000


def test_system_and_developer_messages_become_top_level_system() -> None:
    """System and developer messages, wherever they stand, are joined into ``system``."""
    out = payload(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
    ])
    assert out["system"] == "Be brief.\n\nAnswer in French."
    assert out["messages"] == [{"role": "user", "content": "Hi"}]


def test_consecutive_messages_of_one_role_are_merged() -> None:
    """Anthropic needs alternating turns: neighbours of one role become one turn."""
    out = payload(messages=[
        {"role": "user", "content": "One"},
        {"role": "user", "content": "Two"},
        {"role": "assistant", "content": "Three"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Four"},
    ])
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "One"},
                                     {"type": "text", "text": "Two"}]},
        {"role": "assistant", "content": "Three"},
        {"role": "user", "content": "Four"},
    ]


def test_image_parts_become_base64_and_url_image_blocks() -> None:
    """Data-URL images are sent as base64 with their media type; http(s) ones by URL."""
    out = payload(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg",
                                            "detail": "high"}},
    ]}])
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize("url", ["data:image/bmp;base64,AAAA", "ftp://example.com/a.png",
                                 "data:image/png,notbase64"])
def test_unusable_image_urls_are_refused(url: str) -> None:
    """An image Anthropic can't take is a 400 naming the part."""
    with pytest.raises(errors.InvalidRequest) as caught:
        payload(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}]}])
    assert caught.value.param == "messages[0].content[0].image_url.url"


def test_pdf_file_part_becomes_document_block() -> None:
    """A PDF sent as an OpenAI file part becomes a base64 document block."""
    out = payload(messages=[{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf",
                                  "file_data": "data:application/pdf;base64,JVBERi0="}}]}])
    assert out["messages"][0]["content"] == [{"type": "document", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]


def test_audio_parts_are_refused() -> None:
    """A content part type Anthropic lacks is a 400 naming the part."""
    with pytest.raises(errors.InvalidRequest) as caught:
        payload(messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}])
    assert caught.value.param == "messages[0].content[0]"


def test_tool_history_becomes_tool_use_and_tool_result_blocks() -> None:
    """Assistant tool calls become tool_use blocks; tool replies one user turn of results."""
    out = payload(messages=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "toolu_2", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2",
         "content": [{"type": "text", "text": "25C"}]},
        {"role": "user", "content": "Thanks"},
    ])
    assert out["messages"][1:] == [
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather",
             "input": {"city": "Rome"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_2",
             "content": [{"type": "text", "text": "25C"}]},
            {"type": "text", "text": "Thanks"},
        ]},
    ]


def test_tool_results_go_before_text_in_a_merged_user_turn() -> None:
    """Anthropic wants tool results first in a user turn, even if the client sent text first."""
    out = payload(messages=[
        {"role": "assistant", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"role": "user", "content": "Note"},
        {"role": "tool", "tool_call_id": "t1", "content": "done"},
    ])
    assert out["messages"][0]["content"][0]["input"] == {}
    assert [b["type"] for b in out["messages"][1]["content"]] == ["tool_result", "text"]


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_tool_call_arguments_that_are_not_a_json_object_are_refused(arguments: str) -> None:
    """Tool call arguments must parse to an object; the error names the exact param."""
    with pytest.raises(errors.InvalidRequest) as caught:
        payload(messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f",
                                                              "arguments": arguments}}]},
        ])
    assert caught.value.param == "messages[1].tool_calls[0].function.arguments"


def test_tool_message_without_tool_call_id_is_refused() -> None:
    """A tool reply must say which call it answers (``ChatRequest`` itself refuses one that
    does not, as OpenAI does)."""
    with pytest.raises(ValidationError):
        payload(messages=[{"role": "tool", "content": "x"}])


def test_tools_become_input_schemas() -> None:
    """Function tools become name/description/input_schema; a missing schema is an empty object."""
    out = payload(tools=[WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}])
    assert out["tools"] == [
        {"name": "get_weather", "description": "Current weather in a city",
         "input_schema": WEATHER_TOOL["function"]["parameters"]},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out


@pytest.mark.parametrize("strict", [True, False, None], ids=["true", "false", "unset"])
def test_a_strict_tool_is_sent_strict(strict: bool | None) -> None:
    """A tool's ``strict: true`` goes on as Anthropic's ``strict`` (its SDK's ``ToolParam``
    has it: inputs guaranteed valid for the schema); it was dropped. False or unset: nothing."""
    function = {**WEATHER_TOOL["function"], **({} if strict is None else {"strict": strict})}
    [tool] = payload(tools=[{"type": "function", "function": function}])["tools"]
    assert tool.get("strict") is (True if strict else None)


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}),
    ("required", {"type": "any"}),
    ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"type": "tool", "name": "get_weather"}),
])
def test_tool_choice_translation(choice: Any, expected: Json) -> None:
    """OpenAI tool_choice values map onto Anthropic's tool_choice objects."""
    assert payload(tools=[WEATHER_TOOL], tool_choice=choice)["tool_choice"] == expected


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    """parallel_tool_calls=false sets disable_parallel_tool_use, on auto when no choice given."""
    assert payload(tools=[WEATHER_TOOL], parallel_tool_calls=False)["tool_choice"] == \
        {"type": "auto", "disable_parallel_tool_use": True}
    assert payload(tools=[WEATHER_TOOL], parallel_tool_calls=False,
                   tool_choice="required")["tool_choice"] == \
        {"type": "any", "disable_parallel_tool_use": True}


def test_malformed_tool_choice_is_refused() -> None:
    """A tool_choice object that names no function is a 400 on tool_choice."""
    with pytest.raises(errors.InvalidRequest) as caught:
        payload(tools=[WEATHER_TOOL], tool_choice={"type": "function"})
    assert caught.value.param == "tool_choice"


def test_sampling_fields_stop_sequences_and_user() -> None:
    """temperature, top_p, stop (string or list) and user are carried over."""
    out = payload(temperature=0.3, top_p=0.9, stop="END", user="u-42", seed=7,
                  presence_penalty=0.5)
    assert out["temperature"] == 0.3
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-42"}
    assert "seed" not in out and "presence_penalty" not in out
    assert payload(stop=["a", "b"])["stop_sequences"] == ["a", "b"]


@pytest.mark.parametrize(("body", "param"), [
    ({"temperature": 1.5}, "temperature"),
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
])
def test_requests_anthropic_cannot_honour_are_refused(body: Json, param: str) -> None:
    """What Anthropic can't do is a 400 naming the param, never silently ignored."""
    with pytest.raises(errors.InvalidRequest) as caught:
        payload(**body)
    assert caught.value.param == param


def test_json_schema_response_format_becomes_structured_output() -> None:
    """response_format json_schema becomes output_config.format with the schema."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}},
              "additionalProperties": False}
    out = payload(response_format={"type": "json_schema",
                                   "json_schema": {"name": "r", "schema": schema}})
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "output_config" not in payload(response_format={"type": "text"})


def test_target_params_lie_under_client_native_fields_and_translation() -> None:
    """Target params are the base; the client's top_k/thinking and translated fields win."""
    target = Target(provider="claude", model="m",
                    params={"top_k": 5, "temperature": 1.0, "service_tier": "auto"})
    out = payload(target, temperature=0.2)
    assert (out["top_k"], out["temperature"], out["service_tier"]) == (5, 0.2, "auto")
    out = payload(target, top_k=40, thinking={"type": "enabled", "budget_tokens": 1024})
    assert out["top_k"] == 40
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 1024}


def test_cache_control_on_parts_is_carried_to_blocks() -> None:
    """cache_control on system and user parts survives, so prompt caching works through us."""
    marker = {"type": "ephemeral"}
    out = payload(messages=[
        {"role": "system", "content": [{"type": "text", "text": "Long", "cache_control": marker}]},
        {"role": "user", "content": [{"type": "text", "text": "Q", "cache_control": marker}]},
    ])
    assert out["system"] == [{"type": "text", "text": "Long", "cache_control": marker}]
    assert out["messages"][0]["content"] == [{"type": "text", "text": "Q",
                                              "cache_control": marker}]


def test_streaming_request_asks_for_a_stream() -> None:
    """A streaming call sets stream: true."""
    assert payload(stream=True)["stream"] is True
    assert "stream" not in payload()


def test_headers_carry_key_version_and_config_headers() -> None:
    """x-api-key, anthropic-version and the config's extra headers are sent."""
    config = AnthropicProvider(type="anthropic", api_key=SecretStr("sk-ant-1"),
                               headers={"anthropic-beta": "x"})
    assert anthropic.anthropic_headers(config) == {
        "x-api-key": "sk-ant-1", "anthropic-version": "2023-06-01", "anthropic-beta": "x"}


# --- answer translation --------------------------------------------------------------------


def message_body(**fields: Any) -> Json:
    body: Json = {
        "id": "msg_01ABC", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": [{"type": "text", "text": "Hello there."}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 4},
    }
    return {**body, **fields}


def test_text_answer_becomes_chat_completion() -> None:
    """A text message becomes a chat.completion with the message id, model and usage."""
    body, usage = to_chat_completion(message_body(), created=1700000000)
    assert body == {
        "id": "msg_01ABC", "object": "chat.completion", "created": 1700000000,
        "model": "claude-sonnet-4-20250514",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello there.",
                                 "refusal": None}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    }
    assert usage is not None and usage.prompt_tokens == 12


def test_tool_use_answer_becomes_tool_calls() -> None:
    """tool_use blocks become tool_calls with JSON-string arguments; no text means null content."""
    body, _ = to_chat_completion(message_body(stop_reason="tool_use", content=[
        {"type": "tool_use", "id": "toolu_9", "name": "get_weather",
         "input": {"city": "Paris"}}]), created=0)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [{
        "id": "toolu_9", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]


def test_thinking_blocks_become_reasoning_content() -> None:
    """Thinking text is returned as reasoning_content, apart from the answer, and the thinking
    and redacted thinking blocks themselves as thinking_blocks (signature and data kept)."""
    body, _ = to_chat_completion(message_body(content=[
        {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
        {"type": "text", "text": "42"}]), created=0)
    assert body["choices"][0]["message"]["reasoning_content"] == "Let me think."
    assert body["choices"][0]["message"]["content"] == "42"
    assert body["choices"][0]["message"]["thinking_blocks"] == [
        {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
        {"type": "redacted_thinking", "data": "EmwKAhgB"}]


def test_thinking_stream_ends_each_block_with_it_whole_in_thinking_blocks() -> None:
    """A streamed thinking block: its text as reasoning_content deltas, then, at its end, the
    block whole (text and signature_delta's signature) in delta.thinking_blocks; a redacted
    one comes whole too."""
    _, chunks = feed_all([
        message_start(),
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "Let me "}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "think."}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "signature_delta", "signature": "EqQBCkgI"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "redacted_thinking", "data": "EmwKAhgB"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "text",
                                                                      "text": ""}},
        {"type": "content_block_delta", "index": 2,
         "delta": {"type": "text_delta", "text": "42"}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ])
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[1:6] == [
        {"reasoning_content": "Let me "}, {"reasoning_content": "think."},
        {"thinking_blocks": [{"type": "thinking", "thinking": "Let me think.",
                              "signature": "EqQBCkgI"}]},
        {"thinking_blocks": [{"type": "redacted_thinking", "data": "EmwKAhgB"}]},
        {"content": "42"}]


THINKING_ON: Json = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
SIGNED: Json = {"type": "thinking", "thinking": "Paris first.", "signature": "sig"}
CALLED: Json = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "toolu_1", "type": "function",
     "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}
ANSWERED: Json = {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}


def test_thinking_blocks_go_back_first_in_their_assistant_turn() -> None:
    """An assistant message's thinking_blocks are sent back unchanged, before its tool uses."""
    redacted = {"type": "redacted_thinking", "data": "EmwKAhgB"}
    out = payload(**THINKING_ON, messages=[
        {"role": "user", "content": "Weather?"},
        {**CALLED, "thinking_blocks": [SIGNED, redacted]}, ANSWERED])
    assert out["messages"][1]["content"] == [
        SIGNED, redacted, {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                           "input": {"city": "Paris"}}]


def test_thinking_on_needs_the_answered_tool_turns_thinking_blocks() -> None:
    """With thinking on, the assistant turn whose tool calls are being answered without its
    thinking_blocks is a 400 naming them; earlier turns, or thinking off, need none."""
    history: list[Json] = [{"role": "user", "content": "Weather?"}, CALLED, ANSWERED]
    with pytest.raises(errors.InvalidRequest) as caught:
        payload(**THINKING_ON, messages=history)
    assert caught.value.param == "messages[1].thinking_blocks"
    payload(messages=history)
    payload(**THINKING_ON, messages=[*history, {"role": "assistant", "content": "18C."},
                                     {"role": "user", "content": "And Rome?"}])
    with pytest.raises(errors.InvalidRequest) as caught:
        payload(**THINKING_ON, messages=[{"role": "user", "content": "Weather?"},
                                         {**CALLED, "thinking_blocks": [{"type": "thinking"}]},
                                         ANSWERED])
    assert caught.value.param == "messages[1].thinking_blocks[0]"


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"), ("something_new", "stop"),
])
def test_stop_reasons_map_to_finish_reasons(stop_reason: str, finish: str) -> None:
    """Each Anthropic stop_reason has its OpenAI finish_reason."""
    body, _ = to_chat_completion(message_body(stop_reason=stop_reason), created=0)
    assert body["choices"][0]["finish_reason"] == finish


def test_usage_counts_cache_reads_and_writes_into_prompt_tokens() -> None:
    """prompt_tokens adds cached reads and writes; reads are cached_tokens, writes kept apart."""
    body, usage = to_chat_completion(message_body(usage={
        "input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20}), created=0)
    assert usage is not None
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens,
            usage.completion_tokens) == (130, 100, 20, 5)
    assert body["usage"] == {"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135,
                             "prompt_tokens_details": {"cached_tokens": 100,
                                                       "cache_write_tokens": 20}}


def test_answer_that_is_not_a_message_is_a_bad_upstream_response() -> None:
    """A body that isn't an Anthropic message is a 502, not a crash."""
    with pytest.raises(errors.BadUpstreamResponse):
        to_chat_completion({"type": "completion", "id": "x"}, created=0)
    with pytest.raises(errors.BadUpstreamResponse):
        to_chat_completion(message_body(content="text"), created=0)


# --- stream translation --------------------------------------------------------------------


def message_start(**usage: int) -> Json:
    return {"type": "message_start", "message": {
        "id": "msg_01S", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1, **usage}}}


def feed_all(events: list[Json]) -> tuple[StreamTranslator, list[Json]]:
    translator = StreamTranslator(created=5)
    chunks = [chunk for event in events for chunk in translator.feed(event)]
    return translator, chunks


TEXT_EVENTS: list[Json] = [
    message_start(cache_read_input_tokens=7),
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
     "usage": {"output_tokens": 15}},
    {"type": "message_stop"},
]


def test_text_stream_becomes_role_content_finish_and_usage_chunks() -> None:
    """A text stream yields the role chunk, content deltas, the finish chunk, then usage."""
    translator, chunks = feed_all(TEXT_EVENTS)
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, "stop"]
    assert all(c["id"] == "msg_01S" and c["model"] == "claude-x" and c["created"] == 5
               and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 32, "completion_tokens": 15,
                                   "total_tokens": 47,
                                   "prompt_tokens_details": {"cached_tokens": 7}}
    assert translator.done
    translator.finish()


def test_tool_use_stream_becomes_tool_call_deltas() -> None:
    """A tool_use block opens a tool call (id, name, empty arguments); JSON deltas extend it."""
    _, chunks = feed_all([
        message_start(),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text",
                                                                      "text": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "Checking."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
         "usage": {"output_tokens": 30}},
        {"type": "message_stop"},
    ])
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[2:5] == [
        {"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_use_stream_without_input_ends_with_empty_object_arguments() -> None:
    """A tool_use block with only an empty partial_json gets "{}" at its content_block_stop."""
    _, chunks = feed_all([
        message_start(),
        {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Paris\"}"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
         "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ])
    calls = [call for c in chunks if c["choices"]
             for call in c["choices"][0]["delta"].get("tool_calls", ())]
    arguments: dict[int, str] = {}
    for call in calls:
        arguments[call["index"]] = arguments.get(call["index"], "") + call["function"]["arguments"]
    assert arguments == {0: "{}", 1: "{\"city\": \"Paris\"}"}


def test_server_tool_blocks_and_their_input_are_ignored_in_a_stream() -> None:
    """A server_tool_use block's input_json_delta (web search) and its result block are
    skipped; the text around them streams, and the stream finishes."""
    translator, chunks = feed_all([
        message_start(),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text",
                                                                      "text": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "Searching."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {
            "type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": "{\"query\": \"tides\"}"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {
            "type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}},
        {"type": "content_block_stop", "index": 2},
        {"type": "content_block_start", "index": 3, "content_block": {"type": "text",
                                                                      "text": ""}},
        {"type": "content_block_delta", "index": 3,
         "delta": {"type": "text_delta", "text": " Found."}},
        {"type": "content_block_stop", "index": 3},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ])
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Searching. Found."
    assert not any("tool_calls" in d for d in deltas)
    translator.finish()
    with pytest.raises(errors.BadUpstreamResponse):
        translator.feed({"type": "content_block_delta", "index": 9,
                         "delta": {"type": "input_json_delta", "partial_json": "{}"}})


def test_error_event_raises_the_mapped_error() -> None:
    """An ``error`` event mid-stream raises its gateway error (overloaded: retryable 529)."""
    translator = StreamTranslator(created=0)
    translator.feed(message_start())
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        translator.feed({"type": "error", "error": {"type": "overloaded_error",
                                                    "message": "Overloaded"}})
    assert caught.value.status_code == 529
    with pytest.raises(errors.UpstreamRateLimited):
        translator.feed({"type": "error", "error": {"type": "rate_limit_error",
                                                    "message": "slow down"}})


def test_stream_ending_before_message_stop_is_a_bad_upstream_response() -> None:
    """A stream cut before message_stop is reported, not passed off as complete."""
    translator, _ = feed_all(TEXT_EVENTS[:4])
    with pytest.raises(errors.BadUpstreamResponse):
        translator.finish()


# --- error mapping -------------------------------------------------------------------------


def anthropic_error(kind: str, message: str) -> Json:
    return {"type": "error", "error": {"type": kind, "message": message}}


@pytest.mark.parametrize(("status", "kind", "error_class", "client_status"), [
    (400, "invalid_request_error", errors.UpstreamRejected, 400),
    (401, "authentication_error", errors.UpstreamAuthFailed, 502),
    (429, "rate_limit_error", errors.UpstreamRateLimited, 429),
    (500, "api_error", errors.UpstreamUnavailable, 502),
    (529, "overloaded_error", errors.UpstreamUnavailable, 529),
])
def test_error_bodies_map_onto_the_gateway_tree(
    status: int, kind: str, error_class: type[errors.GatewayError], client_status: int
) -> None:
    """Anthropic error answers keep their message and type and get the right client status."""
    error = map_error(status, anthropic_error(kind, "went wrong"), "")
    assert type(error) is error_class
    assert error.status_code == client_status
    assert "went wrong" in error.message
    assert error.code == kind


def test_stream_without_reported_usage_leaves_the_estimate_to_the_gateway() -> None:
    """No usage anywhere in the stream: no zero usage chunk, so the gateway estimates instead."""
    start = message_start()
    del start["message"]["usage"]
    _, chunks = feed_all([start, {"type": "message_stop"}])
    assert all(c["choices"] for c in chunks)


# --- against the simulator -----------------------------------------------------------------


def provider(simulator: str, session: aiohttp.ClientSession, *, timeout_s: float = 30.0,
             base_url: str | None = None,
             headers: dict[str, str] | None = None) -> anthropic.AnthropicMessages:
    config = AnthropicProvider(type="anthropic", api_key=SecretStr("k"),
                               base_url=base_url or simulator, timeout_s=timeout_s,
                               headers=headers or {})
    return anthropic.build(config, session)


async def last_received(simulator: str, session: aiohttp.ClientSession) -> Json:
    async with session.get(f"{simulator}/_sim/requests?limit=1") as response:
        received: list[Json] = await response.json()
    return received[-1]


async def collect(stream: AsyncIterator[Json]) -> list[Json]:
    return [chunk async for chunk in stream]


def streamed_text(chunks: list[Json]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_simulator_chat_sends_messages_request_and_returns_completion(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """A chat reaches /v1/messages with key, version, system and max_tokens, and reads back."""
    result = await provider(simulator, session).chat(chat_call(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me about the ocean."}]), target=TARGET)
    sent = await last_received(simulator, session)
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "k"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["body"]["system"] == "Be brief."
    assert sent["body"]["max_tokens"] == 4096
    body = result.body
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("msg_")
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["content"]
    assert result.usage is not None and result.usage.prompt_tokens > 0
    assert body["usage"]["completion_tokens"] == result.usage.completion_tokens > 0


async def test_simulator_base_url_may_end_in_v1(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """A base_url given with a trailing /v1 still reaches /v1/messages."""
    result = await provider(simulator, session, base_url=f"{simulator}/v1/").chat(
        chat_call(), target=TARGET)
    assert result.body["choices"][0]["message"]["content"]
    assert (await last_received(simulator, session))["path"] == "/v1/messages"


async def test_simulator_accepts_translated_images(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """Base64 and URL image blocks are sent in a form Anthropic's validation accepts."""
    result = await provider(simulator, session).chat(chat_call(messages=[
        {"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]),
        target=TARGET)
    assert result.body["choices"][0]["message"]["content"]
    blocks = (await last_received(simulator, session))["body"]["messages"][0]["content"]
    assert [b["source"]["type"] for b in blocks if b["type"] == "image"] == ["base64", "url"]


async def test_simulator_forced_tool_comes_back_as_tool_calls(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """tool_choice naming a function yields a tool call with JSON-object arguments."""
    result = await provider(simulator, session).chat(chat_call(
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}), target=TARGET)
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("toolu_")
    assert call["function"]["name"] == "get_weather"
    assert "city" in orjson.loads(call["function"]["arguments"])
    sent = (await last_received(simulator, session))["body"]
    assert sent["tool_choice"] == {"type": "tool", "name": "get_weather"}


async def test_simulator_accepts_tool_history(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """A conversation with tool calls and tool results passes Anthropic's validation."""
    result = await provider(simulator, session).chat(chat_call(tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C and sunny"},
    ]), target=TARGET)
    assert result.body["choices"][0]["message"]["content"]
    sent = (await last_received(simulator, session))["body"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]


async def test_simulator_stop_sequences_and_length_limit(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """stop is sent as stop_sequences; a max_tokens cut reads back as finish_reason length."""
    result = await provider(simulator, session, headers={"X-Sim-Completion-Tokens": "50"}).chat(
        chat_call(stop=["zzz-never"], max_tokens=5), target=TARGET)
    assert (await last_received(simulator, session))["body"]["stop_sequences"] == ["zzz-never"]
    assert result.body["choices"][0]["finish_reason"] == "length"
    assert result.usage is not None and result.usage.completion_tokens == 5


async def test_simulator_usage_with_cache_reads_and_writes(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """Cache reads and writes add into prompt_tokens; reads are reported as cached_tokens."""
    long_system = "You are a careful assistant who answers questions about the sea. " * 20
    result = await provider(simulator, session, headers={"X-Sim-Cache-Read-Tokens": "50"}).chat(
        chat_call(messages=[
            {"role": "system", "content": [{"type": "text", "text": long_system,
                                            "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "Why is the sea salty?"}]), target=TARGET)
    usage = result.usage
    assert usage is not None
    assert usage.cached_tokens == 50
    assert usage.cache_write_tokens > 0
    assert usage.prompt_tokens > usage.cached_tokens + usage.cache_write_tokens
    assert result.body["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 50, "cache_write_tokens": usage.cache_write_tokens}
    assert result.body["usage"]["prompt_tokens"] == usage.prompt_tokens


async def test_simulator_stream_text(simulator: str, session: aiohttp.ClientSession) -> None:
    """A text stream relays the role, content deltas, the finish reason, then a usage chunk."""
    chunks = await collect(provider(simulator, session, headers={"X-Sim-Completion-Tokens": "12"})
                           .stream_chat(chat_call(stream=True), target=TARGET))
    assert (await last_received(simulator, session))["body"]["stream"] is True
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert streamed_text(chunks)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 12
    assert chunks[-1]["usage"]["prompt_tokens"] > 0
    assert len({c["id"] for c in chunks}) == 1


async def test_simulator_stream_tool_call(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """A streamed tool_use arrives as one tool call whose argument deltas join into JSON."""
    chunks = await collect(provider(simulator, session).stream_chat(
        chat_call(stream=True, tools=[WEATHER_TOOL], tool_choice="required"), target=TARGET))
    calls = [call for c in chunks if c["choices"]
             for call in c["choices"][0]["delta"].get("tool_calls", ())]
    assert calls[0]["id"].startswith("toolu_")
    assert calls[0]["function"]["name"] == "get_weather"
    assert {call["index"] for call in calls} == {0}
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert "city" in orjson.loads(arguments)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


async def test_simulator_stream_tool_call_without_arguments_has_empty_object_arguments(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """A streamed call of a tool without parameters has arguments "{}", as the complete one."""
    tool = {"type": "function", "function": {"name": "now", "parameters": {
        "type": "object", "properties": {}}}}
    chunks = await collect(provider(simulator, session).stream_chat(
        chat_call(stream=True, tools=[tool], tool_choice="required"), target=TARGET))
    calls = [call for c in chunks if c["choices"]
             for call in c["choices"][0]["delta"].get("tool_calls", ())]
    assert "".join(call["function"]["arguments"] for call in calls) == "{}"
    complete = await provider(simulator, session).chat(
        chat_call(tools=[tool], tool_choice="required"), target=TARGET)
    (call,) = complete.body["choices"][0]["message"]["tool_calls"]
    assert call["function"]["arguments"] == "{}"


@pytest.mark.parametrize(("status", "error_class", "client_status", "retryable"), [
    (400, errors.UpstreamRejected, 400, False),
    (401, errors.UpstreamAuthFailed, 502, True),
    (429, errors.UpstreamRateLimited, 429, True),
    (529, errors.UpstreamUnavailable, 529, True),
])
async def test_simulator_error_statuses(
    simulator: str, session: aiohttp.ClientSession, status: int,
    error_class: type[errors.GatewayError], client_status: int, retryable: bool,
) -> None:
    """Upstream error statuses become the right gateway errors, in calls and streams alike."""
    upstream = provider(simulator, session, headers={"X-Return-Error": str(status)})
    with pytest.raises(error_class) as caught:
        await upstream.chat(chat_call(), target=TARGET)
    assert type(caught.value) is error_class
    assert (caught.value.status_code, caught.value.retryable) == (client_status, retryable)
    with pytest.raises(error_class):
        await anext(aiter(upstream.stream_chat(chat_call(stream=True), target=TARGET)))


async def test_simulator_refused_key_is_a_gateway_error_without_the_key(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """A missing key is the gateway's problem (502), and no key text leaks into the message."""
    config = AnthropicProvider(type="anthropic", base_url=simulator)
    with pytest.raises(errors.UpstreamError) as caught:
        await anthropic.build(config, session).chat(chat_call(), target=TARGET)
    assert caught.value.status_code == 502
    assert "x-api-key" in caught.value.message


async def test_simulator_mid_stream_error_raises_after_content(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """An error event after some content raises the mapped error once that content is out."""
    received: list[Json] = []
    upstream = provider(simulator, session, headers={"X-Sim-Error-After": "2"})
    with pytest.raises(errors.UpstreamUnavailable):
        async for chunk in upstream.stream_chat(chat_call(stream=True), target=TARGET):
            received.append(chunk)
    assert streamed_text(received)


async def test_simulator_cut_stream_is_a_broken_connection(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """A stream whose connection drops before message_stop raises UpstreamConnectError (a
    broken connection), never ends quietly."""
    upstream = provider(simulator, session, headers={"X-Sim-Cut-After": "2"})
    with pytest.raises(errors.UpstreamConnectError):
        await collect(upstream.stream_chat(chat_call(stream=True), target=TARGET))


async def test_simulator_hang_is_an_upstream_timeout(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """An upstream that never answers is a retryable timeout after timeout_s."""
    upstream = provider(simulator, session, timeout_s=0.3, headers={"X-Sim-Hang": "1"})
    with pytest.raises(errors.UpstreamTimeout):
        await upstream.chat(chat_call(), target=TARGET)


def test_serves_chat_only() -> None:
    """Anthropic offers no text completions or embeddings: the provider implements chat and
    streamed chat alone (and the same natively, for /v1/messages), so the gateway never routes
    the others to it."""
    assert PROVIDER_TYPES["anthropic"].serves == {"chat", "stream_chat", "messages",
                                                  "stream_messages"}


# ---- the opening events wait for the first token ---------------------------------------------

_OPENING = [("message_start", {"type": "message_start", "message": {
                "id": "msg_1", "model": "claude", "usage": {"input_tokens": 3}}}),
            ("ping", {"type": "ping"}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}})]
_REST = [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": "Hi"}}),
         ("content_block_stop", {"type": "content_block_stop", "index": 0}),
         ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                            "usage": {"output_tokens": 1}}),
         ("message_stop", {"type": "message_stop"})]


def test_opening_hold_releases_what_it_held_with_the_first_other_event() -> None:
    """``OpeningHold`` keeps the opening events' chunks until another event, then lets them out
    first, in order, and holds nothing after that."""
    hold = OpeningHold(frozenset({"start", "ping"}))
    assert hold.release("start", [{"n": 1}]) == []
    assert hold.release("ping", []) == []
    assert hold.release("delta", [{"n": 2}]) == [{"n": 1}, {"n": 2}]
    assert hold.release("start", [{"n": 3}]) == [{"n": 3}]
    assert hold.release("ping", []) == []


@pytest.mark.parametrize("native", [False, True])
async def test_no_chunk_before_the_first_token(native: bool) -> None:
    """``translated_chunks``/``native_chunks`` read up to the first ``content_block_delta``
    before they give their first chunk; a native stream still carries every event once, in the
    upstream's order."""
    read: list[str] = []

    async def events() -> AsyncGenerator[SSEEvent, None]:
        for name, data in _OPENING + _REST:
            read.append(name)
            yield SSEEvent(event=name, data=orjson.dumps(data).decode())

    chunks = (anthropic.native_chunks if native else anthropic.translated_chunks)(events())
    first = await anext(chunks)
    assert read == [name for name, _ in _OPENING] + ["content_block_delta"]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    rest = [chunk async for chunk in chunks]
    assert [c["choices"][0]["delta"].get("content") for c in rest[:1]] == ["Hi"]
    if native:
        carried = [name for c in [first, *rest] for name, _ in c.get(NATIVE_EVENTS, ())]
        assert carried == [name for name, _ in _OPENING + _REST]


async def test_an_error_before_the_first_token_sends_no_chunk() -> None:
    """An ``error`` event after ``message_start`` raises before any chunk went out (so the
    gateway may still fall back)."""
    async def events() -> AsyncGenerator[SSEEvent, None]:
        yield SSEEvent(event="message_start", data=orjson.dumps(_OPENING[0][1]).decode())
        yield SSEEvent(event="error", data='{"type":"error","error":{"type":"overloaded_error",'
                                           '"message":"busy"}}')

    with pytest.raises(errors.GatewayError):
        await anext(anthropic.translated_chunks(events()))
