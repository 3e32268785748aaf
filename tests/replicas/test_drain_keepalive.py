"""Keep-alive clients during a SIGTERM of one ``switchboard serve`` process: while draining,
every answer carries ``Connection: close``; once the listener is closed, a request sent on a
connection left open gets a 503 ``shutting_down`` (a refusal the client can retry elsewhere),
not a connection closed under it with no answer and no call row."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.replicas.support import MASTER_KEY, Replica
from tests.replicas.test_shutdown import started

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture
def draining_replica(tmp_path: Path, simulator: str, pg_database: str) -> Iterator[Replica]:
    with started(tmp_path, simulator, pg_database, SWITCHBOARD_SHUTDOWN_DRAIN_S="30") as gateway:
        yield gateway


@pytest.fixture
def replica(tmp_path: Path, simulator: str, pg_database: str) -> Iterator[Replica]:
    with started(tmp_path, simulator, pg_database) as gateway:  # no drain period
        yield gateway


def _until_draining(replica: Replica) -> None:
    deadline = time.monotonic() + 10
    while httpx.get(replica.url + "/readyz", timeout=5).status_code != 503:
        assert time.monotonic() < deadline, replica.output()
        time.sleep(0.05)


def _until_not_accepting(replica: Replica) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(replica.url + "/readyz", timeout=5)
        except httpx.ConnectError:
            return
        except httpx.TransportError:
            pass  # connected as the listener closed
        assert time.monotonic() < deadline, replica.output()
        time.sleep(0.01)


def test_answers_while_draining_close_their_connection(draining_replica: Replica) -> None:
    assert draining_replica.proc is not None
    with httpx.Client(base_url=draining_replica.url, headers=HEADERS, timeout=30) as client:
        before = client.post("/v1/chat/completions", json=CHAT)
        assert before.status_code == 200
        assert before.headers.get("connection") is None  # kept alive

        draining_replica.proc.terminate()
        _until_draining(draining_replica)
        answers = [client.post("/v1/chat/completions", json=CHAT),
                   client.post("/v1/chat/completions", json={**CHAT, "stream": True}),
                   client.get("/v1/models")]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers.get("connection") for a in answers] == ["close"] * 3


def test_a_request_on_a_kept_alive_connection_after_the_listener_closed_is_refused(
        replica: Replica) -> None:
    assert replica.proc is not None
    with httpx.Client(base_url=replica.url, headers=HEADERS, timeout=30,
                      limits=httpx.Limits(max_connections=1)) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200

        replica.proc.terminate()  # no drain period: the listener closes at once
        _until_not_accepting(replica)
        refused = client.post("/v1/chat/completions", json=CHAT)  # on the pooled connection
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "shutting_down"
    assert refused.json()["error"]["type"] == "server_error"
    assert refused.headers["connection"] == "close"
    assert replica.proc.wait(timeout=30) == 0, replica.output()
