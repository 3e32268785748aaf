"""Vertex's text-embeddings models read at most 2,048 tokens of a text: a longer one is
truncated and counted as read under ``autoTruncate`` (the default), a 400 without."""

from __future__ import annotations

from typing import Any

import httpx

from app.simulator.vertex import MAX_TEXT_TOKENS, issue


def _predict(http: httpx.Client, text: str, **parameters: Any) -> httpx.Response:
    return http.post("/vertex/v1/projects/p/locations/us-central1/publishers/google/models/"
                     "text-embedding-005:predict",
                     headers={"authorization": "Bearer " + issue("t", lifetime_s=600)},
                     json={"instances": [{"content": text}, {"content": "short one"}],
                           "parameters": parameters})


def test_long_text_truncated_and_counted_as_read(http: httpx.Client) -> None:
    long = "word " * 16_000
    answer = _predict(http, long)
    assert answer.status_code == 200, answer.text
    first, second = (p["embeddings"]["statistics"] for p in answer.json()["predictions"])
    assert first == {"truncated": True, "token_count": MAX_TEXT_TOKENS}
    assert second["truncated"] is False and second["token_count"] < 10
    refused = _predict(http, long, autoTruncate=False)
    assert refused.status_code == 400
    assert f"supports up to {MAX_TEXT_TOKENS}" in refused.json()["error"]["message"]
