"""A ``type: sagemaker`` provider behind a running gateway (openai SDK) against the simulator's
SageMaker runtime (SigV4 verified there), for both container formats; the simulator's streams
parsed by botocore's own EventStream against the sagemaker-runtime model; and the PayloadPart
line reassembly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import botocore.session
import httpx
import openai
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStream
from botocore.parsers import EventStreamJSONParser
from openai.types.chat import ChatCompletionMessageParam

from app import errors
from app.config import parse_config
from app.main import create_app
from app.providers.aws_http import aws_error
from app.providers.sagemaker import PartLines
from app.simulator.aws_auth import EXPIRED_ACCESS_KEY, TEST_ACCESS_KEY, TEST_SECRET_KEY
from tests.api.conftest import GatewayFactory, ListSink, RunningGateway, settings_in
from tests.servers import serve

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about tides"}]


@pytest.fixture
def run_gateway(tmp_path: Path) -> GatewayFactory:
    """A gateway on loopback from a raw config (master key on, strict telemetry)."""

    @contextmanager
    def start(raw: dict[str, Any]) -> Iterator[RunningGateway]:
        sink = ListSink()
        app = create_app(settings_in(tmp_path), config=parse_config(raw, {}), sink=sink,
                         strict_telemetry=True)
        with serve(app) as url:
            running = RunningGateway(url=url, sink=sink)
            try:
                yield running
            finally:
                running.close_clients()

    return start


def config(simulator: str, **over: Any) -> dict[str, Any]:
    provider = {"type": "sagemaker", "region": "eu-west-1", "base_url": f"{simulator}/sagemaker",
                "access_key_id": TEST_ACCESS_KEY, "secret_access_key": TEST_SECRET_KEY, **over}
    return {
        "providers": {"sm": provider},
        "models": {
            "vllm": {"targets": [{"provider": "sm", "model": "llama-vllm-endpoint",
                                  "params": {"inference_component": "llama-ic"}}]},
            "tgi": {"targets": [{"provider": "sm", "model": "mistral-tgi-endpoint",
                                 "params": {"format": "tgi"}}]},
        },
        "retries": {"attempts": 0},
    }


def sim_requests(simulator: str, n: int) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = httpx.get(f"{simulator}/_sim/requests?limit={n}").json()
    return received


def test_openai_format_chat_and_stream(run_gateway: GatewayFactory, simulator: str) -> None:
    """vLLM/LMI-style endpoints: OpenAI bodies at /invocations, streams relayed from PayloadPart
    events with the container's usage."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="vllm", messages=USER, max_tokens=6)
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage is not None and reply.usage.completion_tokens == 6
        (sent,) = sim_requests(simulator, 1)
        assert sent["path"] == "/sagemaker/endpoints/llama-vllm-endpoint/invocations"
        assert sent["headers"]["x-amzn-sagemaker-inference-component"] == "llama-ic"
        assert "model" not in sent["body"] and "inference_component" not in sent["body"]
        assert "/eu-west-1/sagemaker/aws4_request" in sent["headers"]["authorization"]
        chunks = list(client.chat.completions.create(
            model="vllm", messages=USER, stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("Simulated reply")
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
        (sent,) = sim_requests(simulator, 1)
        assert sent["path"].endswith("/invocations-response-stream")


def test_openai_format_sends_developer_as_system(run_gateway: GatewayFactory,
                                                simulator: str) -> None:
    """An OpenAI-style container (vLLM, LMI) hands roles to the model's chat template: a
    developer message is sent as a system one."""
    with run_gateway(config(simulator)) as gw:
        gw.client().chat.completions.create(
            model="vllm", max_tokens=3, messages=[{"role": "developer", "content": "Be brief"},
                                                  *USER])
        (sent,) = sim_requests(simulator, 1)
        assert [m["role"] for m in sent["body"]["messages"]] == ["system", "user"]


def test_openai_format_sampling_vllm_refuses(run_gateway: GatewayFactory,
                                             simulator: str) -> None:
    """An OpenAI-style container (vLLM) refuses top_p 0 and n > 1 with greedy sampling (the
    simulated one too): top_p 0 goes as temperature 0, n > 1 at temperature 0 is the gateway's
    400 naming n."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        client.chat.completions.create(model="vllm", max_tokens=3, messages=USER, top_p=0)
        (sent,) = sim_requests(simulator, 1)
        assert "top_p" not in sent["body"] and sent["body"]["temperature"] == 0
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="vllm", max_tokens=3, messages=USER, n=2,
                                           temperature=0)
        assert caught.value.body["param"] == "n"  # type: ignore[index]


def test_tgi_format_chat_and_completions(run_gateway: GatewayFactory, simulator: str) -> None:
    """TGI endpoints: chat as OpenAI messages (TGI's Messages API at /invocations),
    completions as {inputs, parameters}, streamed with stream: true."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="tgi", messages=USER, max_tokens=5)
        assert reply.choices[0].message.content
        completion = client.completions.create(model="tgi", prompt="Once upon", max_tokens=4)
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 4
        (sent,) = sim_requests(simulator, 1)
        assert sent["body"]["inputs"] == "Once upon"
        assert sent["body"]["parameters"]["max_new_tokens"] == 4
        chunks = list(client.completions.create(model="tgi", prompt="Once upon", max_tokens=4,
                                                stream=True))
        assert "".join(c.choices[0].text for c in chunks if c.choices)
        (sent,) = sim_requests(simulator, 1)
        assert sent["body"]["stream"] is True and "format" not in sent["body"]["parameters"]


def test_tgi_format_chat_is_played_by_tgi(run_gateway: GatewayFactory, simulator: str) -> None:
    """A TGI endpoint's chat is TGI's Messages API: json_object and json_schema go as TGI's
    grammar and come back as JSON; a developer message arrives as system, plain and
    streamed."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="tgi", messages=USER,
                                               response_format={"type": "json_object"})
        assert json.loads(reply.choices[0].message.content or "") == {}
        (sent,) = sim_requests(simulator, 1)
        assert sent["body"]["response_format"] == {"type": "json", "value": {"type": "object"}}
        reply = client.chat.completions.create(
            model="tgi", messages=[{"role": "developer", "content": "Be brief"}, *USER],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "x", "schema": schema}})
        assert json.loads(reply.choices[0].message.content or "") == {"a": 0}
        (sent,) = sim_requests(simulator, 1)
        assert [m["role"] for m in sent["body"]["messages"]] == ["system", "user"]
        chunks = list(client.chat.completions.create(
            model="tgi", messages=USER, stream=True,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "x", "schema": schema}}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert json.loads(text) == {"a": 0}


def test_container_refusal_is_mapped_like_any_upstream_4xx(run_gateway: GatewayFactory,
                                                          simulator: str) -> None:
    """A container's 4xx wrapped in SageMaker's ModelError reaches the client as a 400 with
    the message and param of the container's own error body, not its raw JSON."""
    with run_gateway(config(simulator)) as gw, pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="vllm", messages=USER,
                                            extra_body={"best_of": 2})
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["message"] == "best_of is not supported by this server; use n instead."
    assert error["param"] == "best_of"


@pytest.mark.parametrize(("original", "retryable", "status"), [
    (424, True, 502), (408, True, 502), (429, True, 502), (422, False, 400), (400, False, 400)])
def test_container_failure_is_retryable_and_refusal_is_the_clients(
        original: int, retryable: bool, status: int) -> None:
    """A ModelError wrapping a container's failed generation (TGI's 424), timeout (408) or
    overload (429) is a retryable 502, so the next target may serve the call; a refusal of
    the input (422, 400) is the client's 400."""
    body = json.dumps({"error": "Request failed during generation: CUDA out of memory",
                       "error_type": "generation"})
    payload = {"ErrorCode": "CLIENT_ERROR_FROM_MODEL", "OriginalStatusCode": original,
               "Message": f"Received client error ({original}) from primary",
               "OriginalMessage": body}
    error = aws_error(424, "ModelError", payload, "", service="AWS SageMaker (us-east-1)")
    assert isinstance(error, errors.UpstreamError)
    assert (error.retryable, error.status_code) == (retryable, status)


def test_tgi_container_refuses_both_token_limits(simulator: str) -> None:
    """The simulated TGI container refuses a chat body with max_tokens and
    max_completion_tokens (a duplicate field to TGI's parser); SageMaker wraps its 422."""
    url = f"{simulator}/sagemaker/endpoints/my-tgi-endpoint/invocations"
    data = json.dumps({"messages": USER, "max_tokens": 5, "max_completion_tokens": 7}).encode()
    request = AWSRequest(method="POST", url=url, data=data,
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(TEST_ACCESS_KEY, TEST_SECRET_KEY), "sagemaker",
              "us-east-1").add_auth(request)
    answer = httpx.post(url, content=data, headers=dict(request.headers.items()))
    assert answer.status_code == 424 and answer.json()["OriginalStatusCode"] == 422
    assert "duplicate field" in json.loads(answer.json()["OriginalMessage"])["error"]


def test_throttling_and_expired_credentials(run_gateway: GatewayFactory,
                                            simulator: str) -> None:
    """A ThrottlingException stays 429; expired credentials are a 502 naming SageMaker."""
    with run_gateway(config(simulator, headers={"X-Return-Error": "429"})) as gw, \
            pytest.raises(openai.RateLimitError):
        gw.client().chat.completions.create(model="vllm", messages=USER)
    with run_gateway(config(simulator, access_key_id=EXPIRED_ACCESS_KEY)) as gw, \
            pytest.raises(openai.APIStatusError) as caught:
        gw.client().chat.completions.create(model="vllm", messages=USER)
    assert caught.value.status_code == 502
    assert "AWS SageMaker (eu-west-1)" in str(caught.value)
    assert "ExpiredTokenException" in str(caught.value)


def test_container_refusal_is_a_400(run_gateway: GatewayFactory, simulator: str) -> None:
    """A container's 4xx arrives as SageMaker's ModelError (424) and reaches the client as a
    400 with the container's message."""
    with run_gateway(config(simulator)) as gw, pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="vllm", messages=USER, max_tokens=10**6)
    assert "max_tokens" in str(caught.value) or "context" in str(caught.value)


def test_botocore_parses_the_response_stream(simulator: str) -> None:
    """botocore's EventStream reads the simulator's PayloadPart events; their bytes rejoin to
    the container's own SSE stream."""
    url = f"{simulator}/sagemaker/endpoints/ep-1/invocations-response-stream"
    data = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                       "stream": True}).encode()
    request = AWSRequest(method="POST", url=url, data=data,
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(TEST_ACCESS_KEY, TEST_SECRET_KEY), "sagemaker",
              "us-east-1").add_auth(request)
    response = httpx.post(url, content=data, headers=dict(request.headers.items()))
    assert response.headers["content-type"] == "application/vnd.amazon.eventstream"
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    shape = model.operation_model("InvokeEndpointWithResponseStream").output_shape
    stream = EventStream(_Raw(response.content), shape.members["Body"], EventStreamJSONParser(),
                         "InvokeEndpointWithResponseStream")
    parts = [e["PayloadPart"]["Bytes"] for e in stream if "PayloadPart" in e]
    joined = b"".join(parts).decode()
    assert joined.rstrip().endswith("data: [DONE]")
    assert joined.count('"chat.completion.chunk"') >= 4


class _Raw:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self) -> Any:
        yield self._data

    def close(self) -> None:
        pass


def test_part_lines_reassemble_events_cut_anywhere() -> None:
    """SSE events cut at every byte across PayloadParts come out whole and in order."""
    stream = b'data: {"a":1}\n\ndata:{"b":2}\n\ndata: [DONE]\n\n'
    for cut in range(len(stream) + 1):
        lines = PartLines()
        events = lines.feed(stream[:cut]) + lines.feed(stream[cut:]) + lines.end()
        assert [e.data for e in events] == ['{"a":1}', '{"b":2}', "[DONE]"]


def test_part_lines_read_json_lines_cut_anywhere() -> None:
    """JSON lines (LMI's stream framing: no ``data:``, no ``[DONE]``) cut at every byte come
    out as one event a line, the last one without its newline too."""
    stream = b'{"a":1}\n{"b":2}\r\n{"c":3}'
    for cut in range(len(stream) + 1):
        lines = PartLines()
        events = lines.feed(stream[:cut]) + lines.feed(stream[cut:]) + lines.end()
        assert [e.data for e in events] == ['{"a":1}', '{"b":2}', '{"c":3}']


def test_a_role_chunk_before_the_first_token_does_not_stop_the_fallback(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """An OpenAI-format container that sends its role chunk at once and its first token long
    after its ``first_chunk_timeout_s`` is given up for the next target (the role chunk was
    taken for the first token, which committed the call to the silent container)."""
    raw = config(simulator)
    slow = {**raw["providers"]["sm"], "timeout_s": 60,
            "headers": {"X-Sim-Role-Early": "1", "X-Sim-TTFT-Ms": "30000"}}
    raw["providers"] = {"slow": slow, "sm": raw["providers"]["sm"]}
    raw["models"] = {"vllm": {"targets": [
        {"provider": name, "model": "llama-vllm-endpoint", "first_chunk_timeout_s": 0.5}
        for name in ("slow", "sm")]}}
    with run_gateway(raw) as gw:
        with gw.client().chat.completions.with_streaming_response.create(
                model="vllm", messages=USER, stream=True,
                extra_headers={"x-request-id": "sm-role-early"}) as streamed:
            chunks = [c for c in streamed.parse() if c.choices]
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks)
        record = gw.sink.emitted("sm-role-early")
        assert [(a.provider, a.status) for a in record.attempts] == [("slow", 504), ("sm", 200)]
