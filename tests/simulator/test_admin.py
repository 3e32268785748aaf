"""The /_sim/ admin endpoints: request log, stats, reset."""

from __future__ import annotations

import httpx

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hello"}]}


def test_request_log_shows_what_was_received(fresh: str,
                                             transport: httpx.HTTPTransport) -> None:
    """/_sim/requests lists path, query, lower-cased headers and parsed body, newest last."""
    http = httpx.Client(transport=transport, base_url=fresh, timeout=10)
    http.post("/v1/chat/completions", json=CHAT, headers={"X-Team": "Search"})
    http.post("/openai/deployments/d/embeddings", params={"api-version": "2024-10-21"},
              json={"input": "x"}, headers={"api-key": "k"})
    http.post("/v1/completions", content=b"not json")
    http.get("/_sim/stats")
    log = http.get("/_sim/requests").json()
    last = http.get("/_sim/requests", params={"limit": 1}).json()
    assert http.get("/_sim/requests", params={"limit": "x"}).status_code == 400
    assert [entry["path"] for entry in log] == [
        "/v1/chat/completions", "/openai/deployments/d/embeddings", "/v1/completions"]
    assert log[0]["headers"]["x-team"] == "Search" and log[0]["body"] == CHAT
    assert log[1]["query"] == "api-version=2024-10-21" and log[1]["headers"]["api-key"] == "k"
    assert log[2]["body"] is None
    assert last == log[-1:]


def test_stats_count_paths_and_streams(fresh: str,
                                       transport: httpx.HTTPTransport) -> None:
    """/_sim/stats counts requests per path and stream outcomes."""
    http = httpx.Client(transport=transport, base_url=fresh, timeout=10)
    http.post("/v1/chat/completions", json=CHAT)
    http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    http.get("/v1/models")
    body = http.get("/_sim/stats").json()
    assert body == {"requests": {"/v1/chat/completions": 2, "/v1/models": 1},
                    "streams_started": 1, "streams_completed": 1, "streams_cancelled": 0,
                    "streams_faulted": 0, "requests_cancelled": 0, "in_flight": 0}


def test_reset_clears_stats_log_state_and_metrics(fresh: str,
                                                  transport: httpx.HTTPTransport) -> None:
    """/_sim/reset forgets stats, the request log, admin state and metric counters."""
    http = httpx.Client(transport=transport, base_url=fresh, timeout=10)
    http.post("/v1/chat/completions", json=CHAT)
    http.post("/_sim/state", json={"num_requests_waiting": 4, "healthy": False})
    assert http.get("/health").status_code == 503
    assert http.post("/_sim/reset").status_code == 200
    assert http.get("/_sim/requests").json() == []
    assert http.get("/_sim/stats").json()["requests"] == {}
    assert http.get("/health").status_code == 200
    metrics = http.get("/metrics").text
    assert 'vllm:num_requests_waiting{model_name="sim-model",engine="0"} 0.0' in metrics
    assert 'vllm:prompt_tokens_total{model_name="sim-model",engine="0"} 0.0' in metrics


def test_unknown_routes(http: httpx.Client) -> None:
    """Unknown paths are 404 and known paths with the wrong method 405."""
    assert http.get("/v2/nothing").status_code == 404
    assert http.get("/v1/chat/completions").status_code == 405
    assert http.post("/openai/deployments/d/unknown?api-version=1").status_code == 404
