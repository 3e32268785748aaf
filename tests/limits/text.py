"""Rate-limit headers as text, for assertions (``Decision.headers`` and ``ModelCall.headers``
hold them as the server writes them: bytes pairs)."""

from __future__ import annotations

from collections.abc import Iterable


def text_headers(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in pairs}
