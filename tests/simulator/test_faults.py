"""Failure injection, latency and drift knobs, and client-disconnect handling."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pytest

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Count to ten"}]}
STREAM = {**CHAT, "stream": True}


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def stats(client: httpx.Client, url: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"{url}/_sim/stats").json()
    return body


@pytest.mark.parametrize(("status", "error"), [
    (400, openai.BadRequestError), (401, openai.AuthenticationError),
    (404, openai.NotFoundError), (429, openai.RateLimitError),
    (500, openai.InternalServerError), (503, openai.InternalServerError),
])
def test_return_error_maps_to_sdk_exceptions(
    oai: openai.OpenAI, status: int, error: type[openai.APIStatusError]
) -> None:
    """X-Return-Error answers that status with the dialect's body; the SDK raises its class."""
    with pytest.raises(error) as caught:
        oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                    extra_headers={"X-Return-Error": str(status)})
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == status


def test_429_carries_retry_after(http: httpx.Client, web: httpx.Client,
                                 old_vllm_simulator: str) -> None:
    """A 429 has Retry-After: 1; on old vLLM the body is flat."""
    response = http.post("/v1/chat/completions", json=CHAT, headers={"X-Return-Error": "429"})
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    old = web.post(f"{old_vllm_simulator}/v1/embeddings", json={"model": "e", "input": "x"},
                     headers={"X-Return-Error": "429"})
    assert old.status_code == 429 and old.json()["object"] == "error"


def test_return_error_on_every_generation_route(http: httpx.Client) -> None:
    """Completions, embeddings and Azure routes honour X-Return-Error too."""
    headers = {"X-Return-Error": "503", "api-key": "k"}
    for path, body in (("/v1/completions", {"model": "m", "prompt": "x"}),
                       ("/v1/embeddings", {"model": "m", "input": "x"}),
                       ("/openai/deployments/d/chat/completions?api-version=1", CHAT)):
        response = http.post(path, json=body, headers=headers)
        assert response.status_code == 503 and "error" in response.json()


def test_malformed_knob_is_400(http: httpx.Client) -> None:
    """A knob header that is not a number is a 400, not silently ignored."""
    response = http.post("/v1/chat/completions", json=CHAT, headers={"X-Sim-Cut-After": "two"})
    assert response.status_code == 400
    assert "x-sim-cut-after" in response.json()["error"]["message"].lower()


def test_cut_after_drops_the_stream(fresh: str, web: httpx.Client) -> None:
    """X-Sim-Cut-After: N sends N content chunks then drops the connection, with no [DONE]."""
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError), web.stream(
            "POST", f"{fresh}/v1/chat/completions", json=STREAM,
            headers={"X-Sim-Cut-After": "3"}) as response:
        lines.extend(line for line in response.iter_lines() if line)
    assert wait_for(lambda: stats(web, fresh)["streams_faulted"] == 1)
    contents = [orjson.loads(line[6:])["choices"][0]["delta"].get("content") for line in lines]
    assert contents[0] == "" and len(contents) == 4 and all(contents[1:])
    assert "data: [DONE]" not in lines


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/messages"])
def test_cut_body_drops_a_complete_answer_short_of_its_length(http: httpx.Client,
                                                              path: str) -> None:
    """X-Sim-Cut-Body: N sends a 200 answer's headers, its whole Content-Length among them,
    and N bytes of its body, then drops the connection; a stream is left to X-Sim-Cut-After."""
    body = {"model": "m", "prompt": "x", "max_tokens": 5} if path == "/v1/completions" else \
        {**CHAT, "max_tokens": 5}
    key = {"x-api-key": "k", "anthropic-version": "2023-06-01"}  # Anthropic's route wants one
    whole = http.post(path, json=body, headers=key)
    assert whole.status_code == 200
    with pytest.raises(httpx.RemoteProtocolError), http.stream(
            "POST", path, json=body, headers={**key, "X-Sim-Cut-Body": "10"}) as response:
        assert response.status_code == 200 and int(response.headers["content-length"]) > 10
        response.read()
    streamed = http.post("/v1/chat/completions", json=STREAM, headers={"X-Sim-Cut-Body": "10"})
    assert streamed.text.endswith("data: [DONE]\n\n")


def test_garbage_answers_200_with_html(http: httpx.Client) -> None:
    """X-Sim-Garbage: 1 answers 200 with an HTML page instead of the JSON answer."""
    response = http.post("/v1/chat/completions", json=CHAT, headers={"X-Sim-Garbage": "1"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<html>")
    failed = http.post("/v1/chat/completions", json=CHAT,
                       headers={"X-Sim-Garbage": "1", "X-Return-Error": "503"})
    assert failed.status_code == 503 and "error" in failed.json()  # errors stay as they are


def test_usage_count_says_what_it_is_told(http: httpx.Client) -> None:
    """X-Sim-Usage-Count: name=JSON puts JSON where the count's number was, in a complete
    answer (its Content-Length matching) and in a stream's usage frame; a malformed one is a
    400."""
    answer = http.post("/v1/chat/completions", json=CHAT,
                       headers={"X-Sim-Usage-Count": 'completion_tokens="16"'})
    assert answer.status_code == 200
    assert answer.json()["usage"]["completion_tokens"] == "16"
    assert int(answer.headers["content-length"]) == len(answer.content)
    body = {**STREAM, "stream_options": {"include_usage": True}}
    raw = http.post("/v1/chat/completions", json=body,
                    headers={"X-Sim-Usage-Count": "prompt_tokens=13.5"})
    frames = [f.removeprefix("data: ") for f in raw.text.split("\n\n") if f]
    assert orjson.loads(frames[-2])["usage"]["prompt_tokens"] == 13.5
    for bad in ("completion_tokens", "completion_tokens=", "x y=1", "completion_tokens=nope"):
        refused = http.post("/v1/chat/completions", json=CHAT,
                            headers={"X-Sim-Usage-Count": bad})
        assert refused.status_code == 400, bad


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_done_after_ends_without_finish_reason(http: httpx.Client, path: str) -> None:
    """X-Sim-Done-After: N sends N content chunks, the usage frame and [DONE], and no chunk
    carries a finish_reason."""
    body = {**STREAM, "stream_options": {"include_usage": True}}
    if path == "/v1/completions":
        body = {"model": "m", "prompt": "Count to ten", "stream": True,
                "stream_options": {"include_usage": True}}
    raw = http.post(path, json=body, headers={"X-Sim-Done-After": "2"})
    frames = [f.removeprefix("data: ") for f in raw.text.split("\n\n") if f]
    assert frames[-1] == "[DONE]"
    chunks = [orjson.loads(f) for f in frames[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]
    assert all(c["finish_reason"] is None for chunk in chunks for c in chunk["choices"])
    texts = [c.get("text") or c.get("delta", {}).get("content")
             for chunk in chunks for c in chunk["choices"]]
    assert len([t for t in texts if t]) == 2


def test_error_after_sends_error_frame_then_done(oai: openai.OpenAI, http: httpx.Client) -> None:
    """X-Sim-Error-After: N sends N chunks, a data: {"error": ...} frame, then [DONE]."""
    raw = http.post("/v1/chat/completions", json=STREAM, headers={"X-Sim-Error-After": "2"})
    frames = [f for f in raw.text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    error = orjson.loads(frames[-2].removeprefix("data: "))
    assert set(error) == {"error"} and error["error"]["code"] == 500
    assert len(frames) == 1 + 2 + 2  # role chunk, two content chunks, error, [DONE]
    received: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in oai.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}], stream=True,
                extra_headers={"X-Sim-Error-After": "2"}):
            received.append(chunk.choices[0].delta.content or "")
    assert len([r for r in received if r]) == 2


def test_error_after_on_old_vllm_is_flat_inside(old_vllm_simulator: str,
                                                web: httpx.Client) -> None:
    """On vLLM <= 0.10.0 the mid-stream frame wraps the flat error object."""
    raw = web.post(f"{old_vllm_simulator}/v1/chat/completions", json=STREAM,
                     headers={"X-Sim-Error-After": "0"}).text
    error = orjson.loads(raw.split("\n\n")[-3].removeprefix("data: "))
    assert error["error"]["object"] == "error"


def test_hang_never_answers_and_counts_cancelled(fresh: str, web: httpx.Client) -> None:
    """X-Sim-Hang never answers; the client's timeout disconnects and the hang ends."""
    with pytest.raises(httpx.ReadTimeout):
        web.post(f"{fresh}/v1/chat/completions", json=CHAT, headers={"X-Sim-Hang": "1"},
                   timeout=0.3)
    assert wait_for(lambda: stats(web, fresh)["requests_cancelled"] == 1)
    assert stats(web, fresh)["in_flight"] == 0


def test_client_disconnect_cancels_the_stream(fresh: str, web: httpx.Client) -> None:
    """A client leaving mid-stream is counted as cancelled and generation stops."""
    with httpx.Client(base_url=fresh) as http, http.stream(
            "POST", "/v1/chat/completions", json={**STREAM, "max_tokens": 200},
            headers={"X-Sim-TPOT-Ms": "20", "X-Sim-Completion-Tokens": "200"}) as response:
        for index, _ in enumerate(response.iter_lines()):
            if index == 4:
                break
    assert wait_for(lambda: stats(web, fresh)["streams_cancelled"] == 1)
    current = stats(web, fresh)
    assert current["streams_started"] == 1 and current["streams_completed"] == 0
    assert current["in_flight"] == 0
    metrics = web.get(f"{fresh}/metrics").text
    assert 'finished_reason="abort"} 1.0' in metrics
    generated = [line for line in metrics.splitlines()
                 if line.startswith("vllm:generation_tokens_total{")]
    assert float(generated[0].rsplit(" ", 1)[1]) < 200


def test_ttft_header_delays_the_first_token(http: httpx.Client) -> None:
    """X-Sim-TTFT-Ms delays a complete answer and a stream's first content chunk."""
    started = time.monotonic()
    http.post("/v1/chat/completions", json=CHAT, headers={"X-Sim-TTFT-Ms": "150"})
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    with http.stream("POST", "/v1/chat/completions", json=STREAM,
                     headers={"X-Sim-TTFT-Ms": "150"}) as response:
        first = next(line for line in response.iter_lines() if line)
        assert time.monotonic() - started >= 0.15 and first.startswith("data: ")


def test_drift_knobs(oai: openai.OpenAI) -> None:
    """Refusal, fingerprint and model headers change what the answer reports."""
    answer = oai.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}],
        extra_headers={"X-Sim-Refusal": "1", "X-Sim-Fingerprint": "fp_drift1",
                       "X-Sim-Model": "m-2025-01-01"})
    assert answer.choices[0].message.content == "I'm sorry, but I can't help with that."
    assert answer.system_fingerprint == "fp_drift1" and answer.model == "m-2025-01-01"


def test_cache_read_header_on_openai_routes(oai: openai.OpenAI) -> None:
    """X-Sim-Cache-Read-Tokens reports cached prompt tokens in prompt_tokens_details."""
    answer = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                         extra_headers={"X-Sim-Cache-Read-Tokens": "2"})
    assert answer.usage is not None and answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 2


def test_split_pair_sends_an_emoji_as_two_escaped_halves(http: httpx.Client) -> None:
    """X-Sim-Split-Pair: 1 follows the first text chunk with two chunks whose content is each
    the JSON escape of one UTF-16 half of U+1F600 (orjson refuses each alone; the standard
    library reads them)."""
    raw = http.post("/v1/chat/completions", json=STREAM, headers={"X-Sim-Split-Pair": "1"})
    frames = [f.removeprefix("data: ") for f in raw.text.split("\n\n") if f]
    assert '"content":"\\ud83d"' in frames[2] and '"content":"\\ude00"' in frames[3]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(frames[2])
    texts = [c["delta"].get("content") or "" for f in frames[:-1]
             for c in json.loads(f)["choices"]]
    assert (texts[2], texts[3]) == ("\ud83d", "\ude00") and texts[1]
