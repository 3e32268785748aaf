"""Circuit breakers across a live reload that points a provider elsewhere (the usual fix for a
dead upstream), with two gateways sharing their breakers through Redis: the calls still running
on the old location that then fail open the old location's breaker, here and in Redis; the
provider's new location starts closed on both gateways, and serves their next calls."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
import yaml

from app.main import create_app
from app.routing.shared import HASH
from tests.api.conftest import ListSink, RunningGateway, settings_in, sim_config
from tests.calllog.servers import PrivateRedis
from tests.servers import serve

HB = {"model": "hb", "messages": [{"role": "user", "content": "hi"}]}
HELD = 3
"""Calls held by the dead upstream across the reload (``breaker.failures``: they open it)."""


class Gate:
    """An upstream that holds every request until ``release()``, then answers each with a 503
    (a dead provider whose calls fail only after the reload that replaces it)."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.arrived = 0
        lock = threading.Lock()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    gate.arrived += 1
                gate.released.wait(30)
                body = b'{"error": {"message": "down", "type": "server_error"}}'
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @contextmanager
    def running(self) -> Iterator[Gate]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.released.set()
            self._server.shutdown()
            self._server.server_close()


def config(simulator: str, gpu_url: str) -> dict[str, Any]:
    """``hb``: first ``gpu/m9`` (at ``gpu_url``), then the healthy ``sim``; three failures
    open a breaker for a minute."""
    raw = sim_config(simulator, hb={"targets": [{"provider": "gpu", "model": "m9"},
                                                {"provider": "sim", "model": "gpt-4o-mini"}]},
                     bad={"targets": [{"provider": "broken", "model": "gpt-4o-mini"}]})
    raw["providers"]["gpu"] = {"type": "openai", "base_url": gpu_url, "api_key": "sk-gpu"}
    raw["breaker"] = {"failures": HELD, "cooldown_s": 60}
    return raw


def until(check: Any, what: str) -> Any:
    """``check()``'s first truthy value (waiting up to 10 s for it)."""
    deadline = time.monotonic() + 10
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return found


def target(gateway: RunningGateway, model: str, provider: str) -> dict[str, Any]:
    """The target's row in the gateway's ``GET /admin/routing``."""
    rows = gateway.http().get("/admin/routing").json()["models"][model]["targets"]
    row: dict[str, Any] = next(t for t in rows if t["provider"] == provider)
    return row


def test_calls_failing_on_the_old_location_do_not_open_the_new_one(
        tmp_path: Path, simulator: str) -> None:
    """Three calls held by a dead ``gpu`` while both gateways reload to ``gpu`` pointed at a
    healthy server, then failing: the opening is published under the old location, and neither
    gateway opens the repointed target, whose next calls it serves (the opening went to Redis
    under the new location, the other gateway opened the fixed target, never tried, and this
    one kept its own breaker of the target open)."""
    file = tmp_path / "gateway.yaml"
    with ExitStack() as stack:
        store = stack.enter_context(PrivateRedis())
        gate = stack.enter_context(Gate().running())
        file.write_text(yaml.safe_dump(config(simulator, gate.url)))
        gateways = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            settings = settings_in(tmp_path / name).model_copy(update={
                "redis_url": store.url, "config": file, "config_poll_s": 0})
            sink = ListSink()
            running = RunningGateway(url=stack.enter_context(serve(create_app(
                settings, sink=sink, strict_telemetry=True))), sink=sink)
            stack.callback(running.close_clients)
            gateways.append(running)
        a, b = gateways
        calls = stack.enter_context(ThreadPoolExecutor(HELD))
        held = [calls.submit(a.http().post, "/v1/chat/completions", json=HB)
                for _ in range(HELD)]
        until(lambda: gate.arrived == HELD, "the calls never reached the dead upstream")

        file.write_text(yaml.safe_dump(config(simulator, simulator + "/v1")))  # the fix
        for gateway in (a, b):
            answer = gateway.http().post("/admin/config/reload")
            assert answer.status_code == 200 and answer.json()["changed"], answer.text
        gate.released.set()  # the held calls fail on the old location, and fall back
        assert [f.result().status_code for f in held] == [200] * HELD

        shared = redis.Redis.from_url(store.url)
        stack.callback(shared.close)
        opened = until(lambda: shared.hgetall(HASH), "the opening was never shared")
        assert [json.loads(field) for field in opened] == [["gpu", "m9", gate.url]]
        # Then b must have heard of it: one opening more, published after it, and heard.
        for _ in range(HELD):
            assert a.http().post("/v1/chat/completions", json={**HB, "model": "bad"}) \
                .status_code == 503
        until(lambda: target(b, "bad", "broken")["state"] == "open",
              "b never heard of a later opening")
        for gateway in (a, b):
            assert target(gateway, "hb", "gpu")["state"] == "closed"
            answer = gateway.http().post("/v1/chat/completions", json=HB)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-switchboard-provider"] == "gpu"
