"""A black-holed target behind a running gateway: its circuit breaker opens after a bounded
number of calls, which then skip it; streams leave it before the client is committed; after
the cooldown one call probes it. The upstream that never answers is a listening socket nobody
accepts from (``black_hole``)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
import pytest
import redis

from app.config import parse_config
from app.main import create_app
from app.routing.shared import HASH, PROBE_PREFIX, location
from tests.api.conftest import (
    MASTER_KEY,
    GatewayFactory,
    ListSink,
    RunningGateway,
    settings_in,
    sim_config,
)
from tests.calllog.servers import PrivateRedis
from tests.hardening_upstreams import chat_answer, scripted
from tests.servers import serve

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def config(simulator: str, black_hole: str, **breaker: Any) -> dict[str, Any]:
    raw = sim_config(simulator, chat={"targets": [
        {"provider": "hole", "model": "gpt-4o-mini"},
        {"provider": "sim", "model": "gpt-4o-mini"}]})
    raw["providers"]["hole"] = {"type": "openai", "base_url": black_hole, "api_key": "sk-h",
                                "timeout_s": 0.3, "first_chunk_timeout_s": 0.3}
    raw["breaker"] = {"failures": 3, "cooldown_s": 60, **breaker}
    return raw


def test_a_black_holed_target_costs_a_few_calls_then_is_skipped(
        run_gateway: GatewayFactory, simulator: str, black_hole: str) -> None:
    with run_gateway(config(simulator, black_hole)) as gateway:
        http = gateway.http()
        for _ in range(20):
            answer = http.post("/v1/chat/completions", json=CHAT)
            assert answer.status_code == 200 and answer.headers["x-switchboard-provider"] == "sim"
        tried = [[a.provider for a in r.attempts] for r in gateway.sink.records]
        assert tried == [["hole", "sim"]] * 3 + [["sim"]] * 17
        assert tried[0] and gateway.sink.records[0].attempts[0].status == 504
        routing = http.get("/admin/routing").json()["models"]["chat"]["targets"]
        assert [(t["provider"], t["state"]) for t in routing] == [("hole", "open"),
                                                                   ("sim", "closed")]
        metrics = http.get("/metrics").text
        assert ('switchboard_target_state{provider="hole",upstream_model="gpt-4o-mini"} 2.0'
                in metrics)


def test_a_black_holed_stream_is_left_before_the_client_is_committed(
        run_gateway: GatewayFactory, simulator: str, black_hole: str) -> None:
    with run_gateway(config(simulator, black_hole)) as gateway:
        client = gateway.client()
        for _ in range(5):
            chunks = list(client.chat.completions.create(stream=True, **CHAT))  # type: ignore[call-overload]
            assert chunks and chunks[0].choices[0].delta is not None
        tried = [[a.provider for a in r.attempts] for r in gateway.sink.records]
        assert tried == [["hole", "sim"]] * 3 + [["sim"]] * 2
        assert {r.status for r in gateway.sink.records} == {"ok"}


def test_after_the_cooldown_one_call_probes_and_a_failed_probe_reopens_it(
        run_gateway: GatewayFactory, simulator: str, black_hole: str) -> None:
    with run_gateway(config(simulator, black_hole, failures=1, cooldown_s=0.5)) as gateway:
        http = gateway.http()
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # opens it
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # skips it
        time.sleep(0.6)
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # probes it
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # skips it
        tried = [[a.provider for a in r.attempts] for r in gateway.sink.records]
        assert tried == [["hole", "sim"], ["sim"], ["hole", "sim"], ["sim"]]
        hole = http.get("/admin/routing").json()["models"]["chat"]["targets"][0]
        assert (hole["state"], hole["cooldown_s"]) == ("open", 1.0)  # doubled


def test_a_target_that_cuts_its_streams_short_opens_its_breaker(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """A stream that fails after its first chunk reached the client cannot fall back, but its
    target failed all the same: its breaker hears of it (it heard only of the first chunk, a
    success, so a target cutting every stream was tried forever)."""
    raw = sim_config(simulator, chat={"targets": [{"provider": "cut", "model": "gpt-4o-mini"},
                                                  {"provider": "sim", "model": "gpt-4o-mini"}]})
    raw["providers"]["cut"] = {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-c",
                               "headers": {"X-Sim-Cut-After": "2"}}
    raw["breaker"] = {"failures": 3, "cooldown_s": 60}
    with run_gateway(raw) as gateway:
        tried, cut = three_failed_streams_then_one(gateway)
    assert tried == [[("cut", 502)]] * 3 + [[("sim", 200)]]
    assert (cut["provider"], cut["state"]) == ("cut", "open")


def test_a_stream_committed_at_a_keep_alive_to_a_dead_target_opens_its_breaker(
        run_gateway: GatewayFactory, simulator: str, black_hole: str) -> None:
    """With a first-chunk timeout longer than the keep-alive, a quiet target is committed to
    at the keep-alive and then times out: a failed attempt, which its breaker now hears of
    (it was judged a success when committed to, so every call committed to it again)."""
    raw = config(simulator, black_hole)
    raw["providers"]["hole"].update(timeout_s=0.6, first_chunk_timeout_s=5)
    raw["streaming"] = {"keepalive_s": 0.2}
    with run_gateway(raw) as gateway:
        tried, hole = three_failed_streams_then_one(gateway)
    assert tried == [[("hole", 504)]] * 3 + [[("sim", 200)]]
    assert (hole["provider"], hole["state"]) == ("hole", "open")
    assert hole["first_byte_ms"] is None  # the keep-alive was not its first byte


def three_failed_streams_then_one(gateway: RunningGateway
                                  ) -> tuple[list[list[tuple[str, int]]], dict[str, Any]]:
    """Three streamed calls that fail (the SDK raises), then one that must be served: each
    call's (provider, status) attempts, and the first target's row of ``/admin/routing``."""
    client = gateway.client()
    for _ in range(3):
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(stream=True, **CHAT))  # type: ignore[call-overload]
    assert list(client.chat.completions.create(stream=True, **CHAT))  # type: ignore[call-overload]
    tried = [[(a.provider, a.status) for a in r.attempts] for r in gateway.sink.records]
    first: dict[str, Any] = gateway.http().get("/admin/routing").json()[
        "models"]["chat"]["targets"][0]
    return tried, first


def replicas(tmp_path: Path, raw: dict[str, Any], redis_url: str, count: int,
             stack: ExitStack) -> Iterator[RunningGateway]:
    """``count`` gateways, each with its own call log, sharing one Redis."""
    for n in range(count):
        directory = tmp_path / f"replica-{n}"
        directory.mkdir()
        settings = settings_in(directory).model_copy(update={"redis_url": redis_url})
        sink = ListSink()
        app = create_app(settings, config=parse_config(raw, {}), sink=sink,
                         strict_telemetry=True)
        running = RunningGateway(url=stack.enter_context(serve(app)), sink=sink)
        stack.callback(running.close_clients)
        yield running


def test_gateways_sharing_redis_share_their_breakers(
        tmp_path: Path, simulator: str, black_hole: str) -> None:
    redis = PrivateRedis()
    redis.start()
    try:
        with ExitStack() as stack:
            a, b = replicas(tmp_path, config(simulator, black_hole), redis.url, 2, stack)
            a_http, b_http = a.http(), b.http()
            for _ in range(3):
                assert a_http.post("/v1/chat/completions", json=CHAT).status_code == 200
            assert [[x.provider for x in r.attempts] for r in a.sink.records] == \
                [["hole", "sim"]] * 3
            deadline = time.monotonic() + 5
            while b_http.get("/admin/routing").json()["models"]["chat"]["targets"][0][
                    "state"] != "open":
                assert time.monotonic() < deadline, "b never heard that a opened the breaker"
                time.sleep(0.02)
            for _ in range(5):
                assert b_http.post("/v1/chat/completions", json=CHAT).status_code == 200
            # b skips the dead target from its first call: it never waited for it.
            assert [[x.provider for x in r.attempts] for r in b.sink.records] == [["sim"]] * 5
            metrics = b_http.get("/metrics").text
            assert ('switchboard_target_state{provider="hole",upstream_model="gpt-4o-mini"} 2.0'
                in metrics)
    finally:
        redis.stop()


def test_a_targets_own_timeouts_override_its_providers(
        run_gateway: GatewayFactory, simulator: str, black_hole: str) -> None:
    raw = sim_config(simulator, chat={"targets": [
        {"provider": "hole", "model": "gpt-4o-mini", "timeout_s": 0.3,
         "first_chunk_timeout_s": 0.3},
        {"provider": "sim", "model": "gpt-4o-mini"}]})
    # The provider's own would outlast the test client's 30 s and commit the stream to the
    # hole at the first keep-alive.
    raw["providers"]["hole"] = {"type": "openai", "base_url": black_hole, "api_key": "sk-h",
                                "timeout_s": 60, "first_chunk_timeout_s": 60}
    raw["breaker"] = {"enabled": False}
    with run_gateway(raw) as gateway:
        answer = gateway.http().post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 200 and answer.headers["x-switchboard-provider"] == "sim"
        chunks = list(gateway.client().chat.completions.create(stream=True, **CHAT))  # type: ignore[call-overload]
        assert chunks and chunks[-1].choices[0].finish_reason == "stop"
        attempts = [[(a.provider, a.status) for a in r.attempts] for r in gateway.sink.records]
        assert attempts == [[("hole", 504), ("sim", 200)]] * 2


def test_a_clients_short_deadline_never_opens_a_breaker(run_gateway: GatewayFactory,
                                                         simulator: str) -> None:
    """A deadline passing is the caller's choice, not the target's failure: calls with a tiny
    ``x-switchboard-deadline-s`` end 504 and leave the healthy target closed (seven of them
    opened it, for every caller)."""
    raw = sim_config(simulator)
    raw["breaker"] = {"failures": 3, "cooldown_s": 60}
    with run_gateway(raw) as gateway:
        http = gateway.http()
        for _ in range(7):
            answer = http.post("/v1/chat/completions", json=CHAT,
                               headers={"x-switchboard-deadline-s": "0.0001"})
            assert answer.status_code == 504
            assert answer.json()["error"]["code"] == "deadline_exceeded"
        target = http.get("/admin/routing").json()["models"]["chat"]["targets"][0]
        assert target["state"] == "closed"
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_a_probe_whose_client_left_leaves_the_next_call_to_probe(
        tmp_path: Path, simulator: str) -> None:
    """A half-open probe whose client leaves gives the fleet's probe claim back (breakers
    shared through Redis): the next call probes the target (it failed to claim against this
    process's own claim, still held, and reopened the target for a whole cooldown)."""
    with PrivateRedis() as server, scripted(None, chat_answer()) as up, \
            redis.Redis.from_url(server.url) as store, ExitStack() as stack:
        raw = sim_config(simulator, chat={"targets": [
            {"provider": "up", "model": "gpt-4o-mini"},
            {"provider": "sim", "model": "gpt-4o-mini"}]})
        raw["providers"]["up"] = {"type": "openai", "base_url": up.url + "/v1",
                                  "api_key": "sk-u"}
        raw["breaker"] = {"cooldown_s": 60}
        # Another gateway process opened the target's breaker 61 s ago for 60 s: this one reads
        # that when it starts, and its next call probes the target (claiming it for 60 s).
        field = json.dumps(["up", "gpt-4o-mini", location(parse_config(raw, {}), "up")],
                           separators=(",", ":"))
        store.hset(HASH, field, json.dumps({"target": field, "state": "open", "origin": "other",
                                            "opened_at": time.time() - 61, "cooldown_s": 60}))
        (gateway,) = replicas(tmp_path, raw, server.url, 1, stack)
        http = gateway.http()
        wait_for(lambda: http.get("/admin/routing").json()["models"]["chat"]["targets"][0][
            "state"] == "open", "the gateway never read the open breaker")
        leave_once_reached(gateway.url, CHAT, reached=lambda: len(up.requests) == 1)
        wait_for(lambda: bool(gateway.sink.records), "the probe was never recorded")
        assert [(a.provider, a.status) for a in gateway.sink.records[0].attempts] == \
            [("up", 499)]
        # The claim is given back in the background: a moment for it (none comes without it).
        deadline = time.monotonic() + 5
        while store.keys(PROBE_PREFIX + "*") and time.monotonic() < deadline:
            time.sleep(0.02)
        answer = http.post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 200
        assert answer.headers["x-switchboard-provider"] == "up"  # probed, not skipped
        assert len(up.requests) == 2


def wait_for(check: Callable[[], bool], failure: str) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, failure
        time.sleep(0.02)


def leave_once_reached(url: str, body: dict[str, Any], *, reached: Callable[[], bool]) -> None:
    """Send a chat call over a connection of its own, and hang up once ``reached()`` (the
    upstream has the call): a client that leaves while the gateway waits for the answer."""
    host, _, port = url.removeprefix("http://").partition(":")
    payload = json.dumps(body).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {MASTER_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(head + payload)
        wait_for(reached, "the call never reached the upstream")
