"""The local file spool: append-only JSON-lines segments, at-least-once across restarts."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from app.calllog.file_spool import FileSpool
from app.calllog.record import CallRecord, Row
from app.calllog.seams import SpoolUnavailable
from app.usage import Usage


def make_row(n: int) -> Row:
    record = CallRecord(id=f"req-{n}", endpoint="/v1/embeddings", caller="master")
    record.usage = Usage(prompt_tokens=n)
    return record.to_row()


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("spool-*.jsonl"))


async def test_round_trip(tmp_path: Path) -> None:
    """Rows put come back from take in order; acking them all deletes the segment."""
    directory = tmp_path / "spool"
    spool = FileSpool(directory)
    rows = [make_row(i) for i in range(5)]
    await spool.put(rows)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    taken = await spool.take(10)
    assert [row for _, row in taken] == rows
    assert all(token.startswith("spool-") for token, _ in taken)
    assert spool.rows_waiting() == 5
    await spool.ack([t for t, _ in taken])
    assert segments(directory) == []
    assert spool.rows_waiting() == 0
    await spool.aclose()


async def test_take_again_without_ack_returns_same_rows(tmp_path: Path) -> None:
    """Rows taken and not acked come back on the next take of the same object, oldest first."""
    spool = FileSpool(tmp_path, fsync=False)
    await spool.put([make_row(1), make_row(2)])
    first = await spool.take(10)
    await spool.put([make_row(3)])
    await spool.ack([first[0][0]])
    second = await spool.take(10)
    assert [r["id"] for _, r in second] == ["req-2", "req-3"]
    assert second[0][0] == first[1][0]
    await spool.aclose()


async def test_limit_spans_segments(tmp_path: Path) -> None:
    """take(limit) stops at limit across segments; a segment goes only once fully acked."""
    spool = FileSpool(tmp_path)
    await spool.put([make_row(1), make_row(2)])
    assert [r["id"] for _, r in await spool.take(1)] == ["req-1"]  # seals the first segment
    await spool.put([make_row(3)])
    assert [r["id"] for _, r in await spool.take(1)] == ["req-1"]  # seals the second one
    assert len(segments(tmp_path)) == 2
    taken = await spool.take(2)
    assert [r["id"] for _, r in taken] == ["req-1", "req-2"]
    await spool.ack([t for t, _ in taken])
    assert len(segments(tmp_path)) == 1
    rest = await spool.take(10)
    assert [r["id"] for _, r in rest] == ["req-3"]
    await spool.ack([t for t, _ in rest])
    assert segments(tmp_path) == []
    await spool.aclose()


async def test_rows_survive_restart(tmp_path: Path) -> None:
    """Rows put and not acked are taken by a new FileSpool on the same directory."""
    old = FileSpool(tmp_path)
    await old.put([make_row(i) for i in range(3)])
    await old.aclose()
    new = FileSpool(tmp_path)
    assert new.rows_waiting() == 3
    taken = await new.take(10)
    assert [r["id"] for _, r in taken] == ["req-0", "req-1", "req-2"]
    await new.ack([t for t, _ in taken])
    assert segments(tmp_path) == []
    await new.aclose()


async def test_partly_acked_segment_replays_whole_after_restart(tmp_path: Path) -> None:
    """A segment partly acked when its taker went away comes back whole (at-least-once)."""
    old = FileSpool(tmp_path)
    await old.put([make_row(1), make_row(2)])
    taken = await old.take(10)
    await old.ack([taken[0][0]])
    await old.aclose()
    new = FileSpool(tmp_path)
    assert [r["id"] for _, r in await new.take(10)] == ["req-1", "req-2"]
    await new.aclose()


async def test_segment_held_by_live_spool_is_not_taken_twice(tmp_path: Path) -> None:
    """Two spools on one directory (two workers) never hand out the same segment at once."""
    first, second = FileSpool(tmp_path), FileSpool(tmp_path)
    await first.put([make_row(1)])
    await second.put([make_row(2)])
    assert [r["id"] for _, r in await second.take(10)] == ["req-2"]  # first still writes req-1
    assert [r["id"] for _, r in await first.take(10)] == ["req-1"]
    await first.aclose()
    assert sorted(r["id"] for _, r in await second.take(10)) == ["req-1", "req-2"]
    await second.aclose()


async def test_torn_last_line_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A segment ending in a half-written line (crash mid-append) yields its complete rows."""
    old = FileSpool(tmp_path)
    await old.put([make_row(1), make_row(2)])
    await old.aclose()
    (name,) = segments(tmp_path)
    with (tmp_path / name).open("ab") as f:
        f.write(b'{"id": "req-3", "created_')
    new = FileSpool(tmp_path)
    with caplog.at_level(logging.WARNING, logger="switchboard.calllog.spool"):
        taken = await new.take(10)
    assert [r["id"] for _, r in taken] == ["req-1", "req-2"]
    assert "torn" in caplog.text
    await new.ack([t for t, _ in taken])
    assert segments(tmp_path) == []
    await new.aclose()


async def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    """A last row whose newline alone was lost is still a row, not a torn line."""
    (tmp_path / "spool-00000000000000000001-1.jsonl").write_bytes(b'{"id": "req-1"}')
    spool = FileSpool(tmp_path)
    assert [r["id"] for _, r in await spool.take(10)] == ["req-1"]
    await spool.aclose()


async def test_put_nowait_from_sync_code(tmp_path: Path) -> None:
    """put_nowait appends from plain sync code (the writer's overflow path)."""

    def overflow(spool: FileSpool) -> None:
        spool.put_nowait([make_row(1), make_row(2)])

    spool = FileSpool(tmp_path)
    overflow(spool)
    assert spool.rows_waiting() == 2
    assert [r["id"] for _, r in await spool.take(10)] == ["req-1", "req-2"]
    await spool.aclose()


async def test_segments_rotate_past_max_bytes(tmp_path: Path) -> None:
    """Appends past max_segment_bytes start a new segment; order is kept across segments."""
    spool = FileSpool(tmp_path, max_segment_bytes=1)
    for i in range(3):
        await spool.put([make_row(i)])
    assert len(segments(tmp_path)) == 3
    taken = await spool.take(10)
    assert [r["id"] for _, r in taken] == ["req-0", "req-1", "req-2"]
    await spool.ack([t for t, _ in taken])
    assert segments(tmp_path) == []
    await spool.aclose()


async def test_os_errors_raise_spool_unavailable(tmp_path: Path) -> None:
    """A directory that cannot be created makes every method raise SpoolUnavailable."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    spool = FileSpool(blocker / "spool")
    with pytest.raises(SpoolUnavailable):
        spool.put_nowait([make_row(1)])
    with pytest.raises(SpoolUnavailable):
        await spool.put([make_row(1)])
    with pytest.raises(SpoolUnavailable):
        await spool.take(10)
    with pytest.raises(SpoolUnavailable):
        spool.rows_waiting()
    await spool.aclose()


async def test_files_are_private(tmp_path: Path) -> None:
    """Segment files are readable by their owner only."""
    spool = FileSpool(tmp_path)
    spool.put_nowait([make_row(1)])
    (name,) = segments(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    await spool.aclose()
