"""The ``local`` provider: real all-MiniLM-L6-v2 embeddings, computed in-process and batched.

Tests that need the model skip where the ``[local]`` extra is not installed; the rest (errors,
shutdown, importing without torch) run everywhere. All tests share one event loop so that the
model loads once for the module.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from app import errors
from app.embeddings import decode_vector
from app.providers import PROVIDER_TYPES, local
from app.providers.base import EmbeddingCall, Json, Target
from app.providers.local import LocalProvider
from app.schemas import EmbeddingRequest
from tests.extras import run_without_local_extra

pytestmark = pytest.mark.asyncio(loop_scope="module")

TARGET = Target(provider="minilm", model="all-MiniLM-L6-v2")


def config(**fields: Any) -> LocalProvider:
    return LocalProvider.model_validate({"type": "local", "device": "cpu", **fields})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provider() -> AsyncIterator[local.LocalEmbeddings]:
    """One warmed provider for the module, batching up to 8 texts."""
    pytest.importorskip("sentence_transformers")
    p = local.LocalEmbeddings(config(batch_size=8, max_batch_delay_ms=5))
    await p.warm()
    yield p
    await p.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def cold() -> AsyncIterator[local.LocalEmbeddings]:
    """A provider that has loaded nothing."""
    p = local.LocalEmbeddings(config())
    yield p
    await p.aclose()


async def embed(provider: local.LocalEmbeddings, inputs: Any, **fields: Any) -> Json:
    body: Json = {"model": "minilm", "input": inputs, **fields}
    call = EmbeddingCall(request=EmbeddingRequest.model_validate(body), body=body)
    return (await provider.embed(call, target=TARGET)).body


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def test_similar_sentences_embed_closer(provider: local.LocalEmbeddings) -> None:
    """Embeddings are the real model's: a paraphrase is closer than an unrelated sentence."""
    body = await embed(provider, ["a cat sits on the mat", "a kitten is on the rug",
                                  "stock market crash"])
    cat, kitten, stocks = (item["embedding"] for item in body["data"])
    assert cosine(cat, kitten) > 0.4
    assert cosine(cat, kitten) > cosine(cat, stocks) + 0.3


async def test_response_has_openai_shape_and_unit_vectors(
        provider: local.LocalEmbeddings) -> None:
    """The body is OpenAI's embedding list: 384-dim unit vectors in input order, usage counted."""
    body = await embed(provider, ["a cat sits on the mat", "hello"])
    assert body["object"] == "list"
    assert body["model"] == "all-MiniLM-L6-v2"
    assert [item["index"] for item in body["data"]] == [0, 1]
    for item in body["data"]:
        assert item["object"] == "embedding"
        assert len(item["embedding"]) == local.DIMENSIONS
        assert math.isclose(math.fsum(v * v for v in item["embedding"]), 1.0, rel_tol=1e-5)
    # The model's own word pieces: "a cat sits on the mat" is 6, "hello" 1 (no [CLS]/[SEP]).
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}


async def test_usage_counts_only_what_the_model_read(provider: local.LocalEmbeddings) -> None:
    """A text past the model's 256-piece window is truncated, and usage counts the 254 read."""
    body = await embed(provider, "word " * 1000)
    assert body["usage"]["prompt_tokens"] == 254
    assert len(body["data"][0]["embedding"]) == local.DIMENSIONS


async def test_concurrent_requests_share_model_calls(provider: local.LocalEmbeddings) -> None:
    """20 concurrent one-text requests make 3 model calls of up to 8, each caller its own vector."""
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(20)]
    before = provider.batches
    bodies = await asyncio.gather(*(embed(provider, text) for text in texts))
    assert provider.batches - before == 3
    alone = [(await embed(provider, text))["data"][0]["embedding"] for text in texts[:3]]
    for body, expected in zip(bodies, alone, strict=False):
        assert cosine(body["data"][0]["embedding"], expected) > 0.9999


async def test_requests_within_the_delay_coalesce() -> None:
    """Requests arriving within ``max_batch_delay_ms`` of the first join its model call."""
    pytest.importorskip("sentence_transformers")
    p = local.LocalEmbeddings(config(batch_size=32, max_batch_delay_ms=500))
    try:
        await p.warm()

        async def later(i: int) -> Json:
            await asyncio.sleep(0.02 * i)
            return await embed(p, f"text {i}")

        bodies = await asyncio.gather(*(later(i) for i in range(5)))
        assert p.batches == 1
        assert all(len(b["data"][0]["embedding"]) == local.DIMENSIONS for b in bodies)
    finally:
        await p.aclose()


async def test_request_larger_than_a_batch_runs_alone(provider: local.LocalEmbeddings) -> None:
    """A request of more texts than ``batch_size`` is one call, embedded in chunks, in order."""
    texts = [f"item {i}" for i in range(20)]
    before = provider.batches
    body = await embed(provider, texts)
    assert provider.batches - before == 1
    assert [item["index"] for item in body["data"]] == list(range(20))
    first = (await embed(provider, texts[0]))["data"][0]["embedding"]
    assert cosine(body["data"][0]["embedding"], first) > 0.9999


async def test_a_request_past_max_request_chars_is_a_400_naming_input(
        cold: local.LocalEmbeddings) -> None:
    """Texts holding more than ``max_request_chars`` characters together are refused before
    the model sees them (the cold provider loads nothing)."""
    limit = config().max_request_chars
    with pytest.raises(errors.InvalidRequest) as caught:
        await embed(cold, ["x" * (limit // 2), "y" * (limit // 2 + 1)])
    assert caught.value.param == "input"
    assert caught.value.status_code == 400
    assert f"at most {limit} characters" in caught.value.message


async def test_a_batch_whose_caller_left_stops_before_its_next_chunk() -> None:
    """A large request cancelled while the model works on it embeds its current chunk at most,
    not the rest; the next request is served."""
    pytest.importorskip("sentence_transformers")
    p = local.LocalEmbeddings(config(batch_size=1, max_batch_delay_ms=0))
    try:
        await p.warm()
        texts = [f"a longer sentence for the model to read, number {i}" for i in range(400)]
        big = asyncio.ensure_future(embed(p, texts))
        for _ in range(100_000):  # until the batch has started (its first chunk is running)
            if p.batches:
                break
            await asyncio.sleep(0.001)
        big.cancel()
        await asyncio.gather(big, return_exceptions=True)
        body = await embed(p, "next")
        assert len(body["data"][0]["embedding"]) == local.DIMENSIONS
        assert p.batches == 2
        assert p.texts_embedded < len(texts) // 2  # in practice 2 to 4 of the 400
    finally:
        await p.aclose()


async def test_base64_round_trips(provider: local.LocalEmbeddings) -> None:
    """``encoding_format: base64`` decodes (little-endian float32) to the float vector."""
    text = "base64 please"
    floats = (await embed(provider, text))["data"][0]["embedding"]
    encoded = (await embed(provider, text, encoding_format="base64"))["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = decode_vector(encoded)
    assert len(decoded) == local.DIMENSIONS
    assert decoded == pytest.approx(floats, abs=1e-6)


async def test_dimensions_truncate_and_renormalize(provider: local.LocalEmbeddings) -> None:
    """``dimensions`` < 384 keeps the leading components, rescaled to unit length."""
    text = "shorter vectors"
    full = (await embed(provider, text))["data"][0]["embedding"]
    short = (await embed(provider, text, dimensions=64))["data"][0]["embedding"]
    assert len(short) == 64
    assert math.isclose(math.fsum(v * v for v in short), 1.0, rel_tol=1e-9)
    assert cosine(short, full[:64]) > 0.999999


async def test_dimensions_above_384_are_refused(cold: local.LocalEmbeddings) -> None:
    """``dimensions`` beyond the model's 384 is a 400 naming the ``dimensions`` param."""
    with pytest.raises(errors.InvalidRequest) as caught:
        await embed(cold, "too wide", dimensions=385)
    assert caught.value.param == "dimensions"
    assert caught.value.status_code == 400


async def test_token_id_inputs_are_refused(cold: local.LocalEmbeddings) -> None:
    """Token-id arrays (another tokenizer's ids) are a 400 naming ``input``."""
    with pytest.raises(errors.InvalidRequest) as caught:
        await embed(cold, [[101, 2023, 102]])
    assert caught.value.param == "input"


async def test_serves_embeddings_only() -> None:
    """The provider implements embeddings alone, so the gateway never sends it a chat or
    completion (tests/providers/test_registry.py: the 400 a client gets instead)."""
    assert PROVIDER_TYPES["local"].serves == {"embed"}


async def test_missing_extra_is_a_503_naming_it(cold: local.LocalEmbeddings,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Without sentence-transformers the provider builds, and embed is a 503 naming the extra."""
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes its import fail
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        await embed(cold, "no model here")
    assert caught.value.message == local.MISSING_EXTRA
    assert caught.value.status_code == 503


async def test_aclose_fails_waiting_requests_and_later_ones() -> None:
    """``aclose`` stops the batcher: a request waiting in it and any later one get a 503."""
    p = local.LocalEmbeddings(config(max_batch_delay_ms=10_000))  # the first job waits 10 s
    waiting = asyncio.ensure_future(embed(p, "waiting"))
    await asyncio.sleep(0.05)
    await p.aclose()
    with pytest.raises(errors.UpstreamUnavailable, match="shut down"):
        await waiting
    with pytest.raises(errors.UpstreamUnavailable, match="shut down"):
        await embed(p, "too late")


async def test_module_imports_without_the_extra() -> None:
    """The provider module and registry import with torch and sentence-transformers absent."""
    await run_without_local_extra("from app.providers import PROVIDER_TYPES, local\n"
                                  "assert PROVIDER_TYPES['local'].build is local.build\n")
