"""``switchboard simulate`` answers a request offering ``Upgrade: h2c`` (``curl --http2`` on an
``http://`` URL) over HTTP/1.1 with its body, as the gateway does (``app.serving``)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.api.test_connection_limits import read_reply
from tests.api.test_http_parsing import OFFER
from tests.servers import free_port
from tests.test_cli import SWITCHBOARD, clean_env


def test_the_simulator_keeps_the_body_of_an_h2c_offer(tmp_path: Path) -> None:
    """A chat call offering h2c is answered 200 with the reply to its message."""
    port = free_port()
    proc = subprocess.Popen([SWITCHBOARD, "simulate", "--port", str(port)], cwd=tmp_path,
                            env=clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/models")
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "no simulator"
                time.sleep(0.1)
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\n" + OFFER
                         + b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode()))
            reply = read_reply(sock)
        assert reply.status == 200, reply.body
        content = json.loads(reply.body)["choices"][0]["message"]["content"]
        assert content.startswith("Simulated reply to: hi")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
