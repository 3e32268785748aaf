"""A client that disconnects while sending a model call's body is recorded as a cancelled call
(499, no error type), as a client that leaves later in the call is; it was recorded as an
``invalid_request_error``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.calllog.record import CallRecord
from tests.api.conftest import MASTER_KEY, ListSink
from tests.api.test_connection_limits import DEADLINE_S, connect, limited_gateway


def record_of(sink: ListSink, request_id: str) -> CallRecord:
    """The record of ``request_id``, once the gateway has finished it."""
    deadline = time.monotonic() + DEADLINE_S
    while not any(r.request_id == request_id for r in sink.records):
        assert time.monotonic() < deadline, "the call was never recorded"
        time.sleep(0.02)
    return sink.by_id(request_id)


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/embeddings"])
def test_a_client_leaving_mid_body_is_recorded_cancelled(tmp_path: Path, simulator: str,
                                                         path: str, framing: str) -> None:
    """Headers and half a body, then the client closes: the call is ``cancelled``, 499."""
    half = b'{"model": "chat", "messages": [{"role": "user", "content": "'
    request_id = f"gone-{framing}"
    with limited_gateway(tmp_path, simulator) as (url, sink):
        with connect(url) as sock:
            head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {MASTER_KEY}\r\nx-request-id: {request_id}\r\n"
                    "Content-Type: application/json\r\n")
            if framing == "chunked":
                sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n{len(half):x}\r\n".encode()
                             + half + b"\r\n")
            else:
                sock.sendall(f"{head}Content-Length: 5000\r\n\r\n".encode() + half)
        record = record_of(sink, request_id)
    assert (record.status, record.http_status) == ("cancelled", 499)
    assert (record.error_type, record.error_message) == (None, None)
    assert record.endpoint == path
