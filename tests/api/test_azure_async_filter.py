"""Azure's asynchronous content filter through the gateway: its annotation chunks (empty ``id``
and ``model``, no ``delta``) reach OpenAI clients as completion chunks of the stream, with
``delta: {}`` and their filter fields kept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai.types.chat import ChatCompletionMessageParam

from app.simulator.azure import DEPLOYED_MODELS, WIRE
from app.simulator.chat import ANNOTATED_EVERY
from tests.api.conftest import GatewayFactory, RunningGateway, sim_config

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about tides"}]
DEPLOYED = DEPLOYED_MODELS["chat/completions"]
TOKENS = 20


@pytest.fixture
def azure(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    """A gateway whose model ``azure`` is a deployment with the asynchronous filter."""
    raw = sim_config(simulator, azure={"targets": [{"provider": "az", "model": "prod-chat"}]})
    raw["providers"]["az"] = {"type": "azure_openai", "endpoint": simulator, "api_key": "k",
                              "headers": {"X-Sim-Azure-Filter": "async",
                                          "X-Sim-Completion-Tokens": str(TOKENS)}}
    with run_gateway(raw) as gw:
        yield gw


def test_annotation_chunks_parse_with_an_id_and_a_delta(azure: RunningGateway) -> None:
    """Streamed through the openai SDK, every chunk names the stream's id and the deployed
    model and each choice has a delta; the annotations keep ``content_filter_results`` and
    ``content_filter_offsets``, the last covering the whole answer."""
    stream = azure.client().chat.completions.create(
        model="azure", messages=USER, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert {(c.id, c.object, c.created, c.model) for c in chunks} == {
        (chunks[0].id, "chat.completion.chunk", chunks[0].created, DEPLOYED)}
    assert chunks[0].id.startswith("chatcmpl-")
    assert all(choice.delta is not None for c in chunks for choice in c.choices)
    notes = [choice for c in chunks for choice in c.choices
             if (choice.model_extra or {}).get("content_filter_offsets")]
    assert len(notes) == TOKENS // ANNOTATED_EVERY + 1
    assert all(n.delta.model_dump(exclude_none=True) == {} for n in notes)
    assert all(n.model_extra and n.model_extra["content_filter_results"] == WIRE.content_filter
               for n in notes)
    text = "".join(choice.delta.content or "" for c in chunks for choice in c.choices)
    assert notes[-1].model_extra is not None
    assert notes[-1].model_extra["content_filter_offsets"]["end_offset"] == len(text)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == TOKENS
