"""Loopback-only mode (no master key) answers only this machine's programs: a request whose
``Host`` or ``Origin`` is not loopback (DNS rebinding, a cross-site form) is a 403, recorded
when it is a model call; with a master key, the key decides (``app.api.loopback``)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from app.api.loopback import foreign
from app.config import embedded_config
from app.main import create_app
from app.settings import Settings
from tests.servers import serve

CHAT = {"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}
KEY = "sk-test-master-key-0123456789"


@pytest.mark.parametrize(("host", "refused"), [
    ("127.0.0.1:8080", False), ("localhost", False), ("LOCALHOST.:80", False),
    ("[::1]:9", False), ("127.3.4.5", False),
    ("rebind.evil.example:8080", True), ("10.0.0.1:8080", True),
    ("localhost.evil.example", True), ("[2001:db8::1]:80", True)])
def test_host(host: str, refused: bool) -> None:
    assert (foreign([(b"host", host.encode())]) is not None) is refused


@pytest.mark.parametrize(("origin", "refused"), [
    ("http://localhost:3000", False), ("http://127.0.0.1:5173", False), ("http://[::1]:3", False),
    ("http://evil.example", True), ("null", True), ("http://[::1", True), ("file://", True),
    ("http://127.0.0.1.evil.example", True)])
def test_origin(origin: str, refused: bool) -> None:
    headers = [(b"host", b"127.0.0.1:8080"), (b"origin", origin.encode())]
    assert (foreign(headers) is not None) is refused


def gateway(directory: Path, *, master_key: str | None) -> Iterator[str]:
    config = embedded_config({})
    drift = config.drift.model_copy(update={
        "embedding": config.drift.embedding.model_copy(update={"sample_rate": 0.0})})
    settings = Settings(master_key=None if master_key is None else SecretStr(master_key),
                        config=None, database_url=f"sqlite+aiosqlite:///{directory / 'calls.db'}",
                        spool_dir=directory / "spool")
    app = create_app(settings, config=config.model_copy(update={"drift": drift}),
                     strict_telemetry=True)
    with serve(app) as url:
        yield url


@pytest.fixture
def open_gateway(tmp_path: Path) -> Iterator[str]:
    yield from gateway(tmp_path, master_key=None)


def test_a_web_page_cannot_reach_a_gateway_without_a_master_key(open_gateway: str) -> None:
    """DNS rebinding (a foreign Host) and a cross-site ``text/plain`` POST (a foreign Origin)
    are refused with 403 ``not_loopback``, model calls and admin reads alike; the model call
    refused is recorded; the machine's own programs, and a page served from loopback, pass."""
    url = open_gateway
    with httpx.Client(base_url=url, timeout=30) as http:
        rebound = http.post("/v1/chat/completions", json=CHAT,
                            headers={"host": "rebind.evil.example:8080"})
        assert rebound.status_code == 403, rebound.text
        assert rebound.json()["error"]["code"] == "not_loopback"
        call_id = rebound.headers["x-switchboard-call-id"]
        assert http.get("/admin/calls", headers={"host": "rebind.evil.example"}).status_code \
            == 403
        cross_site = http.post("/v1/chat/completions", content=httpx.Request(
            "POST", url, json=CHAT).content, headers={"content-type": "text/plain",
                                                     "origin": "http://evil.example"})
        assert cross_site.status_code == 403, cross_site.text
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert http.post("/v1/chat/completions", json=CHAT,
                         headers={"origin": "http://localhost:3000"}).status_code == 200
        deadline = time.monotonic() + 20
        while (row := http.get(f"/admin/calls/{call_id}")).status_code == 404:
            assert time.monotonic() < deadline, "the refused call was never recorded"
            time.sleep(0.1)
        assert row.json()["http_status"] == 403 and row.json()["public_model"] is None


def test_a_master_key_decides_whatever_the_host(tmp_path: Path) -> None:
    """With a master key the gateway may sit behind any name (a load balancer's): the key,
    not the Host, is checked."""
    for url in gateway(tmp_path, master_key=KEY):
        answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=30, headers={
            "host": "gateway.internal.example", "authorization": f"Bearer {KEY}"})
        assert answer.status_code == 200, answer.text


def test_the_machines_own_name_is_local() -> None:
    """A program may call the gateway by the machine's host name (Debian points it at
    127.0.1.1): its Host and Origin pass."""
    name = socket.gethostname()
    assert foreign([(b"host", f"{name}:8080".encode()),
                    (b"origin", f"http://{name}:3000".encode())]) is None
