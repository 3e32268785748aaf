"""The time a slow client takes to upload its request body is part of the call's latency, not of
the gateway's overhead (``x-switchboard-overhead-ms``, the record's ``overhead_ms``, the
``gateway_overhead_seconds`` histogram): a body sent at 1 KB/s gave an overhead of seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.api.conftest import MASTER_KEY
from tests.api.test_connection_limits import connect, limited_gateway, read_reply

PAUSE_S = 2.0
"""How long the client pauses mid-body: a bound far above the gateway's own time for a call."""


def test_a_slow_upload_is_latency_not_overhead(tmp_path: Path, simulator: str) -> None:
    """A client pausing mid-body: the overhead stays below the pause, the latency covers it."""
    body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}).encode()
    with limited_gateway(tmp_path, simulator) as (url, sink), connect(url) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     + f"Authorization: Bearer {MASTER_KEY}\r\nx-request-id: slow-upload\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                       .encode() + body[:10])
        time.sleep(PAUSE_S)
        sock.sendall(body[10:])
        reply = read_reply(sock)
    assert reply.status == 200, reply.body
    record = sink.by_id("slow-upload")
    assert record.latency_ms is not None and record.overhead_ms is not None
    assert float(reply.headers["x-switchboard-overhead-ms"]) < PAUSE_S * 1000
    assert record.overhead_ms < PAUSE_S * 1000
    assert record.latency_ms >= record.overhead_ms + record.upstream_ms
