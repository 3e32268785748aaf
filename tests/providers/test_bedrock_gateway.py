"""A ``type: bedrock`` provider behind a running gateway, driven by the openai and anthropic SDKs,
against the simulator's Bedrock dialect (SigV4 verified there): chat, streams with usage, tools,
structured output, Titan and Cohere embeddings, throttling, refused and expired credentials,
credentials refreshed mid-run, Claude through /v1/messages; and the simulator's answers parsed
by botocore's own parsers against its bedrock-runtime service model."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import botocore.session
import httpx
import openai
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStream
from botocore.parsers import EventStreamJSONParser, create_parser
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from app.config import parse_config
from app.main import create_app
from app.simulator.aws_auth import (
    BEDROCK_API_KEY,
    EXPIRED_ACCESS_KEY,
    ROTATED_ACCESS_KEY,
    ROTATED_SECRET_KEY,
    ROTATED_SESSION_TOKEN,
    TEST_ACCESS_KEY,
    TEST_SECRET_KEY,
)
from app.simulator.bedrock_request import TOOL_SPEC_KEYS
from app.simulator.content import split_tokens
from tests.api.conftest import MASTER_KEY, GatewayFactory, ListSink, RunningGateway, settings_in
from tests.servers import serve

CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"
PROFILE_ARN = ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
               "us.anthropic.claude-3-5-haiku-20241022-v1:0")
USER: list[ChatCompletionMessageParam] = [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Tell me about tides"}]
WEATHER: ChatCompletionToolParam = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def provider(simulator: str, **over: Any) -> dict[str, Any]:
    return {"type": "bedrock", "region": "us-east-1", "base_url": f"{simulator}/bedrock",
            "access_key_id": TEST_ACCESS_KEY, "secret_access_key": TEST_SECRET_KEY, **over}


def config(simulator: str, **over: Any) -> dict[str, Any]:
    return {
        "providers": {"aws": provider(simulator, **over)},
        "models": {
            "claude": {"targets": [{"provider": "aws", "model": CLAUDE}]},
            "profile": {"targets": [{"provider": "aws", "model": PROFILE_ARN}]},
            "titan": {"targets": [{"provider": "aws",
                                   "model": "amazon.titan-embed-text-v2:0"}]},
            "cohere": {"targets": [{"provider": "aws", "model": "cohere.embed-english-v3",
                                    "params": {"input_type": "search_query"}}]},
            "cohere4": {"targets": [{"provider": "aws", "model": "cohere.embed-v4:0"}]},
            "cohere3-sized": {"targets": [{"provider": "aws", "model": "cohere.embed-english-v3",
                                           "params": {"output_dimension": 512}}]},
        },
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }


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


def sim_requests(simulator: str, n: int) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = httpx.get(f"{simulator}/_sim/requests?limit={n}").json()
    return received


def test_chat_stream_tools_and_structured_output(run_gateway: GatewayFactory,
                                                 simulator: str) -> None:
    """Chat, a streamed chat with usage, a forced tool and a json_schema answer through
    Converse, every request SigV4-signed and the model id encoded in the path."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="claude", messages=USER, max_tokens=8)
        assert reply.choices[0].message.content
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage is not None and reply.usage.completion_tokens == 8
        (sent,) = sim_requests(simulator, 1)
        assert sent["path"] == f"/bedrock/model/{CLAUDE}/converse"
        assert sent["headers"]["authorization"].startswith(
            f"AWS4-HMAC-SHA256 Credential={TEST_ACCESS_KEY}/")
        body = sent["body"]
        assert body["system"] == [{"text": "Be brief."}]
        assert body["inferenceConfig"] == {"maxTokens": 8}
        chunks = list(client.chat.completions.create(
            model="profile", messages=USER, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("Simulated reply")
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
        tool = client.chat.completions.create(
            model="claude", messages=USER, tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        call = (tool.choices[0].message.tool_calls or [])[0]
        assert tool.choices[0].finish_reason == "tool_calls"
        assert call.type == "function"
        assert call.function.name == "get_weather" and "city" in json.loads(
            call.function.arguments)
        structured = client.chat.completions.create(
            model="claude", messages=USER, response_format={
                "type": "json_schema", "json_schema": {"name": "tide", "schema": {
                    "type": "object", "properties": {"height": {"type": "number"}},
                    "required": ["height"]}}})
        assert "height" in json.loads(structured.choices[0].message.content or "")
        costs = [r.cost_usd for r in gw.sink.records]
        assert len(costs) == 4


def test_streamed_tool_call(run_gateway: GatewayFactory, simulator: str) -> None:
    """A streamed tool call arrives as OpenAI tool-call deltas whose arguments join to JSON."""
    with run_gateway(config(simulator)) as gw:
        chunks = list(gw.client().chat.completions.create(
            model="claude", messages=USER, tools=[WEATHER], tool_choice="required",
            stream=True))
        calls = [c.choices[0].delta.tool_calls for c in chunks
                 if c.choices and c.choices[0].delta.tool_calls]
        assert calls[0][0].function is not None and calls[0][0].function.name == "get_weather"
        arguments = "".join((d[0].function.arguments or "") for d in calls if d[0].function)
        assert "city" in json.loads(arguments)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_strict_tool_reaches_converse_as_tool_spec_strict(run_gateway: GatewayFactory,
                                                          simulator: str) -> None:
    """A strict tool (as the SDK's pydantic_function_tool makes them) reaches Converse as
    toolSpec.strict: true, and its call comes back; it used to be dropped without a word."""
    strict: ChatCompletionToolParam = {"type": "function", "function": {
        **WEATHER["function"], "strict": True,
        "parameters": {**WEATHER["function"]["parameters"], "additionalProperties": False}}}
    with run_gateway(config(simulator)) as gw:
        reply = gw.client().chat.completions.create(model="claude", messages=USER,
                                                    tools=[strict], tool_choice="required")
        (sent,) = sim_requests(simulator, 1)
    assert sent["body"]["toolConfig"]["tools"][0]["toolSpec"]["strict"] is True
    call = (reply.choices[0].message.tool_calls or [])[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert reply.choices[0].finish_reason == "tool_calls"


def test_embeddings_titan_and_cohere(run_gateway: GatewayFactory, simulator: str) -> None:
    """Titan (one text a call, rejoined in order) and Cohere (batches of 96) embeddings."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        texts = [f"text number {i}" for i in range(5)]
        titan = client.embeddings.create(model="titan", input=texts, dimensions=256)
        assert [len(d.embedding) for d in titan.data] == [256] * 5
        single = client.embeddings.create(model="titan", input=texts[3], dimensions=256)
        assert single.data[0].embedding == titan.data[3].embedding
        assert titan.usage.prompt_tokens == 5 * 3
        many = [f"doc {i}" for i in range(100)]
        cohere = client.embeddings.create(model="cohere", input=many)
        assert len(cohere.data) == 100 and len(cohere.data[0].embedding) == 1024
        assert cohere.usage.prompt_tokens == 200
        bodies = [r["body"] for r in sim_requests(simulator, 2)]
        assert sorted(len(b["texts"]) for b in bodies) == [4, 96]
        assert all(b["input_type"] == "search_query" for b in bodies)


def test_cohere_embed_v4_dimensions(run_gateway: GatewayFactory, simulator: str) -> None:
    """Embed v4 takes dimensions as output_dimension (AWS's 256/512/1024/1536; its own 1536
    without); another value is the gateway's 400; v3 sent an output_dimension is Bedrock's
    400."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        sized = client.embeddings.create(model="cohere4", input=["a", "b"], dimensions=512)
        assert [len(d.embedding) for d in sized.data] == [512, 512]
        assert sim_requests(simulator, 1)[0]["body"]["output_dimension"] == 512
        full = client.embeddings.create(model="cohere4", input="a")
        assert len(full.data[0].embedding) == 1536
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model="cohere4", input="a", dimensions=300)
        assert caught.value.body["param"] == "dimensions"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model="cohere3-sized", input="a")
        assert "extraneous key [output_dimension]" in caught.value.message


def test_throttling_stays_429_with_retry_after(run_gateway: GatewayFactory,
                                               simulator: str) -> None:
    """An upstream ThrottlingException is a 429 with the upstream's Retry-After."""
    raw = config(simulator, headers={"X-Return-Error": "429"})
    with run_gateway(raw) as gw:
        with pytest.raises(openai.RateLimitError) as caught:
            gw.client().chat.completions.create(model="claude", messages=USER)
        assert caught.value.response.headers.get("retry-after") == "1"


@pytest.mark.parametrize(("over", "kind"), [
    ({"access_key_id": EXPIRED_ACCESS_KEY}, "ExpiredTokenException"),
    ({"secret_access_key": "wrong-secret-0123456789"}, "InvalidSignatureException"),
    ({"api_key": "ABSK-not-the-key", "access_key_id": None, "secret_access_key": None},
     "UnrecognizedClientException"),
])
def test_refused_credentials_are_a_clear_502(run_gateway: GatewayFactory, simulator: str,
                                             over: dict[str, Any], kind: str) -> None:
    """Expired, wrongly signed or unknown credentials: a 502 naming Bedrock, never a secret."""
    raw = config(simulator, **over)
    raw["providers"]["aws"] = {k: v for k, v in raw["providers"]["aws"].items()
                               if v is not None}
    with run_gateway(raw) as gw, pytest.raises(openai.APIStatusError) as caught:
        gw.client().chat.completions.create(model="claude", messages=USER)
    assert caught.value.status_code == 502
    message = str(caught.value)
    assert "AWS Bedrock (us-east-1)" in message and kind in message
    assert "wrong-secret" not in message and TEST_SECRET_KEY not in message
    assert "ABSK-not-the-key" not in message


def test_bedrock_api_key(run_gateway: GatewayFactory, simulator: str) -> None:
    """A Bedrock API key travels as Authorization: Bearer, no signature."""
    raw = config(simulator)
    raw["providers"]["aws"] = {"type": "bedrock", "region": "us-west-2",
                               "base_url": f"{simulator}/bedrock", "api_key": BEDROCK_API_KEY}
    with run_gateway(raw) as gw:
        reply = gw.client().chat.completions.create(model="claude", messages=USER)
    assert reply.choices[0].message.content
    (sent,) = sim_requests(simulator, 1)
    assert sent["headers"]["authorization"] == f"Bearer {BEDROCK_API_KEY}"


def process_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Profile ``sim`` of botocore's chain: a credential_process handing out the keys written
    to the returned file (and nothing else in the environment for botocore to find)."""
    keys = tmp_path / "keys.json"
    script = tmp_path / "creds.py"
    script.write_text(
        "import datetime, json, pathlib\n"
        f"keys = json.loads(pathlib.Path({str(keys)!r}).read_text())\n"
        "expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=12)\n"
        "print(json.dumps({'Version': 1, **keys, 'Expiration': expires.isoformat()}))\n")
    aws_config = tmp_path / "aws-config"
    aws_config.write_text(f"[profile sim]\ncredential_process = {sys.executable} {script}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return keys


def profile_config(simulator: str, **over: Any) -> dict[str, Any]:
    """``config`` with no keys of its own: profile ``sim`` (``process_profile``)."""
    raw = config(simulator, access_key_id=None, secret_access_key=None, profile="sim", **over)
    raw["providers"]["aws"] = {k: v for k, v in raw["providers"]["aws"].items()
                               if v is not None}
    return raw


def test_credentials_refreshed_mid_run(run_gateway: GatewayFactory, simulator: str,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials from botocore's chain (a credential_process profile) are re-read when their
    check interval passes: the next request is signed with the rotated key."""
    keys = process_profile(tmp_path, monkeypatch)
    keys.write_text(json.dumps({"AccessKeyId": TEST_ACCESS_KEY,
                                "SecretAccessKey": TEST_SECRET_KEY}))
    raw = profile_config(simulator, credential_check_s=0.05)
    with run_gateway(raw) as gw:
        client = gw.client()
        client.chat.completions.create(model="claude", messages=USER)
        keys.write_text(json.dumps({"AccessKeyId": ROTATED_ACCESS_KEY,
                                    "SecretAccessKey": ROTATED_SECRET_KEY,
                                    "SessionToken": ROTATED_SESSION_TOKEN}))
        time.sleep(0.1)  # past credential_check_s: the next request asks botocore again
        client.chat.completions.create(model="claude", messages=USER)
    first, second = sim_requests(simulator, 2)
    assert f"Credential={TEST_ACCESS_KEY}/" in first["headers"]["authorization"]
    assert f"Credential={ROTATED_ACCESS_KEY}/" in second["headers"]["authorization"]
    assert second["headers"]["x-amz-security-token"] == ROTATED_SESSION_TOKEN


def test_mid_stream_error_never_carries_chain_credentials(
        run_gateway: GatewayFactory, simulator: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream whose in-band exception echoes the Authorization header signed with credentials
    from botocore's chain (not the config): the client's error frame and the call record show
    ``[redacted]`` for the whole header, access key id and signature included."""
    keys = process_profile(tmp_path, monkeypatch)
    keys.write_text(json.dumps({"AccessKeyId": ROTATED_ACCESS_KEY,
                                "SecretAccessKey": ROTATED_SECRET_KEY,
                                "SessionToken": ROTATED_SESSION_TOKEN}))
    raw = profile_config(simulator, headers={"X-Sim-Error-After": "1", "X-Sim-Echo-Key": "1"})
    with run_gateway(raw) as gw:
        with gw.http().stream("POST", "/v1/chat/completions",
                              headers={"x-request-id": "aws-mid"},
                              json={"model": "claude", "messages": USER,
                                    "stream": True}) as answer:
            text = answer.read().decode()
        record = gw.sink.by_id("aws-mid")
    (sent,) = sim_requests(simulator, 1)
    assert f"Credential={ROTATED_ACCESS_KEY}/" in sent["headers"]["authorization"]
    frames = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert answer.status_code == 200 and "error" in frames[-1]
    signature = sent["headers"]["authorization"].rsplit("Signature=", 1)[1]
    assert ROTATED_ACCESS_KEY not in text and signature not in text
    assert frames[-1]["error"]["message"].endswith("Received credential: [redacted]")
    assert record.error_message and ROTATED_ACCESS_KEY not in record.error_message
    assert record.error_message.endswith("Received credential: [redacted]")


def test_claude_messages_native(run_gateway: GatewayFactory, simulator: str) -> None:
    """/v1/messages to Claude on Bedrock goes untranslated through InvokeModel (plain and with
    a response stream) and the anthropic SDK reads the answers."""
    with run_gateway(config(simulator)) as gw:
        client = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY,
                                     max_retries=0)
        message = client.messages.create(model="claude", max_tokens=6, messages=[
            {"role": "user", "content": "Tell me about tides"}])
        assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 6
        (sent,) = sim_requests(simulator, 1)
        assert sent["path"] == f"/bedrock/model/{CLAUDE}/invoke"
        body = sent["body"]
        assert body["anthropic_version"] == "bedrock-2023-05-31" and "model" not in body
        with client.messages.stream(model="claude", max_tokens=32, messages=[
                {"role": "user", "content": "Tell me about tides"}]) as events:
            text = "".join(events.text_stream)
            final = events.get_final_message()
        assert text.startswith("Simulated reply") and final.stop_reason == "end_turn"
        (sent,) = sim_requests(simulator, 1)
        assert sent["path"] == f"/bedrock/model/{CLAUDE}/invoke-with-response-stream"


# --- the simulator's answers, parsed by botocore against its own service model -------------

def _signed(simulator: str, path: str, body: dict[str, Any]) -> httpx.Response:
    url = f"{simulator}/bedrock{path}"
    data = json.dumps(body).encode()
    request = AWSRequest(method="POST", url=url, data=data,
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(TEST_ACCESS_KEY, TEST_SECRET_KEY), "bedrock",
              "us-east-1").add_auth(request)
    return httpx.post(url, content=data, headers=dict(request.headers.items()))


def _parse(operation: str, response: httpx.Response) -> dict[str, Any]:
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    shape = model.operation_model(operation).output_shape
    parsed: dict[str, Any] = create_parser("rest-json").parse(
        {"status_code": response.status_code, "headers": dict(response.headers),
         "body": response.content}, shape)
    return parsed


def _events(operation: str, member: str, response: httpx.Response) -> list[dict[str, Any]]:
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    shape = model.operation_model(operation).output_shape.members[member]
    raw = response.content
    stream = EventStream(_Raw(raw), shape, EventStreamJSONParser(), operation)
    return [{k: v for k, v in event.items() if k != "ResponseMetadata"} for event in stream]


class _Raw:
    """The least of urllib3's response that botocore's EventStream reads."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self) -> Any:
        yield self._data

    def close(self) -> None:
        pass


CONVERSE = {"messages": [{"role": "user", "content": [{"text": "Tell me about tides"}]}],
            "inferenceConfig": {"maxTokens": 5}}


def test_botocore_parses_converse_and_stream(simulator: str) -> None:
    """botocore's rest-json parser and EventStream read the simulator's Converse answers."""
    path = f"/model/{CLAUDE.replace(':', '%3A')}"
    parsed = _parse("Converse", _signed(simulator, f"{path}/converse", CONVERSE))
    assert parsed["stopReason"] == "max_tokens"
    assert parsed["usage"]["outputTokens"] == 5
    assert parsed["output"]["message"]["content"][0]["text"]
    events = _events("ConverseStream", "stream",
                     _signed(simulator, f"{path}/converse-stream", CONVERSE))
    kinds = [next(iter(e)) for e in events]
    assert kinds == ["messageStart", *["contentBlockDelta"] * 5, "contentBlockStop",
                     "messageStop", "metadata"]
    assert events[-1]["metadata"]["usage"]["totalTokens"] == parsed["usage"]["totalTokens"]


THINKING = {"thinking": {"type": "enabled", "budget_tokens": 1024}}


def test_botocore_parses_reasoning_answers(simulator: str) -> None:
    """With Claude's thinking on, the reasoning block (text and signature) parses as botocore's
    ReasoningContentBlock, first in the answer and at index 0 of the stream; its tokens are
    in outputTokens, the only place Converse's usage has for them."""
    path = f"/model/{CLAUDE.replace(':', '%3A')}"
    body = {**CONVERSE, "additionalModelRequestFields": THINKING}
    parsed = _parse("Converse", _signed(simulator, f"{path}/converse", body))
    reasoning, answer = parsed["output"]["message"]["content"]
    thought = reasoning["reasoningContent"]["reasoningText"]
    assert thought["text"].startswith("Considering how to answer") and thought["signature"]
    assert answer["text"]
    assert set(parsed["usage"]) == {"inputTokens", "outputTokens", "totalTokens"}
    assert parsed["usage"]["outputTokens"] == 5 + len(split_tokens(thought["text"]))
    events = _events("ConverseStream", "stream",
                     _signed(simulator, f"{path}/converse-stream", body))
    deltas = [e["contentBlockDelta"] for e in events if "contentBlockDelta" in e]
    streamed = "".join(d["delta"]["reasoningContent"].get("text", "") for d in deltas
                       if d["contentBlockIndex"] == 0)
    assert streamed == thought["text"]
    assert {d["contentBlockIndex"] for d in deltas} == {0, 1}
    assert [e["contentBlockStop"]["contentBlockIndex"] for e in events
            if "contentBlockStop" in e] == [0, 1]
    assert events[-1]["metadata"]["usage"] == parsed["usage"]


def test_botocore_parses_invoke_model_stream(simulator: str) -> None:
    """InvokeModelWithResponseStream chunks parse; their bytes are Anthropic's events."""
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 3,
            "messages": [{"role": "user", "content": "hi"}]}
    response = _signed(simulator, f"/model/{CLAUDE.replace(':', '%3A')}/"
                       "invoke-with-response-stream", body)
    events = _events("InvokeModelWithResponseStream", "body", response)
    types = [json.loads(e["chunk"]["bytes"])["type"] for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    last = json.loads(events[-1]["chunk"]["bytes"])
    assert last["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 3


def test_simulator_takes_tool_specification_members_only(simulator: str) -> None:
    """The simulator's Converse takes a toolSpec of ToolSpecification's members (botocore's
    model of them), strict a boolean: strict true is answered, a string strict or a member
    the shape lacks is a 400 ValidationException."""
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    assert set(model.shape_for("ToolSpecification").members) == TOOL_SPEC_KEYS
    path = f"/model/{CLAUDE.replace(':', '%3A')}/converse"
    spec = {"name": "w", "inputSchema": {"json": {"type": "object"}}}

    def converse(**extra: Any) -> httpx.Response:
        return _signed(simulator, path, {**CONVERSE, "toolConfig": {
            "tools": [{"toolSpec": {**spec, **extra}}], "toolChoice": {"any": {}}}})

    assert _parse("Converse", converse(strict=True))["stopReason"] == "tool_use"
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"strict": "true"}, "toolSpec.strict"), ({"strictTools": True}, "strictTools")]
    for extra, named in refusals:
        refused = converse(**extra)
        assert refused.status_code == 400
        assert refused.headers["x-amzn-errortype"].startswith("ValidationException")
        assert named in refused.json()["message"]


def test_simulator_refuses_bad_signatures_as_aws_does(simulator: str) -> None:
    """A wrong secret is a 403 InvalidSignatureException, no signature a 403 too."""
    url = f"{simulator}/bedrock/model/{CLAUDE}/converse"
    data = json.dumps(CONVERSE).encode()
    request = AWSRequest(method="POST", url=url, data=data,
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(TEST_ACCESS_KEY, "not-the-secret"), "bedrock",
              "us-east-1").add_auth(request)
    wrong = httpx.post(url, content=data, headers=dict(request.headers.items()))
    assert wrong.status_code == 403
    assert wrong.headers["x-amzn-errortype"].startswith("InvalidSignatureException:")
    assert "signature we calculated does not match" in wrong.json()["message"]
    missing = httpx.post(url, content=data)
    assert missing.status_code == 403
    assert missing.headers["x-amzn-errortype"].startswith("MissingAuthenticationToken")


def test_mid_stream_exception_is_reported(run_gateway: GatewayFactory, simulator: str) -> None:
    """An exception message inside ConverseStream ends the client's stream with an error."""
    with run_gateway(config(simulator, headers={"X-Sim-Error-After": "2"})) as gw:
        stream = gw.client().chat.completions.create(model="claude", messages=USER,
                                                     stream=True)
        with pytest.raises(openai.APIError) as caught:
            list(stream)
    assert "Simulated upstream failure" in str(caught.value)
    assert gw.sink.records[-1].status != "ok"


def test_cancelled_stream_closes_the_upstream(run_gateway: GatewayFactory,
                                              simulator: str) -> None:
    """A client leaving mid-stream closes the ConverseStream connection at the simulator."""
    slow = {"X-Sim-TPOT-Ms": "50", "X-Sim-Completion-Tokens": "200"}
    with run_gateway(config(simulator, headers=slow)) as gw:
        assert gw.leave_a_stream(simulator, request_id="bedrock-gone", body={
            "model": "claude", "messages": USER, "stream": True}) == 1
        assert gw.sink.by_id("bedrock-gone").status == "cancelled"


def test_prompt_cache_usage_and_cost(run_gateway: GatewayFactory, simulator: str) -> None:
    """A cache_control part becomes a cachePoint; the cache read and written tokens come back
    in usage and are priced as Claude Haiku 4.5 on Bedrock publishes them."""
    raw = config(simulator, headers={"X-Sim-Cache-Read-Tokens": "4"})
    raw["models"]["haiku"] = {"targets": [{"provider": "aws",
                                           "model": "anthropic.claude-haiku-4-5-20251001-v1:0"}]}
    long_system = "You answer questions about the sea and its tides in detail."
    with run_gateway(raw) as gw:
        # cache_control is Anthropic's extension of a text part: not in the SDK's types
        messages: Any = [
            {"role": "system", "content": [{"type": "text", "text": long_system,
                                            "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "Tell me about tides"}]
        reply = gw.client().chat.completions.create(model="haiku", max_tokens=5,
                                                    messages=messages)
        sent = sim_requests(simulator, 1)[0]["body"]
        assert sent["system"] == [{"text": long_system}, {"cachePoint": {"type": "default"}}]
        usage = reply.usage
        assert usage is not None and usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 4
        details = usage.prompt_tokens_details.model_dump()
        written = details["cache_write_tokens"]
        fresh = usage.prompt_tokens - 4 - written
        assert written > 0 and fresh > 0
        expected = (fresh * 1.00 + 4 * 0.10 + written * 1.25 + 5 * 5.00) / 1_000_000
        assert gw.sink.records[-1].cost_usd == pytest.approx(expected)


@pytest.mark.parametrize("streamed", [False, True])
def test_reasoning_answer_usage_and_cost(run_gateway: GatewayFactory, simulator: str,
                                         streamed: bool) -> None:
    """Claude's thinking through Converse: the reasoning comes back as reasoning_content; usage
    claims no reasoning_tokens (Converse reports none); completion_tokens is outputTokens, the
    answer's tokens plus the reasoning's, and the call is priced by hand at Claude Haiku 4.5's
    Bedrock rates with cache reads and writes, the reasoning as output."""
    raw = config(simulator, headers={"X-Sim-Cache-Read-Tokens": "4"})
    raw["models"]["haiku"] = {"targets": [{"provider": "aws",
                                           "model": "anthropic.claude-haiku-4-5-20251001-v1:0"}]}
    messages: Any = [
        {"role": "system", "content": [{"type": "text", "text": "You answer about the sea.",
                                        "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "Tell me about tides"}]
    thinking = {"additionalModelRequestFields": THINKING}
    with run_gateway(raw) as gw:
        client = gw.client()
        if streamed:
            chunks = list(client.chat.completions.create(
                model="haiku", max_tokens=5, messages=messages, stream=True,
                stream_options={"include_usage": True}, extra_body=thinking))
            deltas = [c.choices[0].delta for c in chunks if c.choices]
            reasoning = "".join((d.model_extra or {}).get("reasoning_content", "")
                                for d in deltas)
            text = "".join(d.content or "" for d in deltas)
            usage = chunks[-1].usage
        else:
            reply = client.chat.completions.create(model="haiku", max_tokens=5,
                                                   messages=messages, extra_body=thinking)
            reasoning = (reply.choices[0].message.model_extra or {})["reasoning_content"]
            text = reply.choices[0].message.content or ""
            usage = reply.usage
        assert sim_requests(simulator, 1)[0]["body"]["additionalModelRequestFields"] == THINKING
        assert reasoning.startswith("Considering how to answer") and text
        assert usage is not None and usage.prompt_tokens_details is not None
        assert usage.completion_tokens_details is None
        thought_tokens = len(split_tokens(reasoning))
        assert usage.completion_tokens == 5 + thought_tokens
        written = usage.prompt_tokens_details.model_dump()["cache_write_tokens"]
        fresh = usage.prompt_tokens - 4 - written
        assert usage.prompt_tokens_details.cached_tokens == 4 and written > 0 and fresh > 0
        expected = (fresh * 1.00 + 4 * 0.10 + written * 1.25
                    + (5 + thought_tokens) * 5.00) / 1_000_000
        assert gw.sink.records[-1].cost_usd == pytest.approx(expected, rel=1e-9)


def test_echoed_api_key_is_scrubbed(run_gateway: GatewayFactory, simulator: str) -> None:
    """An upstream error that echoes the Bedrock API key never shows it to the client."""
    raw = config(simulator)
    raw["providers"]["aws"] = {"type": "bedrock", "region": "us-east-1",
                               "base_url": f"{simulator}/bedrock", "api_key": BEDROCK_API_KEY,
                               "headers": {"X-Return-Error": "400", "X-Sim-Echo-Key": "1"}}
    with run_gateway(raw) as gw, pytest.raises(openai.APIStatusError) as caught:
        gw.client().chat.completions.create(model="claude", messages=USER)
    assert caught.value.status_code == 400
    assert BEDROCK_API_KEY not in str(caught.value.response.text)
    assert "[redacted]" in caught.value.response.text
