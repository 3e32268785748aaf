"""A file spool write that fails part-way says exactly how many rows it kept (and they are the
ones a later take gets back), and why the rest were not written: errno and the OS's words.

Tests run as root, where permissions do not stop a write: the failures are real ones made
another way (a path through a regular file; a file-size limit, RLIMIT_FSIZE, in a child
process)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.calllog.file_spool import FileSpool
from app.calllog.record import CallRecord, Row, dump_row
from app.calllog.seams import SpoolWriteFailed

ROOT = Path(__file__).resolve().parents[2]


def make_rows(count: int) -> list[Row]:
    return [CallRecord(id=f"row-{i:03d}", endpoint="/v1/chat/completions", caller="master",
                       public_model="chat", error_message="x" * (i * 37 % 300)).to_row()
            for i in range(count)]


def line_ends(rows: list[Row]) -> list[int]:
    """The byte offset just past each row's newline, as the spool writes them."""
    ends, offset = [], 0
    for row in rows:
        offset += len(dump_row(row)) + 1
        ends.append(offset)
    return ends


def check_enotdir(failure: SpoolWriteFailed) -> None:
    assert failure.kept == 0
    assert failure.errno == errno.ENOTDIR
    assert failure.strerror == os.strerror(errno.ENOTDIR)
    assert "ENOTDIR" in str(failure) and "Not a directory" in str(failure)


async def test_a_path_through_a_file_is_reported_with_its_errno(tmp_path: Path) -> None:
    """A spool directory that cannot exist (its parent is a file) fails every put with kept 0,
    ENOTDIR and the OS's words in the message."""
    (tmp_path / "file").write_text("not a directory")
    spool = FileSpool(tmp_path / "file" / "spool")
    rows = make_rows(3)
    with pytest.raises(SpoolWriteFailed) as caught:
        await spool.put(rows)
    check_enotdir(caught.value)
    with pytest.raises(SpoolWriteFailed) as caught:
        spool.put_nowait(rows)
    check_enotdir(caught.value)


_CHILD = """
import json, resource, signal, sys
from pathlib import Path
from app.calllog.file_spool import FileSpool
from app.calllog.seams import SpoolWriteFailed
directory, limit, rows = sys.argv[1], int(sys.argv[2]), json.loads(sys.stdin.read())
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    FileSpool(Path(directory), fsync=False).put_nowait(rows)
    print(json.dumps({"kept": len(rows)}))
except SpoolWriteFailed as exc:
    print(json.dumps({"kept": exc.kept, "errno": exc.errno, "message": str(exc)}))
"""


def put_with_size_limit(directory: Path, rows: list[Row], limit: int) -> dict[str, object]:
    """Put ``rows`` in a child process whose files may grow to ``limit`` bytes only."""
    done = subprocess.run([sys.executable, "-c", _CHILD, str(directory), str(limit)],
                          input=json.dumps(rows), capture_output=True, text=True, check=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("cut", ["first row", "mid row", "after a newline", "before a newline",
                                 "whole batch"])
async def test_a_partial_write_counts_the_rows_kept_exactly(cut: str, tmp_path: Path) -> None:
    """A batch cut by a full disk (EFBIG here) reports as kept exactly the rows a later take
    gets back: whole lines, and a last line complete but for its newline."""
    rows = make_rows(40)
    ends = line_ends(rows)
    limit, expected = {
        "first row": (ends[0] // 2, 0),
        "mid row": ((ends[16] + ends[17]) // 2, 17),
        "after a newline": (ends[9], 10),
        "before a newline": (ends[9] - 1, 10),
        "whole batch": (ends[-1] + 10, 40),
    }[cut]
    directory = tmp_path / "spool"
    result = put_with_size_limit(directory, rows, limit)
    assert result["kept"] == expected
    if expected < len(rows):
        assert result["errno"] == errno.EFBIG
        assert "EFBIG" in str(result["message"]) and os.strerror(errno.EFBIG) in \
            str(result["message"])
    spool = FileSpool(directory)
    taken = await spool.take(1000)
    await spool.aclose()
    assert [row for _, row in taken] == rows[:expected]


async def test_rows_after_a_failure_go_to_a_new_segment(tmp_path: Path) -> None:
    """After a partial write the segment is sealed: the next put starts a new segment, and a
    take gets the kept rows and the new ones, nothing torn in between."""
    rows = make_rows(20)
    directory = tmp_path / "spool"
    result = put_with_size_limit(directory, rows, line_ends(rows)[4] + 3)
    assert result["kept"] == 5
    spool = FileSpool(directory)
    more = make_rows(3)
    for row in more:
        row["id"] += "-later"
    await spool.put(more)
    taken = [row for _, row in await spool.take(1000)]
    await spool.aclose()
    assert taken == rows[:5] + more
