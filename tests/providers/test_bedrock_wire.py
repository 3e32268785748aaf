"""Converse and InvokeModel bodies held to AWS's published API (botocore's ``bedrock-runtime``
model): cache points where the client marked them (with their ``ttl``), the limits Converse
states (refused before sending), Converse-native fields forwarded, Titan v1's bare body, and
the event stream's ``error`` messages read as errors."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator

from app import errors
from app.providers.aws_eventstream import EventStreamDecoder
from app.providers.aws_http import stream_exception
from app.providers.base import ChatCall, EmbeddingCall, Json, Target
from app.providers.bedrock_converse import translate_request
from app.providers.bedrock_embed import titan_bodies
from app.schemas import ChatRequest, EmbeddingRequest
from app.simulator import aws_eventstream as encoder

TARGET = Target(provider="aws", model="us.anthropic.claude-haiku-4-5-20251001-v1:0")
LLAMA = Target(provider="aws", model="meta.llama3-1-8b-instruct-v1:0")
EPHEMERAL = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{}"}}
TOOLS = [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}]


def chat(**body: Any) -> ChatCall:
    body.setdefault("model", "m")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return ChatCall(request=ChatRequest.model_validate(body), body=body)


def converse(call: ChatCall, target: Target = TARGET) -> Json:
    """The Converse body, checked against botocore's input shape for Converse."""
    body = translate_request(call, target=target, max_tokens_default=None)
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    report = ParamValidator().validate({**body, "modelId": target.model},
                                       model.operation_model("Converse").input_shape)
    assert not report.has_errors(), report.generate_report()
    return body


def text(value: str, marker: dict[str, Any] | None = None) -> Json:
    return {"type": "text", "text": value, **({"cache_control": marker} if marker else {})}


# --- cache points ---------------------------------------------------------------------------

def test_cache_control_everywhere_becomes_cache_points_with_their_ttl() -> None:
    """System, user, assistant and tool-result markers each give a ``cachePoint`` right after
    their block (after the ``toolResult`` for a tool message: its own content takes none), a
    ``ttl`` carried as ``CachePointBlock.ttl``."""
    body = converse(chat(tools=TOOLS, messages=[
        {"role": "system", "content": [text("sys", HOUR)]},
        {"role": "user", "content": [text("q", EPHEMERAL)]},
        {"role": "assistant", "content": [text("calling", EPHEMERAL)], "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": [text("result", HOUR)]}]))
    assert body["system"] == [{"text": "sys"}, {"cachePoint": {"type": "default", "ttl": "1h"}}]
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "q"}, {"cachePoint": {"type": "default"}}]},
        {"role": "assistant", "content": [
            {"text": "calling"}, {"cachePoint": {"type": "default"}},
            {"toolUse": {"toolUseId": "call_1", "name": "get", "input": {}}}]},
        {"role": "user", "content": [
            {"toolResult": {"toolUseId": "call_1", "content": [{"text": "result"}]}},
            {"cachePoint": {"type": "default", "ttl": "1h"}}]}]


def test_a_cache_point_stays_after_its_tool_result_when_results_lead() -> None:
    """Tool results move to the front of their user turn; each cache point moves with the
    block it followed, so the first result's marker does not end up caching the second."""
    second = {**CALL, "id": "call_2"}
    body = converse(chat(tools=TOOLS, messages=[
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [CALL, second]},
        {"role": "tool", "tool_call_id": "call_1", "content": [text("one", EPHEMERAL)]},
        {"role": "user", "content": [text("note", EPHEMERAL)]},
        {"role": "tool", "tool_call_id": "call_2", "content": "two"}]))
    kinds = [next(iter(block)) if "toolResult" not in block
             else block["toolResult"]["toolUseId"] for block in body["messages"][2]["content"]]
    assert kinds == ["call_1", "cachePoint", "call_2", "text", "cachePoint"]


def test_a_ttl_converse_lacks_is_a_400_naming_it() -> None:
    with pytest.raises(errors.InvalidRequest) as raised:
        converse(chat(messages=[{"role": "user", "content": [text("q", {
            "type": "ephemeral", "ttl": "2h"})]}]))
    assert raised.value.param == "messages[0].content[0].cache_control.ttl"


# --- published limits, refused before sending -----------------------------------------------

@pytest.mark.parametrize(("body", "param"), [
    ({"temperature": 1.5}, "temperature"),
    ({"stop": [""]}, "stop"),
    ({"stop": ["END", ""]}, "stop"),
    ({"additionalModelResponseFieldPaths": [f"/f{i}" for i in range(11)]},
     "additionalModelResponseFieldPaths"),
    ({"reasoning_effort": "low"}, "reasoning_effort"),
    ({"messages": [{"role": "assistant", "content": "Hello, how can I help?"},
                   {"role": "user", "content": "q"}]}, "messages[0].role"),
    ({"messages": [{"role": "system", "content": "sys"},
                   {"role": "assistant", "content": ""},
                   {"role": "assistant", "content": "Hello"},
                   {"role": "user", "content": "q"}]}, "messages[2].role"),
])
def test_what_converse_refuses_is_a_400_before_sending(body: dict[str, Any], param: str
                                                       ) -> None:
    """Limits botocore's model states for every model (temperature 0 to 1, non-empty stop
    sequences, at most 10 response field paths), a conversation opening with the assistant
    (Converse wants a user message first) and a reasoning_effort no published mapping serves
    are the target's own 400s, which a fallback target can take."""
    with pytest.raises(errors.InvalidRequest) as raised:
        translate_request(chat(**body), target=LLAMA, max_tokens_default=None)
    assert raised.value.param == param


def test_a_full_path_list_gets_no_stop_sequence_path() -> None:
    """A client's 10 paths are sent as they are: ``/stop_sequence`` is not added past
    Converse's limit (the stop reason then names the request's only sequence)."""
    paths = [f"/f{i}" for i in range(10)]
    body = converse(chat(stop="END", additionalModelResponseFieldPaths=paths))
    assert body["additionalModelResponseFieldPaths"] == paths
    assert converse(chat(stop="END", additionalModelResponseFieldPaths=paths[:9]))[
        "additionalModelResponseFieldPaths"] == [*paths[:9], "/stop_sequence"]


def test_converse_native_fields_are_forwarded() -> None:
    """``serviceTier``, ``promptVariables`` and a client's ``outputConfig`` reach Converse, as
    the other ``ConverseRequest`` members sent beside the OpenAI fields do."""
    tier = {"type": "flex"}
    variables = {"topic": {"text": "tides"}}
    output = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {
        "schema": '{"type":"object"}'}}}}
    body = converse(chat(serviceTier=tier, promptVariables=variables, outputConfig=output))
    assert body["serviceTier"] == tier and body["promptVariables"] == variables
    assert body["outputConfig"] == output


# --- Titan Text Embeddings v1 ---------------------------------------------------------------

def embed(**body: Any) -> EmbeddingCall:
    body.setdefault("model", "m")
    return EmbeddingCall(request=EmbeddingRequest.model_validate(body), body=body)


def test_titan_v1_gets_input_text_alone() -> None:
    """v1 takes ``{"inputText"}`` only (AWS refuses ``normalize``), whatever the target's
    ``normalize: false`` says; v2 keeps ``normalize``."""
    v1 = Target(provider="aws", model="amazon.titan-embed-text-v1",
                params={"normalize": False})
    assert titan_bodies(embed(input=["a", "b"]), target=v1) == [{"inputText": "a"},
                                                                {"inputText": "b"}]
    v2 = Target(provider="aws", model="amazon.titan-embed-text-v2:0")
    assert titan_bodies(embed(input="a"), target=v2) == [{"normalize": True, "inputText": "a"}]


@pytest.mark.parametrize(("body", "param"), [({"dimensions": 512}, "dimensions"),
                                             ({"normalize": True}, "normalize")])
def test_titan_v1_refuses_what_only_v2_takes(body: dict[str, Any], param: str) -> None:
    v1 = Target(provider="aws", model="amazon.titan-embed-text-v1")
    with pytest.raises(errors.InvalidRequest) as raised:
        titan_bodies(embed(input="a", **body), target=v1)
    assert raised.value.param == param


# --- event stream error messages ------------------------------------------------------------

def test_error_message_throttle_is_a_429() -> None:
    """An event stream ``error`` message (``:error-code``/``:error-message`` headers, no
    payload) is an error: ThrottlingException a retryable 429 with the upstream's text."""
    (message,) = EventStreamDecoder().feed(encoder.error("ThrottlingException", "Rate exceeded"))
    assert message.is_error and message.event_type == "ThrottlingException"
    error = stream_exception(message, service="AWS Bedrock (us-east-1)")
    assert isinstance(error, errors.UpstreamRateLimited) and error.message == "Rate exceeded"


@pytest.mark.parametrize("code", ["InternalFailure", "ModelStreamErrorException",
                                  "ValidationException", "SomethingNew"])
def test_error_message_maps_as_its_exception_would(code: str) -> None:
    """Any other ``:error-code`` maps as the ``exception`` message of that name does."""
    (error_message,) = EventStreamDecoder().feed(encoder.error(code, "went wrong"))
    (exception,) = EventStreamDecoder().feed(encoder.exception(code, b'{"message":"went wrong"}'))
    mapped = stream_exception(error_message, service="AWS Bedrock (us-east-1)")
    expected = stream_exception(exception, service="AWS Bedrock (us-east-1)")
    assert (type(mapped), mapped.status, mapped.message, mapped.code) == \
        (type(expected), expected.status, expected.message, expected.code)
