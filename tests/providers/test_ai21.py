"""The AI21 provider's translation: requests, answers, stream chunks, errors, and AI21's own
published answers (no network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from app import errors
from app.providers import PROVIDER_TYPES, ai21
from app.providers.ai21 import AI21Provider
from app.providers.ai21_request import translate_request
from app.providers.ai21_response import StreamTranslator, map_error, to_chat_completion
from app.providers.base import ChatCall, Json, Target
from app.schemas import ChatRequest

TARGET = Target(provider="ai21", model="jamba-mini")
FIXTURES = Path(__file__).parent / "fixtures" / "ai21"
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
    body.setdefault("model", "jamba")
    body.setdefault("messages", [{"role": "user", "content": "Hello"}])
    return ChatCall(request=ChatRequest.model_validate(body), body=body)


def payload(target: Target = TARGET, *, stream: bool = False, **body: Any) -> Json:
    return translate_request(chat_call(**body), target=target, stream=stream)


def refused(param: str, *, stream: bool = False, **body: Any) -> errors.InvalidRequest:
    with pytest.raises(errors.InvalidRequest) as raised:
        payload(stream=stream, **body)
    assert raised.value.param == param
    return raised.value


# --- request translation -------------------------------------------------------------------


def test_minimal_request_names_target_model_only() -> None:
    """A bare request is the target's model and the messages: AI21's defaults apply."""
    assert payload() == {"model": "jamba-mini",
                         "messages": [{"role": "user", "content": "Hello"}]}


def test_text_parts_are_joined_and_developer_becomes_system() -> None:
    """Content parts become AI21's single string; developer is AI21's system role."""
    body = payload(messages=[
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "name": "ann", "content": [{"type": "text", "text": "One"},
                                                     {"type": "text", "text": "Two"}]},
    ])
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "One\nTwo"}]


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA"}},
])
def test_non_text_parts_are_refused_naming_the_part(part: Json) -> None:
    """Images, audio and files: AI21 takes text only, so the part is named in a 400."""
    error = refused("messages[1].content[1]", messages=[
        {"role": "system", "content": "x"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, part]}])
    assert "text only" in error.message


def test_tool_history_keeps_ai21_shapes() -> None:
    """Assistant tool calls and tool results travel in AI21's shapes (no content when null)."""
    body = payload(messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text",
                                                                "text": "sunny"}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No more."}]},
    ])
    assert body["messages"][1:] == [
        {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": "No more."},
    ]


def test_tool_message_without_id_and_function_messages_are_refused() -> None:
    """AI21's tool message needs tool_call_id (``ChatRequest`` itself refuses one without, as
    OpenAI does); legacy function messages have no AI21 form."""
    with pytest.raises(ValidationError):
        chat_call(messages=[{"role": "tool", "content": "x"}])
    refused("messages[0].role", messages=[{"role": "function", "name": "f", "content": "x"}])


def test_limits_and_sampling_pass_in_ai21_ranges() -> None:
    """n, temperature, top_p and stop pass; the smaller of the two token limits is sent."""
    body = payload(n=3, temperature=0.7, top_p=0.9, stop="END", max_tokens=300,
                   max_completion_tokens=200)
    assert {k: body[k] for k in ("n", "temperature", "top_p", "stop", "max_tokens")} == {
        "n": 3, "temperature": 0.7, "top_p": 0.9, "stop": "END", "max_tokens": 200}


def test_target_default_is_capped_at_ai21_maximum() -> None:
    """Without a client limit the target's default is sent, at most AI21's 4096."""
    target = Target(provider="ai21", model="jamba-large", max_tokens_default=10_000)
    assert payload(target)["max_tokens"] == 4096
    target = Target(provider="ai21", model="jamba-large", max_tokens_default=512)
    assert payload(target)["max_tokens"] == 512


@pytest.mark.parametrize(("body", "param", "stream"), [
    ({"n": 17}, "n", False),
    ({"n": 2}, "n", True),
    ({"n": 2, "temperature": 0}, "temperature", False),
    ({"max_tokens": 4097}, "max_tokens", False),
    ({"max_completion_tokens": 5000}, "max_completion_tokens", False),
    ({"top_p": 0}, "top_p", False),
    ({"logprobs": True}, "logprobs", False),
    ({"top_logprobs": 2}, "top_logprobs", False),
    ({"logit_bias": {"50256": -100}}, "logit_bias", False),
    ({"modalities": ["text", "audio"]}, "modalities", False),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio", False),
    ({"response_format": {"type": "json_schema",
                          "json_schema": {"name": "x", "schema": {"type": "object"}}}},
     "response_format", False),
    ({"tools": [WEATHER_TOOL], "tool_choice": "required"}, "tool_choice", False),
    ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function",
                                               "function": {"name": "get_weather"}}},
     "tool_choice", False),
    ({"tools": [WEATHER_TOOL], "parallel_tool_calls": False}, "parallel_tool_calls", False),
    ({"tools": [{"type": "function", "function": {**WEATHER_TOOL["function"], "strict": True}}]},
     "tools[0].function.strict", False),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "array"}}}]}, "tools[0].function.parameters", False),
])
def test_requests_ai21_cannot_honour_are_refused(body: Json, param: str, stream: bool) -> None:
    """What AI21 cannot do, and that would change the answer, is a 400 naming the param."""
    refused(param, stream=stream, **body)


def test_hints_and_unknown_fields_are_dropped() -> None:
    """Sampling hints, bookkeeping fields and unknown extensions never reach AI21."""
    body = payload(seed=7, presence_penalty=0.5, frequency_penalty=0.5, user="u1",
                   metadata={"a": "b"}, parallel_tool_calls=True, modalities=["text"],
                   store=True, top_k=5)
    assert body == {"model": "jamba-mini", "messages": [{"role": "user", "content": "Hello"}]}


def test_tools_and_auto_choice_become_ai21_function_tools() -> None:
    """Functions pass in AI21's shape; 'auto' is AI21's behaviour and is not sent; a missing
    parameters schema becomes an empty object schema."""
    body = payload(tools=[WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}],
                   tool_choice="auto")
    assert "tool_choice" not in body
    assert body["tools"] == [
        {"type": "function", "function": {
            "name": "get_weather", "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}},
        {"type": "function", "function": {"name": "now",
                                          "parameters": {"type": "object", "properties": {}}}},
    ]


def test_tool_choice_none_sends_no_tools() -> None:
    """AI21 has no tool_choice: 'none' is honoured by offering no tools."""
    assert "tools" not in payload(tools=[WEATHER_TOOL], tool_choice="none")


def test_json_object_mode_is_sent_and_text_is_a_no_op() -> None:
    """json_object is AI21's JSON mode; text is its default."""
    assert payload(response_format={"type": "json_object"})["response_format"] == {
        "type": "json_object"}
    assert "response_format" not in payload(response_format={"type": "text"})


def test_documents_and_target_params_are_layered_under_translation() -> None:
    """documents (AI21-native) is forwarded; target params lie underneath everything."""
    documents = [{"content": "Q3 revenue was up.", "metadata": {"topic": "revenue"}}]
    target = Target(provider="ai21", model="jamba-large",
                    params={"temperature": 0.1, "documents": [], "top_p": 0.5})
    body = payload(target, documents=documents, temperature=0.9)
    assert body["documents"] == documents
    assert (body["temperature"], body["top_p"], body["model"]) == (0.9, 0.5, "jamba-large")


def test_streaming_request_asks_for_a_stream_without_stream_options() -> None:
    """stream: true is sent; OpenAI's stream_options is not an AI21 field."""
    streamed = chat_call(stream=True, stream_options={"include_usage": True})
    body = translate_request(streamed, target=TARGET, stream=True)
    assert body["stream"] is True and "stream_options" not in body


def test_registry_and_headers() -> None:
    """type: ai21 is registered for chat only; the key goes in Authorization: Bearer."""
    kind = PROVIDER_TYPES["ai21"]
    assert kind.serves == {"chat", "stream_chat"}
    config = AI21Provider(type="ai21", api_key=SecretStr("k-1"), headers={"X-Team": "a"})
    assert config.base_url == "https://api.ai21.com/studio/v1"
    assert "k-1" not in repr(config)
    assert ai21.CHAT_PATH == "/chat/completions"


# --- answers ---------------------------------------------------------------------------------


def fixture(name: str) -> Json:
    body: Json = json.loads((FIXTURES / name).read_text())
    assert body.pop("_source").startswith("https://")
    return body


def test_published_plain_answer_translates() -> None:
    """AI21's published plain answer becomes a chat.completion with its usage."""
    body, usage = to_chat_completion(fixture("plain.json"), model="jamba-mini", created=1)
    assert body == {
        "id": "chat-cc8ce5c05f1d4ed9b722123ac4a0f267", "object": "chat.completion",
        "created": 1, "model": "jamba-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "refusal": None,
                                             "content": " Hello! How can I assist you today?"},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 144, "completion_tokens": 14, "total_tokens": 158}}
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (144, 14)


def test_published_tool_call_answer_translates() -> None:
    """AI21's published tool-call answer keeps its call id, name, arguments and finish."""
    body, _ = to_chat_completion(fixture("tool_calls.json"), model="jamba-mini", created=1)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_62136354", "type": "function",
         "function": {"name": "get_delivery_date", "arguments": "{\"order_id\":\"order_12345\"}"}}]


def test_published_json_mode_answer_translates() -> None:
    """AI21's published JSON-mode answer: its JSON text passes; a choice with no finish_reason
    of its own is reported as a normal stop."""
    body, usage = to_chat_completion(fixture("json_mode.json"), model="jamba-large", created=1)
    choice = body["choices"][0]
    assert json.loads(choice["message"]["content"])["tickets"][1] == {"ticket_type": "child",
                                                                      "quantity": 2}
    assert choice["finish_reason"] == "stop"
    assert usage is not None and usage.total_tokens == 392


def test_answer_without_choices_is_a_bad_upstream_response() -> None:
    """An answer missing its id or choices is the upstream's fault (502)."""
    with pytest.raises(errors.BadUpstreamResponse):
        to_chat_completion({"detail": "x"}, model="m", created=1)


# --- stream chunks ---------------------------------------------------------------------------


def test_stream_splits_usage_from_the_last_content_chunk() -> None:
    """AI21's role chunk gains OpenAI's empty content; its last chunk carries usage beside its
    choice: the choice passes on, then a usage chunk with no choices follows."""
    translator = StreamTranslator(model="jamba-mini", created=5)
    first = translator.feed({"id": "chat-1", "choices": [
        {"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
    last = translator.feed({"id": "chat-1", "choices": [
        {"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}})
    assert first == [{"id": "chat-1", "object": "chat.completion.chunk", "created": 5,
                      "model": "jamba-mini", "choices": [
                          {"index": 0, "delta": {"role": "assistant", "content": ""},
                           "logprobs": None, "finish_reason": None}]}]
    assert [c["choices"] for c in last] == [
        [{"index": 0, "delta": {"content": "Hi"}, "logprobs": None, "finish_reason": "stop"}],
        []]
    assert last[1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}
    assert translator.finished


def test_stream_tool_call_deltas_gain_openai_fields() -> None:
    """A call's first delta gains type and empty arguments; later deltas pass arguments."""
    translator = StreamTranslator(model="m", created=1)
    first = translator.feed({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"id": "call_1", "index": 0, "type": "function",
         "function": {"name": "get_weather"}}]}}]})
    more = translator.feed({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": "{\"city\""}}]}}]})
    assert first[0]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": ""}}]
    assert more[0]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "function": {"arguments": "{\"city\""}}]
    assert not translator.finished


@pytest.mark.parametrize("frame", [
    {"error": {"message": "boom", "type": "InternalServerError"}},
    {"detail": "Internal server error"},
])
def test_in_band_error_frames_raise(frame: Json) -> None:
    """An error frame inside a started stream fails it (the client has its partial answer)."""
    with pytest.raises(errors.UpstreamError, match="mid-stream"):
        StreamTranslator(model="m", created=1).feed(frame)


# --- errors ----------------------------------------------------------------------------------


def test_validation_error_names_the_param_and_keeps_422() -> None:
    """FastAPI's 422 detail list: the message lists each problem, param is the first loc."""
    error = map_error(422, {"detail": [
        {"loc": ["body", "messages", 0, "content"], "msg": "field required",
         "type": "value_error.missing"},
        {"loc": ["body", "n"], "msg": "ensure this value is less than or equal to 16",
         "type": "value_error.number.not_le"}]}, "")
    assert isinstance(error, errors.UpstreamRejected)
    assert (error.status_code, error.param, error.code) == (
        422, "messages[0].content", "value_error.missing")
    assert error.message == ("messages[0].content: field required; n: ensure this value is "
                             "less than or equal to 16")


@pytest.mark.parametrize(("status", "kind", "code"), [
    (429, errors.UpstreamRateLimited, 429),
    (401, errors.UpstreamAuthFailed, 502),
    (500, errors.UpstreamUnavailable, 502),
    (503, errors.UpstreamUnavailable, 503),
])
def test_detail_string_errors_map_onto_the_gateway_tree(status: int, kind: type, code: int
                                                        ) -> None:
    """{"detail": "..."} bodies keep their message; statuses map as for every provider."""
    error = map_error(status, {"detail": "Too many requests"}, "")
    assert type(error) is kind and error.status_code == code
    assert "Too many requests" in error.message


def test_other_error_shapes_fall_back_to_the_shared_reader() -> None:
    """A body that is not FastAPI's is read by the shared mapper (OpenAI shape, plain text)."""
    assert map_error(400, {"error": {"message": "bad"}}, "").message == "bad"
    assert map_error(502, None, "gateway down").message == "gateway down"
