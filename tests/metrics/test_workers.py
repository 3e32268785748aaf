"""``switchboard serve --workers 2`` (multiprocess mode), end to end: a worker killed with
SIGKILL leaves no requests in flight behind, and an upstream version change counts once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.api.conftest import MASTER_KEY
from tests.metrics.scrape import value, wait_for
from tests.servers import free_port, wait_ready

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
IN_FLIGHT = "switchboard_requests_in_flight"


def children(pid: int) -> list[int]:
    """uvicorn's workers: the processes whose parent is ``pid``, spawned by multiprocessing
    (not its resource tracker)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid \
                    and b"resource_tracker" not in command:
                out.append(int(entry.name))
    return out


@pytest.fixture(scope="module")
def two_workers(simulator: str, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    tmp = tmp_path_factory.mktemp("workers")
    raw = {
        "providers": {
            "sim": {"type": "openai", "base_url": f"{simulator}/v1", "api_key": "sk-s"},
            "slow": {"type": "openai", "base_url": f"{simulator}/v1", "api_key": "sk-s",
                     "headers": {"X-Sim-TPOT-Ms": "300"}, "timeout_s": 60}},
        "models": {"chat": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
                   "slowchat": {"targets": [{"provider": "slow", "model": "gpt-4o-mini"}]}},
        "drift": {"embedding": {"sample_rate": 0}}}
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump(raw))
    port = free_port()
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp),
           "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
           "SWITCHBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'calls.db'}",
           "SWITCHBOARD_SPOOL_DIR": str(tmp / "spool"), "SWITCHBOARD_MASTER_KEY": MASTER_KEY,
           "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics")}
    log = (tmp / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "switchboard"), "serve", "--config", str(config),
         "--port", str(port), "--workers", "2"],
        env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server, timeout_s=60)
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def stream(url: str) -> None:
    """A slow stream (about 6 s), read until it ends or its worker dies."""
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", headers=AUTH, timeout=30,
                          json={"model": "slowchat", "stream": True, "max_tokens": 20,
                                "messages": [{"role": "user", "content": "hi"}]}) as answer:
            for _ in answer.iter_bytes():
                pass
    except httpx.HTTPError:
        pass  # its worker was killed


def test_a_killed_worker_leaves_no_requests_in_flight(
        two_workers: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, server = two_workers
    threads = [threading.Thread(target=stream, args=(url,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        samples = wait_for(url, MASTER_KEY, lambda s: value(s, IN_FLIGHT) == 6)
        assert value(samples, IN_FLIGHT) == 6
        workers = children(server.pid)
        assert len(workers) == 2
        for pid in workers:  # both: whichever served the streams
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while set(children(server.pid)) & set(workers) or len(children(server.pid)) < 2:
            assert time.monotonic() < deadline, "uvicorn did not replace its workers"
            time.sleep(0.1)
        wait_ready(url, server, timeout_s=30)
        samples = wait_for(url, MASTER_KEY, lambda s: value(s, IN_FLIGHT) == 0)
        assert value(samples, IN_FLIGHT) == 0
    finally:
        for thread in threads:
            thread.join(timeout=30)


def test_an_upstream_version_change_counts_once(
        two_workers: tuple[str, subprocess.Popen[bytes]], simulator: str) -> None:
    url, _ = two_workers
    sim = httpx.Client(base_url=simulator, timeout=10)

    def send(n: int) -> None:
        for _ in range(n):  # a connection each: both workers answer some
            answer = httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=30,
                                json={"model": "chat",
                                      "messages": [{"role": "user", "content": "hi"}]})
            assert answer.status_code == 200, answer.text

    try:
        sim.post("/_sim/state", json={"fingerprint": "fp_workers_1"}).raise_for_status()
        send(16)
        sim.post("/_sim/state", json={"fingerprint": "fp_workers_2"}).raise_for_status()
        send(16)
        changes = "switchboard_upstream_version_changes_total"
        # every worker flushes once a second; both have seen the change by then
        time.sleep(1.5)
        samples = wait_for(url, MASTER_KEY, lambda s: value(s, changes, model="chat") >= 1)
    finally:
        sim.post("/_sim/reset")
        sim.close()
    assert value(samples, changes, model="chat") == 1
    info = {labels: v for (name, labels), v in samples.items()
            if name == "switchboard_upstream_model_info" and ("model", "chat") in labels}
    current = [dict(labels)["system_fingerprint"] for labels, v in info.items() if v == 1]
    assert current == ["fp_workers_2"]
