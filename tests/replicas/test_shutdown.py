"""Graceful shutdown of one ``switchboard serve`` process (app.serving.DrainingServer), as an
orchestrator does it: SIGTERM during a stream.

Order asserted: ``/readyz`` answers 503 ``draining`` on a new connection first (the drain
period, ``SWITCHBOARD_SHUTDOWN_DRAIN_S``), then new connections are refused (a probe caught
in between is reset unanswered), the stream in flight goes on to ``[DONE]`` with every token,
its call row is in Postgres, and the process exits with status 0. And a ``serve`` whose port is
taken exits at once, non-zero, naming the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml

from app.db.migrate import upgrade
from tests.api.conftest import sim_config
from tests.replicas.support import MASTER_KEY, Replica, rows_by_request_id, tree_env
from tests.servers import free_port

TOKENS = 30


@pytest.fixture
def replica(tmp_path: Path, simulator: str, pg_database: str) -> Iterator[Replica]:
    with started(tmp_path, simulator, pg_database, SWITCHBOARD_SHUTDOWN_DRAIN_S="1.5") as gateway:
        yield gateway


@contextlib.contextmanager
def started(tmp_path: Path, simulator: str, pg_database: str,
            **settings: str) -> Iterator[Replica]:
    """A gateway with a slow model (``slow``), on ``pg_database``, with ``settings`` in its
    environment."""
    asyncio.run(upgrade(pg_database))
    raw = sim_config(simulator)
    # Every token 200 ms apart: the stream lasts ~6 s, well past the 1.5 s drain period.
    raw["providers"]["slow"] = {"type": "openai", "base_url": simulator + "/v1",
                                "api_key": "sk-upstream-secret",
                                "headers": {"X-Sim-Tpot-Ms": "200",
                                            "X-Sim-Completion-Tokens": str(TOKENS)}}
    raw["models"]["slow"] = {"targets": [{"provider": "slow", "model": "gpt-4o-mini"}]}
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = tree_env({"SWITCHBOARD_MASTER_KEY": MASTER_KEY, "SWITCHBOARD_CONFIG": str(config),
                    "SWITCHBOARD_DATABASE_URL": pg_database,
                    "SWITCHBOARD_SPOOL_DIR": str(tmp_path / "spool"), **settings})
    gateway = Replica("gateway", free_port(), env, tmp_path / "gateway.log")
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


@contextlib.contextmanager
def slow_stream(replica: Replica, name: str) -> Iterator[tuple[str, Iterator[str], str]]:
    """A streamed call to the slow model through ``replica``, once its first chunk is in: its
    request id, its lines still to come, and that first ``data:`` line."""
    request_id = f"{name}-{uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "x-request-id": request_id}
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=replica.url, timeout=60) as client, \
            client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        yield request_id, lines, next(line for line in lines if line.startswith("data: "))


def test_sigterm_drains_then_finishes_the_stream_and_exits_0(replica: Replica,
                                                            pg_database: str) -> None:
    assert replica.proc is not None
    with slow_stream(replica, "shutdown") as (request_id, lines, first):
        assert json.loads(first.removeprefix("data: "))["object"] == "chat.completion.chunk"

        replica.proc.terminate()  # SIGTERM, the stream in flight
        answers: list[int] = []
        while True:  # a new connection each time: what a load balancer's probe sees
            try:
                answer = httpx.get(replica.url + "/readyz", timeout=5)
            except httpx.ConnectError:
                break  # no longer accepting
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # A probe whose connection was accepted as the listener closed, its request not
                # yet sent when that connection was closed (it stays open for
                # SHUTDOWN_LINGER_S): reset or closed unanswered. The listener must be gone:
                with pytest.raises(httpx.ConnectError):
                    httpx.get(replica.url + "/readyz", timeout=5)
                break
            assert answer.status_code == 503, answer.text
            if answer.json() != {"status": "draining"}:
                # A probe that connected just as the drain period ended: the listener is closed,
                # and a request arriving on a connection it left open is refused.
                assert answer.json()["error"]["code"] == "shutting_down", answer.text
                with pytest.raises(httpx.ConnectError):
                    httpx.get(replica.url + "/readyz", timeout=5)
                break
            answers.append(answer.status_code)
        assert answers, "the listening socket closed before /readyz could answer 503"
        assert replica.proc.poll() is None, "exited with the stream still in flight"

        rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in [first, *rest[:-1]]]
    usage = [c["usage"] for c in chunks if c.get("usage")]
    text = "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunks if c.get("choices"))
    assert text, chunks
    assert replica.proc.wait(timeout=60) == 0, replica.output()
    assert "Traceback" not in replica.output()
    assert rows_by_request_id(pg_database, [request_id]) == {request_id: 1}
    if usage:
        assert usage[-1]["completion_tokens"] == TOKENS


def test_ctrl_c_again_hangs_up_on_a_stream_in_flight_and_records_it(
        replica: Replica, pg_database: str) -> None:
    """Ctrl-C, Ctrl-C (which skips the drain period), and the shutdown waits for the stream in
    flight; a third Ctrl-C hangs up on it: the stream ends without ``[DONE]``, the process
    exits 0 well before the stream would have ended, without a traceback, and the call's row,
    ``cancelled`` 499 as for a client that went away, is in Postgres."""
    assert replica.proc is not None
    with slow_stream(replica, "hung-up") as (request_id, lines, _first):
        for _ in range(2):
            replica.proc.send_signal(signal.SIGINT)
            time.sleep(0.3)  # two signals at once would be one
        deadline = time.monotonic() + 10
        while "Waiting for connections to close" not in replica.output():
            assert time.monotonic() < deadline, replica.output()
            time.sleep(0.05)
        replica.proc.send_signal(signal.SIGINT)
        assert replica.proc.wait(timeout=3) == 0, replica.output()  # the stream had ~5 s left
        rest: list[str] = []
        with contextlib.suppress(httpx.HTTPError):  # a cut chunked body may read as an error
            rest.extend(lines)
    assert "data: [DONE]" not in rest
    assert "hanging up on 1 connection(s)" in replica.output()
    assert "Traceback" not in replica.output()
    assert rows_by_request_id(pg_database, [request_id]) == {request_id: 1}
    assert status_of(pg_database, request_id) == ("cancelled", 499)


def test_a_stream_past_the_grace_period_is_hung_up_on_without_a_traceback(
        tmp_path: Path, simulator: str, pg_database: str) -> None:
    """SIGTERM with a stream in flight that outlasts ``SWITCHBOARD_SHUTDOWN_GRACE_S``: when the
    grace runs out the gateway hangs up on it (as a second Ctrl-C does) instead of letting
    uvicorn cancel its task, which logged "Exception in ASGI application" with a traceback.
    Exit 0, the row ``cancelled`` 499."""
    with started(tmp_path, simulator, pg_database, SWITCHBOARD_SHUTDOWN_GRACE_S="1") as gateway:
        assert gateway.proc is not None
        with slow_stream(gateway, "graceless") as (request_id, lines, _first):
            gateway.proc.send_signal(signal.SIGTERM)
            assert gateway.proc.wait(timeout=5) == 0, gateway.output()  # ~5 s of stream left
            rest: list[str] = []
            with contextlib.suppress(httpx.HTTPError):
                rest.extend(lines)
        assert "data: [DONE]" not in rest
        output = gateway.output()
        assert "still running after 1 s; hanging up on 1 connection(s)" in output
        assert "Traceback" not in output and "Exception in ASGI application" not in output
        assert status_of(pg_database, request_id) == ("cancelled", 499)


def status_of(database_url: str, request_id: str) -> tuple[str, int]:
    async def read() -> tuple[str, int]:
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            row = await conn.fetchrow(
                "SELECT status, http_status FROM calls WHERE request_id = $1", request_id)
        finally:
            await conn.close()
        assert row is not None
        return row["status"], row["http_status"]

    return asyncio.run(read())


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_already_taken_ends_serve_at_once_with_the_port_named(
        workers: int, tmp_path: Path, pg_database: str) -> None:
    """It used to hang for ever in "Waiting for application shutdown", deaf to SIGTERM: the
    lifespan's shutdown, a millisecond after its start-up, cancelled the circuit-breaker
    subscriber in its first Redis commands, and Python 3.11's ``wait_for`` inside redis-py
    swallowed that cancel (``app.background``). With Redis and Postgres, as in production."""
    asyncio.run(upgrade(pg_database))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = tree_env({"SWITCHBOARD_MASTER_KEY": MASTER_KEY,
                        "SWITCHBOARD_DATABASE_URL": pg_database,
                        "SWITCHBOARD_REDIS_URL": "redis://127.0.0.1:6379/0",
                        "SWITCHBOARD_SPOOL_DIR": str(tmp_path / "spool"),
                        "SWITCHBOARD_WORKERS": str(workers)})
        gateway = Replica("gateway", port, env, tmp_path / "gateway.log")
        gateway.start(wait=False)
        assert gateway.proc is not None
        try:
            status = gateway.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            gateway.proc.kill()
            gateway.proc.wait()
            pytest.fail(f"serve on a taken port did not exit: {gateway.output()}")
    output = gateway.output()
    assert status == 3, output
    assert "address already in use" in output.lower(), output
    if workers == 1:  # the app started, and its shutdown ran to the end
        assert f"('127.0.0.1', {port}): address already in use" in output, output
        assert "Application shutdown complete" in output, output
    assert f"switchboard: could not start serving on 127.0.0.1:{port}" in output, output
