"""A stream is accounted under the model, ``id`` and ``system_fingerprint`` its answer names,
even when its upstream opens with a chunk naming none (Azure OpenAI's prompt-filter chunk); an
Azure deployment's stream is then priced by the model deployed, and OpenAI clients get only
completion chunks, the prompt's filter verdict riding on the first."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from app.pricing import PriceBook, shipped_prices
from app.simulator.azure import DEPLOYED_MODELS
from tests.api.conftest import GatewayFactory, RunningGateway, sim_config
from tests.hardening_upstreams import canned, sse_answer

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about tides"}]
DEPLOYED = DEPLOYED_MODELS["chat/completions"]
FINGERPRINT = "fp_az"
FILTER_CHUNK: dict[str, Any] = {
    "choices": [], "created": 0, "id": "", "model": "", "object": "",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
        "hate": {"filtered": False, "severity": "safe"}}}]}
"""The chunk Azure opens a chat stream with."""


@pytest.fixture
def azure(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    """A gateway whose model ``azure`` is the deployment ``prod-chat`` (a name with no price)."""
    raw = sim_config(simulator, azure={"targets": [{"provider": "az", "model": "prod-chat"}]})
    raw["providers"]["az"] = {"type": "azure_openai", "endpoint": simulator, "api_key": "k",
                              "headers": {"X-Sim-Fingerprint": FINGERPRINT}}
    with run_gateway(raw) as gw:
        yield gw


def test_an_azure_stream_is_priced_by_the_deployed_model(azure: RunningGateway) -> None:
    """An Azure stream's record names the model deployed and its fingerprint, and costs what
    that model costs (the deployment's name has no price)."""
    stream = azure.client().chat.completions.create(
        model="azure", messages=USER, stream=True, stream_options={"include_usage": True},
        extra_headers={"x-request-id": "az-stream"})
    chunks = list(stream)
    record = azure.sink.by_id("az-stream")
    assert (record.response_model, record.system_fingerprint) == (DEPLOYED, FINGERPRINT)
    usage = chunks[-1].usage
    assert usage is not None and record.usage is not None and not record.usage.estimated
    gpt4o = PriceBook(shipped_prices()).price("gpt-4o")
    assert gpt4o is not None and record.cost_usd is not None
    assert record.cost_usd == pytest.approx(gpt4o.cost(record.usage), rel=1e-6)


def test_openai_clients_get_completion_chunks_with_the_filter_verdict(
        azure: RunningGateway) -> None:
    """Through the openai SDK every chunk of an Azure stream is a ``chat.completion.chunk``
    with an ``id`` and the deployed model, every one but the usage chunk has a choice, and the
    first carries Azure's ``prompt_filter_results``."""
    stream = azure.client().chat.completions.create(
        model="azure", messages=USER, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert {(c.object, c.model) for c in chunks} == {("chat.completion.chunk", DEPLOYED)}
    assert all(c.id.startswith("chatcmpl-") for c in chunks)
    assert all(c.choices for c in chunks[:-1]) and chunks[-1].usage is not None
    first = chunks[0].model_dump()
    assert first["choices"][0]["delta"]["role"] == "assistant"
    [verdict] = first["prompt_filter_results"]
    assert verdict["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    assert "prompt_filter_results" not in chunks[1].model_dump()


def test_a_first_chunk_naming_no_model_is_not_the_answers(run_gateway: GatewayFactory,
                                                           simulator: str) -> None:
    """An OpenAI-compatible upstream that relays Azure's filter chunk as it came: the record
    takes the model and fingerprint from the first chunk naming them, so the call is priced."""
    base = {"id": "chatcmpl-relayed", "object": "chat.completion.chunk", "created": 1,
            "model": DEPLOYED, "system_fingerprint": FINGERPRINT}
    frames = [FILTER_CHUNK,
              {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"},
                                    "finish_reason": None}]},
              {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
              {**base, "choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 10,
                                                "total_tokens": 1010}}]
    answer = sse_answer(*(orjson.dumps(frame) for frame in frames), b"[DONE]")
    with canned(answer) as upstream:
        raw = sim_config(simulator, relay={"targets": [{"provider": "relay",
                                                        "model": "prod-chat"}]})
        raw["providers"]["relay"] = {"type": "openai", "base_url": upstream.url, "api_key": "k"}
        with run_gateway(raw) as gw:
            with gw.http().stream("POST", "/v1/chat/completions", headers={
                    "x-request-id": "relayed"}, json={"model": "relay", "messages": USER,
                                                      "stream": True}) as streamed:
                assert streamed.status_code == 200
                streamed.read()
            record = gw.sink.by_id("relayed")
    assert (record.response_model, record.system_fingerprint) == (DEPLOYED, FINGERPRINT)
    gpt4o = PriceBook(shipped_prices()).price("gpt-4o")
    assert gpt4o is not None and record.usage is not None and record.cost_usd is not None
    assert record.cost_usd == pytest.approx(gpt4o.cost(record.usage), rel=1e-6)
