"""OpenAI's embedding models in the simulator take OpenAI's limits and answer its error shape
(``invalid_request_error``, ``code`` null but ``max_tokens_per_request``), on the ``/v1`` route
too, whose other errors are vLLM's."""

from __future__ import annotations

from typing import Any

import httpx

from app.simulator.embeddings import OPENAI_INPUT_TOKENS, OPENAI_REQUEST_TOKENS


def refusal(http: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = http.post("/v1/embeddings", json=body)
    assert answer.status_code == 400, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


def test_openai_limits_and_error_shape(http: httpx.Client) -> None:
    fixed = refusal(http, model="text-embedding-ada-002", input="hi", dimensions=256)
    assert (fixed["param"], fixed["code"]) == (None, None)
    wide = refusal(http, model="text-embedding-3-small", input="hi", dimensions=2000)
    assert (wide["param"], wide["code"]) == ("dimensions", None)
    assert "larger than 1536" in wide["message"]
    assert len(http.post("/v1/embeddings", json={
        "model": "text-embedding-3-large", "input": "hi", "dimensions": 3072,
    }).json()["data"][0]["embedding"]) == 3072
    long = refusal(http, model="text-embedding-3-small",
                   input=["ok", "word " * (OPENAI_INPUT_TOKENS + 500)])
    assert f"maximum context length is {OPENAI_INPUT_TOKENS} tokens" in long["message"]
    assert long["code"] is None
    many = refusal(http, model="text-embedding-3-small",
                   input=["word " * 4000] * (OPENAI_REQUEST_TOKENS // 4000 + 1))
    assert many["code"] == "max_tokens_per_request"
    assert f"max {OPENAI_REQUEST_TOKENS} tokens per request" in many["message"]
    assert http.post("/v1/embeddings", json={  # not OpenAI's model: no OpenAI limits
        "model": "some-local-embedder", "input": "word " * (OPENAI_INPUT_TOKENS + 500),
    }).status_code == 200
