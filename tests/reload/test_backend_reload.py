"""A live reload that grows or shrinks the vLLM pool: the gateway scrapes the new set of
servers from then on (``BackendScraper.follow``), through a running gateway."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import SecretStr

from app.main import create_app
from app.settings import Settings
from tests.api.conftest import ListSink
from tests.servers import free_port, serve

MASTER = "sk-backend-reload-Qw8rTz3p"
ADMIN = {"Authorization": f"Bearer {MASTER}"}


def pool(servers: dict[str, str]) -> dict[str, Any]:
    """A ``vllm_load`` model over ``servers`` (provider name -> base URL), scraped often."""
    return {"providers": {name: {"type": "vllm", "base_url": url, "metrics_interval_s": 0.05}
                          for name, url in servers.items()},
            "models": {"chat": {"strategy": "vllm_load",
                                "targets": [{"provider": name, "model": "sim-model"}
                                            for name in servers]}}}


def backend_series(url: str, family: str = "up") -> dict[str, float]:
    """``switchboard_backend_<family>`` by provider, as ``GET /metrics`` shows it."""
    text = httpx.get(f"{url}/metrics", headers=ADMIN).text
    return {m[1]: float(m[2]) for m in re.finditer(
        rf'^switchboard_backend_{family}\{{provider="([^"]+)"\}} (\S+)$', text, re.MULTILINE)}


def wait_for(url: str, wanted: dict[str, float], family: str = "up") -> None:
    """Until ``/metrics`` shows ``wanted`` (30 s at most: a busy machine is slow to start)."""
    deadline = time.monotonic() + 30
    while (seen := backend_series(url, family)) != wanted:
        assert time.monotonic() < deadline, f"backend_{family} stayed {seen}, not {wanted}"
        time.sleep(0.05)


def settings_for(file: Path) -> Settings:
    """A gateway's settings serving ``file`` (reloaded on request only), its call log beside it."""
    return Settings(master_key=SecretStr(MASTER), config=file, config_poll_s=0,
                    database_url=f"sqlite+aiosqlite:///{file.parent / 'calls.db'}",
                    spool_dir=file.parent / "spool")


def reload(url: str, file: Path, raw: dict[str, Any]) -> None:
    file.write_text(yaml.safe_dump(raw))
    answer = httpx.post(f"{url}/admin/config/reload", headers=ADMIN, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["restart_needed"] == []


def test_a_reload_grows_and_shrinks_the_scraped_pool(tmp_path: Path, simulator: str) -> None:
    """A vllm provider added by a reload is scraped (a closed port: up 0, so ``vllm_load``
    tries it last), one removed is no longer, and nothing waits for a restart."""
    file = tmp_path / "gateway.yaml"
    sim = f"{simulator}/v1"
    # Bound and never listening, for the whole test: every connection to it is refused (a port
    # from ``free_port`` is released, and another test's server may take it meanwhile).
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        not_ready = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        file.write_text(yaml.safe_dump(pool({"vllm-0": sim})))
        settings = settings_for(file)
        with serve(create_app(settings, sink=ListSink(), strict_telemetry=True)) as url:
            wait_for(url, {"vllm-0": 1.0})
            reload(url, file, pool({"vllm-0": sim, "vllm-1": not_ready}))
            deadline = time.monotonic() + 30
            while backend_series(url, "scrape_errors_total").get("vllm-1", 0.0) == 0.0:
                assert time.monotonic() < deadline, "vllm-1 was never scraped"
                time.sleep(0.05)
            # Waited for, not read once: a scrape waits at most its 0.05 s interval, and on a
            # busy machine one of the simulator's can take longer (vllm-0 then reads up 0
            # until its next scrape, as the contract says).
            wait_for(url, {"vllm-0": 1.0, "vllm-1": 0.0})
            reload(url, file, pool({"vllm-1": not_ready, "vllm-2": sim}))
            wait_for(url, {"vllm-1": 0.0, "vllm-2": 1.0})
            status = httpx.get(f"{url}/admin/config", headers=ADMIN).json()
            assert status["reloads"] == 2 and status["restart_needed"] == []


def test_vllm_load_tries_a_server_that_is_down_last(tmp_path: Path, simulator: str) -> None:
    """Through a running gateway, ``vllm_load`` reads the scraped state: a server that does not
    answer its scrapes is tried after the live one, whatever a prompt's home server (the
    gateway handed the router no scraped state, so a prompt whose home was the dead server
    tried it first, a failed attempt each time)."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    file = tmp_path / "gateway.yaml"
    file.write_text(yaml.safe_dump(pool({"vllm-0": f"{simulator}/v1", "vllm-1": dead})))
    settings = settings_for(file)
    sink = ListSink()
    with serve(create_app(settings, sink=sink, strict_telemetry=True)) as url:
        wait_for(url, {"vllm-0": 1.0, "vllm-1": 0.0})
        for i in range(20):  # system prompts whose home servers differ
            answer = httpx.post(f"{url}/v1/chat/completions", headers=ADMIN, timeout=30, json={
                "model": "chat", "messages": [{"role": "system", "content": f"app {i}"},
                                              {"role": "user", "content": "hi"}]})
            assert answer.status_code == 200, answer.text
    assert [[a.provider for a in r.attempts] for r in sink.records] == [["vllm-0"]] * 20


def test_a_target_a_reload_adds_has_a_breaker_series(tmp_path: Path, simulator: str) -> None:
    """``switchboard_target_state`` has a closed series for a target from the reload that adds
    it, as for the start-up config's targets (not from its breaker's first change)."""
    file = tmp_path / "gateway.yaml"
    sim = f"{simulator}/v1"
    file.write_text(yaml.safe_dump(pool({"vllm-0": sim})))
    settings = settings_for(file)

    def states(url: str) -> dict[str, float]:
        text = httpx.get(f"{url}/metrics", headers=ADMIN).text
        return {m[1]: float(m[2]) for m in re.finditer(
            r'^switchboard_target_state\{provider="([^"]+)",upstream_model="sim-model"\} (\S+)$',
            text, re.MULTILINE)}

    with serve(create_app(settings, sink=ListSink(), strict_telemetry=True)) as url:
        assert states(url) == {"vllm-0": 0.0}
        reload(url, file, pool({"vllm-0": sim, "vllm-1": sim}))
        assert states(url) == {"vllm-0": 0.0, "vllm-1": 0.0}
