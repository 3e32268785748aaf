# ruff: noqa: F811  (pytest passes the imported fixtures by parameter name)
"""The hyperscaler wire formats end to end, gateway -> simulator: AWS event-stream ``error``
messages (Bedrock ConverseStream, InvokeModelWithResponseStream, SageMaker), Converse cache
points with their ``ttl``, a conversation opening with the assistant falling back, Titan
Text Embeddings v1, Gemini's ``reasoning_effort``, and the simulator holding Converse to its
published limits."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import EventStreamError

from app.simulator.aws_auth import TEST_ACCESS_KEY, TEST_SECRET_KEY
from app.simulator.core import MID_STREAM_ERROR
from app.simulator.gemini import API_KEY
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    MASTER_KEY,
    GatewayFactory,
    run_gateway,
)
from tests.providers import test_sagemaker as sagemaker
from tests.providers.test_bedrock_gateway import (
    CLAUDE,
    CONVERSE,
    USER,
    _events,
    _signed,
    config,
    sim_requests,
)
from tests.providers.test_gemini_gateway import config as google_config
from tests.providers.test_gemini_gateway import (  # noqa: F401 - a fixture, used by name
    last_request,
    service_account_key,
)

Json = dict[str, Any]

THROTTLED = {"X-Sim-Error-After": "0", "X-Sim-Aws-Error-Code": "ThrottlingException"}
"""The first message of the stream is an event-stream ``error`` message naming a throttle."""


def test_converse_stream_error_message_first_is_a_429(run_gateway: GatewayFactory,
                                                      simulator: str) -> None:
    with run_gateway(config(simulator, headers=THROTTLED)) as gw, \
            pytest.raises(openai.RateLimitError) as raised:
        list(gw.client().chat.completions.create(model="claude", messages=USER, stream=True))
    assert MID_STREAM_ERROR in str(raised.value)


def test_converse_stream_error_message_midway_ends_with_its_text(run_gateway: GatewayFactory,
                                                                  simulator: str) -> None:
    """After the first chunks, the ``error`` message ends the client's stream with an error
    frame carrying AWS's text (not "invalid JSON")."""
    headers = {**THROTTLED, "X-Sim-Error-After": "2"}
    with run_gateway(config(simulator, headers=headers)) as gw, gw.http().stream(
            "POST", "/v1/chat/completions",
            json={"model": "claude", "messages": USER, "stream": True}) as answer:
        text = answer.read().decode()
    frames = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert answer.status_code == 200 and frames[-1]["error"]["message"] == MID_STREAM_ERROR
    assert gw.sink.records[-1].status != "ok"


def test_invoke_model_stream_error_message_is_a_429(run_gateway: GatewayFactory,
                                                    simulator: str) -> None:
    """/v1/messages through InvokeModelWithResponseStream reads the ``error`` message too
    (it was skipped, and the client got "ended before message_stop")."""
    with run_gateway(config(simulator, headers=THROTTLED)) as gw:
        client = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)
        with pytest.raises(anthropic.RateLimitError) as raised, client.messages.stream(
                model="claude", max_tokens=16,
                messages=[{"role": "user", "content": "Tell me about tides"}]) as events:
            list(events.text_stream)
    assert MID_STREAM_ERROR in str(raised.value)


def test_sagemaker_stream_error_message_is_a_429(run_gateway: GatewayFactory,
                                                 simulator: str) -> None:
    with run_gateway(sagemaker.config(simulator, headers=THROTTLED)) as gw, \
            pytest.raises(openai.RateLimitError):
        list(gw.client().chat.completions.create(model="vllm", messages=sagemaker.USER,
                                                 stream=True))


def test_botocore_reads_the_simulators_error_message_as_an_error(simulator: str) -> None:
    """The simulator's ``error`` message is AWS's: botocore's EventStream raises it by its
    ``:error-code``."""
    path = f"/model/{CLAUDE.replace(':', '%3A')}/converse-stream"
    url, data = f"{simulator}/bedrock{path}", json.dumps(CONVERSE).encode()
    request = AWSRequest(method="POST", url=url, data=data,
                         headers={"Content-Type": "application/json", **THROTTLED})
    SigV4Auth(Credentials(TEST_ACCESS_KEY, TEST_SECRET_KEY), "bedrock",
              "us-east-1").add_auth(request)
    response = httpx.post(url, content=data, headers=dict(request.headers.items()))
    with pytest.raises(EventStreamError, match="ThrottlingException"):
        _events("ConverseStream", "stream", response)


def test_cache_points_reach_converse_with_their_ttl(run_gateway: GatewayFactory,
                                                   simulator: str) -> None:
    """An assistant's and a tool result's markers become cache points, a 1-hour one keeps its
    ``ttl``, and the simulator (holding ``CachePointBlock`` to botocore's model) accepts them."""
    tool: Any = {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}
    messages: Any = [
        {"role": "system", "content": [{"type": "text", "text": "sys",
                                        "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "text", "text": "calling",
                                           "cache_control": {"type": "ephemeral"}}],
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "get", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1",
         "content": [{"type": "text", "text": "result", "cache_control": {"type": "ephemeral"}}]}]
    with run_gateway(config(simulator)) as gw:
        gw.client().chat.completions.create(model="claude", messages=messages, tools=[tool],
                                            max_tokens=5)
    body = sim_requests(simulator, 1)[0]["body"]
    assert body["system"][-1] == {"cachePoint": {"type": "default", "ttl": "1h"}}
    assert body["messages"][1]["content"][1] == {"cachePoint": {"type": "default"}}
    assert body["messages"][2]["content"][-1] == {"cachePoint": {"type": "default"}}


def test_assistant_first_conversation_falls_back(run_gateway: GatewayFactory,
                                                 simulator: str) -> None:
    """Converse wants a user message first: the Bedrock target refuses before sending, so the
    model's next target answers the chatbot-greeting conversation."""
    raw = config(simulator)
    raw["providers"]["offline"] = {"type": "mock"}
    raw["models"]["greeted"] = {"targets": [{"provider": "aws", "model": CLAUDE},
                                            {"provider": "offline", "model": "m"}]}
    greeting: Any = [{"role": "assistant", "content": "Hello, how can I help?"},
                     {"role": "user", "content": "q"}]
    with run_gateway(raw) as gw:
        before = len(sim_requests(simulator, 1000))
        reply = gw.client().chat.completions.create(model="greeted", messages=greeting)
        assert reply.choices[0].message.content
        with pytest.raises(openai.BadRequestError) as raised:
            gw.client().chat.completions.create(model="claude", messages=greeting)
    assert raised.value.body["param"] == "messages[0].role"  # type: ignore[index]
    assert len(sim_requests(simulator, 1000)) == before  # nothing went to Bedrock


def test_titan_v1_embeds(run_gateway: GatewayFactory, simulator: str) -> None:
    """Titan Text Embeddings v1 gets ``{"inputText"}`` alone, which it (and the simulator
    playing it) accepts; ``normalize`` made every call a 400 before."""
    raw = config(simulator)
    raw["models"]["titan1"] = {"targets": [{"provider": "aws",
                                            "model": "amazon.titan-embed-text-v1"}]}
    with run_gateway(raw) as gw:
        answer = gw.client().embeddings.create(model="titan1", input="hello")
    assert len(answer.data[0].embedding) == 1536
    assert sim_requests(simulator, 1)[0]["body"] == {"inputText": "hello"}


@pytest.mark.parametrize(("body", "field"), [
    ({"inferenceConfig": {"temperature": 1.5}}, "temperature"),
    ({"inferenceConfig": {"stopSequences": [""]}}, "stopSequences"),
    ({"additionalModelResponseFieldPaths": [f"/f{i}" for i in range(11)]},
     "additionalModelResponseFieldPaths"),
    ({"messages": [{"role": "user", "content": [
        {"text": "q"}, {"cachePoint": {"type": "default", "ttl": "2h"}}]}]}, "ttl"),
    ({"serviceTier": {"type": "fastest"}}, "serviceTier")])
def test_simulator_holds_converse_to_its_published_limits(simulator: str, body: Json,
                                                          field: str) -> None:
    """What botocore's model rules out is the simulator's 400 ValidationException, as
    Converse answers it, so tests catch a gateway that sends it."""
    path = f"/model/{CLAUDE.replace(':', '%3A')}/converse"
    answer = _signed(simulator, path, {**CONVERSE, **body})
    assert answer.status_code == 400, answer.text
    assert answer.headers["x-amzn-errortype"].startswith("ValidationException")
    assert field in answer.json()["message"]


@pytest.mark.parametrize("kind", ["gemini", "vertex"])
def test_gemini_reasoning_effort_reaches_thinking_config(
        run_gateway: GatewayFactory, simulator: str, service_account_key: str,
        kind: str) -> None:
    with run_gateway(google_config(simulator, kind, service_account_key)) as gw:
        reply = gw.client().chat.completions.create(model="chat", reasoning_effort="low",
                                                    messages=USER)
    assert reply.choices[0].message.content
    sent = last_request(simulator)["body"]
    assert sent["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024}


def test_simulator_refuses_a_thinking_budget_and_level_together(simulator: str) -> None:
    """Google's 400: a ``thinkingConfig`` takes a budget or a level, not both."""
    answer = httpx.post(
        f"{simulator}/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": API_KEY},
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
              "generationConfig": {"thinkingConfig": {"thinkingBudget": 1024,
                                                      "thinkingLevel": "low"}}})
    assert answer.status_code == 400
    assert answer.json()["error"]["status"] == "INVALID_ARGUMENT"
