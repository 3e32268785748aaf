"""Chat completions through the official OpenAI SDK against a running gateway and the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from app.pricing import PriceBook, shipped_prices
from app.usage import Usage
from tests.api.conftest import GatewayFactory, RunningGateway, sim_config

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the switchboard"},
]


def last_sim_request(simulator: str, marker: str) -> dict[str, object]:
    """The newest request the simulator received whose body mentions ``marker``."""
    records = httpx.get(f"{simulator}/_sim/requests", params={"limit": 200}).json()
    for record in reversed(records):
        if marker in json.dumps(record.get("body")):
            return dict(record)
    raise AssertionError(f"simulator saw no request containing {marker!r}")


def test_chat_round_trip_with_headers_usage_and_cost(gateway: RunningGateway) -> None:
    """A non-streaming chat returns the upstream's completion, usage, and the gateway headers."""
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, extra_headers={"x-request-id": "req-chat-1"})
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert raw.headers["x-request-id"] == "req-chat-1"
    assert raw.headers["x-switchboard-provider"] == "sim"
    assert raw.headers["x-switchboard-target-model"] == "gpt-4o-mini"
    assert float(raw.headers["x-switchboard-overhead-ms"]) >= 0
    usage = Usage(prompt_tokens=completion.usage.prompt_tokens,
                  completion_tokens=completion.usage.completion_tokens)
    expected = PriceBook(shipped_prices()).cost("gpt-4o-mini", usage)
    assert expected is not None and expected > 0
    assert float(raw.headers["x-switchboard-cost-usd"]) == pytest.approx(expected, rel=1e-6)
    record = gateway.sink.by_id("req-chat-1")
    assert record.status == "ok" and record.http_status == 200
    assert record.caller == "master"
    assert record.usage is not None and record.usage.prompt_tokens == usage.prompt_tokens
    assert record.cost_usd == pytest.approx(expected)


def test_chat_parameters_reach_the_target(gateway: RunningGateway, simulator: str) -> None:
    """Sampling, tools, response_format, seed, stop, n, logprobs and user are carried upstream."""
    tools: list[ChatCompletionToolParam] = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}}, "required": ["city"]}}}]
    client = gateway.client()
    completion = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "weather-marker-77"}],
        tools=tools, tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0.3, top_p=0.9, seed=7, stop=["\n\n"], n=1, logprobs=True, user="u-1",
        max_completion_tokens=50, extra_body={"top_k": 5})
    call = completion.choices[0].message.tool_calls
    assert call and call[0].type == "function"
    assert call[0].function.name == "get_weather"
    assert "city" in json.loads(call[0].function.arguments)
    sent = last_sim_request(simulator, "weather-marker-77")["body"]
    assert isinstance(sent, dict)
    assert sent["model"] == "gpt-4o-mini"
    for key, value in {"temperature": 0.3, "top_p": 0.9, "seed": 7, "stop": ["\n\n"],
                       "logprobs": True, "user": "u-1", "max_completion_tokens": 50,
                       "top_k": 5}.items():
        assert sent[key] == value, key
    assert sent["tools"][0]["function"]["name"] == "get_weather"


def test_stream_relays_chunks_and_usage_when_asked(gateway: RunningGateway) -> None:
    """A stream yields content chunks, then a usage chunk only when include_usage is set."""
    client = gateway.client()
    with_usage = list(client.chat.completions.create(
        model="chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in with_usage if c.choices)
    assert text
    assert with_usage[-1].choices == [] and with_usage[-1].usage is not None
    assert with_usage[-1].usage.completion_tokens > 0
    finish = [c.choices[0].finish_reason for c in with_usage if c.choices]
    assert finish[-1] == "stop"
    without = list(client.chat.completions.create(model="chat", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in without)
    assert "".join(c.choices[0].delta.content or "" for c in without if c.choices) == text


def test_stream_record_has_usage_ttft_and_cost(gateway: RunningGateway) -> None:
    """A streamed call is recorded with usage from the upstream's usage chunk, TTFT and cost."""
    client = gateway.client()
    stream = client.chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, stream=True, extra_headers={"x-request-id": "req-s-1"})
    assert stream.headers["x-switchboard-provider"] == "sim"
    chunks = list(stream.parse())
    assert chunks
    record = gateway.sink.by_id("req-s-1")
    assert record.stream and record.status == "ok"
    assert record.usage is not None and not record.usage.estimated
    assert record.usage.completion_tokens > 0
    assert record.ttft_ms is not None and record.latency_ms is not None
    assert record.ttft_ms <= record.latency_ms
    assert record.cost_usd is not None and record.cost_usd > 0
    assert record.finish_reason == "stop"


def test_json_response_format_is_honoured(gateway: RunningGateway) -> None:
    """response_format json_object reaches the target, whose content parses as JSON."""
    completion = gateway.client().chat.completions.create(
        model="chat", messages=MESSAGES, response_format={"type": "json_object"})
    content = completion.choices[0].message.content
    assert content is not None
    json.loads(content)


def test_unknown_model_is_404(gateway: RunningGateway) -> None:
    """A model the config does not name is a 404 NotFoundError in OpenAI's shape for it
    (``invalid_request_error``, code ``model_not_found``, no param), on calls and on
    ``/v1/models/{id}`` alike."""
    with pytest.raises(openai.NotFoundError) as info:
        gateway.client().chat.completions.create(model="nope", messages=MESSAGES)
    assert info.value.code == "model_not_found"
    expected = {"message": "The model 'nope' does not exist or you do not have access to it.",
                "type": "invalid_request_error", "param": None, "code": "model_not_found"}
    assert info.value.body == expected
    with pytest.raises(openai.NotFoundError) as retrieved:
        gateway.client().models.retrieve("nope")
    assert retrieved.value.body == expected


def test_missing_and_wrong_keys_are_401(gateway: RunningGateway) -> None:
    """No key or a wrong key is a 401; x-api-key is accepted like a bearer token."""
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="wrong", max_retries=0) as wrong, \
            pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="chat", messages=MESSAGES)
    bare = httpx.post(gateway.url + "/v1/chat/completions",
                      json={"model": "chat", "messages": MESSAGES})
    assert bare.status_code == 401
    assert bare.json()["error"]["type"] == "authentication_error"
    with gateway.http() as http:
        key = http.headers["Authorization"].removeprefix("Bearer ")
        ok = http.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES},
                       headers={"Authorization": "", "x-api-key": key})
    assert ok.status_code == 200


def test_models_list_and_retrieve(run_gateway: GatewayFactory, simulator: str) -> None:
    """/v1/models lists the public names; a slashed name is retrievable; unknown is 404."""
    raw = sim_config(simulator, **{
        "chat": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
        "meta-llama/Llama-3.1-8B-Instruct": {"targets": [{"provider": "sim", "model": "x"}]},
    })
    with run_gateway(raw) as gw:
        client = gw.client()
        names = {m.id for m in client.models.list()}
        assert names == {"chat", "meta-llama/Llama-3.1-8B-Instruct"}
        assert client.models.retrieve("meta-llama/Llama-3.1-8B-Instruct").object == "model"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("nope")


def test_fastapi_routes_serve_the_same_calls(simulator: str, tmp_path: Path) -> None:
    """Without the fast lane in front, FastAPI's own routes answer the same way."""
    from app.config import parse_config
    from app.main import create_app
    from tests.api.conftest import MASTER_KEY, ListSink, settings_in
    from tests.servers import serve

    sink = ListSink()
    lane = create_app(settings_in(tmp_path).model_copy(update={"docs": True}),
                      config=parse_config(sim_config(simulator), {}), sink=sink,
                      strict_telemetry=True)
    with serve(lane.app) as url, \
            openai.OpenAI(base_url=url + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, extra_headers={"x-request-id": "plain-1"})
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-switchboard-provider"] == "sim"
        assert sink.by_id("plain-1").status == "ok"
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="chat", messages=[])
        assert info.value.param == "messages"
        with pytest.raises(openai.BadRequestError) as info:  # the fast lane's 400 too
            client.chat.completions.create(model="chat", messages=MESSAGES,
                                           stream_options={"include_usage": True})
        assert info.value.param == "stream_options"
        assert "openapi" in httpx.get(url + "/openapi.json").json()
