"""Request input: one nesting limit for every JSON body, and the nulls OpenAI's spec allows.

Through a running gateway (raw HTTP and the openai SDK) against the simulator, plus unit tests of
the depth check in ``app.api.wire``.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from app import errors
from app.api.wire import parse, parse_object
from app.schemas import ChatRequest, CompletionRequest
from tests.api.conftest import GatewayFactory, RunningGateway, sim_config

USER = [{"role": "user", "content": "hi"}]


def nested(depth: int, *, key: str = "x") -> Any:
    """A value ``depth`` containers deep: ``{"x": {"x": ... {}}}``."""
    value: Any = {}
    for _ in range(depth - 1):
        value = {key: value}
    return value


def nested_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def post(gateway: RunningGateway, path: str, body: dict[str, Any] | bytes, *,
         request_id: str | None = None) -> httpx.Response:
    headers = {"x-request-id": request_id} if request_id else {}
    with gateway.http() as http:
        if isinstance(body, bytes):
            headers["content-type"] = "application/json"
            return http.post(path, content=body, headers=headers)
        return http.post(path, json=body, headers=headers)


def last_upstream_body(simulator: str) -> dict[str, Any]:
    """The body of the last request the simulator received."""
    received = httpx.get(simulator + "/_sim/requests", params={"limit": "1"}).json()
    body: dict[str, Any] = received[-1]["body"]
    return body


# ---- item 1: one depth limit, at parse time


@pytest.mark.parametrize(("path", "body", "param"), [
    # An extra field nested 300 levels (the 500 with an "ok" row).
    ("/v1/chat/completions", {"model": "chat", "messages": USER, "extra": nested(300)},
     "extra" + ".x" * 63),
    # Just past the default limit of 64, inside a message's content parts.
    ("/v1/chat/completions",
     {"model": "chat", "messages": [{"role": "user", "content": [
         {"type": "text", "text": "hi", "deep": nested_list(62)}]}]},
     "messages[0].content[0].deep" + "[0]" * 59),
    # Inside metadata, and as the value of a known field of the wrong type.
    ("/v1/chat/completions", {"model": "chat", "messages": USER, "metadata": nested(70)},
     "metadata" + ".x" * 63),
    ("/v1/completions", {"model": "chat", "prompt": "hi", "stop": nested_list(500)},
     "stop" + "[0]" * 63),
    ("/v1/embeddings", {"model": "embed", "input": nested_list(900)}, "input" + "[0]" * 63),
])
def test_bodies_nested_past_the_limit_are_400_naming_where(
        gateway: RunningGateway, path: str, body: dict[str, Any], param: str) -> None:
    """A body deeper than limits.max_json_depth (64) is a 400 whose param is the path of the
    first too-deep value, on every model endpoint, and its call record is a 400 row."""
    response = post(gateway, path, body, request_id="deep-1")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "nesting_too_deep"
    assert error["param"] == param
    record = gateway.sink.by_id("deep-1")
    assert (record.status, record.http_status) == ("error", 400)
    assert record.provider is None and record.attempts == []


def test_a_body_at_the_limit_is_served(gateway: RunningGateway, simulator: str) -> None:
    """Exactly 64 levels (the object is level 1) is accepted and forwarded as sent."""
    body = {"model": "chat", "messages": USER, "extra": nested(63)}
    response = post(gateway, "/v1/chat/completions", body, request_id="deep-ok")
    assert response.status_code == 200, response.text
    assert last_upstream_body(simulator)["extra"] == nested(63)
    assert gateway.sink.by_id("deep-ok").status == "ok"


def test_nesting_past_what_the_parser_takes_is_still_a_400(gateway: RunningGateway) -> None:
    """5,000 levels (beyond any recursion limit) is a 400 and a recorded call, never a 500."""
    raw = b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "x": ' \
          + b"[" * 5000 + b"]" * 5000 + b"}"
    response = post(gateway, "/v1/chat/completions", raw, request_id="deep-5000")
    assert response.status_code == 400
    assert gateway.sink.by_id("deep-5000").http_status == 400


def test_the_limit_is_configurable(run_gateway: GatewayFactory, simulator: str) -> None:
    """limits.max_json_depth: 8 refuses a 9-level body that the default accepts."""
    raw = sim_config(simulator)
    raw["limits"] = {"max_json_depth": 8}
    with run_gateway(raw) as gw:
        deep = post(gw, "/v1/chat/completions",
                    {"model": "chat", "messages": USER, "tools_extra": nested(8)})
        fine = post(gw, "/v1/chat/completions",
                    {"model": "chat", "messages": USER, "tools_extra": nested(7)})
    assert deep.status_code == 400 and deep.json()["error"]["param"] == "tools_extra" + ".x" * 7
    assert fine.status_code == 200


def test_a_wide_body_of_token_ids_is_not_too_deep(gateway: RunningGateway) -> None:
    """Thousands of containers side by side are no nesting: 512 token-id inputs embed fine."""
    body = {"model": "embed", "input": [[1, 2, 3, 4] for _ in range(512)]}
    response = post(gateway, "/v1/embeddings", body)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 512


def test_depth_check_unit() -> None:
    """parse_object: at the limit passes; one more fails naming the first deep value in
    document order; long keys and paths are cut; lists of numbers and deep lists after them."""
    def body(value: Any) -> bytes:
        return orjson.dumps({"a": 1, "v": value})

    assert parse_object(body(nested(9)), max_depth=10)["a"] == 1
    with pytest.raises(errors.InvalidRequest) as caught:
        parse_object(body(nested(10)), max_depth=10)
    assert caught.value.param == "v" + ".x" * 9
    # The first too-deep value in document order, past a shallow sibling.
    two = b'{"s": [1, {"k": [[[]]]}], "t": [[[[[]]]]]}'
    with pytest.raises(errors.InvalidRequest) as caught:
        parse_object(two, max_depth=4)
    assert caught.value.param == "s[1].k[0]"  # levels: object 1, s 2, s[1] 3, k 4, k[0] 5
    # A long list of numbers with a deep list at its end is still walked.
    tail = body([*range(1000), nested_list(12)])
    with pytest.raises(errors.InvalidRequest) as caught:
        parse_object(tail, max_depth=10)
    assert str(caught.value.param).startswith("v[1000]")
    assert parse_object(body([*range(100_000)]), max_depth=10)["a"] == 1
    # Client-chosen keys are cut in the param (it is echoed and stored).
    long_key = b'{"' + b"k" * 10_000 + b'": '
    with pytest.raises(errors.InvalidRequest) as caught:
        parse_object(long_key * 300 + b"{}" + b"}" * 300, max_depth=64)
    assert caught.value.param is not None and len(caught.value.param) < 300
    assert caught.value.param.endswith("...")


# ---- item 6: nulls the spec allows


CHAT_NULLS = ["stream", "stream_options", "stop", "temperature", "top_p", "n", "max_tokens",
              "max_completion_tokens", "user", "tools", "tool_choice", "parallel_tool_calls",
              "logprobs", "top_logprobs", "response_format", "seed", "presence_penalty",
              "frequency_penalty", "logit_bias", "metadata", "store", "service_tier",
              "reasoning_effort", "modalities", "prediction", "audio"]


def test_every_nullable_chat_field_may_be_null(gateway: RunningGateway, simulator: str) -> None:
    """A chat request with every optional field null is served as if they were absent, and
    the upstream receives none of them."""
    body: dict[str, Any] = {"model": "chat", "messages": USER, **dict.fromkeys(CHAT_NULLS)}
    response = post(gateway, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"  # "stream": null is not a stream
    forwarded = last_upstream_body(simulator)
    assert not set(CHAT_NULLS) & set(forwarded), forwarded


@pytest.mark.parametrize("field", ["stream", "stream_options", "stop", "n", "max_tokens",
                                   "logprobs", "response_format", "seed", "tools"])
def test_each_null_through_the_sdk(gateway: RunningGateway, simulator: str, field: str) -> None:
    """The openai SDK sends an explicit None as null; each is accepted on its own and not
    forwarded upstream."""
    client = gateway.client()
    completion = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}],
        extra_body={field: None})
    assert completion.choices[0].message.content
    assert field not in last_upstream_body(simulator)


def test_null_stream_on_a_streaming_capable_endpoint_is_not_a_stream(
        gateway: RunningGateway) -> None:
    """"stream": null with "stream_options": null on completions answers one JSON body."""
    response = post(gateway, "/v1/completions",
                    {"model": "chat", "prompt": "hi", "stream": None, "stream_options": None,
                     "echo": None, "suffix": None, "best_of": None, "logprobs": None})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["object"] == "text_completion"


def test_null_prompt_is_the_document_separator(gateway: RunningGateway, simulator: str) -> None:
    """"prompt": null (required but nullable in the spec) is served with the spec's default,
    "<|endoftext|>", which is what the upstream receives; a missing prompt is still a 400."""
    response = post(gateway, "/v1/completions", {"model": "chat", "prompt": None})
    assert response.status_code == 200, response.text
    assert last_upstream_body(simulator)["prompt"] == "<|endoftext|>"
    missing = post(gateway, "/v1/completions", {"model": "chat"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "prompt"


def test_embedding_nulls(gateway: RunningGateway, simulator: str) -> None:
    """dimensions, encoding_format and user may be null: floats come back, none is forwarded."""
    response = post(gateway, "/v1/embeddings", {"model": "embed", "input": "hi",
                                                "dimensions": None, "encoding_format": None,
                                                "user": None})
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["data"][0]["embedding"], list)
    forwarded = last_upstream_body(simulator)
    assert not {"dimensions", "encoding_format", "user"} & set(forwarded)


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"model": None, "messages": USER}, "model"),
    ("/v1/chat/completions", {"model": "chat", "messages": None}, "messages"),
    ("/v1/embeddings", {"model": "embed", "input": None}, "input"),
    ("/v1/chat/completions", {"model": "chat", "messages": [{"role": None, "content": "x"}]},
     "messages[0].role"),
])
def test_required_fields_stay_required(gateway: RunningGateway, path: str,
                                       body: dict[str, Any], param: str) -> None:
    """A null where the spec allows none is still a 400 naming the field."""
    response = post(gateway, path, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_nulls_dropped_in_parse_unit() -> None:
    """parse() removes top-level nulls of optional fields from the body it is given."""
    body: dict[str, Any] = {"model": "m", "messages": USER, "stream": None, "top_k": None}
    request = parse(ChatRequest, body)
    assert request.stream is False and body == {"model": "m", "messages": USER}
    completion: dict[str, Any] = {"model": "m", "prompt": None, "n": None}
    assert parse(CompletionRequest, completion).prompt == "<|endoftext|>"
    assert completion == {"model": "m", "prompt": "<|endoftext|>"}


def test_sdk_stream_none_is_not_an_error(gateway: RunningGateway) -> None:
    """The SDK's own stream=None reaches the gateway as null and is served (no 400)."""
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=None,
        temperature=None, top_p=None, stop=None)
    assert raw.http_response.status_code == 200
    assert isinstance(raw.parse(), openai.types.chat.ChatCompletion)
