"""The simulator's Google embeddings refuse an ``outputDimensionality`` past the model's own
size (it only truncates), as Google does, on the Gemini API and Vertex."""

from __future__ import annotations

import httpx

from app.simulator.gemini import API_KEY
from app.simulator.vertex import issue


def _gemini(http: httpx.Client, model: str, size: int) -> httpx.Response:
    return http.post(f"/gemini/v1beta/models/{model}:batchEmbedContents",
                     headers={"x-goog-api-key": API_KEY}, json={"requests": [{
                         "model": f"models/{model}", "outputDimensionality": size,
                         "content": {"parts": [{"text": "x"}]}}]})


def _vertex(http: httpx.Client, model: str, size: int) -> httpx.Response:
    return http.post(f"/vertex/v1/projects/p/locations/us-central1/publishers/google/models/"
                     f"{model}:predict",
                     headers={"authorization": "Bearer " + issue("t", lifetime_s=600)},
                     json={"instances": [{"content": "x"}],
                           "parameters": {"outputDimensionality": size}})


def test_gemini_embedding_takes_up_to_3072(http: httpx.Client) -> None:
    """gemini-embedding-001 answers 3072 floats at most; 5000 is a 400."""
    assert len(_gemini(http, "gemini-embedding-001", 3072).json()["embeddings"][0]["values"]) \
        == 3072
    refused = _gemini(http, "gemini-embedding-001", 5000)
    assert refused.status_code == 400 and "3072" in refused.json()["error"]["message"]
    assert _vertex(http, "gemini-embedding-001", 5000).status_code == 400


def test_vertex_text_embedding_takes_up_to_768(http: httpx.Client) -> None:
    """text-embedding-005 (768-d) refuses 2000 and answers 256."""
    assert _vertex(http, "text-embedding-005", 2000).status_code == 400
    answer = _vertex(http, "text-embedding-005", 256).json()
    assert len(answer["predictions"][0]["embeddings"]["values"]) == 256
