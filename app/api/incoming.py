"""What the gateway reads of a request, taken from the ASGI scope in one pass.

Starlette's ``Headers`` decodes and scans the whole header list on every lookup; the hot path
needs four headers, so it picks them out once.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Receive, Scope

from app import errors

_WANTED = frozenset({b"authorization", b"x-api-key", b"x-request-id", b"content-length"})


@dataclass(slots=True)
class Incoming:
    path: str
    headers: dict[str, str]
    """The headers the gateway uses (lower-case names), first value of each."""
    receive: Receive

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Incoming:
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        return cls(path=scope["path"], headers=headers, receive=receive)

    async def body(self, *, limit: int) -> bytes:
        """The whole request body; ``BodyTooLarge`` (413) past ``limit`` bytes."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise errors.BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise errors.InvalidRequest("The client disconnected while sending the body.",
                                            status=499)
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise errors.BodyTooLarge(
                        f"Request body is larger than the limit of {limit} bytes.")
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
