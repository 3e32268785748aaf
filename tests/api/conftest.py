"""A running gateway on loopback, configured against the simulator, for SDK-level tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr

from app.calllog import CallRecord
from app.config import parse_config
from app.main import create_app
from app.settings import Settings
from tests.servers import serve

MASTER_KEY = "sk-test-master-key-0123456789"


class ListSink:
    """Keeps every call record the gateway emits, so tests can check them."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def submit(self, record: CallRecord) -> None:
        self.records.append(record)

    def by_id(self, request_id: str) -> CallRecord:
        """The one record of the call sent with ``x-request-id: request_id``."""
        found = [r for r in self.records if r.request_id == request_id]
        assert len(found) == 1, f"expected exactly one record for {request_id}, got {len(found)}"
        return found[0]

    def emitted(self, request_id: str, *, timeout_s: float = 10) -> CallRecord:
        """``by_id`` once the gateway has emitted the record (a stream's, after its end)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(r.request_id == request_id for r in self.records):
                return self.by_id(request_id)
            time.sleep(0.02)
        raise AssertionError(f"no call record for {request_id}")


@dataclass
class RunningGateway:
    url: str
    sink: ListSink
    opened: list[openai.OpenAI | httpx.Client] = field(default_factory=list)
    """Clients handed out, closed when the gateway stops (an unclosed pooled socket would
    otherwise surface as a ResourceWarning in whichever later test collects it)."""

    def client(self, **kwargs: Any) -> openai.OpenAI:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key=MASTER_KEY, max_retries=0,
                               **kwargs)
        self.opened.append(client)
        return client

    def http(self) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30,
                              headers={"Authorization": f"Bearer {MASTER_KEY}"})
        self.opened.append(client)
        return client

    def leave_a_stream(self, simulator: str, *, request_id: str, body: dict[str, Any],
                       path: str = "/v1/chat/completions",
                       headers: dict[str, str] | None = None, lines: int = 3) -> int:
        """Open a stream (``headers``: its credentials, else the master key as a bearer), read
        ``lines`` lines of it and leave; then wait (5 s at most) until the simulator has counted
        a cancelled stream and the call is recorded. The streams the simulator saw cancelled
        meanwhile."""
        stats = simulator + "/_sim/stats"
        before: int = httpx.get(stats).json()["streams_cancelled"]
        sent = {**(headers or {"Authorization": f"Bearer {MASTER_KEY}"}),
                "x-request-id": request_id}
        with httpx.stream("POST", self.url + path, timeout=10, headers=sent,
                          json=body) as response:
            for i, _ in enumerate(response.iter_lines()):
                if i >= lines:
                    break
        deadline = time.monotonic() + 5
        while True:
            cancelled: int = httpx.get(stats).json()["streams_cancelled"] - before
            recorded = any(r.request_id == request_id for r in self.sink.records)
            if (cancelled and recorded) or time.monotonic() > deadline:
                return cancelled
            time.sleep(0.05)

    def close_clients(self) -> None:
        for client in self.opened:
            client.close()


GatewayFactory = Callable[[dict[str, Any]], AbstractContextManager[RunningGateway]]


def sim_config(simulator: str, **models: Any) -> dict[str, Any]:
    """A config with provider ``sim`` (healthy) and ``broken`` (every call answers 503)."""
    return {
        "providers": {
            "sim": {"type": "openai", "base_url": simulator + "/v1",
                    "api_key": "sk-upstream-secret"},
            "broken": {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-b",
                       "headers": {"X-Return-Error": "503"}},
        },
        "models": models or {
            "chat": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
            "embed": {"targets": [{"provider": "sim", "model": "text-embedding-3-small"}]},
        },
        # No encoder process per test gateway (tests/metrics turn embedding drift on to test it).
        "drift": {"embedding": {"sample_rate": 0}},
        # Fallback tests count attempts: one per target. Retries of a target are tested on
        # their own (tests/api/test_retries.py).
        "retries": {"attempts": 0},
    }


def settings_in(directory: Path) -> Settings:
    """Settings for a gateway under test: master key on, call log in ``directory``."""
    return Settings(master_key=SecretStr(MASTER_KEY), config=None,
                    database_url=f"sqlite+aiosqlite:///{directory / 'calls.db'}",
                    spool_dir=directory / "spool")


@pytest.fixture
def run_gateway(tmp_path: Path) -> GatewayFactory:
    """Start a gateway from a raw config dict (master key on, strict telemetry)."""

    @contextmanager
    def start(raw: dict[str, Any]) -> Iterator[RunningGateway]:
        sink = ListSink()
        settings = settings_in(tmp_path)
        app = create_app(settings, config=parse_config(raw, {}), sink=sink,
                         strict_telemetry=True)
        with serve(app) as url:
            running = RunningGateway(url=url, sink=sink)
            try:
                yield running
            finally:
                running.close_clients()

    return start


@pytest.fixture
def gateway(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    """The default gateway: public ``chat`` and ``embed`` models on the simulator."""
    with run_gateway(sim_config(simulator)) as running:
        yield running
