"""The zero-config ``mock`` provider honours tools, JSON modes, logprobs and ``n``: end to end
through a gateway running the embedded default config, with the openai SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import jsonschema
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam
from pydantic import BaseModel, Field

from app.usage import estimate_tokens
from tests.providers.embedded import embedded_gateway

MODEL = "mock-chat"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    with embedded_gateway(tmp_path_factory.mktemp("mock-features")) as sdk:
        yield sdk


def tool(name: str, description: str, parameters: dict[str, Any]) -> \
        ChatCompletionFunctionToolParam:
    return {"type": "function",
            "function": {"name": name, "description": description, "parameters": parameters}}


WEATHER = tool("get_weather", "Current weather in a city", {
    "type": "object", "properties": {"city": {"type": "string", "minLength": 2},
                                     "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"]})
FLIGHTS = tool("search_flights", "Find flights between two airports", {
    "type": "object", "properties": {
        "origin": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "when": {"type": "string", "format": "date"},
        "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
        "cabin": {"anyOf": [{"$ref": "#/$defs/Cabin"}, {"type": "null"}]}},
    "required": ["origin", "when", "passengers"],
    "$defs": {"Cabin": {"type": "string", "enum": ["economy", "business"]}}})
HOTEL = tool("book_hotel", "Reserve a hotel room", {
    "type": "object", "properties": {
        "nights": {"type": "integer", "exclusiveMinimum": 0},
        "guests": {"type": "array", "minItems": 2, "items": {
            "type": "object", "properties": {"name": {"type": "string"},
                                             "age": {"type": "integer", "minimum": 18}},
            "required": ["name", "age"]}}},
    "required": ["nights", "guests"]})
TOOLS = [WEATHER, FLIGHTS, HOTEL]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters") or {} for t in TOOLS}


def ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def the_call(answer: Any) -> tuple[str, Any]:
    """The one tool call of a complete answer: its function name and parsed arguments."""
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert answer.usage.completion_tokens == estimate_tokens(call.function.arguments)
    return call.function.name, orjson.loads(call.function.arguments)


@pytest.mark.parametrize(("text", "expected"), [
    ("What's the weather in Oslo?", "get_weather"),
    ("Search flights to Rome", "search_flights"),
    ("I need a hotel room for two", "book_hotel"),
    ("Tell me a joke", "get_weather"),
])
@pytest.mark.parametrize("choice", ["auto", "required", None])
def test_unforced_tool_choice_calls_the_best_matching_tool(
        client: openai.OpenAI, text: str, expected: str, choice: Any) -> None:
    """auto, required or no tool_choice, with several tools defined: one call of the tool the
    message names (the first when none matches), with arguments valid for its schema."""
    extra = {} if choice is None else {"tool_choice": choice}
    answer = client.chat.completions.create(model=MODEL, messages=ask(text), tools=TOOLS,
                                            **extra)
    name, arguments = the_call(answer)
    assert name == expected
    jsonschema.validate(arguments, SCHEMAS[name])


def test_forced_function_is_called(client: openai.OpenAI) -> None:
    """tool_choice naming a function calls it, whatever the message is about."""
    answer = client.chat.completions.create(
        model=MODEL, messages=ask("weather in Oslo?"), tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "book_hotel"}})
    name, arguments = the_call(answer)
    assert name == "book_hotel"
    jsonschema.validate(arguments, SCHEMAS[name])
    again = client.chat.completions.create(
        model=MODEL, messages=ask("weather in Oslo?"), tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "book_hotel"}})
    assert the_call(again) == (name, arguments)


@pytest.mark.parametrize("mode", ["auto", "required"])
def test_allowed_tools_restrict_the_choice(client: openai.OpenAI, mode: Any) -> None:
    """OpenAI's ``allowed_tools`` tool choice: the best matching tool among those it lists
    (the weather question gets the hotel, the only one allowed that fits best)."""
    allowed: Any = {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": [
        {"type": "function", "function": {"name": "search_flights"}},
        {"type": "function", "function": {"name": "book_hotel"}}]}}
    answer = client.chat.completions.create(model=MODEL, messages=ask("a hotel, and weather?"),
                                            tools=TOOLS, tool_choice=allowed)
    name, arguments = the_call(answer)
    assert name == "book_hotel"
    jsonschema.validate(arguments, SCHEMAS[name])


@pytest.mark.parametrize(("allowed", "param", "words"), [
    ({"mode": "auto", "tools": [{"type": "function", "function": {"name": "nope"}}]},
     "tool_choice.allowed_tools.tools[0]", "not in tools: 'nope'"),
    ({"mode": "sometimes", "tools": [{"type": "function", "function": {"name": "book_hotel"}}]},
     "tool_choice.allowed_tools", "allowed_tools must be"),
    ({"mode": "auto", "tools": []}, "tool_choice.allowed_tools", "allowed_tools must be"),
])
def test_bad_allowed_tools_are_400s_naming_them(client: openai.OpenAI, allowed: Any,
                                                param: str, words: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=ask("hi"), tools=TOOLS,
            tool_choice={"type": "allowed_tools", "allowed_tools": allowed})
    body: Any = caught.value.body
    assert body["param"] == param and words in body["message"]


def test_choice_none_and_tool_results_get_text(client: openai.OpenAI) -> None:
    """tool_choice none, or a tool result as the last message, gets the text reply."""
    loop: list[ChatCompletionMessageParam] = [
        *ask("weather in Oslo?"),
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12 C, rain"}]
    cases: list[tuple[list[ChatCompletionMessageParam], dict[str, Any]]] = [
        (ask("weather in Oslo?"), {"tool_choice": "none"}), (loop, {})]
    for messages, extra in cases:
        answer = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS,
                                                **extra)
        assert answer.choices[0].finish_reason == "stop"
        assert answer.choices[0].message.tool_calls is None
        assert answer.choices[0].message.content == "Mock reply to: weather in Oslo?"


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": True, "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}}}}}]},
     "tools[0].function.parameters"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "r", "strict": True, "schema": {"type": "object", "properties": {
            "a": {"type": "string"}}, "required": [], "additionalProperties": False}}}},
     "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "r", "strict": True, "schema": {"type": "object", "properties": {
            "a": {"type": "string"}}, "required": True, "additionalProperties": False}}}},
     "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": True, "parameters": {
        "type": "string"}}}]}, "tools[0].function.parameters"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_bad_tool_and_format_requests_are_400s(client: openai.OpenAI, extra: dict[str, Any],
                                               param: str, stream: bool) -> None:
    """An unknown forced function, tool_choice without tools, top_logprobs without logprobs
    and strict schemas that break OpenAI's strict rules are 400s naming the parameter."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ask("hi"), stream=stream,
                                       **extra)
    assert caught.value.body is not None
    assert caught.value.body["param"] == param  # type: ignore[index]


class Guest(BaseModel):
    name: str = Field(min_length=1)
    age: int = Field(ge=18, lt=120)


class Reservation(BaseModel):
    """Book a hotel room."""

    hotel: str
    nights: int = Field(gt=0, le=30)
    rate: float = Field(gt=49.5, le=50.0)
    kind: Literal["single", "double"]
    guests: list[Guest] = Field(min_length=2)
    notes: str | None


def test_pydantic_tools_parse(client: openai.OpenAI) -> None:
    """A strict tool from a pydantic model: parse() returns a valid model instance."""
    answer = client.chat.completions.parse(
        model=MODEL, messages=ask("book a room"),
        tools=[openai.pydantic_function_tool(Reservation)])
    call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert isinstance(call.function.parsed_arguments, Reservation)
    assert len(call.function.parsed_arguments.guests) == 2


@pytest.mark.parametrize("stream", [False, True])
def test_structured_output_with_a_pydantic_model(client: openai.OpenAI, stream: bool) -> None:
    """response_format from a pydantic model (strict json_schema): the content validates."""
    if stream:
        with client.chat.completions.stream(model=MODEL, messages=ask("plan a trip"),
                                            response_format=Reservation) as events:
            final = events.get_final_completion()
        parsed = final.choices[0].message.parsed
    else:
        parsed = client.chat.completions.parse(
            model=MODEL, messages=ask("plan a trip"),
            response_format=Reservation).choices[0].message.parsed
    assert isinstance(parsed, Reservation) and 49.5 < parsed.rate <= 50.0


def test_json_schema_and_json_object(client: openai.OpenAI) -> None:
    """A non-strict json_schema gets JSON valid for it; json_object a {"reply": ...} object."""
    schema = SCHEMAS["search_flights"]
    answer = client.chat.completions.create(
        model=MODEL, messages=ask("flights?"),
        response_format={"type": "json_schema", "json_schema": {"name": "f", "schema": schema}})
    jsonschema.validate(orjson.loads(answer.choices[0].message.content or ""), schema)
    plain = client.chat.completions.create(model=MODEL, messages=ask("hi there"),
                                           response_format={"type": "json_object"})
    content = plain.choices[0].message.content or ""
    assert orjson.loads(content) == {"reply": "Mock reply to: hi there"}
    assert plain.usage is not None and plain.usage.completion_tokens == estimate_tokens(content)


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": True},
    {"type": "object", "properties": {"a": {"type": "integer", "minimum": 1e20}}},
    {"type": "number", "minimum": 1e308, "exclusiveMinimum": 1e308},
], ids=["required-true", "past-64-bits", "near-float-max"])
@pytest.mark.parametrize("stream", [False, True])
def test_odd_schemas_get_json(client: openai.OpenAI, schema: dict[str, Any],
                              stream: bool) -> None:
    """A non-list ``required`` or a bound past 64 bits gets JSON, as response_format and as a
    tool's parameters, not a 500."""
    for extra in ({"response_format": {"type": "json_schema",
                                       "json_schema": {"name": "s", "schema": schema}}},
                  {"tools": [tool("f", "", schema)], "tool_choice": "required"}):
        if stream:
            with client.chat.completions.stream(model=MODEL, messages=ask("x"),
                                                **extra) as events:
                message = events.get_final_completion().choices[0].message.model_dump()
        else:
            message = client.chat.completions.create(
                model=MODEL, messages=ask("x"), **extra).choices[0].message.model_dump()
        calls = message["tool_calls"]
        orjson.loads(calls[0]["function"]["arguments"] if calls else message["content"])


def test_streamed_tool_call(client: openai.OpenAI) -> None:
    """A streamed tool call: id and name first, then arguments in pieces, tool_calls finish."""
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=ask("hotel room please"), tools=TOOLS, stream=True,
        stream_options={"include_usage": True}))
    head = chunks[0].choices[0].delta.tool_calls
    assert head and head[0].id and head[0].type == "function"
    assert head[0].function and head[0].function.name == "book_hotel"
    assert head[0].function.arguments == ""
    pieces = [c.choices[0].delta.tool_calls[0].function.arguments or "" for c in chunks[1:]
              if c.choices and c.choices[0].delta.tool_calls
              and c.choices[0].delta.tool_calls[0].function]
    assert len(pieces) > 5
    arguments = "".join(pieces)
    jsonschema.validate(orjson.loads(arguments), SCHEMAS["book_hotel"])
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(pieces) == estimate_tokens(arguments)


def test_logprobs_one_entry_per_token(client: openai.OpenAI) -> None:
    """logprobs: one entry per completion token, tokens joining to the content, each with
    top_logprobs alternatives; the same again when asked again."""
    answer = client.chat.completions.create(model=MODEL, messages=ask("tell me about kites"),
                                            logprobs=True, top_logprobs=3)
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert "".join(e.token for e in logprobs.content) == answer.choices[0].message.content
    assert answer.usage is not None and len(logprobs.content) == answer.usage.completion_tokens
    for entry in logprobs.content:
        assert entry.logprob < 0 and entry.bytes == list(entry.token.encode())
        assert [t.token for t in entry.top_logprobs][:1] == [entry.token]
        assert len(entry.top_logprobs) == 3
    again = client.chat.completions.create(model=MODEL, messages=ask("tell me about kites"),
                                           logprobs=True, top_logprobs=3)
    assert again.choices[0].logprobs == logprobs
    bare = client.chat.completions.create(model=MODEL, messages=ask("kites"), logprobs=True)
    assert bare.choices[0].logprobs is not None and bare.choices[0].logprobs.content
    assert all(e.top_logprobs == [] for e in bare.choices[0].logprobs.content)


def test_streamed_logprobs(client: openai.OpenAI) -> None:
    """Streamed with logprobs: each content chunk carries its token's entry."""
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=ask("tell me about kites"), logprobs=True, top_logprobs=2,
        stream=True))
    entries = [c.choices[0].logprobs.content if c.choices[0].logprobs else None
               for c in chunks if c.choices and c.choices[0].delta.content]
    assert entries and all(e is not None and len(e) == 1 and len(e[0].top_logprobs) == 2
                           for e in entries)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "".join(e[0].token for e in entries if e) == text


@pytest.mark.parametrize("tools", [None, TOOLS])
def test_n_choices_stream(client: openai.OpenAI, tools: Any) -> None:
    """n=3 streamed: every chunk carries one choice, each index gets the whole answer and its
    own finish, and usage counts all three."""
    extra = {} if tools is None else {"tools": tools}
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=ask("hotel room for two"), n=3, stream=True,
        stream_options={"include_usage": True}, **extra))
    texts = {0: "", 1: "", 2: ""}
    finishes: dict[int, str] = {}
    call_ids: set[str] = set()
    for chunk in chunks[:-1]:
        assert len(chunk.choices) == 1
        choice = chunk.choices[0]
        texts[choice.index] += choice.delta.content or ""
        for call in choice.delta.tool_calls or ():
            call_ids |= {call.id} if call.id else set()
            texts[choice.index] += call.function.arguments or "" if call.function else ""
        if choice.finish_reason:
            finishes[choice.index] = choice.finish_reason
    assert len(set(texts.values())) == 1
    expected = "stop" if tools is None else "tool_calls"
    assert finishes == {0: expected, 1: expected, 2: expected}
    if tools is not None:
        assert len(call_ids) == 3
        jsonschema.validate(orjson.loads(texts[0]), SCHEMAS["book_hotel"])
    else:
        assert texts[0] == "Mock reply to: hotel room for two"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 3 * estimate_tokens(texts[0])


def test_n_choices_complete(client: openai.OpenAI) -> None:
    """n=3 complete: three indexed choices and usage for all of them."""
    answer = client.chat.completions.create(model=MODEL, messages=ask("hi"), n=3)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    content = answer.choices[0].message.content or ""
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 3 * estimate_tokens(content)


def test_token_limit_cuts_json_answers(client: openai.OpenAI) -> None:
    """max_tokens cuts a tool call's arguments too, with finish_reason length."""
    answer = client.chat.completions.create(model=MODEL, messages=ask("hotel"), tools=TOOLS,
                                            max_tokens=4)
    choice = answer.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.arguments
    assert answer.usage is not None and answer.usage.completion_tokens == 4


def _streamed_completions(client: openai.OpenAI, **asked: Any) -> dict[int, list[Any]]:
    """The streamed choices by index: each one's chunks in order."""
    by_index: dict[int, list[Any]] = {}
    for chunk in client.completions.create(model=MODEL, stream=True, **asked):
        for choice in chunk.choices:
            by_index.setdefault(choice.index, []).append(choice)
    return by_index


@pytest.mark.parametrize("stream", [False, True])
def test_completions_answer_every_prompt_n_times(client: openai.OpenAI, stream: bool) -> None:
    """Two prompts with n=2: four choices, choice i of prompt p at index p * n + i, streamed or
    not; usage counts each choice's tokens."""
    asked: dict[str, Any] = {"prompt": ["alpha", "beta"], "n": 2}
    if stream:
        by_index = _streamed_completions(client, **asked)
        texts = {i: "".join(c.text for c in chunks) for i, chunks in by_index.items()}
        finishes = {i: chunks[-1].finish_reason for i, chunks in by_index.items()}
        assert set(finishes.values()) == {"stop"}
    else:
        answer = client.completions.create(model=MODEL, **asked)
        texts = {c.index: c.text for c in answer.choices}
        assert answer.usage is not None
        assert answer.usage.completion_tokens == sum(estimate_tokens(t) for t in texts.values())
    assert texts == {0: "Mock reply to: alpha", 1: "Mock reply to: alpha",
                     2: "Mock reply to: beta", 3: "Mock reply to: beta"}


@pytest.mark.parametrize("stream", [False, True])
def test_completions_logprobs(client: openai.OpenAI, stream: bool) -> None:
    """``logprobs: 2``: one token per estimated token, its log-probability, two alternatives
    (the token first) and offsets counted from the start of the prompt."""
    prompt = "alpha beta"
    if stream:
        chunks = _streamed_completions(client, prompt=prompt, logprobs=2)[0]
        pieces = [c.logprobs for c in chunks if c.logprobs is not None]
        tokens = [t for p in pieces for t in p.tokens or ()]
        offsets = [o for p in pieces for o in p.text_offset or ()]
        tops = [t for p in pieces for t in p.top_logprobs or ()]
        text = "".join(c.text for c in chunks)
    else:
        choice = client.completions.create(model=MODEL, prompt=prompt, logprobs=2).choices[0]
        assert choice.logprobs is not None and choice.logprobs.token_logprobs is not None
        tokens, offsets = choice.logprobs.tokens or [], choice.logprobs.text_offset or []
        tops, text = choice.logprobs.top_logprobs or [], choice.text
        assert all(lp < 0 for lp in choice.logprobs.token_logprobs)
    assert "".join(tokens) == text and len(tokens) == estimate_tokens(text)
    assert offsets == [len(prompt) + len("".join(tokens[:i])) for i in range(len(tokens))]
    assert all(len(top) == 2 and token in top for token, top in zip(tokens, tops, strict=True))


def test_completions_without_logprobs_have_none(client: openai.OpenAI) -> None:
    """Not asked for, not given."""
    choice = client.completions.create(model=MODEL, prompt="alpha").choices[0]
    assert choice.logprobs is None


@pytest.mark.parametrize("stream", [False, True])
def test_completions_echo_the_prompt(client: openai.OpenAI, stream: bool) -> None:
    """``echo``: the prompt, then the answer, streamed or not; with ``logprobs`` the prompt's
    tokens come first, the first without a log-probability, offsets from 0 across the whole
    text (as OpenAI and vLLM give them). Usage counts only what was generated."""
    prompt = "alpha beta"
    asked: dict[str, Any] = {"prompt": prompt, "echo": True, "logprobs": 1}
    if stream:
        chunks = _streamed_completions(client, **asked)[0]
        text = "".join(c.text for c in chunks)
        pieces = [c.logprobs for c in chunks if c.logprobs is not None]
        tokens = [t for p in pieces for t in p.tokens or ()]
        logprobs = [lp for p in pieces for lp in p.token_logprobs or ()]
        offsets = [o for p in pieces for o in p.text_offset or ()]
    else:
        answer = client.completions.create(model=MODEL, **asked)
        choice = answer.choices[0]
        assert choice.logprobs is not None
        text, tokens = choice.text, choice.logprobs.tokens or []
        logprobs = list(choice.logprobs.token_logprobs or [])
        offsets = choice.logprobs.text_offset or []
        assert answer.usage is not None
        assert answer.usage.completion_tokens == estimate_tokens("Mock reply to: alpha beta")
    assert text == prompt + "Mock reply to: alpha beta"
    assert "".join(tokens) == text
    assert logprobs[0] is None and all(lp is not None and lp < 0 for lp in logprobs[1:])
    assert offsets == [len("".join(tokens[:i])) for i in range(len(tokens))]


@pytest.mark.parametrize("stream", [False, True])
def test_completions_max_tokens_0_generate_nothing(client: openai.OpenAI, stream: bool) -> None:
    """``max_tokens: 0`` (OpenAI's minimum): nothing generated, finish ``length``; with
    ``echo`` the prompt alone."""
    asked: dict[str, Any] = {"prompt": "Score me", "echo": True, "max_tokens": 0}
    if stream:
        chunks = _streamed_completions(client, **asked)[0]
        text, finish = "".join(c.text for c in chunks), chunks[-1].finish_reason
    else:
        answer = client.completions.create(model=MODEL, **asked)
        text, finish = answer.choices[0].text, answer.choices[0].finish_reason
        assert answer.usage is not None and answer.usage.completion_tokens == 0
    assert (text, finish) == ("Score me", "length")
    bare = client.completions.create(model=MODEL, prompt="Score me", max_tokens=0)
    assert (bare.choices[0].text, bare.choices[0].finish_reason) == ("", "length")


@pytest.mark.parametrize("echo", [False, True])
def test_completions_max_tokens_0_logprobs_have_an_offset_a_token(client: openai.OpenAI,
                                                                  echo: bool) -> None:
    """Nothing generated: no offset for it either (``text_offset`` as long as ``tokens``)."""
    choice = client.completions.create(model=MODEL, prompt="hi there", max_tokens=0,
                                       logprobs=1, echo=echo).choices[0]
    assert choice.logprobs is not None
    tokens, offsets = choice.logprobs.tokens or [], choice.logprobs.text_offset or []
    assert tokens == (["hi", " there"] if echo else [])
    assert offsets == ([0, 2] if echo else [])
