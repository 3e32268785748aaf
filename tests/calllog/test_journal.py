"""The journal: every buffered row on local disk until stored or spooled, replayed by the file
spool after the process dies; and the throttle that keeps repeated warnings to one line."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from app.calllog.condition import Condition, Throttle
from app.calllog.file_spool import FileSpool
from app.calllog.journal import Journal
from app.calllog.record import Row


def rows(prefix: str, n: int, *, pad: int = 0) -> list[Row]:
    return [{"id": f"{prefix}-{i:03d}", "created_at": 1.0, "status": "ok", "pad": "x" * pad}
            for i in range(n)]


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("spool-*.jsonl"))


async def take_all(directory: Path) -> list[Row]:
    """Every row a file spool of another process would replay from ``directory``."""
    spool = FileSpool(directory)
    try:
        taken = await spool.take(100_000)
        await spool.ack([token for token, _ in taken])
        return [row for _, row in taken]
    finally:
        await spool.aclose()


async def test_done_rows_leave_nothing_behind(tmp_path: Path) -> None:
    """Rows retired in order delete their segments; a clean close leaves no file."""
    journal = Journal(tmp_path, max_segment_bytes=400)
    assert journal.open()
    for row in rows("a", 30, pad=50):
        journal.append(row)
    assert len(segments(tmp_path)) > 3  # rotated past max_segment_bytes
    journal.done(25)
    assert journal.pending == 5
    assert len(segments(tmp_path)) <= 2  # only segments still holding pending rows
    journal.done(5)
    await journal.aclose()
    assert segments(tmp_path) == []


async def test_a_live_journal_is_not_replayed(tmp_path: Path) -> None:
    """While this process holds its segments, no file spool takes them, even in-process."""
    journal = Journal(tmp_path)
    journal.open()
    for row in rows("live", 5):
        journal.append(row)
    assert await take_all(tmp_path) == []
    journal.done(5)
    await journal.aclose()


@pytest.mark.parametrize("how", ["SIGKILL", "os._exit"])
def test_rows_of_a_killed_process_are_replayed(how: str, tmp_path: Path) -> None:
    """A process killed after append (no fsync, no close) leaves every row for the file spool:
    the not-done ones and those done in the active segment (the store ignores duplicates)."""
    end = "os.kill(os.getpid(), signal.SIGKILL)" if how == "SIGKILL" else "os._exit(0)"
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from app.calllog.journal import Journal\n"
        "j = Journal(Path(sys.argv[1]))\n"
        "j.open()\n"
        "for i in range(50):\n"
        "    j.append({'id': f'k-{i}', 'created_at': 1.0, 'status': 'ok'})\n"
        "j.done(20)\n" + end + "\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=Path.cwd())
    assert proc.returncode in (0, -signal.SIGKILL)
    replayed = asyncio.run(take_all(tmp_path))
    assert {row["id"] for row in replayed} == {f"k-{i}" for i in range(50)}
    assert segments(tmp_path) == []  # acknowledged: gone


async def test_kept_rows_are_released_for_replay(tmp_path: Path) -> None:
    """Rows no spool could take stay in their (sealed, then unlocked) segment, so this very
    process's file spool replays them; segments whose rows were all done are deleted."""
    sample = rows("b", 12, pad=40)
    line = max(len(orjson.dumps(row)) + 1 for row in sample)
    journal = Journal(tmp_path, max_segment_bytes=3 * line)  # three rows a segment
    journal.open()
    for row in sample:
        journal.append(row)
    journal.done(4)  # 0-2 (first segment: deleted) and 3
    assert journal.keep(3) == 3  # 4, 5 and 6: their two segments stay, unlocked when settled
    journal.done(5)  # 7-11
    replayed = {row["id"] for row in await take_all(tmp_path)}
    assert replayed == {f"b-{i:03d}" for i in range(3, 9)}  # kept rows, with their neighbours
    await journal.aclose()
    assert segments(tmp_path) == []


@pytest.mark.parametrize("blocker", ["file-as-parent", "file-as-directory"])
async def test_an_unwritable_directory_is_reported_and_never_raises(
        blocker: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A spool directory that cannot be created reports its errno and the OS's words; rows
    keep flowing, counted as not journaled, and retiring them still works."""
    (tmp_path / "plain").write_text("a file, not a directory")
    directory = tmp_path / "plain" / "spool" if blocker == "file-as-parent" else tmp_path / "plain"
    reports: list[Condition] = []
    journal = Journal(directory, retry_s=3600, report=reports.append)
    with caplog.at_level(logging.ERROR, logger="switchboard.calllog.journal"):
        assert not journal.open()
        for row in rows("c", 10):
            journal.append(row)
    assert reports and not reports[-1].up
    assert reports[-1].reason in {"ENOTDIR", "EEXIST"}
    assert journal.unjournaled == 10
    assert journal.keep(4) == 0
    journal.done(6)
    assert journal.pending == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # one line for the whole episode, with the OS reason
    assert "Not a directory" in errors[0] or "File exists" in errors[0]
    await journal.aclose()


def test_a_failing_write_seals_the_segment_and_moves_on(tmp_path: Path) -> None:
    """A write the OS refuses (EFBIG past RLIMIT_FSIZE) seals its segment, reports the errno,
    counts the row as not journaled, and a later append opens a new segment; every row that
    was written is replayed."""
    script = (
        "import json, resource, signal, sys\n"
        "from pathlib import Path\n"
        "from app.calllog.journal import Journal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "reports = []\n"
        "j = Journal(Path(sys.argv[1]), retry_s=0, report=reports.append)\n"
        "j.open()\n"
        "for i in range(40):\n"
        "    j.append({'id': f'w-{i}', 'created_at': 1.0, 'status': 'ok', 'pad': 'x' * 60})\n"
        "print(json.dumps({'unjournaled': j.unjournaled, 'pending': j.pending,\n"
        "                  'reasons': [r.reason for r in reports if not r.up],\n"
        "                  'ups': sum(r.up for r in reports)}))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, check=True)
    result = orjson.loads(proc.stdout)
    assert result["pending"] == 40
    assert result["unjournaled"] > 0 and set(result["reasons"]) == {"EFBIG"}
    assert result["ups"] > 1  # back up on each new segment
    assert "File too large" in proc.stderr
    replayed = {row["id"] for row in asyncio.run(take_all(tmp_path))}
    assert len(replayed) == 40 - result["unjournaled"]


def test_throttle_logs_first_then_summaries_then_recovery(
        caplog: pytest.LogCaptureFixture) -> None:
    """One line per window with the count held back, and one line when the problem clears."""
    now = [0.0]
    logger = logging.getLogger("switchboard.test.throttle")
    throttle = Throttle(logger, every_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="switchboard.test.throttle"):
        for i in range(200):  # one every 50 ms for 10 s
            now[0] = i * 0.05
            throttle("redis down (%s)", "refused")
        now[0] = 10.0
        throttle("redis down (%s)", "refused")
        now[0] = 11.0
        throttle("redis down (%s)", "refused")
        throttle.clear("redis back")
        throttle.clear("redis back")  # nothing to clear any more
        throttle("redis down (%s)", "again")
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("WARNING", "redis down (refused)"),
        ("WARNING", "redis down (refused) (199 more like it in the last 10s, not logged)"),
        ("INFO", "redis back (1 occurrence(s) not logged)"),
        ("WARNING", "redis down (again)"),
    ]


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The fds os.fsync is called on from now on (counted at the OS edge, then really done)."""
    import os

    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    return calls


def test_fsync_only_for_rows_not_stored_within_the_interval(tmp_path: Path,
                                                            synced: list[int]) -> None:
    """sync() fsyncs when a row appended before the previous sync is still neither stored nor
    spooled (or on close), and never while the store keeps up. os.fsync is wrapped to count
    calls on segment files (the OS edge; the journal itself runs for real)."""

    async def scenario() -> list[int]:
        counts = []
        journal = Journal(tmp_path)
        for row in rows("kept-up", 3):
            journal.append(row)
        await journal.sync()  # rows younger than one check: nothing to do yet
        counts.append(len(synced))
        journal.done(3)  # stored in time
        await journal.sync()
        counts.append(len(synced))
        for row in rows("behind", 2):
            journal.append(row)
        await journal.sync()
        counts.append(len(synced))
        await journal.sync()  # still not stored a whole check later: fsync
        counts.append(len(synced))
        journal.append(rows("last", 1)[0])
        await journal.aclose()  # closing fsyncs what was appended since, however young
        counts.append(len(synced))
        return counts

    counts = asyncio.run(scenario())
    assert counts[:3] == [0, 0, 0]
    assert counts[3] >= 1
    assert counts[4] > counts[3]


def test_kept_rows_are_fsynced_at_the_next_sync(tmp_path: Path, synced: list[int]) -> None:
    """Rows no spool took are durable nowhere else: the next sync fsyncs their segment even
    when no row is older than a check (os.fsync counted at the OS edge, as above)."""

    async def scenario() -> tuple[int, int]:
        journal = Journal(tmp_path)
        await journal.sync()
        for row in rows("k", 3):
            journal.append(row)
        assert journal.keep(1) == 1  # its segment is sealed, two rows still pending in it
        journal.done(1)
        await journal.sync()
        after_keep = len(synced)
        journal.done(1)
        await journal.aclose()
        return after_keep, len(synced)

    after_keep, _ = asyncio.run(scenario())
    assert after_keep >= 1
