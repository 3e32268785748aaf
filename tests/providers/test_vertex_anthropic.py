"""Claude on Vertex AI (``type: vertex_anthropic``): the body and path it sends, its error
mapping, the anthropic SDK's ``AnthropicVertex`` client reading the simulator's answers, and the
provider against the simulator (token endpoint included)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import anthropic
import httpx
import orjson
import pytest
from anthropic import AnthropicVertex
from anthropic.types import MessageParam, ToolParam
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from app import errors
from app.providers import vertex_anthropic
from app.providers.base import ChatCall, Json, MessagesCall, Target
from app.providers.vertex_anthropic import VertexAnthropicProvider, error_mapper, vertex_body
from app.schemas import ChatRequest
from app.simulator.vertex import issue

MODEL = "claude-sonnet-4@20250514"
TARGET = Target(provider="claude", model=MODEL)
PREFIX = "/vertex/v1/projects/sim-project/locations/us-east5/publishers/anthropic/models/"
USER: list[MessageParam] = [{"role": "user", "content": "Tell me about tides"}]
LOOKUP: ToolParam = {"name": "lookup", "description": "Look a word up",
          "input_schema": {"type": "object", "properties": {"q": {"type": "string"}},
                           "required": ["q"]}}


@pytest.fixture(scope="module")
def private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def config(simulator: str, private_key: str, **extra: Any) -> VertexAnthropicProvider:
    key = orjson.dumps({
        "type": "service_account", "project_id": "sim-project", "private_key_id": "k1",
        "private_key": private_key, "client_email": "gw@sim-project.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": f"{simulator}/vertex/token"}).decode()
    return VertexAnthropicProvider(type="vertex_anthropic", project="sim-project",
                                   location="us-east5", base_url=f"{simulator}/vertex/v1",
                                   credentials_json=SecretStr(key), **extra)


def sent(simulator: str) -> Json:
    (record,) = httpx.get(simulator + "/_sim/requests", params={"limit": "1"}).json()
    found: Json = record
    return found


def chat_call(**fields: Any) -> ChatCall:
    raw = {"model": "claude", "messages": [{"role": "system", "content": "Be brief."}, *USER],
           **fields}
    return ChatCall(request=ChatRequest.model_validate(raw), body=raw)


# --- units -----------------------------------------------------------------------------------

def test_body_loses_model_and_carries_the_vertex_version() -> None:
    body = vertex_body({"model": "x", "max_tokens": 5, "anthropic_version": "2023-06-01",
                        "messages": USER}, anthropic_version="vertex-2023-10-16")
    assert body == {"max_tokens": 5, "anthropic_version": "vertex-2023-10-16",
                    "messages": USER}


def test_errors_claude_in_anthropic_shape_vertex_in_googles() -> None:
    """Claude's 400 stays a 400 with its message, its 529 a retryable 529; Google's quota a
    429 keeping its retry delay (also as a one-element array); a refused token a 502 naming
    the provider."""
    mapper = error_mapper("Vertex AI (project p, us-east5)")
    bad = mapper(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                  "message": "max_tokens: Field required"}}, "")
    assert isinstance(bad, errors.UpstreamRejected) and bad.status_code == 400
    assert bad.message == "max_tokens: Field required"
    busy = mapper(529, {"type": "error", "error": {"type": "overloaded_error",
                                                   "message": "Overloaded"}}, "")
    assert busy.status_code == 529 and busy.code == "overloaded_error"
    quota = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded "
                       "for aiplatform.googleapis.com/online_prediction_requests_per_base_model",
                       "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                    "retryDelay": "7s"}]}}
    for payload in (quota, [quota]):
        limited = mapper(429, payload, "")
        assert isinstance(limited, errors.UpstreamRateLimited) and limited.status_code == 429
        assert limited.retry_after_s == 7.0 and "Quota exceeded" in limited.message
    refused = mapper(401, {"error": {"code": 401, "status": "UNAUTHENTICATED",
                                     "message": "Request had invalid authentication"}}, "")
    assert refused.status_code == 502
    assert refused.message.startswith("Vertex AI (project p, us-east5) refused")


def test_config_shares_vertex_fields() -> None:
    found = VertexAnthropicProvider(type="vertex_anthropic", project="p", location="global")
    assert found.root() == "https://aiplatform.googleapis.com/v1"
    assert found.anthropic_version == "vertex-2023-10-16" and found.max_tokens_default == 4096
    with pytest.raises(ValueError, match="at most one of"):
        VertexAnthropicProvider(type="vertex_anthropic", project="p", credentials_file="/k",
                                credentials_json=SecretStr("{}"))


# --- the anthropic SDK's Vertex client against the simulator --------------------------------

@pytest.fixture
def sdk(simulator: str) -> Iterator[AnthropicVertex]:
    client = AnthropicVertex(project_id="sim-project", region="us-east5",
                             base_url=f"{simulator}/vertex/v1", max_retries=0,
                             access_token=issue("sdk@sim", lifetime_s=600))
    yield client
    client.close()


def test_sdk_reads_plain_streamed_and_tool_answers(sdk: AnthropicVertex, simulator: str) -> None:
    """The SDK's own types parse the simulator's rawPredict and streamRawPredict answers, and
    what it sent is Vertex's request: the model in the URL, ``anthropic_version`` in the body."""
    message = sdk.messages.create(model=MODEL, max_tokens=6, messages=USER)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 6
    assert message.id.startswith("msg_vrtx_") and message.model == MODEL
    request = sent(simulator)
    assert request["path"] == PREFIX + MODEL + ":rawPredict"
    assert "model" not in request["body"] and request["body"]["anthropic_version"]
    with sdk.messages.stream(model=MODEL, max_tokens=32, messages=USER) as events:
        text = "".join(events.text_stream)
        final = events.get_final_message()
    assert text.startswith("Simulated reply") and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 16
    assert sent(simulator)["path"] == PREFIX + MODEL + ":streamRawPredict"
    tool = sdk.messages.create(model=MODEL, max_tokens=50, messages=USER,
                               tools=[LOOKUP],
                               tool_choice={"type": "any"})
    block = tool.content[0]
    assert tool.stop_reason == "tool_use" and block.type == "tool_use"
    assert block.name == "lookup" and block.input == {"q": ""}
    assert block.id.startswith("toolu_vrtx_")


def test_sdk_sees_vertex_and_claude_errors(simulator: str, sdk: AnthropicVertex) -> None:
    """No token: Google's 401; quota: Google's 429 RESOURCE_EXHAUSTED; a bad body: Claude's
    400 invalid_request_error."""
    anonymous = httpx.post(f"{simulator}{PREFIX}{MODEL}:rawPredict", json={
        "anthropic_version": "vertex-2023-10-16", "max_tokens": 5, "messages": USER})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["status"] == "UNAUTHENTICATED"
    with pytest.raises(anthropic.RateLimitError) as limited:
        sdk.messages.create(model=MODEL, max_tokens=5, messages=USER,
                            extra_headers={"X-Return-Error": "429"})
    assert limited.value.body["error"]["status"] == "RESOURCE_EXHAUSTED"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk.messages.create(model=MODEL, max_tokens=0, messages=USER)
    assert bad.value.body["type"] == "error"  # type: ignore[index]
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    token = "Bearer " + issue("sdk@sim", lifetime_s=600)
    unversioned = httpx.post(f"{simulator}{PREFIX}{MODEL}:rawPredict", json={
        "max_tokens": 5, "messages": USER}, headers={"Authorization": token})
    assert unversioned.status_code == 400
    assert unversioned.json()["error"]["message"] == "anthropic_version: Field required"
    gemini_method = httpx.post(f"{simulator}{PREFIX}{MODEL}:generateContent", json={},
                               headers={"Authorization": token})
    assert gemini_method.status_code == 404


# --- the provider against the simulator -------------------------------------------------------

async def test_provider_chat_stream_and_native_messages(simulator: str,
                                                        private_key: str) -> None:
    """Chat and its stream translated, and /v1/messages calls native, over rawPredict and
    streamRawPredict with a token from the simulator's OAuth endpoint."""
    async with aiohttp.ClientSession() as session:
        api = vertex_anthropic.build(config(simulator, private_key), session)
        try:
            result = await api.chat(chat_call(max_tokens=50), target=TARGET)
            assert result.body["choices"][0]["message"]["content"].startswith("Simulated")
            assert result.usage is not None and result.usage.completion_tokens == 16
            request = sent(simulator)
            assert request["path"] == PREFIX + MODEL + ":rawPredict"
            assert request["headers"]["authorization"].startswith("Bearer ya29.")
            body = request["body"]
            assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body
            assert body["system"] == "Be brief." and body["max_tokens"] == 50
            chunks = [c async for c in api.stream_chat(chat_call(), target=TARGET)]
            assert chunks[-1]["usage"]["completion_tokens"] == 16
            assert sent(simulator)["body"]["stream"] is True
            native = MessagesCall(body={"model": "claude", "max_tokens": 6, "messages": USER})
            answer = await api.messages(native, target=TARGET)
            assert answer.native is not None and answer.native["stop_reason"] == "max_tokens"
            assert "model" not in sent(simulator)["body"]
            events = [c async for c in api.stream_messages(native, target=TARGET)]
            names = [name for c in events for name, _ in c.get("native_events", [])]
            assert names[0] == "message_start" and names[-1] == "message_stop"
            assert sent(simulator)["path"] == PREFIX + MODEL + ":streamRawPredict"
        finally:
            await api.aclose()
