"""Counts refused before validation (``app.schemas``): each limit a 400 naming its param with
OpenAI's code, a request at each limit accepted; the same on ``/v1/messages``; and a body
nested past what the JSON parser reads refused as too deep (``app.api.wire.parse_object``).

Unit tests call ``parse`` and ``read_request`` as the endpoints do; a few go through a running
gateway against the simulator.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from pydantic import BaseModel

from app import errors
from app.api.wire import parse, parse_object
from app.inbound.anthropic import read_request
from app.schemas import (
    MAX_INPUT_TOKEN_IDS,
    MAX_INPUTS,
    MAX_ITEMS,
    MAX_LOGIT_BIAS,
    MAX_PROMPT_TOKEN_IDS,
    MAX_TOOL_CALLS,
    MAX_TOOLS,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
)
from tests.api.conftest import RunningGateway

USER = {"role": "user", "content": "hi"}
CALL = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
PART = {"type": "text", "text": "hi"}


def tools(n: int) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": f"f{i}"}} for i in range(n)]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [USER], **fields}


def calls(n: int) -> dict[str, Any]:
    return chat(messages=[USER, {"role": "assistant", "tool_calls": [CALL] * n}])


def parts(n: int) -> dict[str, Any]:
    return chat(messages=[{"role": "user", "content": [PART] * n}])


def bias(n: int) -> dict[str, Any]:
    return chat(logit_bias={str(i): 1 for i in range(n)})


def embed(value: Any) -> dict[str, Any]:
    return {"model": "embed", "input": value}


def complete(value: Any) -> dict[str, Any]:
    return {"model": "chat", "prompt": value}


# (schema, body at the limit, body one past it, param, code)
LIMITS: list[tuple[type[BaseModel], dict[str, Any], dict[str, Any], str, str]] = [
    (ChatRequest, chat(tools=tools(MAX_TOOLS)), chat(tools=tools(MAX_TOOLS + 1)),
     "tools", "array_above_max_length"),
    (ChatRequest, calls(MAX_TOOL_CALLS), calls(MAX_TOOL_CALLS + 1),
     "messages[1].tool_calls", "array_above_max_length"),
    (ChatRequest, chat(messages=[USER] * MAX_ITEMS), chat(messages=[USER] * (MAX_ITEMS + 1)),
     "messages", "array_above_max_length"),
    # One message and its parts: the messages, parts and tool calls count together.
    (ChatRequest, parts(MAX_ITEMS - 1), parts(MAX_ITEMS), "messages", "array_above_max_length"),
    (ChatRequest, bias(MAX_LOGIT_BIAS), bias(MAX_LOGIT_BIAS + 1),
     "logit_bias", "object_above_max_properties"),
    (EmbeddingRequest, embed(["a"] * MAX_INPUTS), embed(["a"] * (MAX_INPUTS + 1)),
     "input", "array_above_max_length"),
    (EmbeddingRequest, embed([[1] * 150] * 2000), embed([[1] * 150] * 2000 + [[1]]),
     "input", "max_tokens_per_request"),
    (EmbeddingRequest, embed([7] * MAX_INPUT_TOKEN_IDS), embed([7] * (MAX_INPUT_TOKEN_IDS + 1)),
     "input", "max_tokens_per_request"),
    (CompletionRequest, complete(["a"] * MAX_ITEMS), complete([[1]] * (MAX_ITEMS + 1)),
     "prompt", "array_above_max_length"),
    (CompletionRequest, complete([[1] * 100] * MAX_ITEMS),
     complete([[1] * 100] * (MAX_ITEMS - 1) + [[1] * 101]), "prompt", "max_tokens_per_request"),
    (CompletionRequest, complete([3] * MAX_PROMPT_TOKEN_IDS),
     complete([3] * (MAX_PROMPT_TOKEN_IDS + 1)), "prompt", "max_tokens_per_request"),
]
IDS = ["tools", "tool_calls", "messages", "parts", "logit_bias", "inputs", "input_ids",
       "input_ids_flat", "prompts", "prompt_ids", "prompt_ids_flat"]


@pytest.mark.parametrize(("schema", "at", "past", "param", "code"), LIMITS, ids=IDS)
def test_each_count_is_refused_past_its_limit_and_taken_at_it(
        schema: type[BaseModel], at: dict[str, Any], past: dict[str, Any], param: str,
        code: str) -> None:
    """One past a limit is a 400 naming the param with OpenAI's code; at the limit, it parses."""
    assert isinstance(parse(schema, at), schema)
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(schema, past)
    assert (caught.value.status_code, caught.value.param, caught.value.code) == (400, param, code)


def test_the_refusal_is_in_openais_words() -> None:
    """The message says which array, its limit and its length, as OpenAI words it."""
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(ChatRequest, chat(tools=tools(150)))
    assert caught.value.message == (
        "Invalid 'tools': array too long. Expected an array with maximum length 128, but got "
        "an array with length 150 instead.")


def test_the_count_is_refused_before_any_item_is_validated() -> None:
    """200,000 messages (1.7 s of validation before the limit) are refused by their count,
    before any is validated: an invalid message among them is not what the 400 names."""
    body = chat(messages=[{"role": 7, "content": None}, *[USER] * 200_000])
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(ChatRequest, body)
    assert caught.value.code == "array_above_max_length" and caught.value.param == "messages"


def test_a_count_does_not_hide_a_wrong_type() -> None:
    """Within the limits, a value of the wrong type still gets its own 400 from validation."""
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(ChatRequest, chat(tools="all"))
    assert (caught.value.param, caught.value.code) == ("tools", "invalid_type")
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(EmbeddingRequest, embed([1, "a"]))
    assert caught.value.param is not None and caught.value.param.startswith("input")


def anthropic(**fields: Any) -> dict[str, Any]:
    return {"model": "chat", "max_tokens": 5, "messages": [USER], **fields}


def anthropic_tools(n: int) -> list[dict[str, Any]]:
    return [{"name": f"t{i}", "input_schema": {"type": "object"}} for i in range(n)]


def blocks(n: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [PART] * n}]


@pytest.mark.parametrize(("at", "past", "param"), [
    (anthropic(tools=anthropic_tools(MAX_TOOLS)), anthropic(tools=anthropic_tools(MAX_TOOLS + 1)),
     "tools"),
    (anthropic(messages=[USER] * MAX_ITEMS), anthropic(messages=[USER] * (MAX_ITEMS + 1)),
     "messages"),
    # A turn and its blocks count together, and the system prompt with them.
    (anthropic(messages=blocks(MAX_ITEMS - 1)), anthropic(messages=blocks(MAX_ITEMS)),
     "messages"),
    (anthropic(messages=blocks(MAX_ITEMS - 2), system="s"),
     anthropic(messages=blocks(MAX_ITEMS - 1), system="s"), "messages"),
], ids=["tools", "turns", "blocks", "system"])
def test_messages_counts_are_refused_before_the_translation(
        at: dict[str, Any], past: dict[str, Any], param: str) -> None:
    """/v1/messages: the same limits, in the client's terms, before the body is translated;
    a request at them translates and validates as a chat call."""
    assert isinstance(parse(ChatRequest, read_request(at).body), ChatRequest)
    with pytest.raises(errors.InvalidRequest) as caught:
        read_request(past)
    assert (caught.value.param, caught.value.code) == (param, "array_above_max_length")


def post(gateway: RunningGateway, path: str, body: dict[str, Any],
         request_id: str) -> httpx.Response:
    with gateway.http() as http:
        return http.post(path, content=orjson.dumps(body), headers={
            "content-type": "application/json", "x-request-id": request_id})


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", chat(messages=[USER] * 200_000), "messages"),
    ("/v1/chat/completions", chat(tools=tools(20_000)), "tools"),
    ("/v1/embeddings", embed([list(range(1000))] * 2000), "input"),
    ("/v1/completions", complete([[1, 2, 3]] * 100_000), "prompt"),
])
def test_the_testers_bodies_are_400s_through_the_gateway(
        gateway: RunningGateway, path: str, body: dict[str, Any], param: str) -> None:
    """The reported bodies (200,000 messages, 20,000 tools, 2,000,000 token ids, 100,000
    prompts) are 400s in OpenAI's shape naming the param, recorded, and sent nowhere."""
    response = post(gateway, path, body, request_id=f"big-{param}")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    record = gateway.sink.by_id(f"big-{param}")
    assert record.http_status == 400 and record.attempts == []


def test_at_the_limits_the_gateway_serves(gateway: RunningGateway) -> None:
    """128 tools and 1,024 logit_bias entries, and 2,048 embedding inputs, are served."""
    answered = post(gateway, "/v1/chat/completions",
                    chat(tools=tools(MAX_TOOLS), logit_bias={str(i): 1 for i in range(1024)}),
                    request_id="at-limit-chat")
    assert answered.status_code == 200, answered.text
    embedded = post(gateway, "/v1/embeddings", embed(["a"] * MAX_INPUTS),
                    request_id="at-limit-embed")
    assert embedded.status_code == 200, embedded.text
    assert len(embedded.json()["data"]) == MAX_INPUTS


def test_messages_past_the_limit_is_an_anthropic_400(gateway: RunningGateway) -> None:
    """/v1/messages with 200,000 turns: a 400 in Anthropic's shape, recorded."""
    response = post(gateway, "/v1/messages", anthropic(messages=[USER] * 200_000),
                    request_id="big-turns")
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("messages: at most 10000")
    assert gateway.sink.by_id("big-turns").http_status == 400


# ---- nesting past what the JSON parser reads


def test_nesting_past_the_parser_is_too_deep_not_bad_json() -> None:
    """Past orjson's 1,024 levels the 400 is nesting_too_deep, naming the limit (no path is
    known), not "not valid JSON: depth limit exceeded"."""
    raw = b'{"model": "chat", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    with pytest.raises(errors.InvalidRequest) as caught:
        parse_object(raw, max_depth=64)
    assert caught.value.code == "nesting_too_deep" and caught.value.param is None
    assert caught.value.message.startswith("The request body nests deeper than 64 levels")
    # Below the parser's limit, the path is named as before.
    with pytest.raises(errors.InvalidRequest) as caught:
        parse_object(b'{"x": ' + b"[" * 1000 + b"]" * 1000 + b"}", max_depth=64)
    assert caught.value.code == "nesting_too_deep" and caught.value.param == "x" + "[0]" * 63
    # A body that is not JSON is still told so.
    with pytest.raises(errors.InvalidRequest) as caught:
        parse_object(b'{"x": [}', max_depth=64)
    assert caught.value.message.startswith("The request body is not valid JSON")


def test_nesting_past_the_parser_through_the_gateway(gateway: RunningGateway) -> None:
    """Through the gateway: 5,000 levels is a 400 with code nesting_too_deep."""
    with gateway.http() as http:
        response = http.post("/v1/chat/completions", headers={"content-type": "application/json"},
                             content=b'{"model": "chat", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "nesting_too_deep"
