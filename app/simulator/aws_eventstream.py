"""Encoding AWS event stream messages (``application/vnd.amazon.eventstream``) for the Bedrock and
SageMaker dialects: prelude (total length, headers length, CRC32 of both), string headers,
payload, CRC32 of the whole message. Written apart from the gateway's decoder
(``app.providers.aws_eventstream``) so that tests can check each against the other and against
botocore's own parser."""

from __future__ import annotations

import struct
import zlib

CONTENT_TYPE = b"application/vnd.amazon.eventstream"
UNWRAPPED = "sim.aws_message"
"""The key on an ASGI body message that already holds a framed message (SageMaker's wrapper
sends it as it is, not inside a ``PayloadPart``; the key is dropped before the server sees
it)."""
HEADERS = [(b"content-type", CONTENT_TYPE), (b"cache-control", b"no-cache")]


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (struct.pack(">B", len(raw_name)) + raw_name + b"\x07"
            + struct.pack(">H", len(raw_value)) + raw_value)


def message(headers: dict[str, str], payload: bytes) -> bytes:
    """One framed message."""
    block = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(block) + len(payload) + 4
    prelude = struct.pack(">II", total, len(block))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + block + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(event_type: str, payload: bytes) -> bytes:
    """An ``event`` message with a JSON payload."""
    return message({":event-type": event_type, ":content-type": "application/json",
                    ":message-type": "event"}, payload)


def exception(exception_type: str, payload: bytes) -> bytes:
    """An ``exception`` message (a modelled error inside a started stream)."""
    return message({":exception-type": exception_type, ":content-type": "application/json",
                    ":message-type": "exception"}, payload)


def error(code: str, text: str) -> bytes:
    """An ``error`` message: the framing's own failure, named by headers, with no payload."""
    return message({":error-code": code, ":error-message": text, ":message-type": "error"}, b"")
