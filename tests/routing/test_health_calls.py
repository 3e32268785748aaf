# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""Circuit breakers, deadlines and retry waits seen through a running gateway: a late success
from before a breaker opened, a configured deadline shorter than a hung target's timeout, a
hung Redis under a half-open probe, and the time a retry waits."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

from app.config import parse_config
from app.main import create_app
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    MASTER_KEY,
    GatewayFactory,
    ListSink,
    RunningGateway,
    run_gateway,
    settings_in,
    sim_config,
)
from tests.calllog.servers import PrivateRedis
from tests.hardening_upstreams import Listener, _listening, _serve, chat_answer, json_answer
from tests.servers import serve

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
UNAVAILABLE = json_answer(b'{"error": {"message": "down", "type": "server_error"}}', 503)


@contextmanager
def upstream(answer: Callable[[int], bytes | None]) -> Iterator[Listener]:
    """An upstream answering its ``n``th request (counted as they arrive) with ``answer(n)``,
    which may block until the test lets it answer."""
    arrived = itertools.count()
    with _listening() as (sock, port):
        state = Listener(port)
        threading.Thread(target=_serve, args=(sock, state, lambda _n: answer(next(arrived))),
                         daemon=True).start()
        yield state


def config(simulator: str, up: str, **extra: Any) -> dict[str, Any]:
    """A config whose ``chat`` tries ``up`` (at ``up``) and then the simulator."""
    raw = sim_config(simulator, chat={"targets": [{"provider": "up", "model": "gpt-4o-mini"},
                                                  {"provider": "sim", "model": "gpt-4o-mini"}]})
    raw["providers"]["up"] = {"type": "openai", "base_url": up + "/v1", "api_key": "sk-u"}
    raw.update(extra)
    return raw


def state_of_up(http: httpx.Client) -> str:
    state: str = http.get("/admin/routing").json()["models"]["chat"]["targets"][0]["state"]
    return state


def tried(gateway: RunningGateway, request_id: str) -> list[tuple[str, int]]:
    return [(a.provider, a.status) for a in gateway.sink.by_id(request_id).attempts]


def test_a_late_success_from_before_the_breaker_opened_does_not_close_it(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """A slow call the target accepted before it started failing, answered after its breaker
    opened, leaves the breaker open: the next call skips the target (it closed the breaker,
    and every call again spent its failures on the target)."""
    reached, release = threading.Event(), threading.Event()

    def answer(n: int) -> bytes:
        if n == 0:  # the slow call, accepted while the target was well
            reached.set()
            release.wait(30)
            return chat_answer()
        return UNAVAILABLE

    with upstream(answer) as up, \
            run_gateway(config(simulator, up.url,
                               breaker={"failures": 3, "cooldown_s": 300})) as gateway:
        http = gateway.http()
        slow: list[httpx.Response] = []
        caller = threading.Thread(target=lambda: slow.append(http.post(
            "/v1/chat/completions", json=CHAT, headers={"x-request-id": "slow"})))
        caller.start()
        try:
            assert reached.wait(10), "the slow call never reached the upstream"
            late_success_leaves_it_open(gateway, release, caller, slow)
        finally:
            release.set()
            caller.join(30)


def late_success_leaves_it_open(gateway: RunningGateway, release: threading.Event,
                                caller: threading.Thread, slow: list[httpx.Response]) -> None:
    """Three failed calls open ``up``; then the slow call is answered; the breaker stays open
    and the next call goes straight to ``sim``."""
    http = gateway.http()
    for n in range(3):  # the target fails: its breaker opens
        reply = http.post("/v1/chat/completions", json=CHAT,
                          headers={"x-request-id": f"fail-{n}"})
        assert reply.headers["x-switchboard-provider"] == "sim"
    assert state_of_up(http) == "open"
    release.set()
    caller.join(30)
    assert slow and slow[0].headers["x-switchboard-provider"] == "up"
    assert state_of_up(http) == "open"
    reply = http.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "after"})
    assert reply.status_code == 200
    assert tried(gateway, "after") == [("sim", 200)]


def test_a_configured_deadline_shorter_than_a_hung_targets_timeout_opens_its_breaker(
        run_gateway: GatewayFactory, simulator: str, black_hole: str) -> None:
    """With ``retries.deadline_s`` under a hung target's ``timeout_s``, the deadline passing
    while the call waits on it counts as the target's timeout: its breaker opens and the calls
    after go to the next target (every call ended 504 on the hung one, forever)."""
    raw = config(simulator, "http://unused", breaker={"failures": 2, "cooldown_s": 300})
    raw["providers"]["up"] = {"type": "openai", "base_url": black_hole, "api_key": "sk-h",
                              "timeout_s": 60}
    raw["retries"] = {"attempts": 0, "deadline_s": 1}
    with run_gateway(raw) as gateway:
        http = gateway.http()
        for n in range(2):
            reply = http.post("/v1/chat/completions", json=CHAT,
                              headers={"x-request-id": f"hung-{n}"})
            assert reply.status_code == 504
            assert reply.json()["error"]["code"] == "deadline_exceeded"
        assert state_of_up(http) == "open"
        reply = http.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "after"})
        assert reply.status_code == 200 and reply.headers["x-switchboard-provider"] == "sim"
        assert tried(gateway, "after") == [("sim", 200)]


def test_a_hung_redis_does_not_hold_a_probe_past_the_calls_deadline(
        tmp_path: Path, simulator: str) -> None:
    """Shared breakers, Redis not answering writes: a call with a 1 s deadline whose first
    target is due a probe skips it (no time to claim the probe) and is served by the next
    one, with no attempt recorded for the target it never sent the request to (it waited 5 s
    or more for Redis and ended 504, with a 0 ms attempt on the open target)."""
    with PrivateRedis() as server, upstream(lambda _n: UNAVAILABLE) as up, \
            redis.Redis.from_url(server.url) as store, ExitStack() as stack:
        raw = config(simulator, up.url, breaker={"failures": 1, "cooldown_s": 0.5})
        settings = settings_in(tmp_path).model_copy(update={"redis_url": server.url})
        sink = ListSink()
        app = create_app(settings, config=parse_config(raw, {}), sink=sink,
                         strict_telemetry=True)
        gateway = RunningGateway(url=stack.enter_context(serve(app)), sink=sink)
        stack.callback(gateway.close_clients)
        http = gateway.http()
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # opens it
        assert state_of_up(http) == "open"
        time.sleep(0.6)  # the cooldown is over: the next call is due to probe it
        store.client_pause(10_000, all=False)  # Redis takes no write (the probe claim)
        try:
            reply = http.post("/v1/chat/completions", json=CHAT, headers={
                "x-switchboard-deadline-s": "1", "x-request-id": "probe-due"})
        finally:
            store.client_unpause()
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-switchboard-provider"] == "sim"
        assert tried(gateway, "probe-due") == [("sim", 200)]


def test_a_retry_wait_is_not_the_gateways_overhead(run_gateway: GatewayFactory,
                                                  simulator: str) -> None:
    """The time a call waits before a retry (an upstream's ``Retry-After``) counts as upstream
    time, not the gateway's overhead (the row's, ``x-switchboard-overhead-ms``): it fired the
    overhead alert on every upstream 429."""
    limited = (b"HTTP/1.1 429 X\r\nContent-Type: application/json\r\nRetry-After: 2\r\n"
               b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    with upstream(lambda n: limited if n == 0 else chat_answer()) as up, \
            run_gateway(config(simulator, up.url, retries={"attempts": 1})) as gateway:
        reply = gateway.http().post("/v1/chat/completions", json=CHAT,
                                    headers={"x-request-id": "waited"})
        assert reply.status_code == 200 and reply.headers["x-switchboard-provider"] == "up"
        record = gateway.sink.by_id("waited")
        assert [(a.provider, a.status) for a in record.attempts] == [("up", 429), ("up", 200)]
        assert record.upstream_ms >= 1900  # the 2 s wait is the upstream's
        assert float(reply.headers["x-switchboard-overhead-ms"]) < 1000  # not the gateway's
        assert record.overhead_ms is not None and record.overhead_ms < 1000
