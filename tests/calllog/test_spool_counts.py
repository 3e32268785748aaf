"""A file spool write that fails part-way says exactly how many rows it kept (and they are the
ones a later take gets back), and why the rest were not written: errno and the OS's words. A
running gateway whose spool writes fail part-way counts as ``dropped`` exactly the rows that
are never stored.

Tests run as root, where permissions do not stop a write: the failures are real ones made
another way (a path through a regular file; a file-size limit, RLIMIT_FSIZE, in a child
process)."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.calllog.file_spool import FileSpool
from app.calllog.record import CallRecord, Row, dump_row
from app.calllog.seams import SpoolWriteFailed
from tests.api.conftest import MASTER_KEY
from tests.calllog.servers import PrivatePostgres, serve_process
from tests.calllog.test_sick_database import (
    gateway_env,
    new_database,
    readyz,
    stopped,
    stored,
    until,
)
from tests.metrics.scrape import value, wait_for
from tests.servers import free_port

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


_FULL_CHILD = """
import asyncio, json, os, resource, signal, sys
from pathlib import Path
from app.calllog.file_spool import FileSpool
from app.calllog.seams import SpoolWriteFailed
directory, tries, rows = sys.argv[1], int(sys.argv[2]), json.loads(sys.stdin.read())
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no byte fits: a full disk, to the writer
spool = FileSpool(Path(directory), fsync=False)
kept = []
for _ in range(tries):
    try:
        spool.put_nowait(rows)
    except SpoolWriteFailed as exc:
        kept.append(exc.kept)
during = sorted(os.listdir(directory))
asyncio.run(spool.aclose())
print(json.dumps({"kept": kept, "during": during, "after": sorted(os.listdir(directory))}))
"""


def put_on_a_full_disk(directory: Path, rows: list[Row], *, tries: int) -> dict[str, Any]:
    """Put ``rows`` ``tries`` times in a child process whose files take no byte; the ``kept``
    of each failure, and the directory's files before and after the spool closed."""
    done = subprocess.run([sys.executable, "-c", _FULL_CHILD, str(directory), str(tries)],
                          input=json.dumps(rows), capture_output=True, text=True, check=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def test_a_full_disk_leaves_no_empty_segments(tmp_path: Path) -> None:
    """A put that writes nothing (a full disk, tried again every flush interval) keeps its
    empty segment for the next try instead of sealing it and starting another: the directory
    holds one segment however long the disk stays full, none once the spool closes; the rows
    are put once the disk takes them."""
    rows = make_rows(5)
    directory = tmp_path / "spool"
    result = put_on_a_full_disk(directory, rows, tries=20)
    assert result["kept"] == [0] * 20
    assert len(result["during"]) == 1, result["during"]
    assert result["after"] == []
    spool = FileSpool(directory)
    await spool.put(rows)
    taken = [row for _, row in await spool.take(1000)]
    await spool.aclose()
    assert taken == rows


_JOURNAL_CHILD = """
import asyncio, json, resource, signal, sys
from pathlib import Path
from app.calllog.journal import Journal
directory, limit, rows = sys.argv[1], int(sys.argv[2]), json.loads(sys.stdin.read())
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
journal = Journal(Path(directory))
journal.open()
for row in rows:
    journal.append(row)
kept = journal.keep(len(rows))  # none stored or spooled: every journaled row stays
asyncio.run(journal.aclose())
print(json.dumps({"kept": kept}))
"""

_OVERFLOW_CHILD = """
import json, resource, signal, sys
from pathlib import Path
from app.calllog.file_spool import FileSpool
from app.calllog.record import CallRecord
from app.calllog.sqlite import SqliteStore
from app.calllog.writer import CallLogWriter
from app.db.engine import make_engine
directory, limit, records = sys.argv[1], int(sys.argv[2]), json.loads(sys.stdin.read())
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
writer = CallLogWriter(store=SqliteStore(make_engine("sqlite+aiosqlite://")),
                       file_spool=FileSpool(Path(directory), fsync=False), buffer_max=1)
for fields in records:  # the first fills the buffer; the others overflow to the file, one by one
    writer.submit(CallRecord(**fields))
print(json.dumps({"overflowed": writer.stats.overflowed, "dropped": writer.stats.dropped}))
"""


def run_limited(script: str, directory: Path, payload: object, limit: int) -> dict[str, int]:
    """Run ``script`` in a child whose files may grow to ``limit`` bytes only; its JSON line."""
    done = subprocess.run([sys.executable, "-c", script, str(directory), str(limit)],
                          input=json.dumps(payload), capture_output=True, text=True,
                          check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    result: dict[str, int] = json.loads(done.stdout)
    return result


CUTS: dict[str, tuple[Callable[[list[int]], int], set[int]]] = {
    "mid row": (lambda ends: (ends[8] + ends[9]) // 2, {9}),
    "before a newline": (lambda ends: ends[9] - 1, set()),
    "after a newline": (lambda ends: ends[9], {10}),
}
"""A cut -> (the size limit, from the line ends; the rows it loses). A row cut just before its
newline is whole: taking parses it."""


async def taken_rows(directory: Path) -> list[Row]:
    spool = FileSpool(directory)
    taken = await spool.take(1000)
    await spool.aclose()
    return [row for _, row in taken]


@pytest.mark.parametrize("cut", list(CUTS))
async def test_the_journal_counts_the_rows_a_cut_write_kept(cut: str, tmp_path: Path) -> None:
    """Journal segments cut by a full disk (EFBIG here): the rows ``keep`` says are journaled
    are exactly the ones a later take gets back, a row missing only its newline included."""
    rows = make_rows(12)
    limit, lost = CUTS[cut]
    result = run_limited(_JOURNAL_CHILD, tmp_path / "spool", rows, limit(line_ends(rows)))
    taken = await taken_rows(tmp_path / "spool")
    assert taken == [row for i, row in enumerate(rows) if i not in lost]
    assert result["kept"] == len(taken)


@pytest.mark.parametrize("cut", list(CUTS))
async def test_an_overflowed_row_cut_on_disk_is_counted_as_it_lies(cut: str,
                                                                   tmp_path: Path) -> None:
    """Rows past a full buffer go to the spool file one by one; one cut by a full disk is
    ``dropped``, one missing only its newline ``overflowed`` (a later take gets it)."""
    records: list[dict[str, Any]] = [
        {"id": f"row-{i:03d}", "endpoint": "/v1/chat/completions", "caller": "master",
         "created_at": 1.8e9 + i, "error_message": "x" * (i * 37 % 300)} for i in range(13)]
    rows = [CallRecord(**fields).to_row() for fields in records]
    limit, lost = CUTS[cut]
    overflow = rows[1:]  # the first row stays in the buffer
    result = run_limited(_OVERFLOW_CHILD, tmp_path / "spool", records, limit(line_ends(overflow)))
    taken = await taken_rows(tmp_path / "spool")
    assert taken == [row for i, row in enumerate(overflow) if i not in lost]
    assert result == {"overflowed": len(taken), "dropped": len(lost)}

# ---- through a running gateway ---------------------------------------------------------------

_LIMITED = """
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # kept across exec: past the limit, EFBIG
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
os.execv(sys.argv[2], sys.argv[2:])
"""
"""Runs ``argv[2:]`` (same pid) with every file it writes limited to ``argv[1]`` bytes."""
PADDING = {f"pad{i}": "x" * 500 for i in range(6)}
"""Request metadata (kept in the row) that makes each row about 4.1 KB."""
ROW_LIMIT = 10_300
"""About 2.5 rows: a spool segment or journal segment holds two rows whole, cuts the third."""
BATCH = 4
CALLS = 6 * BATCH


def segments_of(directory: Path, pid: int) -> list[str]:
    """The spool and journal segments process ``pid`` left in ``directory``."""
    pattern = re.compile(rf"spool-\d+-{pid}(-journal)?\.jsonl")
    return [name for name in os.listdir(directory) if pattern.fullmatch(name)]


def call_batch(client: httpx.Client, request_ids: list[str], *, sent: int) -> None:
    """One call per id, answered 200; returns once the writer has tried to place every row of
    the ``sent`` so far: each is handled (stored, spooled, kept in the journal or dropped) or
    back in its buffer after a batch nothing took whole, and no batch is in flight.

    Not once ``buffered`` is 0: the writer empties its buffer when it takes a batch, before it
    stores or spools it, and calls made meanwhile are taken one by one as they arrive; the
    last of them then wait for a batch that never fills (the flush interval is an hour)."""
    failures = writer_stats(client)["spool_failures"]
    for request_id in request_ids:
        response = client.post("/v1/chat/completions", headers={"x-request-id": request_id},
                               json={"model": "chat", "metadata": PADDING,
                                     "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200, response.text

    def settled() -> bool:
        stats = writer_stats(client)
        return handled_rows(stats) + stats["buffered"] == sent and (
            stats["stored"] == sent or stats["spool_failures"] > failures)
    until(settled)


def handled_rows(stats: dict[str, int]) -> int:
    """The rows the writer is done with, however (its counts in /admin/calllog)."""
    return sum(stats[k] for k in ("stored", "file_spooled", "kept_in_journal", "dropped"))


def writer_stats(client: httpx.Client) -> dict[str, int]:
    response = client.get("/admin/calllog")
    assert response.status_code == 200, response.text
    body: dict[str, int] = response.json()
    return body


def test_a_gateway_whose_spool_writes_fail_part_way_loses_no_row(
        postgres: PrivatePostgres, simulator: str, tmp_path: Path) -> None:
    """`switchboard serve` with every file it writes limited to ~2.5 rows, batches of 4: one
    batch stored, then Postgres stopped. Each later batch is cut part-way in the spool file,
    and the journal loses a row now and then: what the spool kept is counted spooled, the rest
    stays in memory (``dropped`` 0, in /admin/calllog and the metric), and once Postgres is
    back every row is stored once: those in memory by this gateway's last flush, the spooled
    ones by a gateway started later. (The rest were counted dropped at once, while the process
    lived on with room for them.)"""
    url = new_database(postgres, "dropped_exactly", migrated=True)
    env = gateway_env(tmp_path, simulator, url,
                      calllog=f"batch_max: {BATCH}, flush_interval_s: 3600")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = serve_process(env, port, log=tmp_path / "limited.log",
                          wrapper=[sys.executable, "-c", _LIMITED, str(ROW_LIMIT)])
    ids = [f"drop-{i:03d}" for i in range(CALLS)]
    try:
        with httpx.Client(base_url=base, timeout=30, headers={
                "Authorization": f"Bearer {MASTER_KEY}"}) as client:
            # Stored; the journal's segment is left holding one row (it cut the third), so the
            # next batch is cut there a row before the spool file (which starts empty) cuts
            # it: the spool keeps a row the journal lost.
            call_batch(client, ids[:BATCH], sent=BATCH)
            assert writer_stats(client)["stored"] == BATCH
            with stopped(postgres):
                for start in range(BATCH, CALLS, BATCH):
                    call_batch(client, ids[start:start + BATCH], sent=start + BATCH)
                stats = writer_stats(client)
                samples = wait_for(base, MASTER_KEY, lambda s: value(
                    s, "switchboard_calllog_queue_depth") == stats["buffered"])
                spool = readyz(base)["calllog"]["spools"]["file"]
            first.send_signal(signal.SIGTERM)  # Postgres is back: its last flush stores them
            first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.terminate()
            first.wait(timeout=30)
    assert value(samples, "switchboard_calllog_dropped_records_total") == 0
    assert spool["up"] is False and spool["reason"] == "EFBIG", spool
    assert stats["dropped"] == 0 and stats["file_spooled"] > 0 and stats["buffered"] > 0, stats

    port = free_port()
    second = serve_process(gateway_env(tmp_path, simulator, url), port,
                           log=tmp_path / "serve.log")
    try:
        until(lambda: not segments_of(tmp_path / "spool", first.pid), timeout_s=60)
        found = stored(url, set(ids), timeout_s=60)
    finally:
        second.terminate()
        second.wait(timeout=30)
    assert sorted(found) == sorted(ids)  # every row, none twice
