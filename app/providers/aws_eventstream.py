"""AWS's binary event stream framing (``application/vnd.amazon.eventstream``), decoded
incrementally.

Each message is: a 12-byte prelude (total length, headers length, both big-endian uint32, then
the CRC32 of those 8 bytes), the headers, the payload, and the CRC32 of everything before it.
A header is a 1-byte name length, the name, a 1-byte value type and the value (strings and
byte arrays carry a 2-byte length). Bedrock and SageMaker use three headers: ``:message-type``
(``event`` or ``exception``), ``:event-type`` or ``:exception-type``, and ``:content-type``. The
framing's third message type, ``error`` (botocore's ``eventstream`` reads it as it reads
``exception``), names its error in ``:error-code`` and ``:error-message`` headers, with an
empty payload.

``EventStreamDecoder`` is pure: feed it byte chunks cut anywhere, get back the messages they
complete. A CRC mismatch or an impossible length raises ``errors.BadUpstreamResponse``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

from app import errors

PRELUDE = 12
MAX_MESSAGE = 16 * 1024 * 1024
"""AWS's documented ceiling on one message (16 MiB) guards the buffer against a bad length."""

HeaderValue = bool | int | bytes | str


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded message: its headers by name and its payload bytes."""

    headers: dict[str, HeaderValue]
    payload: bytes

    @property
    def message_type(self) -> str:
        value = self.headers.get(":message-type")
        return value if isinstance(value, str) else "event"

    @property
    def is_error(self) -> bool:
        """Whether the message reports a failure (``exception`` or ``error``), not an event."""
        return self.message_type in ("exception", "error")

    @property
    def event_type(self) -> str:
        """``:event-type``, or ``:exception-type`` for an exception message, or ``:error-code``
        for an error message ("" when absent)."""
        kind = self.message_type
        name = ":exception-type" if kind == "exception" else \
            ":error-code" if kind == "error" else ":event-type"
        value = self.headers.get(name)
        return value if isinstance(value, str) else ""


def _bad(reason: str) -> errors.BadUpstreamResponse:
    return errors.BadUpstreamResponse(f"upstream event stream is corrupt: {reason}")


# value type -> fixed size (None: 2-byte length prefix, then that many bytes)
_FIXED: dict[int, int] = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
_INTS = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}


def parse_headers(raw: bytes) -> dict[str, HeaderValue]:
    """The headers block of one message."""
    headers: dict[str, HeaderValue] = {}
    at = 0
    try:
        while at < len(raw):
            size = raw[at]
            name = raw[at + 1:at + 1 + size].decode("utf-8")
            at += 1 + size
            kind = raw[at]
            at += 1
            value: Any
            if kind in (0, 1):
                value = kind == 0
            elif kind in (6, 7):
                (length,) = struct.unpack_from(">H", raw, at)
                chunk = raw[at + 2:at + 2 + length]
                if len(chunk) != length:
                    raise _bad("a header runs past its block")
                value = chunk.decode("utf-8") if kind == 7 else chunk
                at += 2 + length
            elif kind in _FIXED:
                width = _FIXED[kind]
                if at + width > len(raw):
                    raise _bad("a header runs past its block")
                chunk = raw[at:at + width]
                value = struct.unpack(_INTS[kind], chunk)[0] if kind in _INTS else chunk
                at += width
            else:
                raise _bad(f"unknown header value type {kind}")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError):
        raise _bad("malformed headers") from None
    return headers


class EventStreamDecoder:
    """Messages from a byte stream fed in arbitrary chunks."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not yet complete a message (non-zero at the end: truncated)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """The messages ``data`` completes (often none, sometimes several)."""
        self._buffer += data
        found: list[Message] = []
        while len(self._buffer) >= PRELUDE:
            total, header_size, prelude_crc = struct.unpack_from(">III", self._buffer)
            if zlib.crc32(self._buffer[:8]) != prelude_crc:
                raise _bad("prelude CRC mismatch")
            if total < PRELUDE + header_size + 4 or total > MAX_MESSAGE:
                raise _bad(f"impossible message length {total}")
            if len(self._buffer) < total:
                break
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            (message_crc,) = struct.unpack_from(">I", frame, total - 4)
            if zlib.crc32(frame[:total - 4]) != message_crc:
                raise _bad("message CRC mismatch")
            headers = parse_headers(frame[PRELUDE:PRELUDE + header_size])
            found.append(Message(headers, frame[PRELUDE + header_size:total - 4]))
        return found
