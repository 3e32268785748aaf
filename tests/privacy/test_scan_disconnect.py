# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""A client that disconnects while its request is screened off the event loop (a body of MBs)
is noticed then, not when the scan ends: its call is recorded ``cancelled`` (499), under
``block`` too (not the verdict nobody received)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    MASTER_KEY,
    GatewayFactory,
    run_gateway,
)
from tests.privacy.test_gateway import config

SENT_S = 0.5
"""How long the client stays after sending its body: the server has read it and is scanning
(2 MB of addresses take seconds to screen), so the disconnect comes during the scan."""


@pytest.mark.parametrize("model", ["blocked", "redacted"])
def test_a_client_leaving_during_the_scan_is_recorded_cancelled(
        run_gateway: GatewayFactory, simulator: str, model: str) -> None:
    """The body arrives whole, the client leaves while it is scanned: the call's record is
    ``cancelled``/499, whatever the scan would have found."""
    body = json.dumps({"model": model, "messages": [
        {"role": "user", "content": "a@b.co " * 300_000}]}).encode()
    with run_gateway(config(simulator)) as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: Bearer " + MASTER_KEY.encode() + b"\r\n"
                         b"x-request-id: left-" + model.encode() + b"\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
            time.sleep(SENT_S)
        record = gw.sink.emitted(f"left-{model}", timeout_s=60)
        assert (record.status, record.http_status) == ("cancelled", 499)
