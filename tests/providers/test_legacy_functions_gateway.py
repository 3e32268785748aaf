# The gateway fixture lives in tests/api/conftest.py, outside this directory: imported here so
# pytest finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811
"""OpenAI's legacy function calling (``functions``, ``function_call``) on a target whose type
translates the request (Anthropic, Gemini, Vertex AI, Bedrock, Cohere, Replicate): refused with
a 400 naming the field, before anything is sent, rather than dropped (a forced function call
was answered with text); the refusal is the target's own, so a model with an OpenAI target
after it is served there, with the ``function_call`` OpenAI answers legacy requests with."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    MASTER_KEY,
    GatewayFactory,
    RunningGateway,
    run_gateway,
    sim_config,
)
from tests.providers.test_auto_tool_calls_gateway import (  # noqa: F401 - a fixture
    config,
    credentials_json,
)

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"name": "get_weather", "description": "The weather forecast for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
KINDS = ["anthropic", "gemini", "vertex", "vertex_anthropic", "bedrock", "cohere", "replicate"]
REPLICATE = {"type": "replicate", "base_url": "{sim}/v1", "api_token": "r8_legacy_0123456789",
             "poll_interval_s": 0.02, "poll_max_interval_s": 0.05}


def _config(simulator: str, kind: str, credentials: str) -> dict[str, Any]:
    """Model ``chat``: one target of type ``kind``; model ``either``: that target, then an
    OpenAI one."""
    if kind == "replicate":
        raw = sim_config(simulator, chat={"targets": [
            {"provider": "up", "model": "meta/meta-llama-3-8b-instruct"}]})
        raw["providers"]["up"] = {**REPLICATE, "base_url": simulator + "/v1"}
    else:
        raw = config(simulator, kind, credentials)
    first = raw["models"]["chat"]["targets"][0]
    raw["models"]["either"] = {"targets": [first, {"provider": "sim", "model": "gpt-4o-mini"}]}
    raw["retries"] = {"attempts": 0}
    return raw


def _post(gw: RunningGateway, request_id: str, **body: Any) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.post(gw.url + "/v1/chat/completions", json={"messages": USER, **body},
                           headers={"Authorization": f"Bearer {MASTER_KEY}",
                                    "x-request-id": request_id})


@pytest.mark.parametrize("kind", KINDS)
def test_legacy_functions_are_refused_naming_the_field(run_gateway: GatewayFactory,
                                                       simulator: str, credentials_json: str,
                                                       kind: str) -> None:
    """``functions`` (with or without ``function_call``, streamed or not) and ``function_call``
    alone: a 400 naming the field, not an answer in text."""
    with run_gateway(_config(simulator, kind, credentials_json)) as gw:
        asked: list[tuple[dict[str, Any], str]] = [
            ({"functions": [WEATHER]}, "functions"),
            ({"functions": [WEATHER], "function_call": {"name": "get_weather"}, "stream": True},
             "functions"),
            ({"function_call": "auto"}, "function_call")]
        for n, (fields, param) in enumerate(asked):
            reply = _post(gw, f"legacy-{kind}-{n}", model="chat", **fields)
            assert reply.status_code == 400, (kind, fields, reply.text)
            error = reply.json()["error"]
            assert error["param"] == param, error
            assert f"legacy '{param}'" in error["message"]
            assert [a.status for a in gw.sink.by_id(f"legacy-{kind}-{n}").attempts] == [400]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_legacy_function_call_falls_back_to_an_openai_target(
        run_gateway: GatewayFactory, simulator: str, credentials_json: str, kind: str,
        stream: bool) -> None:
    """A model whose first target refuses the legacy fields is served by its OpenAI target,
    which answers with a ``function_call`` (finish_reason ``function_call``)."""
    with run_gateway(_config(simulator, kind, credentials_json)) as gw:
        request_id = f"fallback-{kind}-{stream}"
        reply = _post(gw, request_id, model="either", functions=[WEATHER],
                      function_call={"name": "get_weather"}, stream=stream)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-switchboard-provider"] == "sim"
        if stream:
            choices = [c for line in reply.text.splitlines() if line.startswith("data: {")
                       for c in orjson.loads(line[6:]).get("choices") or ()]
            called = [c["delta"]["function_call"] for c in choices
                      if c["delta"].get("function_call")]
            assert called and called[0]["name"] == "get_weather"
            finish = [c["finish_reason"] for c in choices if c.get("finish_reason")]
        else:
            choice = reply.json()["choices"][0]
            assert choice["message"]["function_call"]["name"] == "get_weather"
            finish = [choice["finish_reason"]]
        assert finish == ["function_call"]
        assert [(a.provider, a.status) for a in gw.sink.by_id(request_id).attempts] == [
            ("up", 400), ("sim", 200)]
