"""A ``type: cohere`` provider behind a running gateway, driven by the openai SDK, against the
simulator: chat, streams with usage, tools, JSON output, embeddings over 96 inputs, errors and
a cancelled stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from app.config import parse_config
from app.main import create_app
from tests.api.conftest import ListSink, RunningGateway, settings_in
from tests.servers import serve

USER: list[ChatCompletionMessageParam] = [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Tell me about tides"}]
KEY = "co-upstream-secret-0123456789"


def config(simulator: str, **headers: str) -> dict[str, Any]:
    return {
        "providers": {"co": {"type": "cohere", "base_url": simulator, "api_key": KEY,
                             "headers": headers}},
        "models": {
            "command": {"targets": [{"provider": "co", "model": "command-r-08-2024"}]},
            "embed": {"targets": [{"provider": "co", "model": "embed-v4.0",
                                   "params": {"input_type": "search_query"}}]},
        },
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }


@contextmanager
def gateway(tmp_path: Path, raw: dict[str, Any]) -> Iterator[RunningGateway]:
    """A gateway on loopback (master key on, strict telemetry), as tests/api's fixture."""
    sink = ListSink()
    app = create_app(settings_in(tmp_path), config=parse_config(raw, {}), sink=sink,
                     strict_telemetry=True)
    with serve(app) as url:
        running = RunningGateway(url=url, sink=sink)
        try:
            yield running
        finally:
            running.close_clients()


def sim_requests(simulator: str, n: int) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = httpx.get(f"{simulator}/_sim/requests?limit={n}").json()
    return received


def test_chat_and_stream_with_usage_and_cost(tmp_path: Path, simulator: str) -> None:
    """Chat and streamed chat through Cohere, with usage, a priced cost and the bearer key."""
    with gateway(tmp_path, config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="command", messages=USER, max_tokens=8)
        assert reply.choices[0].message.content
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage is not None and reply.usage.completion_tokens == 8
        (sent,) = sim_requests(simulator, 1)
        assert sent["path"] == "/v2/chat"
        assert sent["headers"]["authorization"] == f"Bearer {KEY}"
        chunks = list(client.chat.completions.create(
            model="command", messages=USER, stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("Simulated reply")
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
        costs = [r.cost_usd for r in gw.sink.records]
        assert len(costs) == 2 and all(c is not None and c > 0 for c in costs), costs


def test_tools_and_json_output(tmp_path: Path, simulator: str) -> None:
    """A required tool comes back as tool_calls; json_schema output parses as the schema."""
    tool: ChatCompletionToolParam = {"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                                         "required": ["q"]}}}
    schema: dict[str, object] = {"type": "object", "properties": {"answer": {"type": "string"},
                                               "score": {"type": "integer"}},
              "required": ["answer", "score"]}
    with gateway(tmp_path, config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="command", messages=USER,
                                               tools=[tool], tool_choice="required")
        calls = reply.choices[0].message.tool_calls
        assert reply.choices[0].finish_reason == "tool_calls"
        assert calls and calls[0].type == "function" and calls[0].function.name == "lookup"
        assert "q" in json.loads(calls[0].function.arguments)
        reply = client.chat.completions.create(model="command", messages=USER,
                                               response_format={"type": "json_schema",
                                                                "json_schema": {
                                                                    "name": "r",
                                                                    "schema": schema}})
        answer = json.loads(reply.choices[0].message.content or "")
        assert set(answer) == {"answer", "score"} and isinstance(answer["score"], int)
        (sent,) = sim_requests(simulator, 1)
        assert sent["body"]["response_format"] == {"type": "json_object", "json_schema": schema}
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="command", messages=USER, n=2)
        assert refused.value.body["param"] == "n"  # type: ignore[index]


def test_reasoning_effort_refused_service_tier_and_prediction_dropped(tmp_path: Path,
                                                                     simulator: str) -> None:
    """reasoning_effort (Cohere takes thinking instead) is a 400 naming it, before sending;
    service_tier and prediction, which cannot change the answer, are dropped."""
    with gateway(tmp_path, config(simulator)) as gw:
        client = gw.client()
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="command", messages=USER, max_tokens=3,
                                           reasoning_effort="high")
        assert refused.value.body["param"] == "reasoning_effort"  # type: ignore[index]
        client.chat.completions.create(
            model="command", messages=USER, max_tokens=3, service_tier="flex",
            extra_body={"prediction": {"type": "content", "content": "x"}})
        (sent,) = sim_requests(simulator, 1)
        assert not {"service_tier", "prediction", "reasoning_effort"} & set(sent["body"])


def test_cohere_fields_cohere_refuses_are_a_400(tmp_path: Path, simulator: str) -> None:
    """Cohere's own fields are forwarded as sent; a value Cohere's schema refuses (the
    simulated Cohere's too) comes back as Cohere's 400, and a valid one is served."""
    with gateway(tmp_path, config(simulator)) as gw:
        client = gw.client()
        client.chat.completions.create(model="command", messages=USER, max_tokens=3,
                                       extra_body={"safety_mode": "STRICT", "k": 5,
                                                   "documents": ["tides are tidal"]})
        (sent,) = sim_requests(simulator, 1)
        assert (sent["body"]["safety_mode"], sent["body"]["k"]) == ("STRICT", 5)
        for extra, word in (({"safety_mode": "WRONG"}, "safety_mode"),
                            ({"documents": "bad"}, "documents"),
                            ({"thinking": {"type": "on"}}, "thinking")):
            with pytest.raises(openai.BadRequestError) as refused:
                client.chat.completions.create(model="command", messages=USER, max_tokens=3,
                                               extra_body=extra)
            assert word in refused.value.message


def test_embeddings_over_96_inputs_rejoined_in_order(tmp_path: Path, simulator: str) -> None:
    """150 inputs: two upstream calls (96 + 54) with the target's input_type, and 150 vectors
    in input order (each equal to the vector of that text embedded alone)."""
    texts = [f"passage {i}" for i in range(150)]
    with gateway(tmp_path, config(simulator)) as gw:
        client = gw.client()
        reply = client.embeddings.create(model="embed", input=texts)
        sent = sim_requests(simulator, 2)
        assert [len(s["body"]["texts"]) for s in sent] == [96, 54]
        assert {s["body"]["input_type"] for s in sent} == {"search_query"}
        assert [d.index for d in reply.data] == list(range(150))
        alone = client.embeddings.create(model="embed", input=texts[120],
                                         extra_body={"input_type": "clustering"})
        assert reply.data[120].embedding == pytest.approx(alone.data[0].embedding)
        assert sim_requests(simulator, 1)[0]["body"]["input_type"] == "clustering"
        assert reply.usage.prompt_tokens == 450  # "passage" 2 tokens + the number 1, summed
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model="embed", input=[[1, 2, 3]])
        assert refused.value.body["param"] == "input"  # type: ignore[index]


def test_embed_dimensions_skip_a_v3_target(tmp_path: Path, simulator: str) -> None:
    """dimensions to a model whose first target is Embed v3 (fixed size): that target refuses
    before sending and the v4 target serves vectors of the asked size; a v3 alone is a 400
    naming dimensions."""
    raw = config(simulator)
    raw["models"]["mixed"] = {"targets": [{"provider": "co", "model": "embed-english-v3.0"},
                                          {"provider": "co", "model": "embed-v4.0"}]}
    raw["models"]["v3"] = {"targets": [{"provider": "co", "model": "embed-english-v3.0"}]}
    with gateway(tmp_path, raw) as gw:
        client = gw.client()
        reply = client.embeddings.create(model="mixed", input="tides", dimensions=256)
        assert len(reply.data[0].embedding) == 256
        (sent,) = sim_requests(simulator, 1)
        assert sent["body"]["model"] == "embed-v4.0"
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model="v3", input="tides", dimensions=256)
        assert refused.value.body["param"] == "dimensions"  # type: ignore[index]
        assert len(client.embeddings.create(model="v3", input="tides").data[0].embedding) \
            == 1024


def test_embed_v4_dimensions_cohere_does_not_make_are_refused_here(tmp_path: Path,
                                                                    simulator: str) -> None:
    """Embed v4 takes output_dimension 256, 512, 1024 or 1536 (the simulated Cohere refuses
    others, naming output_dimension): another value is a 400 naming dimensions and the allowed
    sizes, with no upstream call."""
    raw = config(simulator)
    raw["models"]["v4"] = {"targets": [{"provider": "co", "model": "embed-v4.0"}]}
    with gateway(tmp_path, raw) as gw:
        client = gw.client()
        assert len(client.embeddings.create(model="v4", input="tides", dimensions=512)
                   .data[0].embedding) == 512
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model="v4", input="tides", dimensions=300)
        body: Any = refused.value.body
        assert body["param"] == "dimensions" and "256, 512, 1024, 1536" in body["message"]
        (last,) = sim_requests(simulator, 1)
        assert last["body"]["output_dimension"] == 512  # the refused call never went out


def test_upstream_429_keeps_status_and_retry_after(tmp_path: Path, simulator: str) -> None:
    """Cohere's 429 is the client's 429 with Retry-After."""
    with gateway(tmp_path, config(simulator, **{"X-Return-Error": "429"})) as gw:
        answer = gw.http().post("/v1/chat/completions",
                                json={"model": "command", "messages": USER})
        assert answer.status_code == 429
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["type"] == "rate_limit_error"


def test_upstream_401_never_leaks_the_key(tmp_path: Path, simulator: str) -> None:
    """An upstream 401 that echoes the key is a 502 without the key, in calls and streams."""
    headers = {"X-Return-Error": "401", "X-Sim-Echo-Key": "1"}
    with gateway(tmp_path, config(simulator, **headers)) as gw:
        for stream in (False, True):
            answer = gw.http().post("/v1/chat/completions", json={
                "model": "command", "messages": USER, "stream": stream})
            assert answer.status_code == 502
            assert KEY not in answer.text
            assert "credentials" in answer.json()["error"]["message"]


def test_generation_failed_before_the_first_token_falls_back(tmp_path: Path,
                                                             simulator: str) -> None:
    """A stream whose generation fails (finish_reason ERROR) before its first token is served
    by the next target."""
    raw = config(simulator)
    raw["providers"]["failing"] = {"type": "cohere", "base_url": simulator, "api_key": KEY,
                                   "headers": {"X-Sim-Error-After": "0"}}
    raw["providers"]["spare"] = {"type": "openai", "base_url": f"{simulator}/v1",
                                 "api_key": "sk-spare-0123456789"}
    raw["models"]["chain"] = {"targets": [{"provider": "failing", "model": "command-r-08-2024"},
                                          {"provider": "spare", "model": "gpt-4o-mini"}]}
    with gateway(tmp_path, raw) as gw:
        chunks = list(gw.client().chat.completions.create(
            model="chain", messages=USER, max_tokens=5, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        (record,) = gw.sink.records
        assert record.provider == "spare"
        assert [a.provider for a in record.attempts] == ["failing", "spare"]


def test_cancelled_stream_closes_the_upstream(tmp_path: Path, simulator: str) -> None:
    """A client leaving mid-stream cancels the Cohere stream at the simulator."""
    slow = {"X-Sim-TPOT-Ms": "50", "X-Sim-Completion-Tokens": "200"}
    with gateway(tmp_path, config(simulator, **slow)) as gw:
        assert gw.leave_a_stream(simulator, request_id="co-gone", body={
            "model": "command", "messages": USER, "stream": True}) == 1
        assert gw.sink.by_id("co-gone").status == "cancelled"
