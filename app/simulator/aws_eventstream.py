"""Encoding AWS event stream messages (``application/vnd.amazon.eventstream``) for the Bedrock and
SageMaker dialects: prelude (total length, headers length, CRC32 of both), string headers,
payload, CRC32 of the whole message. Written apart from the gateway's decoder
(``app.providers.aws_eventstream``) so that tests can check each against the other and against
botocore's own parser."""

from __future__ import annotations

import struct
import zlib

CONTENT_TYPE = b"application/vnd.amazon.eventstream"
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
