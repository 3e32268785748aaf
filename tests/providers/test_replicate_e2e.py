"""Replicate targets through a running gateway, driven by the openai SDK, against the
simulator's Replicate dialect."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.api.conftest import GatewayFactory, run_gateway  # noqa: F401 - the fixture

TOKEN = "r8_gateway_secret_token_abcdef0123"
USER: list[ChatCompletionMessageParam] = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me about switchboards"}]


def config(simulator: str) -> dict[str, Any]:
    """One Replicate provider per simulated behaviour (the gateway drops clients' X-Sim-*
    headers, so each behaviour is a provider's own headers)."""

    def provider(**headers: str) -> dict[str, Any]:
        return {"type": "replicate", "base_url": simulator + "/v1", "api_token": TOKEN,
                "poll_interval_s": 0.02, "poll_max_interval_s": 0.05, "headers": headers}

    llama = "meta/meta-llama-3-8b-instruct"
    return {
        "providers": {
            "rep": provider(),
            "slow": provider(**{"X-Sim-Replicate-Wait-Ms": "0",
                                "X-Sim-Replicate-Duration-Ms": "150"}),
            "long": provider(**{"X-Sim-Replicate-Duration-Ms": "20000"}),
            "limited": provider(**{"X-Return-Error": "429"}),
            "unauth": provider(**{"X-Return-Error": "401", "X-Sim-Echo-Key": "1"}),
            "failing": provider(**{"X-Sim-Replicate-Fail": "1"}),
            # A 3 s stream, a token every 250 ms, against a 1.5 s timeout; the prediction
            # still shows processing for 600 ms after done, so the usage fetch must poll.
            "outlasting": {**provider(**{"X-Sim-Replicate-Duration-Ms": "3000",
                                         "X-Sim-Replicate-Settle-Ms": "600"}),
                           "timeout_s": 1.5},
        },
        "models": {name: {"targets": [{"provider": name, "model": llama}]}
                   for name in ("rep", "slow", "long", "limited", "unauth", "failing",
                                "outlasting")},
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }


def test_chat_sync_polled_and_streamed(run_gateway: GatewayFactory, simulator: str) -> None:  # noqa: F811
    """Sync (Prefer: wait), polled and streamed chats answer, with usage from the metrics."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        for model in ("rep", "slow"):
            reply = client.chat.completions.create(model=model, messages=USER,
                                                   max_tokens=7)
            assert reply.choices[0].message.content == "Simulated reply to: Tell me"
            assert reply.choices[0].finish_reason == "length"
            assert reply.usage is not None and reply.usage.completion_tokens == 7
            assert reply.usage.prompt_tokens > 0
        chunks = list(client.chat.completions.create(
            model="rep", messages=USER, max_tokens=5, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Simulated reply to:"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_a_stream_longer_than_the_timeout_ends_with_finish_and_usage(
        run_gateway: GatewayFactory, simulator: str) -> None:  # noqa: F811
    """timeout_s bounds a started stream's silence, not its length: a stream that outlasts it
    ends with its finish reason and usage chunk, and is recorded as ok (the fetch for usage
    after done, and its polling, have a timeout of their own)."""
    with run_gateway(config(simulator)) as gw:
        chunks = list(gw.client().chat.completions.create(
            model="outlasting", messages=USER, max_tokens=12, stream=True,
            stream_options={"include_usage": True}, extra_headers={"x-request-id": "outlast"}))
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
        assert _until(lambda: any(r.request_id == "outlast" for r in gw.sink.records))
        record = gw.sink.by_id("outlast")
        assert (record.status, record.http_status, record.finish_reason) == ("ok", 200, "length")


def test_tools_are_refused_naming_the_param(run_gateway: GatewayFactory,  # noqa: F811
                                            simulator: str) -> None:
    """Tools cannot go to a Replicate prediction: 400 naming 'tools'."""
    with run_gateway(config(simulator)) as gw, pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(
            model="rep", messages=USER,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert caught.value.response.json()["error"]["param"] == "tools"


def test_errors_429_401_and_failed(run_gateway: GatewayFactory, simulator: str) -> None:  # noqa: F811
    """429 stays 429 with Retry-After; 401 never shows the token; a failed prediction is 502."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="limited", messages=USER)
        assert limited.value.response.headers.get("retry-after") == "1"
        with pytest.raises(openai.APIStatusError) as unauth:
            client.chat.completions.create(model="unauth", messages=USER)
        assert unauth.value.status_code == 502
        assert TOKEN not in unauth.value.response.text
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="failing", messages=USER)
        assert failed.value.status_code == 502
        assert "CUDA out of memory" in failed.value.response.text


def _until(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_client_cancel_cancels_the_prediction(run_gateway: GatewayFactory,  # noqa: F811
                                              simulator: str) -> None:
    """A client that closes its stream mid-way makes the gateway cancel the prediction."""
    with run_gateway(config(simulator)) as gw:
        stream = gw.client().chat.completions.create(
            model="long", messages=USER, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        stream.close()

        def cancelled() -> bool:
            records = httpx.get(simulator + "/_sim/requests", params={"limit": "20"}).json()
            return any(r["path"].endswith("/cancel") and r["path"].split("/")[3] in created
                       for r in records)

        records = httpx.get(simulator + "/_sim/requests", params={"limit": "20"}).json()
        created = {r["path"].split("/")[3] for r in records
                   if r["path"].endswith("/stream")}
        assert created, "the gateway never opened the prediction's stream"
        assert _until(cancelled), "the prediction was not cancelled"


def test_claude_4_sonnet_token_floor_is_a_400(run_gateway: GatewayFactory,  # noqa: F811
                                              simulator: str) -> None:
    """anthropic/claude-4-sonnet takes max_tokens of 1024 or more (its Replicate page): a
    smaller limit is Replicate's 422, the client's 400 naming the input; 1024 is served."""
    raw = config(simulator)
    raw["models"]["sonnet"] = {"targets": [{"provider": "rep",
                                            "model": "anthropic/claude-4-sonnet"}]}
    with run_gateway(raw) as gw:
        client = gw.client()
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="sonnet", messages=USER, max_tokens=3)
        error = caught.value.response.json()["error"]
        assert error["param"] == "input"
        assert "max_tokens: Must be greater than or equal to 1024" in error["message"]
        reply = client.chat.completions.create(model="sonnet", messages=USER, max_tokens=1024)
        assert reply.choices[0].message.content


def test_reasoning_effort_reaches_a_model_that_takes_it_else_is_refused(
        run_gateway: GatewayFactory, simulator: str) -> None:  # noqa: F811
    """reasoning_effort goes in the input of openai/o* models (their pages list it; the
    simulated Replicate checks its enum); a model without that input refuses it with a 400
    naming reasoning_effort; service_tier and prediction are dropped."""
    raw = config(simulator)
    raw["models"]["o4"] = {"targets": [{"provider": "rep", "model": "openai/o4-mini"}]}
    raw["models"]["gpt4o"] = {"targets": [{"provider": "rep", "model": "openai/gpt-4o"}]}
    with run_gateway(raw) as gw:
        client = gw.client()
        reply = client.chat.completions.create(
            model="o4", messages=USER, max_tokens=5, reasoning_effort="high",
            service_tier="flex", extra_body={"prediction": {"type": "content", "content": "x"}})
        assert reply.choices[0].message.content
        (sent,) = httpx.get(f"{simulator}/_sim/requests?limit=1").json()
        assert sent["body"]["input"]["reasoning_effort"] == "high"
        assert not {"service_tier", "prediction"} & set(sent["body"]["input"])
        for model in ("gpt4o", "rep"):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model=model, messages=USER, max_tokens=5,
                                               reasoning_effort="high")
            assert caught.value.response.json()["error"]["param"] == "reasoning_effort"
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="o4", messages=USER, max_tokens=5,
                                           extra_body={"reasoning_effort": "extreme"})
        assert "reasoning_effort" in caught.value.response.json()["error"]["message"]


def test_a_stream_that_ends_before_done_is_an_error_and_cancelled(
        run_gateway: GatewayFactory, simulator: str) -> None:  # noqa: F811
    """A prediction stream cut after 2 outputs (connection dropped, or ended cleanly without
    done): the client's stream ends with an error after the text it got (what a dropped
    connection delivered), and the prediction is cancelled."""
    raw = config(simulator)
    for name, knob in (("cut", "X-Sim-Cut-After"), ("ended", "X-Sim-End-After")):
        raw["providers"][name] = {**raw["providers"]["rep"],
                                  "headers": {knob: "2", "X-Sim-Replicate-Duration-Ms": "300"}}
        raw["models"][name] = {"targets": [{"provider": name,
                                            "model": "meta/meta-llama-3-8b-instruct"}]}
    with run_gateway(raw) as gw:
        for name in ("cut", "ended"):
            answer = gw.http().post("/v1/chat/completions", json={
                "model": name, "messages": USER, "max_tokens": 12, "stream": True})
            frames = [line[6:] for line in answer.text.splitlines()
                      if line.startswith("data: {")]
            texts = [c["choices"][0]["delta"].get("content") for c in map(json.loads, frames)
                     if c.get("choices")]
            assert "".join(t or "" for t in texts).startswith("Simulated")
            assert "error" in json.loads(frames[-1]), frames[-1]
            assert _until(lambda: any(r["path"].endswith("/cancel") for r in httpx.get(
                f"{simulator}/_sim/requests?limit=5").json()))
