"""Token caps, disconnects, truncated and cut streams through a running gateway (issue 8 items
3, 12, 13, 14, 15, 16)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.api.conftest import MASTER_KEY, GatewayFactory, RunningGateway, sim_config
from tests.hardening_upstreams import black_hole

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def _config(simulator: str, provider: dict[str, Any], **route: Any) -> dict[str, Any]:
    raw = sim_config(simulator, chat={"targets": [{"provider": "up", "model": "gpt-4o-mini"}],
                                      **route})
    raw["providers"]["up"] = provider
    raw["models"]["text"] = {"targets": [{"provider": "up", "model": "gpt-4o-mini"}], **route}
    raw["models"]["embed"] = {"targets": [{"provider": "up", "model": "text-embedding-3-small"}]}
    return raw


def _sim(simulator: str, **headers: str) -> dict[str, Any]:
    return {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-up-0123456789",
            "headers": headers}


def _stats(simulator: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(simulator + "/_sim/stats").json()
    return stats


def _until(check: Callable[[], bool], timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def _frames(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def _contents(frames: list[dict[str, Any]]) -> list[str]:
    return [c["delta"].get("content") or "" for f in frames for c in f.get("choices") or ()]


# ---- item 3: each token limit is a limit ----------------------------------------------------


@pytest.mark.parametrize(("fields", "param"), [
    ({"max_tokens": 1_000_000_000, "max_completion_tokens": 5}, "max_tokens"),
    ({"max_tokens": 5, "max_completion_tokens": 1_000_000_000}, "max_completion_tokens"),
    ({"max_completion_tokens": 101}, "max_completion_tokens"),
    ({"max_tokens": 101}, "max_tokens"),
    ({"max_tokens": 101, "max_completion_tokens": 101}, None),
])
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
def test_each_token_limit_is_capped(run_gateway: GatewayFactory, simulator: str,
                                    fields: dict[str, int], param: str | None, kind: str,
                                    stream: bool) -> None:
    """Either limit over the route's cap is a 400 naming it, whatever the other one says, and
    nothing reaches the upstream."""
    provider = (_sim(simulator) if kind == "openai" else
                {"type": "anthropic", "base_url": simulator, "api_key": "sk-ant-0123456789"})
    with run_gateway(_config(simulator, provider, max_tokens_cap=100)) as gw:
        before = _stats(simulator)["requests"]
        request_id = f"cap-{kind}-{stream}-{'-'.join(f'{k}{v}' for k, v in fields.items())}"
        answer = gw.http().post("/v1/chat/completions", headers={"x-request-id": request_id},
                                json={"model": "chat", "messages": USER, "stream": stream,
                                      **fields})
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] in ((param,) if param else ("max_tokens", "max_completion_tokens"))
        assert "100" in error["message"]
        assert _stats(simulator)["requests"] == before
        record = gw.sink.by_id(request_id)
        assert (record.status, record.http_status) == ("error", 400)


@pytest.mark.parametrize("fields", [{"max_tokens": 100, "max_completion_tokens": 5},
                                    {"max_tokens": 5, "max_completion_tokens": 100},
                                    {"max_completion_tokens": 100}, {"max_tokens": 1}])
def test_limits_within_the_cap_pass(run_gateway: GatewayFactory, simulator: str,
                                    fields: dict[str, int]) -> None:
    with run_gateway(_config(simulator, _sim(simulator), max_tokens_cap=100)) as gw:
        answer = gw.client().chat.completions.create(
            model="chat", messages=USER, max_tokens=fields.get("max_tokens"),
            max_completion_tokens=fields.get("max_completion_tokens"))
        assert answer.choices[0].message.content is not None


@pytest.mark.parametrize("kind", ["vllm", "anthropic"])
@pytest.mark.parametrize("fields", [{"max_tokens": 3, "max_completion_tokens": 1000},
                                    {"max_tokens": 1000, "max_completion_tokens": 3}])
def test_both_limits_sent_the_smaller_one_holds(run_gateway: GatewayFactory, simulator: str,
                                                kind: str, fields: dict[str, int]) -> None:
    """Without a cap, a provider that reads one limit gets the smaller of the two."""
    provider = _provider(kind, simulator, {"X-Sim-Completion-Tokens": "50"})
    with run_gateway(_config(simulator, provider)) as gw:
        answer = gw.client().chat.completions.create(
            model="chat", messages=USER, max_tokens=fields["max_tokens"],
            max_completion_tokens=fields["max_completion_tokens"])
        assert answer.usage is not None and answer.usage.completion_tokens == 3
        assert answer.choices[0].finish_reason == "length"


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
def test_messages_max_tokens_capped(run_gateway: GatewayFactory, simulator: str, kind: str,
                                    stream: bool) -> None:
    """Anthropic's own limit, ``max_tokens`` of ``/v1/messages``, is held to the route's cap
    whatever the target speaks: a 400 in Anthropic's shape, nothing sent upstream; the cap
    itself passes."""
    provider = (_sim(simulator) if kind == "openai" else
                {"type": "anthropic", "base_url": simulator, "api_key": "sk-ant-0123456789"})
    with run_gateway(_config(simulator, provider, max_tokens_cap=100)) as gw, \
            gw.http() as http:
        before = _stats(simulator)["requests"]
        request_id = f"messages-cap-{kind}-{stream}"
        refused = http.post("/v1/messages", headers={"x-request-id": request_id}, json={
            "model": "chat", "max_tokens": 1_000_000_000, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]})
        assert refused.status_code == 400, refused.text
        body = refused.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in body["error"]["message"] and "100" in body["error"]["message"]
        assert _stats(simulator)["requests"] == before
        assert (gw.sink.by_id(request_id).status, gw.sink.by_id(request_id).http_status) == \
            ("error", 400)
        served = http.post("/v1/messages", json={
            "model": "chat", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
        assert served.status_code == 200, served.text


def test_completions_max_tokens_capped(run_gateway: GatewayFactory, simulator: str) -> None:
    with run_gateway(_config(simulator, _sim(simulator), max_tokens_cap=100)) as gw:
        with pytest.raises(openai.BadRequestError) as raised:
            gw.client().completions.create(model="text", prompt="hi", max_tokens=10**9)
        assert raised.value.body["param"] == "max_tokens"  # type: ignore[index]


# ---- item 12: a streaming client leaves while the gateway waits for the first token ---------


@pytest.mark.parametrize("fault", [{"X-Sim-TTFT-Ms": "60000"}, {"X-Sim-Hang": "1"}])
def test_stream_disconnect_before_first_token(run_gateway: GatewayFactory, simulator: str,
                                              fault: dict[str, str]) -> None:
    """Past a keep-alive (the stream is committed), the client leaves: the call is recorded as
    cancelled and the upstream request is cancelled too."""
    raw = _config(simulator, _sim(simulator, **fault))
    raw["streaming"] = {"keepalive_s": 0.1}
    counter = "streams_cancelled" if "X-Sim-TTFT-Ms" in fault else "requests_cancelled"
    before = _stats(simulator)[counter]
    with run_gateway(raw) as gw:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=30,
                          headers={**AUTH, "x-request-id": "early-leave"},
                          json={"model": "chat", "messages": USER, "stream": True}) as answer:
            assert answer.status_code == 200
            assert next(answer.iter_lines()) == ": keep-alive"
        record = gw.sink.emitted("early-leave")
        assert (record.status, record.http_status) == ("cancelled", 499)
        assert [(a.provider, a.status) for a in record.attempts] == [("up", 499)]
        assert _until(lambda: _stats(simulator)[counter] > before)


def test_stream_disconnect_before_first_token_black_hole(run_gateway: GatewayFactory,
                                                         simulator: str) -> None:
    """The same against an upstream that accepted the request and never answers: its
    connection is closed when the client leaves."""
    with black_hole() as hole:
        raw = _config(simulator, {"type": "openai", "base_url": hole.url + "/v1",
                                  "timeout_s": 600})
        raw["streaming"] = {"keepalive_s": 0.1}
        with run_gateway(raw) as gw:
            with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=30,
                              headers={**AUTH, "x-request-id": "hole-stream"},
                              json={"model": "chat", "messages": USER, "stream": True}) as a:
                assert next(a.iter_lines()) == ": keep-alive"
            record = gw.sink.emitted("hole-stream")
            assert record.status == "cancelled"
            assert hole.wait_closed(1)


# ---- item 13: a non-streaming client leaves --------------------------------------------------


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"model": "chat", "messages": USER}),
    ("/v1/completions", {"model": "text", "prompt": "hi"}),
    ("/v1/embeddings", {"model": "embed", "input": "hi"}),
])
def test_non_streamed_disconnect_cancels_the_upstream(run_gateway: GatewayFactory,
                                                      simulator: str, path: str,
                                                      body: dict[str, Any]) -> None:
    """A client that gives up on a hung upstream: a cancelled call (as a stream's), not ok/200
    at the upstream's timeout; the simulator sees its request cancelled."""
    raw = _config(simulator, {**_sim(simulator, **{"X-Sim-Hang": "1"}), "timeout_s": 600})
    before = _stats(simulator)["requests_cancelled"]
    with run_gateway(raw) as gw:
        request_id = "leave-" + path.rsplit("/", 1)[-1]
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(gw.url + path, json=body, timeout=httpx.Timeout(30, read=0.3),
                       headers={**AUTH, "x-request-id": request_id})
        record = gw.sink.emitted(request_id)
        assert (record.status, record.http_status) == ("cancelled", 499)
        assert [a.status for a in record.attempts] == [499]
        assert _until(lambda: _stats(simulator)["requests_cancelled"] > before)


def test_non_streamed_disconnect_black_hole(run_gateway: GatewayFactory, simulator: str) -> None:
    with black_hole() as hole:
        raw = _config(simulator, {"type": "openai", "base_url": hole.url + "/v1",
                                  "timeout_s": 600})
        with run_gateway(raw) as gw:
            with pytest.raises(openai.APITimeoutError):
                gw.client(timeout=0.3).chat.completions.create(
                    model="chat", messages=USER, extra_headers={"x-request-id": "hole-unary"})
            record = gw.sink.emitted("hole-unary")
            assert (record.status, record.http_status) == ("cancelled", 499)
            assert hole.wait_closed(1)


def test_quick_non_streamed_call_unaffected(run_gateway: GatewayFactory, simulator: str) -> None:
    """Calls answered before the disconnect watch starts, and after it, are plain 200s."""
    raw = _config(simulator, _sim(simulator, **{"X-Sim-TTFT-Ms": "200"}))
    raw["providers"]["fast"] = _sim(simulator)
    raw["models"]["quick"] = {"targets": [{"provider": "fast", "model": "gpt-4o-mini"}]}
    with run_gateway(raw) as gw:
        for model in ("quick", "chat"):
            answer = gw.client().chat.completions.create(
                model=model, messages=USER, extra_headers={"x-request-id": f"stay-{model}"})
            assert answer.choices[0].message.content
            assert gw.sink.by_id(f"stay-{model}").status == "ok"


# ---- items 14, 15, 16: cut, truncated and failed streams -------------------------------------


def _stream_text(gw: RunningGateway, request_id: str, model: str = "chat") -> str:
    with gw.http().stream("POST", "/v1/chat/completions", headers={"x-request-id": request_id},
                          json={"model": model, "messages": USER, "stream": True}) as answer:
        assert answer.status_code == 200
        return answer.read().decode()


@pytest.mark.parametrize("n", [1, 2, 5])
def test_cut_stream_relays_every_chunk_then_the_error(run_gateway: GatewayFactory,
                                                      simulator: str, n: int) -> None:
    """``X-Sim-Cut-After: N``: the N content chunks that arrived, then an error frame."""
    with run_gateway(_config(simulator, _sim(simulator, **{"X-Sim-Cut-After": str(n)}))) as gw:
        frames = _frames(_stream_text(gw, f"cut-{n}"))
        assert "error" in frames[-1]
        assert len([c for c in _contents(frames[:-1]) if c]) == n
        assert gw.sink.by_id(f"cut-{n}").status == "error"


def _provider(kind: str, simulator: str, headers: dict[str, str]) -> dict[str, Any]:
    if kind == "anthropic":
        return {"type": "anthropic", "base_url": simulator, "api_key": "sk-ant-0123456789",
                "headers": headers}
    if kind == "azure_openai":
        return {"type": "azure_openai", "endpoint": simulator, "api_key": "az-0123456789",
                "headers": headers}
    return {"type": kind, "base_url": simulator + "/v1", "headers": headers}


@pytest.mark.parametrize("kind", ["openai", "vllm", "azure_openai", "anthropic"])
@pytest.mark.parametrize("n", [1, 3])
def test_stream_ending_without_terminator_is_truncated(run_gateway: GatewayFactory,
                                                       simulator: str, kind: str, n: int) -> None:
    """An upstream that closes the stream cleanly with no [DONE] / message_stop and no
    finish_reason: the client gets the chunks, then an error frame; the record is an error of
    an upstream type, with what the chunks cost."""
    headers = {"X-Sim-End-After": str(n)}
    with run_gateway(_config(simulator, _provider(kind, simulator, headers))) as gw:
        request_id = f"trunc-{kind}-{n}"
        text = _stream_text(gw, request_id)
        frames = _frames(text)
        assert "error" in frames[-1], text
        assert frames[-1]["error"]["type"] == "upstream_error"
        assert text.rstrip().endswith("data: [DONE]")
        assert any(_contents(frames[:-1]))
        record = gw.sink.by_id(request_id)
        assert (record.status, record.error_type) == ("error", "upstream_error")
        assert record.usage is not None and record.usage.completion_tokens > 0


@pytest.mark.parametrize(("kind", "fault"), [("openai", "X-Sim-Done-After"),
                                           ("vllm", "X-Sim-Done-After"),
                                           ("anthropic", "X-Sim-End-After")])
def test_a_messages_stream_cut_short_ends_with_an_error_event(
        run_gateway: GatewayFactory, simulator: str, kind: str, fault: str) -> None:
    """``/v1/messages``: an upstream that ends its stream without a finish_reason (an OpenAI-
    style one sending ``[DONE]`` after 2 chunks, translated; Anthropic's own ending before
    ``message_stop``, native) cut the answer short: the client gets the text so far, then an
    ``error`` event, never ``stop_reason: end_turn`` or ``message_stop``, and the call is
    recorded as the upstream's failure it was told to the client as (its attempt too)."""
    with run_gateway(_config(simulator, _provider(kind, simulator, {fault: "2"}))) as gw:
        with gw.http().stream("POST", "/v1/messages", json=_CALLS["/v1/messages"],
                              headers={"x-request-id": f"cut-{kind}"}) as answer:
            assert answer.status_code == 200
            text = answer.read().decode()
        names = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
        assert names[0] == "message_start" and "content_block_delta" in names, text
        assert names[-1] == "error", text
        assert "message_stop" not in names and "end_turn" not in text
        error = json.loads(text.split("event: error\ndata: ")[1].split("\n")[0])
        assert error["error"]["type"] == "api_error"
        assert names.count("error") == 1, text
        record = gw.sink.emitted(f"cut-{kind}")
        assert record.finish_reason is None
        assert (record.status, record.error_type) == ("error", "upstream_error"), record
        assert record.attempts[-1].status >= 500


def test_complete_stream_still_ok(run_gateway: GatewayFactory, simulator: str) -> None:
    with run_gateway(_config(simulator, _sim(simulator))) as gw:
        frames = _frames(_stream_text(gw, "whole"))
        assert not any("error" in f for f in frames)
        assert gw.sink.by_id("whole").status == "ok"


@pytest.mark.parametrize("kind", ["openai", "vllm"])
def test_a_surrogate_pair_cut_across_chunks_reaches_the_client_whole(
        run_gateway: GatewayFactory, simulator: str, kind: str) -> None:
    """``X-Sim-Split-Pair``: an emoji's UTF-16 halves in two chunks, each a lone surrogate's
    JSON escape, as a JavaScript upstream sends them (orjson refuses either alone): the client
    gets the character whole and the stream ends well (it was an error frame)."""
    provider = {**_provider(kind, simulator, {"X-Sim-Split-Pair": "1"}), "api_key": "sk-up-1"}
    with run_gateway(_config(simulator, provider)) as gw:
        frames = _frames(_stream_text(gw, f"pair-{kind}"))
        assert not any("error" in f for f in frames)
        assert "\U0001f600" in _contents(frames)
        assert gw.sink.by_id(f"pair-{kind}").status == "ok"


def test_committed_stream_records_the_upstream_failure(run_gateway: GatewayFactory,
                                                       simulator: str) -> None:
    """Committed at a keep-alive, then the upstream times out without a byte: the attempt says
    504 timeout, not 200."""
    raw = _config(simulator, {**_sim(simulator, **{"X-Sim-Hang": "1"}), "timeout_s": 0.5})
    raw["streaming"] = {"keepalive_s": 0.1}
    with run_gateway(raw) as gw:
        text = _stream_text(gw, "committed")
        assert text.startswith(": keep-alive")
        assert "error" in _frames(text)[-1]
        record = gw.sink.by_id("committed")
        assert record.status == "error"
        assert [(a.status, a.error_type) for a in record.attempts] == [(504, "timeout")]
        assert record.attempts[0].duration_ms > 400  # it ran to its timeout, not to the keep-alive
        assert record.usage is None  # nothing was generated


@pytest.mark.parametrize("fault", ["X-Sim-Cut-After", "X-Sim-Error-After"])
def test_failed_stream_records_tokens_and_cost(run_gateway: GatewayFactory, simulator: str,
                                               fault: str) -> None:
    """Chunks went out before the failure: the record keeps their (estimated) tokens and cost,
    and the attempt its failure."""
    with run_gateway(_config(simulator, _sim(simulator, **{fault: "4"}))) as gw:
        _stream_text(gw, f"cost-{fault}")
        record = gw.sink.by_id(f"cost-{fault}")
        assert record.status == "error"
        assert record.usage is not None and record.usage.estimated
        assert record.usage.completion_tokens > 0 and record.usage.prompt_tokens > 0
        assert record.cost_usd is not None and record.cost_usd > 0
        assert record.attempts[-1].status >= 500


# ---- a streaming client leaves before the first keep-alive; a deadline past one -------------


_CALLS = {"/v1/chat/completions": {"model": "chat", "messages": USER, "stream": True},
          "/v1/messages": {"model": "chat", "max_tokens": 16, "messages": USER, "stream": True}}


def _leave_after(gw: RunningGateway, path: str, *, request_id: str, after_s: float) -> None:
    """Send ``path``'s streamed call over a raw socket, read nothing, close it after
    ``after_s``."""
    host, port = gw.url.removeprefix("http://").split(":")
    body = json.dumps(_CALLS[path]).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {MASTER_KEY}\r\n"
            f"x-request-id: {request_id}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + body)
        time.sleep(after_s)


@pytest.mark.parametrize("path", list(_CALLS))
@pytest.mark.parametrize(("fault", "counter"), [({"X-Sim-Hang": "1"}, "requests_cancelled"),
                                                ({"X-Sim-TTFT-Ms": "3000"}, "streams_cancelled")])
def test_stream_left_before_the_first_keepalive(run_gateway: GatewayFactory, simulator: str,
                                                path: str, fault: dict[str, str],
                                                counter: str) -> None:
    """A client that leaves a stream 1 s in, with the keep-alive 10 s away and the first token
    3 s away or never: the upstream request is cancelled and the call recorded at once, as a
    cancelled 499 whose attempt ran until the client left, with its prompt's estimated tokens
    (the upstream had it), no completion tokens, and their cost."""
    raw = _config(simulator, {**_sim(simulator, **fault), "timeout_s": 600})
    before = _stats(simulator)[counter]
    with run_gateway(raw) as gw:
        _leave_after(gw, path, request_id="left-early", after_s=1.0)
        record = gw.sink.emitted("left-early", timeout_s=3)  # the keep-alive would be at 10 s
        assert (record.status, record.http_status) == ("cancelled", 499)
        assert [(a.provider, a.status) for a in record.attempts] == [("up", 499)]
        assert 500 < record.attempts[0].duration_ms < 5000
        usage = record.usage
        assert usage is not None and usage.estimated
        assert usage.prompt_tokens > 0 and usage.completion_tokens == 0
        assert record.cost_usd is not None and record.cost_usd > 0
        assert _until(lambda: _stats(simulator)[counter] > before, timeout_s=5)


def _with_a_deadline_of_1_s(gw: RunningGateway, path: str, request_id: str
                            ) -> tuple[str, float]:
    """A streamed call to ``path`` sent with ``x-switchboard-deadline-s: 1``: the whole text
    of its 200 answer, and the seconds it took."""
    started = time.monotonic()
    with gw.http().stream("POST", path, json=_CALLS[path],
                          headers={"x-request-id": request_id,
                                   "x-switchboard-deadline-s": "1"}) as answer:
        assert answer.status_code == 200
        text = answer.read().decode()
    return text, time.monotonic() - started


@pytest.mark.parametrize("path", list(_CALLS))
def test_a_client_deadline_ends_a_committed_stream(run_gateway: GatewayFactory, simulator: str,
                                                   path: str) -> None:
    """Committed at a keep-alive, a stream whose first token does not come by the client's
    deadline ends then (not at the provider's timeout) with a ``deadline_exceeded`` error frame;
    the upstream request is cancelled and the attempt's duration is the call's."""
    raw = _config(simulator, {**_sim(simulator, **{"X-Sim-Hang": "1"}), "timeout_s": 8})
    raw["streaming"] = {"keepalive_s": 0.2}
    before = _stats(simulator)["requests_cancelled"]
    with run_gateway(raw) as gw:
        text, took = _with_a_deadline_of_1_s(gw, path, "deadline")
        assert took < 6  # the provider's timeout_s is 8 s
        if path == "/v1/messages":
            assert text.startswith(": keep-alive")  # not a ping before message_start
            error = json.loads(text.split("event: error\ndata: ")[1].split("\n")[0])
            assert error["error"]["type"] == "timeout_error"
        else:
            assert text.startswith(": keep-alive")
            # one a keep-alive interval at most (not a burst of them as the deadline nears)
            assert text.count(": keep-alive") <= 1 / 0.2 + 1
            assert _frames(text)[-1]["error"]["code"] == "deadline_exceeded"
            assert text.rstrip().endswith("data: [DONE]")
        record = gw.sink.emitted("deadline")
        assert (record.status, record.http_status, record.error_type) == ("error", 504,
                                                                          "timeout")
        assert [(a.status, a.error_type) for a in record.attempts] == [(504, "timeout")]
        assert record.latency_ms is not None
        assert 900 < record.attempts[0].duration_ms <= record.latency_ms
        assert record.latency_ms - record.attempts[0].duration_ms < 1000
        # Upstream time runs to the deadline too, not to the first keep-alive (then 800 ms).
        assert record.overhead_ms is not None and record.overhead_ms < 500
        assert _until(lambda: _stats(simulator)["requests_cancelled"] > before, timeout_s=5)


# ---- an Anthropic stream's first chunk is its first token, not message_start ----------------


def _slow_anthropic(simulator: str, ttft_ms: int) -> dict[str, Any]:
    """Anthropic on the simulator: ``message_start`` at once, the first token ``ttft_ms`` on."""
    return {**_provider("anthropic", simulator, {"X-Sim-TTFT-Ms": str(ttft_ms)}),
            "timeout_s": 30}


@pytest.mark.parametrize("path", list(_CALLS))
def test_a_deadline_bounds_an_anthropic_first_token(run_gateway: GatewayFactory,
                                                    simulator: str, path: str) -> None:
    """An Anthropic target whose ``message_start`` comes at once and whose first token comes
    after the client's deadline: the stream ends at the deadline with a ``deadline_exceeded``
    error (nothing of the upstream's relayed), not when the upstream finishes."""
    raw = _config(simulator, _slow_anthropic(simulator, 3000))
    raw["streaming"] = {"keepalive_s": 0.2}
    with run_gateway(raw) as gw:
        text, took = _with_a_deadline_of_1_s(gw, path, "slow-claude")
        assert took < 2.5  # the first token is 3 s away
        if path == "/v1/messages":
            assert text.startswith(": keep-alive")  # not a ping before message_start
            assert "message_start" not in text
            error = json.loads(text.split("event: error\ndata: ")[1].split("\n")[0])
            assert error["error"]["type"] == "timeout_error"
        else:
            assert _frames(text)[-1]["error"]["code"] == "deadline_exceeded"
            assert not any(_contents(_frames(text)))
        record = gw.sink.emitted("slow-claude")
        assert (record.status, record.http_status, record.error_type) == ("error", 504,
                                                                          "timeout")


@pytest.mark.parametrize("path", list(_CALLS))
def test_an_anthropic_target_slow_to_its_first_token_falls_back(run_gateway: GatewayFactory,
                                                                simulator: str,
                                                                path: str) -> None:
    """An Anthropic target that sends ``message_start`` at once but no token within its
    ``first_chunk_timeout_s`` is given up for the next target, which answers the stream."""
    raw = _config(simulator, _slow_anthropic(simulator, 3000))
    raw["providers"]["fast"] = _provider("anthropic", simulator, {})
    raw["models"]["chat"] = {"targets": [
        {"provider": "up", "model": "claude-sonnet-4", "first_chunk_timeout_s": 0.5},
        {"provider": "fast", "model": "claude-sonnet-4"}]}
    with run_gateway(raw) as gw:
        started = time.monotonic()
        with gw.http().stream("POST", path, json=_CALLS[path],
                              headers={"x-request-id": "fell-back"}) as answer:
            assert answer.status_code == 200
            text = answer.read().decode()
        assert time.monotonic() - started < 2.5
        assert text.count("event: message_start") == (1 if path == "/v1/messages" else 0)
        record = gw.sink.emitted("fell-back")
        assert (record.status, record.provider) == ("ok", "fast")
        assert [(a.provider, a.status) for a in record.attempts] == [("up", 504), ("fast", 200)]


def test_an_anthropic_stream_ttft_is_its_first_token(run_gateway: GatewayFactory,
                                                     simulator: str) -> None:
    """The call's TTFT on an Anthropic stream is the time to the first token, and the client
    gets every event the upstream sent, once each, in Anthropic's order."""
    raw = _config(simulator, _slow_anthropic(simulator, 600))
    with run_gateway(raw) as gw:
        with gw.http().stream("POST", "/v1/messages", json=_CALLS["/v1/messages"],
                              headers={"x-request-id": "ttft"}) as answer:
            text = answer.read().decode()
        names = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
        assert names[:2] == ["message_start", "content_block_start"]
        assert "content_block_delta" in names
        assert names[-2:] == ["message_delta", "message_stop"]
        assert names.count("message_start") == 1
        record = gw.sink.emitted("ttft")
        assert record.status == "ok"
        assert record.ttft_ms is not None and record.ttft_ms >= 550


# ---- a streaming client leaves after a keep-alive, before the first token -------------------


def _leave_after_the_keepalive(gw: RunningGateway, path: str, *, request_id: str) -> None:
    """Send ``path``'s streamed call over a raw socket, read until its first keep-alive, then
    close the connection."""
    host, port = gw.url.removeprefix("http://").split(":")
    body = json.dumps(_CALLS[path]).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {MASTER_KEY}\r\n"
            f"x-request-id: {request_id}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + body)
        sock.settimeout(30)
        got = b""
        while b": keep-alive" not in got:
            data = sock.recv(65536)
            assert data, f"the gateway closed the stream before a keep-alive: {got!r}"
            got += data
        assert b"data:" not in got  # nothing generated yet


@pytest.mark.parametrize("path", list(_CALLS))
def test_stream_left_after_a_keepalive_before_the_first_token(
        run_gateway: GatewayFactory, simulator: str, path: str) -> None:
    """Committed at a keep-alive, the client leaves before the first token (due before the next
    keep-alive): the upstream request is cancelled when the client leaves, not when the next
    frame is written, and the call is a cancelled 499 whose attempt records 499, with no
    time to first token (no chunk reached the client) and its prompt's estimated tokens only
    (the upstream had the prompt: "What clients get")."""
    raw = _config(simulator, {**_sim(simulator, **{"X-Sim-TTFT-Ms": "3000"}), "timeout_s": 60})
    raw["streaming"] = {"keepalive_s": 2}  # the first token comes between two keep-alives
    before = _stats(simulator)["streams_cancelled"]
    with run_gateway(raw) as gw:
        _leave_after_the_keepalive(gw, path, request_id="left-at-keepalive")
        record = gw.sink.emitted("left-at-keepalive")
        assert (record.status, record.http_status) == ("cancelled", 499)
        assert [(a.provider, a.status) for a in record.attempts] == [("up", 499)]
        assert record.usage is not None and record.usage.estimated
        assert record.usage.prompt_tokens > 0 and record.usage.completion_tokens == 0
        assert record.ttft_ms is None
        assert _until(lambda: _stats(simulator)["streams_cancelled"] > before, timeout_s=5)


@pytest.mark.parametrize("path", list(_CALLS))
def test_the_wait_for_a_first_token_past_a_keepalive_is_upstream_time(
        run_gateway: GatewayFactory, simulator: str, path: str) -> None:
    """Committed at a keep-alive, a stream whose first token then comes: the wait for it is the
    upstream's time (the attempt's duration and the call's upstream time run to it), not the
    gateway's overhead."""
    raw = _config(simulator, {**_sim(simulator, **{"X-Sim-TTFT-Ms": "3000"}), "timeout_s": 60})
    raw["streaming"] = {"keepalive_s": 0.2}
    with run_gateway(raw) as gw:
        with gw.http().stream("POST", path, json=_CALLS[path],
                              headers={"x-request-id": "slow-first"}) as answer:
            assert answer.status_code == 200
            text = answer.read().decode()
        assert text.startswith(": keep-alive")
        record = gw.sink.emitted("slow-first")
        assert record.status == "ok"
        assert [a.status for a in record.attempts] == [200]
        # The upstream took 3 s to its first token: all of it is the upstream's (overhead is
        # latency less upstream time, so none of it is the gateway's).
        assert record.attempts[0].duration_ms >= 3000
        assert record.upstream_ms >= 3000
