"""Schema instances (``app.structured``) and the simulator's tool calls and JSON answers."""

from __future__ import annotations

import datetime
from typing import Any, Literal

import httpx
import jsonschema
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam
from pydantic import BaseModel, Field

from app.structured import MAX_CHARS, instance, pick_tool, regex_sample, strict_problem


class Address(BaseModel):
    street: str
    zip_code: str = Field(pattern=r"^\d{5}(-\d{4})?$")


class Node(BaseModel):
    name: str
    children: list[Node] = []
    parent: Node | None = None


class Booking(BaseModel):
    guest: str = Field(min_length=2, max_length=20)
    age: int = Field(ge=18, lt=130)
    rating: float = Field(gt=0.5, le=1.0)
    kind: Literal["single", "double"]
    arrival: datetime.date
    email: str = Field(json_schema_extra={"format": "email"})
    address: Address
    previous: list[Address] = Field(min_length=2)
    tags: set[str] = Field(min_length=3)
    nights: int = Field(multiple_of=7, gt=10)
    price: float = Field(multiple_of=0.25, gt=1.1)
    note: str | None = None
    extras: dict[str, int] = {}
    tree: Node


SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    {"type": "integer", "exclusiveMaximum": -3},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"type": "integer", "minimum": -10, "maximum": -5, "multipleOf": 3},
    {"type": ["null", "string"], "minLength": 3},
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "uuid"},
    {"const": {"fixed": [1, 2]}},
    {"enum": ["red", "green"]},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3, "uniqueItems": True},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "uniqueItems": True},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer", "minimum": 4}],
     "minItems": 2},
    {"type": "object", "minProperties": 2, "additionalProperties": {"type": "boolean"}},
    {"type": "object", "required": ["q"], "additionalProperties": {"type": "integer"}},
    {"$ref": "#/$defs/a~1b", "$defs": {"a/b": {"type": "string", "format": "email"}}},
    {"allOf": [{"$ref": "#/definitions/A"},
               {"properties": {"y": {"type": "integer", "minimum": 2}}, "required": ["y"]}],
     "definitions": {"A": {"type": "object", "properties": {"x": {"type": "string"}},
                           "required": ["x"], "additionalProperties": True}}},
    {"oneOf": [{"type": "object", "properties": {"kind": {"const": "a"}}, "required": ["kind"]},
               {"type": "string"}]},
    {"type": "object", "properties": {"next": {"$ref": "#"}, "v": {"type": "integer"}},
     "required": ["v"]},
    {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2,4}$"},
    {"type": "object", "properties": {"size": {"type": "integer", "default": 5}}},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_instances_validate(schema: dict[str, Any]) -> None:
    """Each hand-written schema's instance validates, and the instance is the same every time."""
    value = instance(schema)
    jsonschema.validate(value, schema)
    assert instance(schema) == value


def test_draft4_boolean_exclusive_bounds() -> None:
    """Draft-4 exclusiveMinimum: true keeps the value strictly above minimum."""
    schema = {"type": "number", "minimum": 5, "exclusiveMinimum": True, "maximum": 5.5}
    value = instance(schema)
    jsonschema.Draft4Validator(schema).validate(value)
    assert value != 5


def test_unsatisfiable_and_huge_schemas_stay_bounded() -> None:
    """Schemas whose instances are huge or infinite, and patterns re cannot read, give a
    bounded value instead of exhausting memory or raising."""
    cycle = {"$ref": "#/$defs/N", "$defs": {"N": {
        "type": "object", "properties": {k: {"$ref": "#/$defs/N"} for k in "abc"},
        "required": ["a", "b", "c"]}}}
    assert len(orjson.dumps(instance(cycle))) < 1_000_000
    assert len(instance({"type": "array", "minItems": 10**9})) < 100_000
    assert len(instance({"type": "string", "minLength": 10**9})) <= 100_000
    assert len(instance({"type": "string", "pattern": "a{1000000000}"})) <= 100_000
    assert instance({"type": "string", "pattern": "(("}) == ""
    assert instance({"type": "object", "required": ["x"],
                     "patternProperties": {"((": {"type": "integer"}}}) == {"x": {}}


# Well-formed JSON, odd schemas: ``required`` not a list, bounds past what orjson writes
# (integers past 64 bits) or past what a float holds exactly.
ODD_SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": True},
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": 1.5},
    {"type": "integer", "minimum": 1e20},
    {"type": "integer", "maximum": -1e20},
    {"type": "integer", "minimum": 1e300},
    {"type": "integer", "exclusiveMinimum": 2**64 - 1},
    {"type": "integer", "exclusiveMaximum": -(2**63)},
    {"type": "number", "exclusiveMinimum": 2.0**64},
    {"type": "number", "exclusiveMinimum": 1e18},
    {"type": "number", "minimum": 1e308, "exclusiveMinimum": 1e308},
    {"minimum": 1e308},
    {"type": "object", "properties": {"a": {"type": "integer", "minimum": 1e19}}},
]


@pytest.mark.parametrize("schema", ODD_SCHEMAS)
def test_odd_schemas_get_a_written_valid_instance(schema: dict[str, Any]) -> None:
    """A non-list ``required`` is read as none, and a number past 64 bits or near the float
    range is written as a float (inside an exclusive bound), so orjson writes every instance
    and it validates (jsonschema cannot read a non-list ``required``: checked without it)."""
    value = orjson.loads(orjson.dumps(instance(schema)))
    readable = {k: v for k, v in schema.items() if k != "required"}
    jsonschema.Draft202012Validator(readable).validate(value)


def test_bounds_no_float_step_reaches_stay_bounded() -> None:
    """A multipleOf no float near the bound divides (1e308 / 1e-10 overflows) gives a number,
    not an error."""
    assert isinstance(instance({"type": "number", "minimum": 1e308, "multipleOf": 1e-10}), float)


@pytest.mark.parametrize("schema", [
    {"type": "array", "minItems": 4,
     "items": {"type": "string", "pattern": "^" + "a{100000}" * 3000 + "$"}},
    {"type": "array", "minItems": 10_000, "items": {"type": "string", "minLength": 100_000}},
    {"type": "array", "minItems": 10_000, "items": {"const": "x" * 30_000}},
    {"type": "array", "minItems": 10_000, "items": {"enum": ["x" * 30_000]}},
    {"type": "object", "minProperties": 10_000,
     "additionalProperties": {"type": "string", "default": "x" * 30_000}},
], ids=["chained-repeats", "min-length", "const", "enum", "default"])
def test_an_instance_holds_at_most_max_chars(schema: dict[str, Any]) -> None:
    """A few KB of schema cannot make an instance of GBs: its strings (built, or the schema's
    own values used again and again) come to at most ``MAX_CHARS`` characters in all, the
    instance cut there, whatever each repetition or string may hold on its own."""
    written = orjson.dumps(instance(schema))
    assert MAX_CHARS // 2 < len(written) <= MAX_CHARS + 200_000  # + 10,000 keys and nulls
    assert len(regex_sample("a{100000}" * 3000)) == MAX_CHARS
    assert regex_sample("(ab){3}c") == "abababc"


def test_unreadable_regex_is_a_400(http: httpx.Client) -> None:
    """A structured-output regex re cannot read is the simulator's 400, not a 500."""
    response = http.post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "structured_outputs": {"regex": "(("}})
    assert response.status_code == 400
    assert "Invalid regular expression" in response.json()["error"]["message"]


def test_defaults_of_the_declared_type_are_used() -> None:
    """A default of the declared type is the value; one of another type is ignored."""
    assert instance({"type": "integer", "default": 5}) == 5
    assert instance({"type": "integer", "default": "five"}) == 0


@pytest.mark.parametrize("model", [Booking, Address, Node])
def test_pydantic_schemas_validate_and_parse(model: type[BaseModel]) -> None:
    """A pydantic model's schema, plain and in OpenAI's strict form, gives a value that
    validates against the schema and that the model itself accepts."""
    strict = openai.pydantic_function_tool(model)["function"].get("parameters") or {}
    for schema in (model.model_json_schema(), strict):
        value = instance(schema)
        jsonschema.validate(value, schema)
        model.model_validate(value)


def test_strict_problem_names_the_rule_broken() -> None:
    """Strict mode needs additionalProperties false and every property required, nested too."""
    good = openai.pydantic_function_tool(Node)["function"].get("parameters") or {}
    assert strict_problem(good) is None
    assert "additionalProperties" in (strict_problem(Node.model_json_schema()) or "")
    mapping = openai.pydantic_function_tool(Booking)["function"].get("parameters") or {}
    assert strict_problem(mapping) == \
        "at properties.extras, 'additionalProperties' must be present and false"
    partial = {"type": "object", "additionalProperties": False,
               "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
               "required": ["a"]}
    assert "'b'" in (strict_problem(partial) or "")
    nested = {"type": "object", "additionalProperties": False, "required": ["inner"],
              "properties": {"inner": {"type": "object", "properties": {}}}}
    assert "at properties.inner," in (strict_problem(nested) or "")
    assert strict_problem({"type": "object", "properties": {"a": {}}, "required": True,
                           "additionalProperties": False}) == \
        "at (root), 'required' must be an array of property names"
    assert strict_problem({"type": "object", "properties": 5, "additionalProperties": False}) \
        == "at (root), 'properties' must be an object"
    assert strict_problem({"type": "string"}) == \
        "the root must be a JSON Schema of 'type: \"object\"'"
    assert strict_problem({}) is None


def test_pick_tool_by_shared_words() -> None:
    """The tool sharing the most words with the text wins; ties and no match pick the first."""
    tools = [("get_weather", "Current weather in a city"), ("search_flights", "Find flights"),
             ("book_hotel", "Reserve a hotel room")]
    assert pick_tool(tools, "Is there a hotel room free in Rome?") == 2
    assert pick_tool(tools, "FLIGHTS to Oslo please") == 1
    assert pick_tool(tools, "hello") == 0
    assert pick_tool(tools, "") == 0


# --- the simulator --------------------------------------------------------------------------

WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "minLength": 1},
            "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}}}
FLIGHTS: ChatCompletionFunctionToolParam = {
    "type": "function", "function": {
        "name": "search_flights", "description": "Find flights between two airports",
        "parameters": {"type": "object", "properties": {
            "origin": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "date": {"type": "string", "format": "date"},
            "passengers": {"type": "integer", "minimum": 1, "maximum": 9}},
            "required": ["origin", "date", "passengers"]}}}
ASK_FLIGHTS: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Search flights from OSL to Rome tomorrow"}]


def arguments_of(answer: Any) -> tuple[str, Any]:
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls" and message.content is None
    call = message.tool_calls[0]
    return call.function.name, orjson.loads(call.function.arguments)


@pytest.mark.parametrize("choice", ["auto", "required", None])
def test_unforced_tool_choice_calls_the_matching_tool(oai: openai.OpenAI,
                                                      choice: Any) -> None:
    """auto, required or no tool_choice: a call of the best-matching tool, valid arguments."""
    extra = {} if choice is None else {"tool_choice": choice}
    answer = oai.chat.completions.create(model="m", messages=ASK_FLIGHTS,
                                         tools=[WEATHER, FLIGHTS], **extra)
    name, arguments = arguments_of(answer)
    assert name == "search_flights"
    jsonschema.validate(arguments, FLIGHTS["function"].get("parameters") or {})


def test_forced_tool_wins_over_the_match(oai: openai.OpenAI) -> None:
    """A named function is called even when another tool matches the message better."""
    answer = oai.chat.completions.create(
        model="m", messages=ASK_FLIGHTS, tools=[WEATHER, FLIGHTS],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    name, arguments = arguments_of(answer)
    assert name == "get_weather"
    jsonschema.validate(arguments, WEATHER["function"].get("parameters") or {})


def test_text_after_a_tool_result_and_with_choice_none(oai: openai.OpenAI) -> None:
    """A tool result as the last message, or tool_choice none, gets a text answer."""
    loop: list[ChatCompletionMessageParam] = [
        *ASK_FLIGHTS,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "search_flights", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "2 flights found"}]
    cases: list[tuple[list[ChatCompletionMessageParam], dict[str, Any]]] = [
        (loop, {}), (ASK_FLIGHTS, {"tool_choice": "none"})]
    for messages, extra in cases:
        answer = oai.chat.completions.create(model="m", messages=messages,
                                             tools=[WEATHER, FLIGHTS], **extra)
        assert answer.choices[0].finish_reason == "stop"
        assert answer.choices[0].message.tool_calls is None
        assert answer.choices[0].message.content


def test_streamed_auto_tool_call(oai: openai.OpenAI) -> None:
    """A streamed auto tool call: id and name first, arguments in pieces, tool_calls finish."""
    chunks = list(oai.chat.completions.create(model="m", messages=ASK_FLIGHTS,
                                              tools=[WEATHER, FLIGHTS], stream=True))
    head = chunks[0].choices[0].delta.tool_calls
    assert head and head[0].id and head[0].function and head[0].function.name == "search_flights"
    pieces = [c.choices[0].delta.tool_calls[0].function.arguments for c in chunks[1:]
              if c.choices and c.choices[0].delta.tool_calls
              and c.choices[0].delta.tool_calls[0].function]
    assert len(pieces) > 1
    jsonschema.validate(orjson.loads("".join(p or "" for p in pieces)),
                        FLIGHTS["function"].get("parameters") or {})
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_parse_with_a_pydantic_model(oai: openai.OpenAI) -> None:
    """The SDK's parse() with a pydantic response_format gets a parsed instance."""
    answer = oai.chat.completions.parse(model="m", messages=ASK_FLIGHTS, response_format=Booking)
    parsed = answer.choices[0].message.parsed
    assert isinstance(parsed, Booking) and parsed.age >= 18 and parsed.nights % 7 == 0


def test_json_object_mode_echoes_in_a_reply_key(oai: openai.OpenAI) -> None:
    """response_format json_object answers {"reply": "Simulated reply to: ..."}."""
    answer = oai.chat.completions.create(model="m", messages=ASK_FLIGHTS,
                                         response_format={"type": "json_object"})
    body = orjson.loads(answer.choices[0].message.content or "")
    assert body == {"reply": "Simulated reply to: Search flights from OSL to Rome tomorrow"}


@pytest.mark.parametrize("choice", [{"type": "function", "function": "get_weather"},
                                    {"type": "function"}, "sometimes"])
def test_malformed_tool_choice_is_a_400(http: httpx.Client, choice: Any) -> None:
    """A tool_choice that names no function is a 400 on tool_choice, not a 500."""
    response = http.post("/v1/chat/completions", json={
        "model": "m", "messages": ASK_FLIGHTS, "tools": [WEATHER], "tool_choice": choice})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tool_choice"


@pytest.mark.parametrize("schema", [ODD_SCHEMAS[0], ODD_SCHEMAS[2], ODD_SCHEMAS[9]])
def test_odd_schemas_get_an_answer(http: httpx.Client, schema: dict[str, Any]) -> None:
    """A non-list required or a bound past 64 bits gets JSON (a tool's arguments too), not the
    simulator's 500."""
    asked = {"model": "m", "messages": ASK_FLIGHTS}
    for extra in ({"response_format": {"type": "json_schema",
                                       "json_schema": {"name": "s", "schema": schema}}},
                  {"tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
                   "tool_choice": "required"}):
        response = http.post("/v1/chat/completions", json={**asked, **extra})
        assert response.status_code == 200, response.text
        message = response.json()["choices"][0]["message"]
        calls = message.get("tool_calls")
        orjson.loads(calls[0]["function"]["arguments"] if calls else message["content"])
