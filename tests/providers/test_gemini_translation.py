"""The Gemini translation: OpenAI chat requests to generateContent bodies, answers and stream
chunks back, errors, and embeddings bodies (pure functions, no network)."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from app import errors
from app.embeddings import encode_vector
from app.providers.base import PROMPT_USAGE, ChatCall, EmbeddingCall, Json, Target
from app.providers.gemini_embed import (
    batch_embed_payloads,
    predict_payloads,
    read_batch_embed,
    read_predict,
)
from app.providers.gemini_request import translate_request
from app.providers.gemini_response import error_from_frame, error_mapper, to_chat_completion
from app.providers.gemini_stream import StreamTranslator
from app.schemas import ChatRequest, EmbeddingRequest

TARGET = Target(provider="gemini", model="gemini-2.5-flash")
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
       "rkJggg==")
WEATHER: Json = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
MAPPER = error_mapper("the Gemini API")


def chat_call(**body: Any) -> ChatCall:
    body.setdefault("model", "gemini")
    body.setdefault("messages", [{"role": "user", "content": "Hello"}])
    return ChatCall(request=ChatRequest.model_validate(body), body=body)


def payload(target: Target = TARGET, **body: Any) -> Json:
    return translate_request(chat_call(**body), target=target)


# --- request -------------------------------------------------------------------------------


def test_minimal_request_is_one_user_turn() -> None:
    """A bare request is one user content, no generationConfig, no model in the body."""
    assert payload() == {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}


def test_system_and_developer_become_system_instruction() -> None:
    """System and developer text, wherever it stands, is lifted into systemInstruction."""
    body = payload(messages=[{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Hi"},
                             {"role": "developer", "content": "No emoji."}])
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "No emoji."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]


def test_images_inline_from_data_urls_and_urls_refused() -> None:
    """A base64 data URL is inlineData; an http URL is a 400 naming the part."""
    body = payload(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is it?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}])
    assert body["contents"][0]["parts"] == [
        {"text": "What is it?"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}]
    with pytest.raises(errors.InvalidRequest) as caught:
        payload(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert caught.value.param == "messages[0].content[0].image_url.url"


def test_tools_and_tool_choice() -> None:
    """Tools are functionDeclarations with parametersJsonSchema; tool_choice maps to modes."""
    body = payload(tools=[WEATHER], tool_choice="required")
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Current weather",
        "parametersJsonSchema": WEATHER["function"]["parameters"]}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    named = payload(tools=[WEATHER], tool_choice={"type": "function",
                                                  "function": {"name": "get_weather"}})
    assert named["toolConfig"] == {"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    assert payload(tools=[WEATHER], tool_choice="none")["toolConfig"] == {
        "functionCallingConfig": {"mode": "NONE"}}
    assert "toolConfig" not in payload(tools=[WEATHER])


@pytest.mark.parametrize(("choice", "config"), [
    (None, {"mode": "VALIDATED"}),
    ("auto", {"mode": "VALIDATED"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
    ("none", {"mode": "NONE"}),
], ids=["unset", "auto", "required", "named", "none"])
def test_strict_tool_asks_for_schema_adherence(choice: Any, config: Json) -> None:
    """A declaration has no strict flag: a strict tool makes auto or no tool_choice Google's
    VALIDATED mode (schema adherence, calls or text); required and named stay ANY, which
    Google says ensures adherence too."""
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    body = payload(tools=[strict, {"type": "function", "function": {"name": "other"}}],
                   **({} if choice is None else {"tool_choice": choice}))
    assert body["toolConfig"] == {"functionCallingConfig": config}
    assert all("strict" not in d for d in body["tools"][0]["functionDeclarations"])


def test_strict_false_changes_nothing() -> None:
    """strict: false is OpenAI's default: no functionCallingConfig is sent for it."""
    loose = {"type": "function", "function": {**WEATHER["function"], "strict": False}}
    assert "toolConfig" not in payload(tools=[loose])


def test_tool_round_trip_names_function_responses() -> None:
    """Assistant tool calls are functionCall parts; tool results functionResponse parts named
    after the call, parallel results merged into one user turn."""
    body = payload(tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_b", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "sunny"}])
    assert body["contents"][1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]}
    assert body["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
        {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}]}


def test_tool_result_text_parts_join_with_newlines() -> None:
    """A tool result given as several text parts reaches Gemini with the parts on separate
    lines, not glued together."""
    body = payload(tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": [
            {"type": "text", "text": "sunny"}, {"type": "text", "text": "21 degrees"}]}])
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather",
                              "response": {"output": "sunny\n21 degrees"}}}]


# Google's thought-signature guide (ai.google.dev/gemini-api/docs/thought-signatures): with
# parallel calls only the first functionCall part carries the signature; an answer without calls
# carries one on its last part. The signatures there are placeholders, as here.
PARALLEL: Json = {"candidates": [{"content": {"role": "model", "parts": [
    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
     "thoughtSignature": "<Signature A>"},
    {"functionCall": {"name": "get_weather", "args": {"city": "London"}}}]},
    "finishReason": "STOP"}]}
SIGNED_TEXT: Json = {"candidates": [{"content": {"role": "model", "parts": [
    {"text": "It is sunny in Paris."}, {"text": "", "thoughtSignature": "<Signature B>"}]},
    "finishReason": "STOP"}]}


def google(signature: str) -> Json:
    return {"google": {"thought_signature": signature}}


def test_signatures_ride_on_tool_calls_and_message() -> None:
    """A functionCall part's signature is its tool call's extra_content (none on an unsigned
    parallel call); a text part's is the message's, as Google's OpenAI endpoint carries them."""
    body, _ = to_chat_completion(PARALLEL, model="m", created=1)
    first, second = body["choices"][0]["message"]["tool_calls"]
    assert first["extra_content"] == google("<Signature A>")
    assert "extra_content" not in second
    assert "extra_content" not in body["choices"][0]["message"]
    body, _ = to_chat_completion(SIGNED_TEXT, model="m", created=1)
    assert body["choices"][0]["message"]["content"] == "It is sunny in Paris."
    assert body["choices"][0]["message"]["extra_content"] == google("<Signature B>")


def test_signatures_go_back_on_the_parts_they_came_from() -> None:
    """An answer's tool calls and text, sent back as assistant messages, put each signature on
    the part Gemini gave it to: the first functionCall only, the text's on the text part."""
    calls_body, _ = to_chat_completion(PARALLEL, model="m", created=1)
    text_body, _ = to_chat_completion(SIGNED_TEXT, model="m", created=1)
    calls = calls_body["choices"][0]["message"]
    body = payload(tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris and London?"}, calls,
        *({"role": "tool", "tool_call_id": c["id"], "content": "sunny"}
          for c in calls["tool_calls"]),
        text_body["choices"][0]["message"], {"role": "user", "content": "Thanks"}])
    assert body["contents"][1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
         "thoughtSignature": "<Signature A>"},
        {"functionCall": {"name": "get_weather", "args": {"city": "London"}}}]}
    assert body["contents"][3] == {"role": "model", "parts": [
        {"text": "It is sunny in Paris.", "thoughtSignature": "<Signature B>"}]}


def test_message_signature_without_text_is_not_sent() -> None:
    """A message-level signature on an assistant message with no text has no part to go on,
    and is left out (Google does not require text signatures back)."""
    body = payload(tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "extra_content": google("<S>"), "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}])
    assert body["contents"][1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {}}}]}


@pytest.mark.parametrize(("where", "extra"), [
    ("tool_calls[0].", {"google": {"thought_signature": 5}}),
    ("tool_calls[0].", {"google": "sig"}),
    ("tool_calls[0].", "sig"),
    ("", {"google": {"thought_signature": ""}}),
])
def test_malformed_signature_is_refused_naming_it(where: str, extra: Any) -> None:
    """extra_content that is not an object, or a thought_signature that is not a non-empty
    string, is a 400 naming where it was."""
    call: Json = {"id": "c1", "type": "function",
                  "function": {"name": "get_weather", "arguments": "{}"}}
    message: Json = {"role": "assistant", "content": "Let me look.", "tool_calls": [call]}
    (call if where else message)["extra_content"] = extra
    with pytest.raises(errors.InvalidRequest) as caught:
        payload(tools=[WEATHER], messages=[{"role": "user", "content": "Weather?"}, message])
    assert caught.value.param == f"messages[1].{where}extra_content"


def test_other_vendors_extra_content_is_ignored() -> None:
    """extra_content without a google entry (another vendor's) adds no signature."""
    body = payload(messages=[{"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello",
                              "extra_content": {"acme": {"x": 1}}}])
    assert body["contents"][1] == {"role": "model", "parts": [{"text": "Hello"}]}


def test_tool_message_without_matching_call_is_refused() -> None:
    """A tool result naming no earlier call is a 400 on its tool_call_id."""
    with pytest.raises(errors.InvalidRequest) as caught:
        payload(messages=[{"role": "user", "content": "x"},
                          {"role": "tool", "tool_call_id": "call_zzz", "content": "1"}])
    assert caught.value.param == "messages[1].tool_call_id"


def test_generation_config_fields() -> None:
    """Sampling, limits, n, stop and seed land in generationConfig."""
    body = payload(max_tokens=100, max_completion_tokens=50, temperature=0.3, top_p=0.9,
                   stop="END", seed=7, n=2, presence_penalty=0.5)
    assert body["generationConfig"] == {
        "maxOutputTokens": 50, "temperature": 0.3, "topP": 0.9, "seed": 7,
        "presencePenalty": 0.5, "candidateCount": 2, "stopSequences": ["END"]}


def test_response_format_schema_and_json_object() -> None:
    """json_schema sends responseJsonSchema; json_object only the JSON mime type."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = payload(response_format={"type": "json_schema",
                                    "json_schema": {"name": "x", "schema": schema}})
    assert body["generationConfig"] == {"responseMimeType": "application/json",
                                         "responseJsonSchema": schema}
    assert payload(response_format={"type": "json_object"})["generationConfig"] == {
        "responseMimeType": "application/json"}


def test_params_and_native_fields_layer_under_translation() -> None:
    """Target params lie under the client's native fields, which lie under the translation."""
    target = Target(provider="g", model="m", max_tokens_default=64,
                    params={"generationConfig": {"thinkingConfig": {"thinkingBudget": 0},
                                                 "temperature": 1.0},
                            "safetySettings": [{"category": "A", "threshold": "B"}]})
    body = payload(target, temperature=0.1,
                   generationConfig={"thinkingConfig": {"includeThoughts": True}})
    assert body["generationConfig"] == {"thinkingConfig": {"includeThoughts": True},
                                        "temperature": 0.1, "maxOutputTokens": 64}
    assert body["safetySettings"] == [{"category": "A", "threshold": "B"}]


@pytest.mark.parametrize(("field", "value"), [
    ("logprobs", True), ("logit_bias", {"1": 2.0}), ("parallel_tool_calls", False)])
def test_unsupported_features_are_refused(field: str, value: Any) -> None:
    """Features Gemini cannot honour are a 400 naming the param."""
    with pytest.raises(errors.InvalidRequest) as caught:
        payload(tools=[WEATHER], **{field: value})
    assert caught.value.param == field


# --- answers -------------------------------------------------------------------------------


ANSWER: Json = {
    "candidates": [{"content": {"role": "model", "parts": [
        {"text": "Let me think.", "thought": True},
        {"text": "Hello"}, {"text": " there"}]}, "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 3,
                      "thoughtsTokenCount": 5, "cachedContentTokenCount": 4,
                      "totalTokenCount": 18},
    "modelVersion": "gemini-2.5-flash", "responseId": "abc123"}


def test_answer_translates_text_thoughts_and_usage() -> None:
    """Text joined, thoughts as reasoning_content, thinking billed as completion tokens."""
    body, usage = to_chat_completion(ANSWER, model="m", created=1)
    assert body["id"] == "chatcmpl-abc123"
    assert body["model"] == "gemini-2.5-flash"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello there",
                                             "refusal": None,
                                             "reasoning_content": "Let me think."}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
            usage.reasoning_tokens) == (10, 8, 4, 5)
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18,
                             "prompt_tokens_details": {"cached_tokens": 4},
                             "completion_tokens_details": {"reasoning_tokens": 5}}


def test_function_calls_become_tool_calls() -> None:
    """functionCall parts become tool_calls with generated ids and finish tool_calls."""
    body, _ = to_chat_completion({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        "finishReason": "STOP"}]}, model="m", created=1)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and len(call["id"]) > 10
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}


@pytest.mark.parametrize(("reason", "expected"), [
    ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("SPII", "content_filter"), ("IMAGE_RECITATION", "content_filter"), ("OTHER", "stop")])
def test_finish_reasons(reason: str, expected: str) -> None:
    """Gemini finish reasons map to OpenAI's."""
    body, _ = to_chat_completion({"candidates": [{"finishReason": reason}]},
                                 model="m", created=1)
    assert body["choices"][0]["finish_reason"] == expected


FAILED = ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS",
          "MISSING_THOUGHT_SIGNATURE", "MALFORMED_RESPONSE"]


@pytest.mark.parametrize("reason", FAILED)
def test_failed_finish_reasons_are_bad_upstream_answers(reason: str) -> None:
    """A candidate that ended with a broken or unexpected tool call (google-genai's
    ``FinishReason``) has no answer: a 502 naming the reason and Google's ``finishMessage``,
    as Bedrock's ``malformed_tool_use`` is, never an empty ``stop``."""
    answer = {"candidates": [{"content": {"parts": [], "role": "model"},
                              "finishReason": reason, "finishMessage": "Malformed call: x(",
                              "index": 0}],
              "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10}}
    with pytest.raises(errors.BadUpstreamResponse, match=f"{reason}.*Malformed call"):
        to_chat_completion(answer, model="m", created=1)


@pytest.mark.parametrize("reason", FAILED)
def test_stream_failed_finish_reason_raises(reason: str) -> None:
    """In a stream the same reason raises from ``feed`` (the gateway's error before commit,
    or its error frame after), with no ``finish_reason: stop`` chunk."""
    translator = StreamTranslator(model="m", created=1, error_mapper=MAPPER)
    translator.feed({"candidates": [{"content": {"parts": [{"text": "Let me"}]}, "index": 0}]})
    with pytest.raises(errors.BadUpstreamResponse, match=reason):
        translator.feed({"candidates": [{"content": {"parts": []}, "finishReason": reason,
                                         "index": 0}]})


@pytest.mark.parametrize(("effort", "budget"), [("none", 0), ("minimal", 1024), ("low", 1024),
                                                ("medium", 8192), ("high", 24576)])
def test_reasoning_effort_is_a_thinking_budget(effort: str, budget: int) -> None:
    """``reasoning_effort`` becomes ``thinkingConfig.thinkingBudget`` as Google's
    OpenAI-compatible endpoint maps it; a native ``includeThoughts`` is kept, a native level
    or budget replaced (Google refuses both together)."""
    body = payload(reasoning_effort=effort, generationConfig={"thinkingConfig": {
        "includeThoughts": True, "thinkingLevel": "high"}})
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True,
                                                          "thinkingBudget": budget}


def test_unknown_reasoning_effort_is_a_400_naming_it() -> None:
    with pytest.raises(errors.InvalidRequest) as raised:
        payload(reasoning_effort="xhigh")
    assert raised.value.param == "reasoning_effort"


def test_blocked_prompt_is_400_naming_reason() -> None:
    """promptFeedback.blockReason with no candidates is a 400 naming the reason."""
    with pytest.raises(errors.UpstreamRejected) as caught:
        to_chat_completion({"promptFeedback": {"blockReason": "SAFETY"}}, model="m", created=1)
    assert caught.value.status_code == 400
    assert "SAFETY" in str(caught.value)


# --- streams -------------------------------------------------------------------------------


def test_stream_translates_incrementally_with_final_usage() -> None:
    """Each chunk's pieces become deltas; finish on the last; usage from the last metadata."""
    translator = StreamTranslator(model="m", created=1, error_mapper=MAPPER)
    first = translator.feed({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Hel"}]}}], "usageMetadata": {"promptTokenCount": 4}, "responseId": "r1"})
    assert [c["choices"][0]["delta"] for c in first] == [
        {"role": "assistant", "content": ""}, {"content": "Hel"}]
    last = translator.feed({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "lo"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2,
                          "thoughtsTokenCount": 1}, "responseId": "r1"})
    assert [c["choices"][0]["delta"] for c in last] == [{"content": "lo"}, {}]
    assert last[-1]["choices"][0]["finish_reason"] == "stop"
    (usage_chunk,) = translator.finish()
    assert usage_chunk["id"] == "chatcmpl-r1"
    assert usage_chunk["usage"] == {"prompt_tokens": 4, "completion_tokens": 3,
                                    "total_tokens": 7,
                                    "completion_tokens_details": {"reasoning_tokens": 1}}


def test_stream_prompt_usage_rides_once_on_the_first_chunk_after_it_is_known() -> None:
    """The prompt's counts (input and cached) ride as ``PROMPT_USAGE`` on the first chunk out
    once a ``usageMetadata`` names them (not one holding only ``trafficType``, as Vertex AI's
    early chunks may; a frame that yields no chunk passes them on), and never again."""
    translator = StreamTranslator(model="m", created=1, error_mapper=MAPPER)

    def frame(text: str | None, **usage: Any) -> list[Json]:
        parts = [] if text is None else [{"content": {"parts": [{"text": text}]}}]
        return translator.feed({"candidates": parts, "usageMetadata": usage})

    assert not any(PROMPT_USAGE in c for c in frame("a", trafficType="ON_DEMAND"))
    assert frame(None, promptTokenCount=9, cachedContentTokenCount=4, totalTokenCount=9) == []
    carried, *rest = frame("b", promptTokenCount=9, cachedContentTokenCount=4)
    assert carried[PROMPT_USAGE] == {"prompt_tokens": 9, "completion_tokens": 0,
                                     "total_tokens": 9,
                                     "prompt_tokens_details": {"cached_tokens": 4}}
    assert not rest and not any(PROMPT_USAGE in c for c in frame("c", promptTokenCount=9))


def test_stream_tool_calls_are_indexed() -> None:
    """Function calls arrive whole, indexed in order across chunks; finish is tool_calls."""
    translator = StreamTranslator(model="m", created=1, error_mapper=MAPPER)
    translator.feed({"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "a", "args": {}}}]}}]})
    chunks = translator.feed({"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "b", "args": {"x": 1}}}]}, "finishReason": "STOP"}]})
    call = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert call["index"] == 1 and call["function"] == {"name": "b", "arguments": '{"x":1}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_carries_signatures() -> None:
    """A streamed call's signature rides on its tool call delta; the final empty text part's
    signature is an extra_content delta of its own, before the finish."""
    translator = StreamTranslator(model="m", created=1, error_mapper=MAPPER)
    (_, calls) = translator.feed({"candidates": [
        {"content": PARALLEL["candidates"][0]["content"]}]})
    first, second = calls["choices"][0]["delta"]["tool_calls"]
    assert first["extra_content"] == google("<Signature A>") and "extra_content" not in second
    translator = StreamTranslator(model="m", created=1, error_mapper=MAPPER)
    translator.feed({"candidates": [{"content": {"parts": [{"text": "Sunny."}]}}]})
    closing = translator.feed({"candidates": [{"content": {"parts": [
        {"text": "", "thoughtSignature": "<Signature B>"}]}, "finishReason": "STOP"}]})
    assert [c["choices"][0]["delta"] for c in closing] == [
        {"extra_content": google("<Signature B>")}, {}]
    assert closing[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_cut_before_finish_is_bad_upstream() -> None:
    """A stream that ends before its finishReason raises BadUpstreamResponse."""
    translator = StreamTranslator(model="m", created=1, error_mapper=MAPPER)
    translator.feed({"candidates": [{"content": {"parts": [{"text": "x"}]}}]})
    with pytest.raises(errors.BadUpstreamResponse):
        translator.finish()


def test_stream_error_frame_is_mapped() -> None:
    """An error frame mid-stream raises the mapped error (429 stays 429)."""
    translator = StreamTranslator(model="m", created=1, error_mapper=MAPPER)
    with pytest.raises(errors.UpstreamRateLimited):
        translator.feed({"error": {"code": 429, "message": "quota",
                                   "status": "RESOURCE_EXHAUSTED"}})
    assert isinstance(error_from_frame({"error": {"status": "UNAVAILABLE", "message": "x"}},
                                       MAPPER), errors.UpstreamUnavailable)


# --- errors --------------------------------------------------------------------------------


def test_resource_exhausted_keeps_429_and_retry_delay() -> None:
    """RESOURCE_EXHAUSTED is a 429 whose RetryInfo delay is its retry-after."""
    error = MAPPER(429, {"error": {"code": 429, "message": "Quota exceeded",
                                   "status": "RESOURCE_EXHAUSTED", "details": [
                                       {"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                        "retryDelay": "37s"}]}}, "")
    assert isinstance(error, errors.UpstreamRateLimited)
    assert error.status_code == 429 and error.retry_after_s == 37.0


def test_invalid_key_is_502_naming_provider() -> None:
    """Gemini's 400 API_KEY_INVALID is a 502 naming the provider, not a client error."""
    error = MAPPER(400, {"error": {"code": 400, "message": "API key not valid.",
                                   "status": "INVALID_ARGUMENT", "details": [
                                       {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                        "reason": "API_KEY_INVALID"}]}}, "")
    assert error.status_code == 502
    assert "the Gemini API refused the gateway's credentials" in str(error)
    plain = MAPPER(400, {"error": {"code": 400, "message": "bad", "status":
                                   "INVALID_ARGUMENT"}}, "")
    assert plain.status_code == 400 and plain.code == "INVALID_ARGUMENT"


# --- embeddings ----------------------------------------------------------------------------


def embed_call(**body: Any) -> EmbeddingCall:
    body.setdefault("model", "emb")
    return EmbeddingCall(request=EmbeddingRequest.model_validate(body), body=body)


def test_batch_embed_payload_and_read() -> None:
    """Each text is one request with the model, task type and dimensions; order kept."""
    target = Target(provider="g", model="gemini-embedding-001",
                    params={"taskType": "RETRIEVAL_DOCUMENT"})
    (body,) = batch_embed_payloads(embed_call(input=["a", "b"], dimensions=8), target=target,
                                   model_name="models/gemini-embedding-001", default_task=None)
    assert body["requests"] == [
        {"model": "models/gemini-embedding-001", "taskType": "RETRIEVAL_DOCUMENT",
         "outputDimensionality": 8, "content": {"parts": [{"text": t}]}} for t in ("a", "b")]
    vectors = read_batch_embed({"embeddings": [{"values": [1.0]}, {"values": [2.0]}]},
                               expected=2)
    assert vectors == [[1.0], [2.0]]
    with pytest.raises(errors.BadUpstreamResponse):
        read_batch_embed({"embeddings": [{"values": [1.0]}]}, expected=2)


def test_embed_batches_split_at_100_and_bad_task_refused() -> None:
    """250 texts go in batches of 100, 100, 50; an unknown task type is a 400."""
    bodies = batch_embed_payloads(embed_call(input=[f"t{i}" for i in range(250)]),
                                  target=TARGET, model_name="models/x", default_task=None)
    assert [len(b["requests"]) for b in bodies] == [100, 100, 50]
    assert bodies[2]["requests"][-1]["content"]["parts"][0]["text"] == "t249"
    with pytest.raises(errors.InvalidRequest) as caught:
        batch_embed_payloads(embed_call(input="x", task_type="NOPE"), target=TARGET,
                             model_name="models/x", default_task=None)
    assert caught.value.param == "task_type"


def test_vertex_predict_payload_and_tokens() -> None:
    """Vertex predict: instances with content and task_type, token counts summed."""
    (body,) = predict_payloads(embed_call(input=["a", "b"], dimensions=4), target=TARGET,
                               default_task="RETRIEVAL_QUERY", batch=5)
    assert body == {"instances": [{"content": "a", "task_type": "RETRIEVAL_QUERY"},
                                  {"content": "b", "task_type": "RETRIEVAL_QUERY"}],
                    "parameters": {"outputDimensionality": 4}}
    answer = {"predictions": [
        {"embeddings": {"values": [0.5], "statistics": {"token_count": 3, "truncated": False}}},
        {"embeddings": {"values": [0.25], "statistics": {"token_count": 2.0,
                                                         "truncated": False}}}]}
    assert read_predict(answer, expected=2) == ([[0.5], [0.25]], 5)


def test_base64_is_little_endian_float32() -> None:
    """base64 encoding packs the floats as little-endian float32."""
    encoded = encode_vector([1.0, -2.5], "base64")
    assert isinstance(encoded, str)
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (1.0, -2.5)
