"""Splitting an upstream stream into lines (``app.providers.http.LineBuffer``)."""

from __future__ import annotations

import pytest

from app import errors
from app.providers.http import MAX_LINE_BYTES, LineBuffer


def test_lines_across_chunks() -> None:
    """A line may end in a later chunk; an empty line stays a line (SSE's event end); the
    unfinished last line is kept until ``rest``."""
    lines = LineBuffer("up")
    assert lines.feed(b"data: a") == []
    assert lines.feed(b"bc\n\ndata: ") == [b"data: abc", b""]
    assert lines.feed(b"x\r\n") == [b"data: x\r"]
    assert lines.feed(b"tail") == []
    assert lines.rest() == b"tail" and lines.rest() == b""


def test_a_line_as_long_as_the_limit_passes() -> None:
    """Far past aiohttp's 512 KiB line limit, up to MAX_LINE_BYTES, in 64 KiB chunks."""
    lines = LineBuffer("up")
    line = b"d" * MAX_LINE_BYTES
    found: list[bytes] = []
    for start in range(0, len(line), 65536):
        found += lines.feed(line[start:start + 65536])
    assert found == [] and lines.feed(b"\n") == [line]


@pytest.mark.parametrize("ended", [False, True])
def test_a_longer_line_is_a_bad_upstream_response(ended: bool) -> None:
    """Past MAX_LINE_BYTES, whether the line is still arriving or ends in the same chunk."""
    lines = LineBuffer("upstream http://u")
    lines.feed(b"ok\n" + b"d" * MAX_LINE_BYTES)
    with pytest.raises(errors.BadUpstreamResponse, match="upstream http://u sent a stream line"):
        lines.feed(b"d\n" if ended else b"d")
