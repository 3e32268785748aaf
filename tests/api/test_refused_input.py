"""Input OpenAI and Anthropic refuse as malformed is refused by the gateway itself, a 400
naming the parameter, and never reaches an upstream (the call has no attempt)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import GatewayFactory, RunningGateway, sim_config

USER = {"role": "user", "content": "hi"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(("path", "body", "param", "message"), [
    ("/v1/embeddings", {"model": "embed", "input": [[]]}, "input",
     "input[0] must not be an empty list of token ids"),
    ("/v1/embeddings", {"model": "embed", "input": [[1, 2], []]}, "input",
     "input[1] must not be an empty list of token ids"),
    ("/v1/completions", {"model": "chat", "prompt": [[]]}, "prompt",
     "prompt[0] must not be an empty list of token ids"),
    ("/v1/chat/completions", {"model": "chat", "messages": [USER],
                              "logit_bias": {"50256": 101}}, "logit_bias.50256",
     "Input should be less than or equal to 100"),
    ("/v1/completions", {"model": "chat", "prompt": "hi", "logit_bias": {"50256": -100.5}},
     "logit_bias.50256", "Input should be greater than or equal to -100"),
], ids=["embed-empty-tokens", "embed-second-empty", "complete-empty-tokens", "bias-over",
        "bias-under"])
def test_malformed_openai_input_is_a_400(gateway: RunningGateway, path: str,
                                         body: dict[str, Any], param: str, message: str) -> None:
    """Empty token lists and logit biases outside -100..100, as OpenAI refuses them."""
    reply = gateway.http().post(path, json=body, headers={"x-request-id": "bad"})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert error["message"] == f"Invalid value for '{param}': {message}."
    assert gateway.sink.by_id("bad").attempts == []


STREAM_OPTIONS_REFUSED = {
    "message": "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
    "type": "invalid_request_error", "param": "stream_options", "code": None}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("stream", [{}, {"stream": False}], ids=["no-stream", "stream-false"])
def test_stream_options_without_a_stream_is_a_400(gateway: RunningGateway, path: str,
                                                  stream: dict[str, Any]) -> None:
    """``stream_options`` on a call that does not stream is OpenAI's 400, in its words, with
    no upstream attempt (it used to be served, the options ignored)."""
    asked = {"prompt": "hi"} if path == "/v1/completions" else {"messages": [USER]}
    body = {"model": "chat", **asked, "stream_options": {"include_usage": True}, **stream}
    reply = gateway.http().post(path, json=body, headers={"x-request-id": "opts"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == STREAM_OPTIONS_REFUSED
    assert gateway.sink.by_id("opts").attempts == []


def test_a_tool_message_needs_its_tool_call_id(gateway: RunningGateway) -> None:
    """A ``tool`` message without ``tool_call_id`` is OpenAI's 400 for a missing parameter;
    with it the conversation is served."""
    assistant = {"role": "assistant", "content": None, "tool_calls": [CALL]}
    tool: dict[str, Any] = {"role": "tool", "content": "sunny"}
    body = {"model": "chat", "messages": [USER, assistant, tool]}
    client = gateway.http()
    reply = client.post("/v1/chat/completions", json=body, headers={"x-request-id": "no-id"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == {
        "message": "Missing required parameter: 'messages[2].tool_call_id'.",
        "type": "invalid_request_error", "param": "messages[2].tool_call_id",
        "code": "missing_required_parameter"}
    assert gateway.sink.by_id("no-id").attempts == []
    tool["tool_call_id"] = "call_1"
    assert client.post("/v1/chat/completions", json=body).status_code == 200


@pytest.mark.parametrize(("content", "param"), [
    ([{"type": "image", "source": {"type": "base64"}}], "messages[0].content[0].source.data"),
    ([{"type": "image", "source": {"type": "base64", "data": "iVBORw0KGgo="}}],
     "messages[0].content[0].source.media_type"),
    ([{"type": "image", "source": {"type": "base64", "data": "iVBORw0KGgo=",
                                   "media_type": "image/tiff"}}],
     "messages[0].content[0].source.media_type"),
    ([{"type": "image", "source": {"type": "url"}}], "messages[0].content[0].source.url"),
    ([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf"}}],
     "messages[0].content[0].source.data"),
], ids=["image-no-data", "image-no-media-type", "image-bad-media-type", "image-no-url",
        "pdf-no-data"])
def test_a_source_without_its_data_is_a_400(gateway: RunningGateway, content: list[Any],
                                            param: str) -> None:
    """An image or PDF block whose source lacks what Anthropic requires is refused in
    Anthropic's shape, naming the field (it used to go on as ``data:None;base64,None``)."""
    body = {"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": content}]}
    reply = gateway.http().post("/v1/messages", json=body, headers={"x-request-id": "img"})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith(param)
    assert gateway.sink.by_id("img").attempts == []


def test_a_tool_result_in_an_assistant_turn_is_a_400(gateway: RunningGateway) -> None:
    """Tool results belong in user turns; in an assistant turn they are refused, naming the
    block, as Anthropic refuses them (it used to be sent to native targets only)."""
    turn = {"role": "assistant", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}
    body = {"model": "chat", "max_tokens": 5, "messages": [
        {"role": "user", "content": "hi"}, turn, {"role": "user", "content": "and?"}]}
    reply = gateway.http().post("/v1/messages", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == {
        "type": "invalid_request_error",
        "message": "messages[1].content[0]: tool_result blocks are only allowed in user turns"}


@pytest.mark.parametrize(("extra", "code", "message"), [
    ({"best_of": "3"}, "invalid_type",
     "Invalid value for 'best_of': Input should be a valid integer."),
    ({"best_of": 21}, "integer_above_max_value",
     "Invalid value for 'best_of': Input should be less than or equal to 20."),
    ({"best_of": 1, "n": 3}, "invalid_value",
     "best_of must be greater than or equal to n, got best_of=1 and n=3."),
    ({"best_of": 0}, "invalid_value",
     "best_of must be greater than or equal to n, got best_of=0 and n=1."),
    ({"best_of": 2, "stream": True}, "invalid_value",
     "best_of cannot be greater than 1 when streaming."),
    ({"max_tokens": -1}, "integer_below_min_value",
     "Invalid value for 'max_tokens': Input should be greater than or equal to 0."),
    ({"temperature": 3}, "decimal_above_max_value",
     "Invalid value for 'temperature': Input should be less than or equal to 2."),
], ids=["best-of-string", "best-of-over-20", "best-of-under-n", "best-of-0", "best-of-streamed",
        "max-tokens-negative", "temperature-over-2"])
def test_completion_best_of_and_max_tokens_outside_openai_rules(
        gateway: RunningGateway, extra: dict[str, Any], code: str, message: str) -> None:
    """best_of: an integer 0..20, at least n, not above 1 in a stream (OpenAI's rules);
    max_tokens at least 0: a 400 naming the field, with OpenAI's code (its type, its range;
    ``decimal_...`` for a number field even when given an integer), no upstream attempt."""
    body = {"model": "chat", "prompt": "hi", **extra}
    reply = gateway.http().post("/v1/completions", json=body, headers={"x-request-id": "bad"})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    param = next(iter(extra)) if len(extra) == 1 else "best_of"
    assert (error["param"], error["code"], error["message"]) == (param, code, message)
    assert gateway.sink.by_id("bad").attempts == []


def test_completion_max_tokens_0_with_echo_reaches_the_upstream(
        gateway: RunningGateway) -> None:
    """max_tokens 0 (OpenAI's minimum) with echo goes to an OpenAI-style upstream as sent: the
    prompt comes back, nothing generated."""
    reply = gateway.http().post("/v1/completions", json={
        "model": "chat", "prompt": "The cat sat", "max_tokens": 0, "echo": True})
    assert reply.status_code == 200, reply.text
    [choice] = reply.json()["choices"]
    assert (choice["text"], choice["finish_reason"]) == ("The cat sat", "length")
    assert reply.json()["usage"]["completion_tokens"] == 0


def test_completion_best_of_above_the_gateways_limit(run_gateway: GatewayFactory,
                                                     simulator: str) -> None:
    """best_of's candidates are generated as n's choices are: above ``limits.max_n`` it is a
    400 naming ``best_of``, as n is, with no upstream attempt."""
    raw = sim_config(simulator)
    raw["limits"] = {"max_n": 4}
    with run_gateway(raw) as gateway:
        reply = gateway.http().post("/v1/completions", headers={"x-request-id": "many"},
                                    json={"model": "chat", "prompt": "hi", "best_of": 5})
        assert reply.status_code == 400, reply.text
        assert (reply.json()["error"]["param"], reply.json()["error"]["message"]) == \
            ("best_of", "'best_of' is 5; the limit is 4")
        assert gateway.sink.by_id("many").attempts == []
