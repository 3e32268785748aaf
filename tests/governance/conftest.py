"""Gateways with virtual keys, limits and budgets: real Postgres, real Redis, real processes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam

from tests.api.conftest import sim_config
from tests.calllog import conftest as calllog
from tests.calllog.servers import PrivatePostgres, serve_process
from tests.servers import free_port, stop_processes

MASTER_KEY = "sk-governance-master-Qm4t8Zr2"
postgres = calllog.postgres
"""A private, migrated Postgres shared by the module's gateways (keys and calls)."""
redis_server = calllog.redis_server


def governance_config(simulator: str, **rate_limits: Any) -> dict[str, Any]:
    """The simulator's ``chat`` and ``embed`` models, priced so that every call costs money."""
    raw = sim_config(simulator)
    raw["pricing"] = {"gpt-4o-mini": {"input": 1000.0, "output": 1000.0}}  # $0.001 per token
    if rate_limits:
        raw["rate_limits"] = rate_limits
    return raw


@dataclass
class Fleet:
    """``switchboard serve`` processes sharing one Postgres and one Redis."""

    tmp: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def start(self, count: int = 1) -> list[str]:
        started = []
        for _ in range(count):
            port = free_port()
            n = len(self.procs)
            env = {**self.env, "SWITCHBOARD_SPOOL_DIR": str(self.tmp / f"spool-{n}")}
            self.procs.append(serve_process(env, port, log=self.tmp / f"gateway-{n}.log"))
            url = f"http://127.0.0.1:{port}"
            self.urls.append(url)
            started.append(url)
        return started

    def stop(self) -> None:
        stop_processes(self.procs)
        self.procs.clear()
        self.urls.clear()

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.tmp.glob("gateway-*.log"))

    def admin(self, url: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=url or self.urls[0], timeout=30,
                            headers={"Authorization": f"Bearer {MASTER_KEY}"})


@pytest.fixture
def fleet_factory(tmp_path: Path, postgres: PrivatePostgres, simulator: str,
                  ) -> Iterator[Any]:
    fleets: list[Fleet] = []

    def make(redis_url: str, **rate_limits: Any) -> Fleet:
        config = tmp_path / f"gateway-{len(fleets)}.yaml"
        config.write_text(yaml.safe_dump(governance_config(simulator, **rate_limits)))
        env = {**os.environ, "SWITCHBOARD_MASTER_KEY": MASTER_KEY,
               "SWITCHBOARD_CONFIG": str(config), "SWITCHBOARD_DATABASE_URL": postgres.url,
               "SWITCHBOARD_REDIS_URL": redis_url, "SWITCHBOARD_LOG_LEVEL": "info"}
        fleet = Fleet(tmp=tmp_path, env=env)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.stop()


_clients: list[openai.OpenAI] = []


def sdk(url: str, key: str) -> openai.OpenAI:
    """An openai client of the gateway at ``url`` with ``key``, closed after the test."""
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def create_key(fleet: Fleet, **fields: Any) -> dict[str, Any]:
    """A new virtual key through the admin API: its id, its plaintext ``key`` and the rest."""
    with fleet.admin() as admin:
        response = admin.post("/admin/keys", json={"name": "app", **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert created["key"].startswith("sk-sb-")
    return created
