"""Embedding vectors have their model's own length (``embeddings.MODEL_DIMENSIONS``), the
request's where the provider takes one, and ``--embedding-dimensions`` only for models of no
known length; in each dialect."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.simulator import SimOptions, create_app
from app.simulator.aws_auth import BEDROCK_API_KEY
from app.simulator.gemini import API_KEY
from tests.servers import serve

AWS = {"Authorization": f"Bearer {BEDROCK_API_KEY}"}


def openai_length(http: httpx.Client, model: str, **extra: Any) -> int:
    answer = http.post("/v1/embeddings", json={"model": model, "input": "hi", **extra})
    assert answer.status_code == 200, answer.text
    return len(answer.json()["data"][0]["embedding"])


@pytest.mark.parametrize(("model", "length"), [
    ("text-embedding-3-small", 1536), ("text-embedding-3-large", 3072),
    ("text-embedding-ada-002", 1536), ("some-local-embedder", 384)])
def test_openai_models_have_their_own_length(http: httpx.Client, model: str,
                                             length: int) -> None:
    """OpenAI's embedding models answer their documented length; others the 384 fallback."""
    assert openai_length(http, model) == length


def test_openai_dimensions_where_the_model_takes_them(http: httpx.Client) -> None:
    """``dimensions`` shortens a text-embedding-3 vector; ada-002, of fixed length, refuses it
    with OpenAI's 400."""
    assert openai_length(http, "text-embedding-3-large", dimensions=256) == 256
    refused = http.post("/v1/embeddings", json={"model": "text-embedding-ada-002",
                                                "input": "hi", "dimensions": 256})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == \
        "This model does not support specifying dimensions."


def cohere_length(http: httpx.Client, model: str, **extra: Any) -> int:
    answer = http.post("/v2/embed", headers={"Authorization": "Bearer k"}, json={
        "model": model, "texts": ["hi"], "input_type": "search_query", **extra})
    assert answer.status_code == 200, answer.text
    return len(answer.json()["embeddings"]["float"][0])


def test_cohere_models_have_their_own_length(http: httpx.Client) -> None:
    """Cohere: embed-v4.0 1536 (``output_dimension`` honoured), v3 1024, v3 light 384."""
    assert cohere_length(http, "embed-v4.0") == 1536
    assert cohere_length(http, "embed-v4.0", output_dimension=256) == 256
    assert cohere_length(http, "embed-english-v3.0") == 1024
    assert cohere_length(http, "embed-multilingual-light-v3.0") == 384


def test_cohere_v3_refuses_output_dimension(http: httpx.Client) -> None:
    """output_dimension is only for embed-v4 and newer: a v3 model refuses it (400)."""
    refused = http.post("/v2/embed", headers={"Authorization": "Bearer k"}, json={
        "model": "embed-english-v3.0", "texts": ["hi"], "input_type": "search_query",
        "output_dimension": 256})
    assert refused.status_code == 400
    assert "embed-v4" in refused.json()["message"]


def gemini_length(http: httpx.Client, model: str, **extra: Any) -> int:
    answer = http.post(f"/gemini/v1beta/models/{model}:batchEmbedContents",
                       headers={"x-goog-api-key": API_KEY}, json={"requests": [
                           {"model": f"models/{model}", "content": {"parts": [{"text": "hi"}]},
                            **extra}]})
    assert answer.status_code == 200, answer.text
    return len(answer.json()["embeddings"][0]["values"])


def test_gemini_models_have_their_own_length(http: httpx.Client) -> None:
    """Gemini API: gemini-embedding-001 3072 (``outputDimensionality`` honoured),
    text-embedding-004 768."""
    assert gemini_length(http, "gemini-embedding-001") == 3072
    assert gemini_length(http, "gemini-embedding-001", outputDimensionality=768) == 768
    assert gemini_length(http, "text-embedding-004") == 768


def bedrock(http: httpx.Client, model: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(f"/bedrock/model/{model}/invoke", headers=AWS, json=body)


def test_bedrock_models_have_their_own_length(http: httpx.Client) -> None:
    """Bedrock: Titan v2 1024 (``dimensions`` honoured), Titan v1 1536 (no ``dimensions``, as
    its body has none), Cohere Embed v3 1024."""
    v2 = "amazon.titan-embed-text-v2:0"
    assert len(bedrock(http, v2, {"inputText": "hi"}).json()["embedding"]) == 1024
    assert len(bedrock(http, v2, {"inputText": "hi", "dimensions": 256}).json()["embedding"]) \
        == 256
    v1 = "amazon.titan-embed-text-v1"
    assert len(bedrock(http, v1, {"inputText": "hi"}).json()["embedding"]) == 1536
    refused = bedrock(http, v1, {"inputText": "hi", "dimensions": 256})
    assert refused.status_code == 400 and "extraneous key [dimensions]" in refused.text
    cohere = bedrock(http, "cohere.embed-english-v3", {"texts": ["hi"],
                                                       "input_type": "search_query"})
    assert len(cohere.json()["embeddings"][0]) == 1024


def test_the_option_sets_only_unknown_models(web: httpx.Client) -> None:
    """``--embedding-dimensions`` is the length of models the simulator knows no length of;
    known ones keep theirs."""
    with serve(create_app(SimOptions(embedding_dimensions=64))) as url:
        for model, length in (("some-local-embedder", 64), ("text-embedding-3-small", 1536)):
            answer = web.post(url + "/v1/embeddings", json={"model": model, "input": "hi"})
            assert len(answer.json()["data"][0]["embedding"]) == length
