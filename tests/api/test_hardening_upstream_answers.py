# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""Nonsensical or unusual 200 answers from an upstream through a running gateway: usage counts
no provider could bill, error bodies or missing ``choices`` sent with status 200, and stream
lines past aiohttp's 512 KiB line limit."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

from app.calllog import CallRecord
from app.providers.http import MAX_LINE_BYTES
from app.usage import MAX_REPORTED_TOKENS
from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    MASTER_KEY,
    GatewayFactory,
    RunningGateway,
    run_gateway,
    sim_config,
)
from tests.hardening_upstreams import canned, json_answer, sse_answer
from tests.metrics.scrape import scrape, value

USER = [{"role": "user", "content": "hello there"}]
BAD_USAGE = {"prompt_tokens": -5, "completion_tokens": 1_000_000_000_000_000,
             "total_tokens": "lots"}


def _config(simulator: str, upstream: str) -> dict[str, Any]:
    raw = sim_config(simulator,
                     chat={"targets": [{"provider": "up", "model": "gpt-4o-mini"}]},
                     text={"targets": [{"provider": "up", "model": "gpt-4o-mini"}]},
                     embed={"targets": [{"provider": "up", "model": "text-embedding-3-small"}]})
    raw["providers"]["up"] = {"type": "openai", "base_url": upstream + "/v1",
                              "api_key": "sk-evil-upstream-key-999999"}
    return raw


def _record(gw: RunningGateway, request_id: str) -> CallRecord:
    deadline = time.monotonic() + 10
    while not any(r.request_id == request_id for r in gw.sink.records):
        assert time.monotonic() < deadline, f"no call record for {request_id}"
        time.sleep(0.02)
    return gw.sink.by_id(request_id)


def _chat_body(usage: Any) -> bytes:
    return json.dumps({
        "id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"},
                     "finish_reason": "stop"}],
        "usage": usage}).encode()


def _assert_estimated(record: CallRecord) -> None:
    assert record.status == "ok"
    assert record.usage is not None and record.usage.estimated
    assert 0 < record.usage.prompt_tokens < 100 and 0 < record.usage.completion_tokens < 100
    assert record.cost_usd is not None and record.cost_usd < 0.01


# ---- usage no provider could bill ------------------------------------------------------------


@pytest.mark.parametrize("usage", [
    BAD_USAGE,
    {"prompt_tokens": 3, "completion_tokens": -1, "total_tokens": 2},
    {"prompt_tokens": MAX_REPORTED_TOKENS + 1, "completion_tokens": 1, "total_tokens": 2},
    {"prompt_tokens": True, "completion_tokens": 1},
])
def test_nonsense_usage_is_estimated_and_metrics_stay_usable(
        run_gateway: GatewayFactory, simulator: str, usage: dict[str, Any]) -> None:
    """Negative, absurd or boolean token counts are treated as not reported: the call is
    estimated (and marked so) in the record and in the client's ``usage``, its cost is the
    estimate's, and ``/metrics`` keeps answering with sane token counts."""
    with canned(json_answer(_chat_body(usage))) as upstream, \
            run_gateway(_config(simulator, upstream.url)) as gw:
        answer = gw.http().post("/v1/chat/completions", headers={"x-request-id": "bad-usage"},
                                json={"model": "chat", "messages": USER})
        assert answer.status_code == 200, answer.text
        record = _record(gw, "bad-usage")
        _assert_estimated(record)
        assert answer.json()["usage"] == record.usage.to_openai() if record.usage else None
        assert float(answer.headers["x-switchboard-cost-usd"]) < 0.01
        for _ in range(2):  # the scrape flushes; a second one must not fail either
            samples = scrape(gw.url, MASTER_KEY)
        tokens = value(samples, "switchboard_tokens_total", model="chat")
        assert 0 < tokens < 200


def test_nonsense_usage_in_a_stream_is_estimated(run_gateway: GatewayFactory,
                                                 simulator: str) -> None:
    """A stream's usage chunk with nonsense counts is not relayed; the client gets the
    estimate's usage chunk instead, and the record is estimated."""
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"content": "hi there"},
                              "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": BAD_USAGE},
    ]
    events = [json.dumps(c).encode() for c in chunks] + [b"[DONE]"]
    with canned(sse_answer(*events)) as upstream, \
            run_gateway(_config(simulator, upstream.url)) as gw:
        with gw.http().stream("POST", "/v1/chat/completions",
                              headers={"x-request-id": "bad-stream-usage"},
                              json={"model": "chat", "messages": USER, "stream": True,
                                    "stream_options": {"include_usage": True}}) as answer:
            text = answer.read().decode()
        record = _record(gw, "bad-stream-usage")
        _assert_estimated(record)
        usages = [json.loads(line[6:])["usage"] for line in text.splitlines()
                  if line.startswith("data: {") and json.loads(line[6:]).get("usage")]
        assert record.usage is not None and usages == [record.usage.to_openai()]
        samples = scrape(gw.url, MASTER_KEY)
        assert 0 < value(samples, "switchboard_tokens_total", model="chat") < 200


def test_nonsense_anthropic_usage_is_estimated(run_gateway: GatewayFactory,
                                               simulator: str) -> None:
    """The same for a translated provider (Anthropic's ``input_tokens``/``output_tokens``):
    the gateway checks every provider's usage, not only the OpenAI reader's."""
    body = json.dumps({
        "id": "msg_x", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "hi there"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": -5, "output_tokens": 1_000_000_000_000_000}}).encode()
    with canned(json_answer(body)) as upstream:
        raw = _config(simulator, upstream.url)
        raw["providers"]["up"] = {"type": "anthropic", "base_url": upstream.url,
                                  "api_key": "sk-ant-upstream-key-999999"}
        with run_gateway(raw) as gw:
            answer = gw.http().post("/v1/chat/completions",
                                    headers={"x-request-id": "bad-anthropic-usage"},
                                    json={"model": "chat", "messages": USER})
            assert answer.status_code == 200, answer.text
            record = _record(gw, "bad-anthropic-usage")
            _assert_estimated(record)
            assert record.usage is not None
            assert answer.json()["usage"] == record.usage.to_openai()


# ---- error bodies and missing lists with status 200 -----------------------------------------

ERROR_200 = json.dumps({"error": {"message": "quota exceeded key sk-evil-upstream-key-999999",
                                  "type": "insufficient_quota"}}).encode()


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"model": "chat", "messages": USER}),
    ("/v1/completions", {"model": "text", "prompt": "hello"}),
    ("/v1/embeddings", {"model": "embed", "input": "hello"}),
])
def test_an_error_body_with_status_200_is_a_scrubbed_502(
        run_gateway: GatewayFactory, simulator: str, path: str, body: dict[str, Any]) -> None:
    """An ``error`` object answered with 200 is the upstream's error: a 502 in OpenAI's shape
    carrying its message with the provider key replaced, no cost, an error record."""
    request_id = "error-200" + path.replace("/", "-")
    with canned(json_answer(ERROR_200)) as upstream, \
            run_gateway(_config(simulator, upstream.url)) as gw:
        answer = gw.http().post(path, headers={"x-request-id": request_id}, json=body)
        assert answer.status_code == 502, answer.text
        error = answer.json()["error"]
        assert "quota exceeded" in error["message"] and error["code"] == "insufficient_quota"
        assert "sk-evil-upstream-key-999999" not in answer.text and "[redacted]" in answer.text
        assert "x-switchboard-cost-usd" not in answer.headers
        record = _record(gw, request_id)
        assert (record.status, record.http_status) == ("error", 502)
        assert not record.cost_usd and record.error_message is not None
        assert "sk-evil-upstream-key-999999" not in record.error_message


@pytest.mark.parametrize(("path", "body", "answer"), [
    ("/v1/chat/completions", {"model": "chat", "messages": USER},
     {"id": "x", "object": "chat.completion", "choices": None}),
    ("/v1/completions", {"model": "text", "prompt": "hello"}, {"id": "x", "choices": {}}),
    ("/v1/embeddings", {"model": "embed", "input": "hello"}, {"object": "list", "data": None}),
])
def test_an_answer_without_its_list_is_a_502(run_gateway: GatewayFactory, simulator: str,
                                             path: str, body: dict[str, Any],
                                             answer: dict[str, Any]) -> None:
    """A 200 whose ``choices`` (``data`` for embeddings) is not a list is nonsense: a 502, not
    an answer the SDK reads as ``choices=None``."""
    with canned(json_answer(json.dumps(answer).encode())) as upstream, \
            run_gateway(_config(simulator, upstream.url)) as gw:
        got = gw.http().post(path, json=body)
        assert got.status_code == 502, got.text
        assert got.json()["error"]["type"] == "upstream_error"


def test_an_error_body_with_status_200_raises_in_the_sdk(run_gateway: GatewayFactory,
                                                         simulator: str) -> None:
    """The openai SDK raises for it, instead of returning a completion without choices."""
    with canned(json_answer(ERROR_200)) as upstream, \
            run_gateway(_config(simulator, upstream.url)) as gw:
        with pytest.raises(openai.APIStatusError) as raised:
            gw.client().chat.completions.create(model="chat", messages=[
                {"role": "user", "content": "hello"}])
        assert raised.value.status_code == 502
        assert "sk-evil-upstream-key-999999" not in str(raised.value)


# ---- stream lines past aiohttp's 512 KiB ----------------------------------------------------

CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def _delta(text: str, finish: str | None = None) -> bytes:
    return json.dumps({**CHUNK, "choices": [{"index": 0, "delta": {"content": text},
                                             "finish_reason": finish}]}).encode()


def _stream(gw: RunningGateway, request_id: str) -> tuple[int, str]:
    with gw.http().stream("POST", "/v1/chat/completions", headers={"x-request-id": request_id},
                          json={"model": "chat", "messages": USER, "stream": True}) as answer:
        return answer.status_code, answer.read().decode()


def test_a_600_kb_stream_line_is_relayed(run_gateway: GatewayFactory, simulator: str) -> None:
    """A content delta of 600 KB (a large tool argument or base64 piece) is one SSE line longer
    than aiohttp's line limit: it reaches the client whole."""
    big = "x" * 600_000
    with canned(sse_answer(_delta("a"), _delta(big), _delta("", "stop"), b"[DONE]")) as up, \
            run_gateway(_config(simulator, up.url)) as gw:
        status, text = _stream(gw, "big-line")
        assert status == 200
        frames = [json.loads(line[6:]) for line in text.splitlines()
                  if line.startswith("data: {")]
        assert "".join(f["choices"][0]["delta"].get("content") or "" for f in frames
                       if f.get("choices")) == "a" + big
        assert text.rstrip().endswith("data: [DONE]")
        assert _record(gw, "big-line").status == "ok"


TOO_LONG = b'{"pad": "' + b"x" * MAX_LINE_BYTES + b'"}'


def test_a_too_long_first_line_is_a_502(run_gateway: GatewayFactory, simulator: str) -> None:
    """Past MAX_LINE_BYTES before the first chunk: a 502 in OpenAI's shape, recorded so."""
    with canned(sse_answer(TOO_LONG)) as up, run_gateway(_config(simulator, up.url)) as gw:
        status, text = _stream(gw, "long-first")
        assert status == 502, text
        assert "stream line longer than" in json.loads(text)["error"]["message"]
        record = _record(gw, "long-first")
        assert (record.status, record.http_status) == ("error", 502)


def test_a_too_long_line_mid_stream_ends_with_an_error_frame(run_gateway: GatewayFactory,
                                                             simulator: str) -> None:
    """Past MAX_LINE_BYTES after chunks went out: the chunks before it, then an ``error`` frame
    (the gateway's stream end, ``[DONE]``, after it); the record is an error."""
    with canned(sse_answer(_delta("a"), TOO_LONG, b"[DONE]")) as up, \
            run_gateway(_config(simulator, up.url)) as gw:
        status, text = _stream(gw, "long-mid")
        assert status == 200
        frames = [json.loads(line[6:]) for line in text.splitlines()
                  if line.startswith("data: {")]
        assert frames[0]["choices"][0]["delta"]["content"] == "a"
        assert "stream line longer than" in frames[-1]["error"]["message"]
        assert text.count("data: ") == len(frames) + 1  # the upstream's [DONE] never read
        record = _record(gw, "long-mid")
        assert (record.status, record.http_status) == ("error", 502)


def test_a_too_long_line_mid_message_stream_is_an_error_event(run_gateway: GatewayFactory,
                                                              simulator: str) -> None:
    """The same on ``/v1/messages`` to an Anthropic target: an Anthropic ``error`` event."""
    start = {"type": "message_start", "message": {
        "id": "msg_x", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "usage": {"input_tokens": 3, "output_tokens": 0}}}
    block = {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}}
    delta = {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "a"}}
    events = [json.dumps(e).encode() for e in (start, block, delta)] + [TOO_LONG]
    with canned(sse_answer(*events)) as up:
        raw = _config(simulator, up.url)
        raw["providers"]["up"] = {"type": "anthropic", "base_url": up.url,
                                  "api_key": "sk-ant-upstream-key-999999"}
        with run_gateway(raw) as gw:
            with gw.http().stream("POST", "/v1/messages", headers={"x-request-id": "long-msg"},
                                  json={"model": "chat", "max_tokens": 50, "messages": USER,
                                        "stream": True}) as answer:
                text = answer.read().decode()
            assert answer.status_code == 200
            assert "event: error" in text and "stream line longer than" in text
            assert "message_stop" not in text
            record = _record(gw, "long-msg")
            assert (record.status, record.http_status) == ("error", 502)
