"""The vLLM dialect: extras, metrics, version-dependent errors and structured output."""

from __future__ import annotations

import re
import threading
import time

import httpx
import openai
import orjson
import pytest

from app.usage import estimate_tokens

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi there"}]}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"},
                                           "age": {"type": "integer", "minimum": 18}},
          "required": ["name", "age"]}


def content_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    text: str = response.json()["choices"][0]["message"]["content"]
    return text


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in metrics")


def test_health_and_version(simulator: str, old_vllm_simulator: str,
                            web: httpx.Client) -> None:
    """/health is 200 with an empty body; /version tells the version played."""
    health = web.get(f"{simulator}/health")
    assert health.status_code == 200 and health.content == b""
    assert web.get(f"{simulator}/version").json() == {"version": "0.12.0"}
    assert web.get(f"{old_vllm_simulator}/version").json() == {"version": "0.10.0"}


def test_tokenize_counts_agree_with_usage(http: httpx.Client) -> None:
    """/tokenize counts a prompt and messages exactly as usage.prompt_tokens does."""
    prompt = http.post("/tokenize", json={"model": "m", "prompt": "Hello, tokenizer world!"})
    body = prompt.json()
    assert body["count"] == len(body["tokens"]) == estimate_tokens("Hello, tokenizer world!")
    assert body["max_model_len"] == 8192
    assert all(isinstance(t, int) for t in body["tokens"])
    messages = http.post("/tokenize", json={"model": "m", "messages": CHAT["messages"]}).json()
    usage = http.post("/v1/chat/completions", json=CHAT).json()["usage"]
    assert messages["count"] == usage["prompt_tokens"]
    assert http.post("/tokenize", json={"model": "m"}).status_code == 400


def test_metrics_use_vllm_names_and_labels(fresh: str,
                                           transport: httpx.HTTPTransport) -> None:
    """/metrics: vLLM families with model_name and engine labels, counting real traffic."""
    http = httpx.Client(transport=transport, base_url=fresh, timeout=10)
    usage = http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4}).json()["usage"]
    http.post("/v1/chat/completions", json=CHAT)
    text = http.get("/metrics").text
    labels = {"model_name": "sim-model", "engine": "0"}
    assert "# TYPE vllm:num_requests_running gauge" in text
    assert "# TYPE vllm:e2e_request_latency_seconds histogram" in text
    assert metric(text, "vllm:prompt_tokens_total", **labels) == 2 * usage["prompt_tokens"]
    assert metric(text, "vllm:generation_tokens_total", **labels) == 4 + 16
    assert metric(text, "vllm:request_success_total", finished_reason="length") == 1
    assert metric(text, "vllm:request_success_total", finished_reason="stop") == 1
    assert metric(text, "vllm:e2e_request_latency_seconds_count", **labels) == 2
    assert metric(text, "vllm:time_to_first_token_seconds_bucket", le="+Inf") == 2
    assert metric(text, "vllm:inter_token_latency_seconds_count") == 3 + 15
    for name in ("vllm:kv_cache_usage_perc", "vllm:prefix_cache_hits_total",
                 "vllm:prefix_cache_queries_total", "vllm:num_requests_waiting"):
        metric(text, name, **labels)


def test_admin_state_is_reflected_in_metrics(fresh: str,
                                             transport: httpx.HTTPTransport) -> None:
    """POST /_sim/state sets the queue, KV-cache and prefix-hit gauges that /metrics shows."""
    http = httpx.Client(transport=transport, base_url=fresh, timeout=10)
    state = {"num_requests_waiting": 7, "num_requests_running": 3,
             "kv_cache_usage_perc": 0.42, "prefix_cache_hit_rate": 0.5}
    assert http.post("/_sim/state", json=state).status_code == 200
    http.post("/v1/chat/completions", json=CHAT)
    text = http.get("/metrics").text
    assert http.post("/_sim/state", json={"bogus": 1}).status_code == 400
    assert http.post("/_sim/state", json={"num_requests_waiting": -1}).status_code == 400
    assert metric(text, "vllm:num_requests_waiting") == 7
    assert metric(text, "vllm:num_requests_running") == 3
    assert metric(text, "vllm:kv_cache_usage_perc") == 0.42
    queries = metric(text, "vllm:prefix_cache_queries_total")
    assert metric(text, "vllm:prefix_cache_hits_total") == int(queries * 0.5)


def test_running_gauge_counts_in_flight_requests(fresh: str, web: httpx.Client) -> None:
    """num_requests_running includes requests being generated right now."""
    def slow() -> None:
        web.post(f"{fresh}/v1/chat/completions", json=CHAT,
                   headers={"X-Sim-TTFT-Ms": "400"}, timeout=10)

    worker = threading.Thread(target=slow)
    worker.start()
    seen = 0.0
    deadline = time.monotonic() + 5
    while seen < 1 and time.monotonic() < deadline:
        seen = metric(web.get(f"{fresh}/metrics").text, "vllm:num_requests_running")
        time.sleep(0.02)
    worker.join()
    assert seen == 1
    assert metric(web.get(f"{fresh}/metrics").text, "vllm:num_requests_running") == 0


def test_old_versions_use_gpu_metric_names(ancient_vllm_simulator: str, simulator: str,
                                           web: httpx.Client) -> None:
    """Before vLLM 0.10 the cache metrics are vllm:gpu_cache_usage_perc and gpu_prefix_cache_*."""
    old = web.get(f"{ancient_vllm_simulator}/metrics").text
    new = web.get(f"{simulator}/metrics").text
    assert "vllm:gpu_cache_usage_perc{" in old and "vllm:kv_cache_usage_perc" not in old
    assert "vllm:gpu_prefix_cache_hits_total{" in old
    assert "vllm:gpu_prefix_cache_queries_total{" in old
    assert "vllm:kv_cache_usage_perc{" in new and "gpu_" not in new


def test_error_bodies_follow_the_version(simulator: str, old_vllm_simulator: str,
                                         web: httpx.Client) -> None:
    """Up to 0.10.0 errors are flat {"object": "error", ...}; from 0.10.1 nested {"error": ...}."""
    bad = {"model": "m", "messages": []}
    old = web.post(f"{old_vllm_simulator}/v1/chat/completions", json=bad)
    new = web.post(f"{simulator}/v1/chat/completions", json=bad)
    assert old.status_code == new.status_code == 400
    flat = old.json()
    assert flat["object"] == "error" and flat["code"] == 400
    assert set(flat) == {"object", "message", "type", "param", "code"}
    assert set(new.json()) == {"error"}
    assert set(new.json()["error"]) == {"message", "type", "param", "code"}
    assert new.json()["error"]["code"] == 400 and new.json()["error"]["type"] == "BadRequestError"


def test_unknown_model_is_404_with_vllm_message(strict_simulator: str) -> None:
    """With a model list, another model is a 404 'The model `X` does not exist.'."""
    with openai.OpenAI(base_url=f"{strict_simulator}/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="gpt-9", messages=[{"role": "user",
                                                                     "content": "hi"}])
        assert caught.value.body == {"message": "The model `gpt-9` does not exist.",
                                     "type": "NotFoundError", "param": None, "code": 404}
        assert client.chat.completions.create(model="known-model", messages=[
            {"role": "user", "content": "hi"}]).model == "known-model"
        assert [m.id for m in client.models.list().data] == ["known-model"]


def test_context_length_error(strict_simulator: str, web: httpx.Client) -> None:
    """Prompt plus max_tokens beyond max_model_len is vLLM's 400 with the exact message."""
    messages = [{"role": "user", "content": "word " * 60}]
    response = web.post(f"{strict_simulator}/v1/chat/completions",
                          json={"model": "known-model", "messages": messages, "max_tokens": 200})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "This model's maximum context length is 256 tokens. However, you requested 263 tokens "
        "(63 in the messages, 200 in the completion). Please reduce the length of the messages "
        "or completion.")


@pytest.mark.parametrize("body", [
    {**CHAT, "best_of": 2},
    {**CHAT, "n": 0},
    {**CHAT, "max_tokens": "ten"},
    {"model": "m"},
    {**CHAT, "stop": 5},
])
def test_validation_errors_are_400(http: httpx.Client, body: dict[str, object]) -> None:
    """best_of and malformed parameters are 400 (never 422)."""
    assert http.post("/v1/chat/completions", json=body).status_code == 400


def test_invalid_json_is_400(http: httpx.Client) -> None:
    """A body that is not JSON is a 400 in the vLLM shape."""
    response = http.post("/v1/chat/completions", content=b"{nope",
                         headers={"content-type": "application/json"})
    assert response.status_code == 400 and "error" in response.json()


def test_unknown_sampling_fields_are_accepted(http: httpx.Client) -> None:
    """vLLM's extra sampling fields are accepted and ignored."""
    body = {**CHAT, "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "whatever": [1]}
    assert content_of(http.post("/v1/chat/completions", json=body))


def test_structured_outputs_from_0_12(http: httpx.Client) -> None:
    """vLLM >= 0.12 honours structured_outputs and silently ignores guided_*."""
    as_json = content_of(http.post("/v1/chat/completions", json={
        **CHAT, "structured_outputs": {"json": SCHEMA}}))
    assert orjson.loads(as_json) == {"name": "", "age": 18}
    choice = http.post("/v1/chat/completions", json={
        **CHAT, "structured_outputs": {"choice": ["yes", "no"]}})
    assert content_of(choice) == "yes"
    regex = content_of(http.post("/v1/chat/completions", json={
        **CHAT, "structured_outputs": {"regex": r"[A-Z]{2}-\d{3}"}}))
    assert re.fullmatch(r"[A-Z]{2}-\d{3}", regex)
    grammar = http.post("/v1/chat/completions", json={
        **CHAT, "structured_outputs": {"grammar": 'root ::= "on" | "off"'}})
    assert content_of(grammar) == "on"
    ignored = http.post("/v1/chat/completions", json={**CHAT, "guided_choice": ["yes", "no"]})
    assert content_of(ignored).startswith("Simulated reply")


def test_guided_fields_before_0_12(old_vllm_simulator: str, web: httpx.Client) -> None:
    """vLLM < 0.12 honours guided_json/guided_choice and silently ignores structured_outputs."""
    url = f"{old_vllm_simulator}/v1/chat/completions"
    as_json = content_of(web.post(url, json={**CHAT, "guided_json": SCHEMA}))
    assert orjson.loads(as_json) == {"name": "", "age": 18}
    assert content_of(web.post(url, json={**CHAT, "guided_choice": ["b", "c"]})) == "b"
    ignored = web.post(url, json={**CHAT, "structured_outputs": {"choice": ["b"]}})
    assert content_of(ignored).startswith("Simulated reply")


def test_response_format_works_in_every_version(simulator: str, old_vllm_simulator: str,
                                                web: httpx.Client) -> None:
    """response_format json_schema and json_object give JSON content on old and new versions."""
    schema_format = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}
    for url in (simulator, old_vllm_simulator):
        answer = web.post(f"{url}/v1/chat/completions",
                            json={**CHAT, "response_format": schema_format})
        assert orjson.loads(content_of(answer)) == {"name": "", "age": 18}
        plain = web.post(f"{url}/v1/chat/completions",
                           json={**CHAT, "response_format": {"type": "json_object"}})
        assert list(orjson.loads(content_of(plain))) == ["reply"]


def test_stop_reason_names_the_stop_string(simulator: str, web: httpx.Client) -> None:
    """vLLM's choices carry stop_reason: the stop string that ended the answer, else null;
    streamed, on the finish chunk; chat and completions alike."""
    chat = web.post(f"{simulator}/v1/chat/completions", json={**CHAT, "stop": ["x", "reply"]})
    assert chat.json()["choices"][0]["stop_reason"] == "reply"
    plain = web.post(f"{simulator}/v1/chat/completions", json=CHAT)
    assert plain.json()["choices"][0]["stop_reason"] is None
    text = web.post(f"{simulator}/v1/completions",
                    json={"model": "m", "prompt": "Hi there", "stop": "reply"})
    assert text.json()["choices"][0]["stop_reason"] == "reply"
    for path, body in (("/v1/chat/completions", CHAT),
                       ("/v1/completions", {"model": "m", "prompt": "Hi there"})):
        streamed = web.post(f"{simulator}{path}", json={**body, "stop": ["reply"],
                                                        "stream": True})
        chunks = [orjson.loads(line[6:]) for line in streamed.text.splitlines()
                  if line.startswith("data: {")]
        finishing = [c["choices"][0] for c in chunks if c["choices"][0]["finish_reason"]]
        assert [c.get("stop_reason") for c in finishing] == ["reply"]
