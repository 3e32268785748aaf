"""Bedrock's pure pieces: the event stream decoder, SigV4 signing (against botocore's signer as
the oracle, AWS's published test vector, and the simulator's own verifier), the credential cache
under a test clock, the Converse request/response/stream translators, AWS error mapping, the
documented response examples, and cost with cache reads and writes."""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.validate import ParamValidator

from app import errors
from app.pricing import PriceBook, shipped_prices
from app.providers.aws import CredentialCache, CredentialError, Frozen, SigV4Signer
from app.providers.aws_eventstream import EventStreamDecoder
from app.providers.aws_http import aws_error, stream_exception
from app.providers.base import ChatCall, EmbeddingCall, Json, Target
from app.providers.bedrock import anthropic_body, model_path
from app.providers.bedrock_converse import translate_request
from app.providers.bedrock_embed import cohere_bodies, read_cohere, read_titan, titan_bodies
from app.providers.bedrock_response import StreamTranslator, read_usage, to_chat_completion
from app.schemas import ChatRequest, EmbeddingRequest
from app.simulator import aws_eventstream as encoder
from app.simulator.asgi import Request
from app.simulator.aws_auth import TEST_ACCESS_KEY, TEST_SECRET_KEY, canonical_request, verify

FIXTURES = Path(__file__).parent / "fixtures" / "bedrock"
TARGET = Target(provider="aws", model="anthropic.claude-haiku-4-5-20251001-v1:0")


def fixture(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    found.pop("_source")
    return found


def chat(**body: Any) -> ChatCall:
    body.setdefault("model", "m")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return ChatCall(request=ChatRequest.model_validate(body), body=body)


# --- event stream ---------------------------------------------------------------------------

FRAMES = (encoder.event("messageStart", b'{"role":"assistant"}')
          + encoder.event("contentBlockDelta", b'{"delta":{"text":"Hi"},"contentBlockIndex":0}')
          + encoder.exception("throttlingException", b'{"message":"slow down"}'))


def test_decoder_splits_at_every_byte_boundary() -> None:
    """Cut anywhere into two chunks, or fed a byte at a time, the stream decodes the same."""
    whole = EventStreamDecoder().feed(FRAMES)
    assert [m.event_type for m in whole] == ["messageStart", "contentBlockDelta",
                                            "throttlingException"]
    assert whole[2].message_type == "exception" and whole[1].payload.startswith(b'{"delta"')
    for cut in range(len(FRAMES) + 1):
        decoder = EventStreamDecoder()
        assert decoder.feed(FRAMES[:cut]) + decoder.feed(FRAMES[cut:]) == whole
        assert decoder.pending == 0
    decoder = EventStreamDecoder()
    assert [m for i in range(len(FRAMES)) for m in decoder.feed(FRAMES[i:i + 1])] == whole


@pytest.mark.parametrize("where", [5, 9, 40])
def test_decoder_refuses_a_bad_crc(where: int) -> None:
    """A flipped byte in the prelude, its CRC or the body is a BadUpstreamResponse."""
    broken = bytearray(FRAMES)
    broken[where] ^= 0x01
    with pytest.raises(errors.BadUpstreamResponse, match=r"CRC|length"):
        EventStreamDecoder().feed(bytes(broken))


def test_stream_exception_maps_throttling_to_429() -> None:
    """A mid-stream throttlingException is a retryable 429 with AWS's message."""
    (message,) = EventStreamDecoder().feed(encoder.exception(
        "throttlingException", b'{"message":"Too many requests"}'))
    error = stream_exception(message, service="AWS Bedrock (us-east-1)")
    assert isinstance(error, errors.UpstreamRateLimited) and error.message == "Too many requests"


# --- signing --------------------------------------------------------------------------------

def test_signature_matches_aws_published_vector() -> None:
    """AWS's SigV4 test suite 'get-vanilla' vector, computed with botocore's signer pieces at
    the vector's fixed time, gives the published signature."""
    request = AWSRequest(method="GET", url="https://example.amazonaws.com/",
                         headers={"Host": "example.amazonaws.com",
                                  "X-Amz-Date": "20150830T123600Z"})
    request.context["timestamp"] = "20150830T123600Z"
    auth = SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                     "service", "us-east-1")
    canonical = auth.canonical_request(request)
    signature = auth.signature(auth.string_to_sign(request, canonical), request)
    assert signature == "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    sim = Request(method="GET", path="/", query="", body=b"", receive=_never, send=_never,
                  started=0.0, raw_headers=[(b"host", b"example.amazonaws.com"),
                                            (b"x-amz-date", b"20150830T123600Z")])
    assert canonical_request(sim, canonical_uri="/", signed=["host", "x-amz-date"]) == canonical


def test_our_signer_passes_awss_published_get_vanilla_vector() -> None:
    """SigV4 test suite, get-vanilla: GET / on example.amazonaws.com at 20150830T123600Z."""
    signer = SigV4Signer(CredentialCache(lambda: Frozen("x", "y")), service="service",
                         region="us-east-1")
    creds = Frozen("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    when = calendar.timegm((2015, 8, 30, 12, 36, 0))
    headers = signer.sign(creds, "GET", "https://example.amazonaws.com/", b"", {}, now=when)
    assert headers["X-Amz-Date"] == "20150830T123600Z"
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")


async def _never(*_: Any) -> Any:
    raise AssertionError("not used")


def _sim_request(url_path: str, body: bytes, headers: dict[str, str], host: str) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in {**headers, "host": host}.items()]
    return Request(method="POST", path=url_path, query="", body=body, receive=_never,
                   send=_never, started=0.0, raw_headers=raw)


@pytest.mark.parametrize("model", [
    "anthropic.claude-3-haiku-20240307-v1:0",
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-v1:0",
])
def test_signer_agrees_with_the_simulator_verifier(model: str) -> None:
    """Our signed headers (model id or ARN encoded in the path, session-less keys) verify in the
    simulator's independent SigV4 implementation, and a changed body does not."""
    signer = SigV4Signer(CredentialCache(lambda: Frozen("x", "y")), service="bedrock",
                         region="us-east-1")
    path = "/bedrock" + model_path(model, "converse")
    body = b'{"messages":[]}'
    headers = signer.sign(Frozen(TEST_ACCESS_KEY, TEST_SECRET_KEY), "POST",
                          "http://127.0.0.1:9/" + path.lstrip("/"), body,
                          {"Content-Type": "application/json"})
    assert "%3A" in path
    verify(_sim_request(path, body, headers, "127.0.0.1:9"), service="bedrock",
           encoded_path=path)
    with pytest.raises(Exception, match="signature we calculated"):
        verify(_sim_request(path, body + b" ", headers, "127.0.0.1:9"), service="bedrock",
               encoded_path=path)


def test_signer_matches_botocore_for_the_same_request() -> None:
    """The signature is botocore's own for identical inputs (same second, same bytes)."""
    signer = SigV4Signer(CredentialCache(lambda: Frozen("x", "y")), service="bedrock",
                         region="eu-west-1")
    creds = Frozen("AKIDEXAMPLE", "secret", token="token")
    url = "https://bedrock-runtime.eu-west-1.amazonaws.com/model/m%3A0/converse"
    ours = signer.sign(creds, "POST", url, b"{}", {"Content-Type": "application/json"})
    oracle = AWSRequest(method="POST", url=url, data=b"{}",
                        headers={"Content-Type": "application/json",
                                 "X-Amz-Date": ours["X-Amz-Date"]})
    oracle.context["timestamp"] = ours["X-Amz-Date"]
    auth = SigV4Auth(Credentials("AKIDEXAMPLE", "secret", "token"), "bedrock", "eu-west-1")
    oracle.headers["X-Amz-Security-Token"] = "token"
    expected = auth.signature(auth.string_to_sign(oracle, auth.canonical_request(oracle)),
                              oracle)
    assert ours["Authorization"].endswith(f"Signature={expected}")
    assert ours["X-Amz-Security-Token"] == "token"
    assert hashlib.sha256(b"{}").hexdigest() in auth.canonical_request(oracle)


# --- credentials ----------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_credentials_refresh_before_expiry_once_off_the_loop() -> None:
    """Cached until 5 minutes before expiry, then refreshed once (concurrent callers share it),
    in a worker thread."""
    clock = Clock()
    threads: list[str] = []

    def resolve() -> Frozen:
        threads.append(threading.current_thread().name)
        n = len(threads)
        return Frozen(f"AKID{n}", "secret", expires_at=clock.now + 1000)

    cache = CredentialCache(resolve, clock=clock, margin_s=300)

    async def scenario() -> list[str]:
        loop_thread = threading.current_thread().name
        seen = [(await cache.get()).access_key]
        clock.now = 699
        seen.append((await cache.get()).access_key)
        clock.now = 701
        seen.extend(f.access_key for f in await asyncio.gather(*(cache.get() for _ in range(8))))
        assert loop_thread not in threads
        return seen

    assert asyncio.run(scenario()) == ["AKID1", "AKID1", *["AKID2"] * 8]
    assert cache.refreshes == 2


def test_failed_refresh_keeps_unexpired_credentials_then_is_a_502() -> None:
    """A refresh that fails before expiry keeps the old keys; after expiry it is a 502."""
    clock = Clock()
    calls = {"n": 0}

    def resolve() -> Frozen:
        calls["n"] += 1
        if calls["n"] > 1:
            raise CredentialError("no AWS credentials found")
        return Frozen("AKID1", "secret", expires_at=1000)

    cache = CredentialCache(resolve, clock=clock, margin_s=300, label="AWS Bedrock (x)")
    assert asyncio.run(cache.get()).access_key == "AKID1"
    clock.now = 800
    assert asyncio.run(cache.get()).access_key == "AKID1"
    clock.now = 1001
    with pytest.raises(errors.UpstreamError, match="AWS Bedrock \\(x\\): no AWS credentials"):
        asyncio.run(cache.get())


def test_recent_credentials_are_the_last_three_distinct_sets() -> None:
    """``recent()`` (scrubbed from upstream errors) gives every value of the last three distinct
    sets of credentials; a check that finds the same set again adds nothing."""
    clock = Clock()
    sets = [Frozen("AKID1", "secret1"), Frozen("AKID1", "secret1"),
            Frozen("ASIA2", "secret2", "session2"), Frozen("ASIA3", "secret3", "session3"),
            Frozen("ASIA4", "secret4", "session4")]

    def resolve() -> Frozen:
        found = sets.pop(0)
        return Frozen(found.access_key, found.secret_key, found.token,
                      expires_at=clock.now + 400)

    cache = CredentialCache(resolve, clock=clock, margin_s=300)
    assert cache.recent() == ()
    seen = []
    for _ in range(5):
        seen.append(asyncio.run(cache.get()).access_key)
        clock.now += 101  # past expiry less the margin: the next get resolves again
    assert seen == ["AKID1", "AKID1", "ASIA2", "ASIA3", "ASIA4"]
    assert cache.recent() == ("ASIA2", "secret2", "session2", "ASIA3", "secret3", "session3",
                              "ASIA4", "secret4", "session4")
    assert SigV4Signer(cache, service="bedrock", region="r").minted_credentials() == \
        cache.recent()


# --- translation ----------------------------------------------------------------------------

def test_request_translation() -> None:
    """System, tools, tool calls and results, inference config and json_schema map to
    Converse's fields."""
    call = chat(
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Weather?"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "t1", "type": "function",
                       "function": {"name": "w", "arguments": "{\"c\":\"Oslo\"}"}}]},
                  {"role": "tool", "tool_call_id": "t1", "content": "rain"}],
        tools=[{"type": "function", "function": {"name": "w", "parameters": {
            "type": "object"}}}], tool_choice="required", max_tokens=50,
        max_completion_tokens=40, temperature=0.2, top_p=0.9, stop="END",
        response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object"}}})
    body = translate_request(call, target=TARGET, max_tokens_default=None)
    assert body["system"] == [{"text": "Be brief."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "Weather?"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "w",
                                                       "input": {"c": "Oslo"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1",
                                                     "content": [{"text": "rain"}]}}]}]
    assert body["inferenceConfig"] == {"maxTokens": 40, "temperature": 0.2, "topP": 0.9,
                                       "stopSequences": ["END"]}
    assert body["toolConfig"]["toolChoice"] == {"any": {}}
    assert body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {
        "json": {"type": "object"}}
    assert body["outputConfig"]["textFormat"]["structure"]["jsonSchema"] == {
        "schema": '{"type":"object"}', "name": "x"}


def test_strict_tool_is_sent_as_tool_spec_strict() -> None:
    """A tool's strict: true becomes its toolSpec.strict, a member of botocore's (and AWS's)
    ToolSpecification, whose Converse input shape validates the body; strict false or unset
    sends none (false is Converse's default)."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    call = chat(tools=[
        {"type": "function", "function": {"name": "s", "strict": True, "parameters": schema}},
        {"type": "function", "function": {"name": "f", "strict": False}},
        {"type": "function", "function": {"name": "u"}}])
    body = translate_request(call, target=TARGET, max_tokens_default=None)
    specs = [tool["toolSpec"] for tool in body["toolConfig"]["tools"]]
    assert specs[0] == {"name": "s", "inputSchema": {"json": schema}, "strict": True}
    assert "strict" not in specs[1] and "strict" not in specs[2]
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    report = ParamValidator().validate({**body, "modelId": TARGET.model},
                                       model.operation_model("Converse").input_shape)
    assert not report.has_errors(), report.generate_report()


@pytest.mark.parametrize(("body", "param"), [
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "w"}}],
      "parallel_tool_calls": False}, "parallel_tool_calls"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     "messages[0].content[0].image_url.url"),
])
def test_refusals_name_the_param(body: dict[str, Any], param: str) -> None:
    """What Converse cannot do is a 400 naming the param."""
    with pytest.raises(errors.InvalidRequest) as caught:
        translate_request(chat(**body), target=TARGET, max_tokens_default=None)
    assert caught.value.param == param


def test_documented_tool_use_answer_translates() -> None:
    """The user guide's tool-use Converse answer becomes an OpenAI tool call (no text, no usage
    in the page's example)."""
    body, usage = to_chat_completion(fixture("converse_tool_use.json"), model="m", created=1)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"
    assert call["function"]["name"] == "top_song"
    assert json.loads(call["function"]["arguments"]) == {"sign": "WZPZ"}
    assert usage is None and "usage" not in body


def test_published_answers_with_usage_translate() -> None:
    """Two real Converse answers AWS published (a tool call and the text that followed): the
    tool call, the text, each finish reason, and usage whose total is Bedrock's totalTokens."""
    for name, finish in (("converse_tool_use_usage.json", "tool_calls"),
                         ("converse_text_usage.json", "stop")):
        answer = fixture(name)
        body, usage = to_chat_completion(answer, model="m", created=1)
        assert body["choices"][0]["finish_reason"] == finish
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (
            answer["usage"]["inputTokens"], answer["usage"]["outputTokens"], 0)
        assert body["usage"]["total_tokens"] == answer["usage"]["totalTokens"]
    body, _ = to_chat_completion(fixture("converse_tool_use_usage.json"), model="m", created=1)
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert call["id"] == "tooluse_C3ie0cSZR82bOMkKbxXCiw"
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == (
        "get_lat_long", {"place": "Berlin"})
    assert body["choices"][0]["message"]["content"] is None
    body, _ = to_chat_completion(fixture("converse_text_usage.json"), model="m", created=1)
    assert body["choices"][0]["message"]["content"] == (
        "The coordinates of Montreal are latitude 45.5031824 and longitude -73.5698065.")


def test_documented_embeddings_translate() -> None:
    """Titan's and Cohere's documented InvokeModel answers give their vectors and counts."""
    assert read_titan(fixture("titan_embed_v2.json")) == ([0.0271, -0.0453, 0.0132, 0.0915], 7)
    assert read_cohere(fixture("cohere_embed.json"), expected=2)[1] == [-0.0121, 0.0544, 0.0077]


def test_cost_with_cache_reads_and_writes_by_hand() -> None:
    """Cached reads and writes priced as published for Claude Haiku 4.5 on Bedrock ($1/M in,
    $5/M out, reads 0.1x = $0.10/M, writes 1.25x = $1.25/M); through the us. geographic
    profile 10% more ($1.10/M in, $5.50/M out, the cache rates derived by the same factors)."""
    cached = read_usage(fixture("converse_cache.json")["usage"])
    assert cached is not None
    assert (cached.prompt_tokens, cached.cached_tokens) == (12 + 2048, 2048)
    prices = PriceBook(shipped_prices())
    expected = (12 * 1.00 + 2048 * 0.10 + 50 * 5.00) / 1_000_000
    assert prices.cost(TARGET.model, cached) == pytest.approx(expected)
    write = read_usage({"inputTokens": 10, "outputTokens": 20, "cacheReadInputTokens": 0,
                        "cacheWriteInputTokens": 1000})
    assert write is not None
    expected = (10 * 1.00 + 1000 * 1.25 + 20 * 5.00) / 1_000_000
    assert prices.cost("global.anthropic.claude-haiku-4-5-20251001-v1:0",
                       write) == pytest.approx(expected)
    geo = (10 * 1.10 + 1000 * 1.375 + 20 * 5.50) / 1_000_000
    assert prices.cost("us.anthropic.claude-haiku-4-5-20251001-v1:0",
                       write) == pytest.approx(geo)


def test_reasoning_answer_translates_and_prices_reasoning_as_output() -> None:
    """Claude's reasoning text becomes reasoning_content (redacted reasoning and the signature
    are dropped, as the anthropic type drops them); Converse reports no reasoning count, so
    none is claimed, and the reasoning is billed inside outputTokens at the output price."""
    body, usage = to_chat_completion(fixture("converse_reasoning.json"), model="m", created=1)
    message = body["choices"][0]["message"]
    assert message["content"] == "27 x 453 = 12,231."
    assert message["reasoning_content"] == "The user asks for 27 * 453. 27 * 453 = 12231."
    assert usage is not None and usage.reasoning_tokens == 0
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) == \
        (40 + 1024, 1024, 310)
    assert "completion_tokens_details" not in body["usage"]
    assert usage.total_tokens == fixture("converse_reasoning.json")["usage"]["totalTokens"]
    expected = (40 * 1.00 + 1024 * 0.10 + 310 * 5.00) / 1_000_000
    assert PriceBook(shipped_prices()).cost(TARGET.model, usage) == pytest.approx(expected)


def test_stream_translator_reasoning_deltas() -> None:
    """Reasoning text deltas are reasoning_content chunks; the signature delta and a redacted
    delta produce nothing; the usage chunk claims no reasoning tokens."""
    translator = StreamTranslator(model="m", created=1)
    events: list[tuple[str, dict[str, Any]]] = [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"delta": {"reasoningContent": {"text": "Think."}},
                               "contentBlockIndex": 0}),
        ("contentBlockDelta", {"delta": {"reasoningContent": {"signature": "sig"}},
                               "contentBlockIndex": 0}),
        ("contentBlockDelta", {"delta": {"reasoningContent": {"redactedContent": "eA=="}},
                               "contentBlockIndex": 1}),
        ("contentBlockDelta", {"delta": {"text": "Done."}, "contentBlockIndex": 2}),
        ("messageStop", {"stopReason": "end_turn"}),
        ("metadata", {"usage": {"inputTokens": 3, "outputTokens": 9, "totalTokens": 12}}),
    ]
    chunks = [c for event, data in events for c in translator.feed(event, data)]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [{"role": "assistant", "content": ""}, {"reasoning_content": "Think."},
                      {"content": "Done."}, {}]
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 9,
                                   "total_tokens": 12}


def test_stream_translator_text_tool_and_usage() -> None:
    """ConverseStream events become role, content and tool-call chunks, a finish reason and a
    usage chunk after metadata."""
    translator = StreamTranslator(model="m", created=1)
    events: list[tuple[str, dict[str, Any]]] = [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"delta": {"text": "Hi"}, "contentBlockIndex": 0}),
        ("contentBlockStart", {"start": {"toolUse": {"toolUseId": "t", "name": "w"}},
                               "contentBlockIndex": 1}),
        ("contentBlockDelta", {"delta": {"toolUse": {"input": "{\"a\":"}},
                               "contentBlockIndex": 1}),
        ("messageStop", {"stopReason": "tool_use"}),
        ("metadata", {"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}}),
    ]
    chunks = [c for event, data in events for c in translator.feed(event, data)]
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0]["id"] == "t"
    assert chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == \
        "{\"a\":"
    assert chunks[4]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[5]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert translator.done
    cut = StreamTranslator(model="m", created=1)
    cut.feed("messageStart", {})
    with pytest.raises(errors.BadUpstreamResponse):
        cut.finish()


def test_embedding_bodies() -> None:
    """Titan gets one body per text with dimensions/normalize; Cohere batches of 96."""
    titan = Target(provider="aws", model="amazon.titan-embed-text-v2:0")
    request = EmbeddingRequest(model="e", input=["a", "b"], dimensions=512)
    bodies = titan_bodies(EmbeddingCall(request=request, body={}), target=titan)
    assert bodies == [{"normalize": True, "dimensions": 512, "inputText": "a"},
                      {"normalize": True, "dimensions": 512, "inputText": "b"}]
    cohere = Target(provider="aws", model="cohere.embed-english-v3")
    request = EmbeddingRequest(model="e", input=[f"t{i}" for i in range(200)])
    batches = cohere_bodies(EmbeddingCall(request=request, body={}), target=cohere)
    assert [len(b["texts"]) for b in batches] == [96, 96, 8]
    assert batches[0]["input_type"] == "search_document"


def test_cohere_dimensions_only_for_embed_v4() -> None:
    """dimensions becomes Embed v4's output_dimension (AWS's 256/512/1024/1536; another value
    is a 400); v3's size is fixed, so there it stays a 400."""
    def bodies(model: str, dimensions: int) -> list[Json]:
        request = EmbeddingRequest(model="e", input=["a"], dimensions=dimensions)
        return cohere_bodies(EmbeddingCall(request=request, body={}),
                             target=Target(provider="aws", model=model))

    assert bodies("cohere.embed-v4:0", 512) == [
        {"output_dimension": 512, "input_type": "search_document", "texts": ["a"]}]
    for model, dimensions, words in [("cohere.embed-v4:0", 300, "takes dimensions 256, 512"),
                                     ("cohere.embed-english-v3", 512, "v3 on Bedrock has a "
                                                                      "fixed size")]:
        with pytest.raises(errors.InvalidRequest) as caught:
            bodies(model, dimensions)
        assert caught.value.param == "dimensions" and words in caught.value.message


@pytest.mark.parametrize(("status", "kind", "expected", "code"), [
    (429, "ThrottlingException", errors.UpstreamRateLimited, 429),
    (400, "ThrottlingException", errors.UpstreamRateLimited, 429),
    (400, "ValidationException", errors.UpstreamRejected, 400),
    (403, "ExpiredTokenException", errors.UpstreamAuthFailed, 502),
    (408, "ModelTimeoutException", errors.UpstreamTimeout, 504),
    (503, "ServiceUnavailableException", errors.UpstreamUnavailable, 503),
])
def test_aws_errors_map(status: int, kind: str, expected: type, code: int) -> None:
    """AWS error types map to the gateway's statuses (throttling 429 even as SageMaker's 400)."""
    error = aws_error(status, kind, {"message": "m"}, "", service="AWS Bedrock (us-east-1)")
    assert type(error) is expected and error.status_code == code
    if code == 502:
        assert "AWS Bedrock (us-east-1) refused the gateway's AWS credentials" in error.message


def test_anthropic_body_for_bedrock() -> None:
    """The Messages body loses model and stream and gains Bedrock's anthropic_version; a
    non-Anthropic model is refused."""
    from app.providers.base import MessagesCall

    call = MessagesCall(body={"model": "x", "stream": True, "max_tokens": 5, "messages": []})
    assert anthropic_body(call, TARGET) == {"max_tokens": 5, "messages": [],
                                            "anthropic_version": "bedrock-2023-05-31"}
    with pytest.raises(errors.InvalidRequest):
        anthropic_body(call, Target(provider="aws", model="meta.llama3-8b-instruct-v1:0"))


def test_config_without_the_aws_extra_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without botocore a SigV4 config is refused at load naming the extra; a Bedrock API key
    needs no botocore."""
    from app.config import parse_config

    monkeypatch.setitem(__import__("sys").modules, "botocore.auth", None)
    raw: dict[str, Any] = {"providers": {"b": {"type": "sagemaker", "region": "us-east-1"}},
                           "models": {"m": {"targets": [{"provider": "b", "model": "ep"}]}}}
    with pytest.raises(Exception, match=r"install the 'aws' extra"):
        parse_config(raw, {})
    raw["providers"]["b"] = {"type": "bedrock", "region": "us-east-1", "api_key": "ABSK-x"}
    assert parse_config(raw, {}) is not None
