"""The OpenAI dialect through the official SDK: chat, completions, embeddings, models, Azure."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any, Literal, cast

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionToolChoiceOptionParam

from app.usage import estimate_tokens

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about lighthouses and their keepers"},
]
WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                         "unit": {"enum": ["c", "f"]}},
        "required": ["city"]}}}


def prompt_of(messages: list[openai.types.chat.ChatCompletionMessageParam]) -> int:
    return sum(estimate_tokens(str(m["content"])) + 3 for m in messages)


def test_chat_answer_is_deterministic_and_usage_matches_content(oai: openai.OpenAI) -> None:
    """A chat completion echoes the question, is 16 tokens long, and usage agrees with it."""
    first = oai.chat.completions.create(model="any-model", messages=MESSAGES)
    second = oai.chat.completions.create(model="any-model", messages=MESSAGES)
    text = first.choices[0].message.content
    assert text is not None and text.startswith("Simulated reply to: Tell me about lighthouses")
    assert text == second.choices[0].message.content and first.id != second.id
    assert first.id.startswith("chatcmpl-") and first.object == "chat.completion"
    assert first.model == "any-model" and first.choices[0].finish_reason == "stop"
    assert first.usage is not None
    assert first.usage.completion_tokens == estimate_tokens(text) == 16
    assert first.usage.prompt_tokens == prompt_of(MESSAGES)
    assert first.usage.total_tokens == first.usage.prompt_tokens + 16


def test_chat_raw_shape_follows_openai(http: httpx.Client) -> None:
    """The raw object carries OpenAI's fields: message refusal, logprobs, system_fingerprint;
    and vLLM's stop_reason (the route plays vLLM too), null without a stop string."""
    body = http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES}).json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage",
                         "system_fingerprint"}
    choice = body["choices"][0]
    assert set(choice) == {"index", "message", "logprobs", "finish_reason", "stop_reason"}
    assert choice["stop_reason"] is None
    assert choice["message"]["role"] == "assistant" and choice["message"]["refusal"] is None
    assert isinstance(body["created"], int)


def test_max_tokens_cuts_with_length(oai: openai.OpenAI) -> None:
    """max_tokens (or max_completion_tokens) below the natural length gives finish_reason length."""
    for answer in (oai.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5),
                   oai.chat.completions.create(model="m", messages=MESSAGES,
                                               max_completion_tokens=5)):
        text = answer.choices[0].message.content or ""
        assert answer.choices[0].finish_reason == "length"
        assert answer.usage is not None and answer.usage.completion_tokens == 5
        assert estimate_tokens(text) == 5


def test_completion_tokens_header_sets_natural_length(oai: openai.OpenAI) -> None:
    """X-Sim-Completion-Tokens sets how long the answer is before any cut."""
    answer = oai.chat.completions.create(model="m", messages=MESSAGES,
                                         extra_headers={"X-Sim-Completion-Tokens": "40"})
    assert answer.usage is not None and answer.usage.completion_tokens == 40
    assert answer.choices[0].finish_reason == "stop"


def test_stop_sequence_cuts_before_the_match(oai: openai.OpenAI) -> None:
    """A stop string ends the answer just before it, with finish_reason stop."""
    answer = oai.chat.completions.create(model="m", messages=MESSAGES, stop=[" lighthouses"])
    assert answer.choices[0].message.content == "Simulated reply to: Tell me about"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == estimate_tokens("Simulated reply to: Tell me about")


def test_n_and_seed_give_distinct_deterministic_choices(oai: openai.OpenAI) -> None:
    """n answers n choices that differ from each other; the same seed repeats them."""
    one = oai.chat.completions.create(model="m", messages=MESSAGES, n=3, seed=7,
                                      extra_headers={"X-Sim-Completion-Tokens": "30"})
    two = oai.chat.completions.create(model="m", messages=MESSAGES, n=3, seed=7,
                                      extra_headers={"X-Sim-Completion-Tokens": "30"})
    texts = [c.message.content for c in one.choices]
    assert [c.index for c in one.choices] == [0, 1, 2] and len(set(texts)) == 3
    assert texts == [c.message.content for c in two.choices]
    assert one.usage is not None and one.usage.completion_tokens == 90


def test_forced_tool_call_has_schema_arguments(oai: openai.OpenAI) -> None:
    """tool_choice naming a function gives a tool call with arguments valid for its schema."""
    choices: list[ChatCompletionToolChoiceOptionParam] = [
        "required", {"type": "function", "function": {"name": "get_weather"}}]
    for choice in choices:
        answer = oai.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER],
                                             tool_choice=choice)
        message = answer.choices[0].message
        assert answer.choices[0].finish_reason == "tool_calls" and message.content is None
        assert message.tool_calls is not None
        call = message.tool_calls[0]
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name == "get_weather"
        assert orjson.loads(call.function.arguments) == {"city": "", "days": 0, "unit": "c"}
        assert answer.usage is not None
        assert answer.usage.completion_tokens == estimate_tokens(call.function.arguments)


def test_tool_choice_none_answers_in_text(oai: openai.OpenAI) -> None:
    """With tool_choice none the simulator answers in text (auto calls a tool:
    tests/simulator/test_structured.py)."""
    answer = oai.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER],
                                         tool_choice="none")
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].finish_reason == "stop"


def test_unknown_forced_tool_is_a_400(oai: openai.OpenAI) -> None:
    """Forcing a function that is not in tools is a BadRequestError."""
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER],
                                    tool_choice={"type": "function", "function": {"name": "x"}})


@pytest.mark.parametrize("mode", ["auto", "required"])
def test_allowed_tools_restrict_the_choice(oai: openai.OpenAI,
                                           mode: Literal["auto", "required"]) -> None:
    """OpenAI's ``allowed_tools`` tool choice calls one of the tools it lists, the best
    matching among them, streamed or not."""
    clock: ChatCompletionFunctionToolParam = {
        "type": "function", "function": {"name": "get_time", "description": "The time"}}
    choice: ChatCompletionToolChoiceOptionParam = {
        "type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": [
            {"type": "function", "function": {"name": "get_time"}}]}}
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "weather in Oslo?"}]
    answer = oai.chat.completions.create(model="m", messages=messages,
                                         tools=[WEATHER, clock], tool_choice=choice)
    assert [c.function.name for c in answer.choices[0].message.tool_calls or ()  # type: ignore[union-attr]
            ] == ["get_time"]
    with oai.chat.completions.stream(model="m", messages=messages, tools=[WEATHER, clock],
                                     tool_choice=choice) as stream:
        final = stream.get_final_completion()
    assert [c.function.name for c in final.choices[0].message.tool_calls or ()] == ["get_time"]


def test_unknown_allowed_tool_and_other_choice_types_are_400s_naming_them(
        oai: openai.OpenAI) -> None:
    """A listed tool that is not in tools is a 400 naming it; a tool choice of a type the
    simulator does not know is a 400 saying which types it takes."""
    choice: ChatCompletionToolChoiceOptionParam = {
        "type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
            {"type": "function", "function": {"name": "nope"}}]}}
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER],
                                    tool_choice=choice)
    assert "tool_choice.allowed_tools.tools[0] names a function that is not in tools: 'nope'" \
        in str(caught.value)
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER],
                                    tool_choice=cast(Any, {"type": "mcp", "mcp": {"name": "x"}}))
    assert "'function', 'custom' or 'allowed_tools' (got 'mcp')" in str(caught.value)


def test_logprobs_cover_every_token(oai: openai.OpenAI) -> None:
    """logprobs=true gives one entry per completion token with top_logprobs alternatives."""
    answer = oai.chat.completions.create(model="m", messages=MESSAGES, logprobs=True,
                                         top_logprobs=2, max_tokens=6)
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert "".join(e.token for e in logprobs.content) == answer.choices[0].message.content
    assert len(logprobs.content) == 6
    assert all(len(e.top_logprobs) == 2 and e.logprob < 0 for e in logprobs.content)


def test_stream_sends_one_chunk_per_token_and_usage_last(oai: openai.OpenAI) -> None:
    """A stream: role chunk, one content chunk per token, finish chunk, then the usage chunk."""
    chunks = list(oai.chat.completions.create(model="m", messages=MESSAGES, stream=True,
                                              stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:] if c.choices
              and c.choices[0].delta.content]
    assert len(pieces) == 16
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 16 == estimate_tokens("".join(pieces))
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_stream_without_include_usage_has_no_usage(oai: openai.OpenAI) -> None:
    """Without stream_options.include_usage no chunk carries usage."""
    chunks = list(oai.chat.completions.create(model="m", messages=MESSAGES, stream=True,
                                              max_tokens=3))
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stream_raw_frames_end_with_done(http: httpx.Client) -> None:
    """The SSE body is data: frames separated by blank lines, ending with data: [DONE]."""
    raw = http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES,
                                                  "stream": True, "max_tokens": 2}).text
    frames = raw.split("\n\n")
    assert frames[-1] == "" and frames[-2] == "data: [DONE]"
    assert all(frame.startswith("data: ") for frame in frames[:-1])


def test_stream_tool_call_arguments_assemble(oai: openai.OpenAI) -> None:
    """A streamed tool call sends its id and name first, then arguments piece by piece."""
    chunks = list(oai.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER],
                                              tool_choice="required", stream=True))
    first = chunks[0].choices[0].delta.tool_calls
    assert first is not None and first[0].function is not None
    assert first[0].function.name == "get_weather" and first[0].id
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks[1:] if c.choices and c.choices[0].delta.tool_calls
        and c.choices[0].delta.tool_calls[0].function)
    assert orjson.loads(arguments)["city"] == ""
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_stream_n_choices_interleave(oai: openai.OpenAI) -> None:
    """With n=2 each chunk carries one choice and both choices finish."""
    chunks = list(oai.chat.completions.create(model="m", messages=MESSAGES, n=2, stream=True,
                                              max_tokens=4))
    texts = {0: "", 1: ""}
    for chunk in chunks:
        assert len(chunk.choices) == 1
        texts[chunk.choices[0].index] += chunk.choices[0].delta.content or ""
    assert estimate_tokens(texts[0]) == estimate_tokens(texts[1]) == 4


def test_legacy_completion_shapes(oai: openai.OpenAI) -> None:
    """Completions answer string, list, token-id prompts; echo and logprobs work."""
    answer = oai.completions.create(model="m", prompt="Once upon a time", max_tokens=4,
                                    echo=True, logprobs=2)
    choice = answer.choices[0]
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    assert choice.text.startswith("Once upon a time") and choice.finish_reason == "length"
    assert choice.logprobs is not None and choice.logprobs.tokens is not None
    assert len(choice.logprobs.tokens) == 4
    assert answer.usage is not None and answer.usage.prompt_tokens == 4
    many = oai.completions.create(model="m", prompt=["a", "b"], n=2, max_tokens=2)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    ids = oai.completions.create(model="m", prompt=[[1, 2, 3], [4, 5]], max_tokens=2)
    assert ids.usage is not None and ids.usage.prompt_tokens == 5 and len(ids.choices) == 2


def test_legacy_completion_stream(oai: openai.OpenAI) -> None:
    """Streamed completions send text pieces, a finish chunk and the usage chunk."""
    chunks = list(oai.completions.create(model="m", prompt="Hello", stream=True,
                                         stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert estimate_tokens(text) == 16
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_embeddings_are_deterministic_unit_vectors(oai: openai.OpenAI) -> None:
    """Embeddings: same text same vector, unit norm, dimensions honoured, usage counted."""
    one = oai.embeddings.create(model="e", input=["hello world", "other"],
                                encoding_format="float")
    again = oai.embeddings.create(model="e", input="hello world", encoding_format="float")
    vec = one.data[0].embedding
    assert len(vec) == 384 and vec == again.data[0].embedding
    assert math.isclose(sum(v * v for v in vec), 1.0, rel_tol=1e-6)
    assert one.data[1].embedding != vec and [d.index for d in one.data] == [0, 1]
    assert one.usage.prompt_tokens == estimate_tokens("hello world") + estimate_tokens("other")
    small = oai.embeddings.create(model="e", input=[[1, 2, 3]], dimensions=8)
    assert len(small.data[0].embedding) == 8 and small.usage.prompt_tokens == 3


def test_embeddings_base64_is_little_endian_float32(http: httpx.Client) -> None:
    """encoding_format base64 carries the same vector as little-endian float32 bytes."""
    floats = http.post("/v1/embeddings", json={"model": "e", "input": "x", "dimensions": 16})
    b64 = http.post("/v1/embeddings", json={"model": "e", "input": "x", "dimensions": 16,
                                            "encoding_format": "base64"})
    decoded = struct.unpack("<16f", base64.b64decode(b64.json()["data"][0]["embedding"]))
    expected = floats.json()["data"][0]["embedding"]
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(decoded, expected, strict=True))


def test_models_list(oai: openai.OpenAI) -> None:
    """/v1/models lists the served model with vLLM's max_model_len."""
    models = oai.models.list().data
    assert [m.id for m in models] == ["sim-model"] and models[0].object == "model"


def test_identical_requests_replay_with_fresh_ids(oai: openai.OpenAI) -> None:
    """The replayed fast path answers the same content under new ids, and counts usage."""
    answers = [oai.chat.completions.create(model="m", messages=MESSAGES, max_tokens=9)
               for _ in range(3)]
    assert len({a.id for a in answers}) == 3
    assert len({a.choices[0].message.content for a in answers}) == 1
    assert all(a.usage is not None and a.usage.completion_tokens == 9 for a in answers)


def test_azure_deployment_routes(simulator: str) -> None:
    """The Azure SDK reaches chat and embeddings by deployment; the answers name the model
    deployed, as Azure's do, not the deployment."""
    with openai.AzureOpenAI(azure_endpoint=simulator, api_key="k", api_version="2024-10-21",
                            max_retries=0) as azure:
        answer = azure.chat.completions.create(model="my-gpt", messages=MESSAGES)
        assert answer.model == "gpt-4o-2024-08-06" and answer.choices[0].message.content
        vectors = azure.embeddings.create(model="my-embed", input="hi")
        assert len(vectors.data[0].embedding) == 1536  # text-embedding-3-small's own length
        assert vectors.model == "text-embedding-3-small"


def test_azure_chat_carries_content_filter_verdicts(simulator: str) -> None:
    """Azure's chat answers carry the content filter's verdicts: ``prompt_filter_results`` and
    each choice's ``content_filter_results``; a stream opens with the prompt's verdict alone, in
    a chunk with empty ``id``, ``model`` and ``object``, ``created`` 0 and no choices."""
    with openai.AzureOpenAI(azure_endpoint=simulator, api_key="k", api_version="2024-10-21",
                            max_retries=0) as azure:
        answer = azure.chat.completions.create(model="my-gpt", messages=MESSAGES).model_dump()
        chunks = [c.model_dump() for c in azure.chat.completions.create(
            model="my-gpt", messages=MESSAGES, stream=True)]
    [prompt] = answer["prompt_filter_results"]
    assert prompt["content_filter_results"]["jailbreak"] == {"filtered": False,
                                                             "detected": False}
    safe = {"filtered": False, "severity": "safe"}
    assert answer["choices"][0]["content_filter_results"]["violence"] == safe
    opening, role, *texts, finish = chunks
    assert (opening["id"], opening["model"], opening["object"], opening["created"],
            opening["choices"]) == ("", "", "", 0, [])
    assert opening["prompt_filter_results"] == answer["prompt_filter_results"]
    assert role["choices"][0]["content_filter_results"] == {} and role["id"]
    assert texts and all(c["choices"][0]["content_filter_results"]["hate"] == safe
                         for c in texts)
    assert finish["choices"][0]["finish_reason"] == "stop"


def test_azure_requires_api_version_and_key(http: httpx.Client) -> None:
    """Azure routes answer 400 without api-version and 401 without api-key, in OpenAI's shape."""
    path = "/openai/deployments/d/chat/completions"
    body = {"messages": MESSAGES}
    missing_version = http.post(path, json=body, headers={"api-key": "k"})
    assert missing_version.status_code == 400
    assert missing_version.json()["error"]["type"] == "invalid_request_error"
    missing_key = http.post(path, params={"api-version": "2024-10-21"}, json=body)
    assert missing_key.status_code == 401 and "message" in missing_key.json()["error"]
