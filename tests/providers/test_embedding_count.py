"""An OpenAI-type embeddings answer must hold one vector per input: clients match vectors to
inputs by position, so one short (or long) was passed on as ``ok`` with the inputs misaligned.
It is now a bad answer (502; the next target is tried)."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from app import errors
from app.providers import openai
from app.providers.base import Target
from app.providers.openai import OpenAIProvider
from app.schemas import EmbeddingRequest
from tests.hardening_upstreams import canned, json_answer
from tests.providers.calls import embedding

TARGET = Target(provider="openai", model="text-embedding-3-small")


def _answer(vectors: int) -> bytes:
    return json_answer(orjson.dumps({
        "object": "list", "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2]}
                 for i in range(vectors)],
        "usage": {"prompt_tokens": 3, "total_tokens": 3}}))


INPUTS: dict[str, Any] = {"one-string": "a", "two-strings": ["a", "b"],
                          "one-token-list": [1, 2, 3], "two-token-lists": [[1], [2]]}


@pytest.mark.parametrize("given", list(INPUTS))
def test_the_inputs_are_counted(given: str) -> None:
    request = EmbeddingRequest.model_validate({"model": "e", "input": INPUTS[given]})
    assert request.count() == {"one-string": 1, "two-strings": 2, "one-token-list": 1,
                               "two-token-lists": 2}[given]


@pytest.mark.parametrize(("inputs", "vectors"), [(["a", "b"], 1), ("a", 2), (["a", "b"], 0)],
                         ids=["fewer", "more", "none"])
async def test_an_answer_with_another_count_of_vectors_is_a_bad_answer(
        session: aiohttp.ClientSession, inputs: Any, vectors: int) -> None:
    with canned(_answer(vectors)) as upstream:
        config = OpenAIProvider.model_validate({"type": "openai", "api_key": "sk-0123456789",
                                                "base_url": f"http://127.0.0.1:{upstream.port}/v1"})
        provider = openai.build(config, session)
        with pytest.raises(errors.BadUpstreamResponse, match="embeddings for"):
            await provider.embed(embedding({"model": "e", "input": inputs}), target=TARGET)


async def test_one_vector_per_input_passes(session: aiohttp.ClientSession) -> None:
    with canned(_answer(2)) as upstream:
        config = OpenAIProvider.model_validate({"type": "openai", "api_key": "sk-0123456789",
                                                "base_url": f"http://127.0.0.1:{upstream.port}/v1"})
        result = await openai.build(config, session).embed(
            embedding({"model": "e", "input": ["a", "b"]}), target=TARGET)
    assert len(result.body["data"]) == 2
