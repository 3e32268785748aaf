"""The call log's journal: every buffered row on local disk before its call's answer is finished.

The writer keeps rows in memory until a batch is stored or spooled; a process killed in between
(``kill -9``, the OOM killer), or stuck behind a hung database for the store timeout, would lose
them. So ``append`` writes each row the writer buffers to an append-only file with one
``write()`` (into the OS page cache: it survives the process, not the machine), synchronously,
from the request's own ``submit``. The gateway submits a call's record before it sends the last
byte of the answer (non-streaming: before the body; streams: before ``[DONE]``), so a process
that dies loses no row of a call it had answered. ``sync`` fsyncs what was appended (the writer
calls it every ``calllog.fsync_interval_s``), so losing the machine loses at most that interval.

Format and replay are the file spool's (``app.calllog.file_spool``): segments
``spool-<20-digit epoch ns>-<pid>-journal.jsonl`` in the spool directory, one row per line,
created under a hidden name, locked (``flock``) and renamed into view. While this process holds a
segment's lock no spool reader takes it; a process that dies releases its locks, and any file
spool's ``take`` (the next gateway's at start-up, or a live worker's) then replays the segment
like any spool segment. The store ignores rows it already has, so replaying rows stored before
the crash duplicates nothing.

Marking rows done: the writer consumes its buffer in order, so the journal keeps the rows it
holds as runs in the same order, and ``done(n)`` retires the next ``n``. A segment past
``max_segment_bytes`` is sealed (a new one takes new rows); a sealed segment whose rows are all
done is deleted. Rows no spool could take are ``keep``-ed instead: their segment, once sealed and
settled, is unlocked and left for the file spool to replay. So after a ``kill -9`` the next start
replays at most the active segment (``max_segment_bytes``) of rows already stored, plus rows not
yet stored.

Failures: ``append`` never raises. A segment that cannot be created or written marks the spool
directory down (reported through ``report``, with the errno name and the OS's words); rows keep
going to the writer's buffer unjournaled, and a new segment is tried at most every ``retry_s``.
A write stopped just before a row's newline leaves the row whole (readers take a complete last
line): it counts as journaled, so ``keep`` reports exactly the rows a reader will get back.
Not thread-safe: call it from the event loop's thread (``sync`` runs its fsyncs in threads).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from app.calllog.condition import Condition, Throttle, errno_name
from app.calllog.file_spool import create_segment
from app.calllog.record import Row, dump_row

__all__ = ["Journal"]

_log = logging.getLogger("switchboard.calllog.journal")


@dataclass(slots=True, eq=False)
class _Segment:
    name: str
    fd: int
    size: int = 0
    pending: int = 0
    """Rows appended and not yet done or kept."""
    sealed: bool = False
    kept: bool = False
    """Holds rows no spool took: left on disk for the file spool to replay."""
    dirty: bool = False
    """Appended to since the last fsync."""


@dataclass(slots=True, eq=False)
class _Run:
    """``count`` consecutive buffered rows, all in ``segment`` (``None``: not journaled)."""

    segment: _Segment | None
    count: int


def os_reason(exc: OSError) -> str:
    """``ENOSPC (No space left on device)``: the errno's name and the OS's words."""
    return f"{errno_name(exc.errno)} ({exc.strerror or exc})"


class Journal:
    """Rows on local disk from ``append`` until ``done``/``keep`` (see the module docstring)."""

    def __init__(self, directory: Path, *, max_segment_bytes: int = 1 << 20,
                 retry_s: float = 1.0,
                 report: Callable[[Condition], None] | None = None) -> None:
        self._dir = Path(directory)
        self._max_bytes = max_segment_bytes
        self._retry_s = retry_s
        self._report = report
        self._active: _Segment | None = None
        self._segments: list[_Segment] = []  # every segment this process holds open
        self._runs: deque[_Run] = deque()
        self._appended = 0  # rows ever appended (journaled or not)
        self._retired = 0  # rows ever done or kept (in append order)
        self._mark = 0  # ``_appended`` at the previous ``sync``
        self._kept_unsynced = False  # rows kept (retired, on no spool) since the last fsync
        self._retry_at = 0.0
        self._last_ns = 0
        self._dir_dirty = False
        self._closed = False
        self._failing = Throttle(_log, level=logging.ERROR)
        self.unjournaled = 0
        """Rows appended while no segment could be written."""

    @property
    def directory(self) -> Path:
        return self._dir

    def open(self) -> bool:
        """Create the first segment now (the start-up check that the spool directory can be
        written); whether it could be. A failure is reported and retried by ``append``."""
        return self._reopen(force=True) is not None

    # ---- the request side: one write() per row ---------------------------------------------

    def append(self, row: Row) -> None:
        """Write ``row`` to the active segment (no fsync); never raises."""
        self._appended += 1
        try:
            line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:
            line = dump_row(row) + b"\n"
        segment = self._active or self._reopen(force=False)
        if segment is None:
            self.unjournaled += 1
            self._add_run(None)
            return
        done, error = self._write(segment, line)
        # A row missing only its newline is whole: readers take a complete last line.
        if done >= len(line) - 1:
            segment.pending += 1
            segment.dirty = True
            self._add_run(segment)
        else:
            self.unjournaled += 1
            self._add_run(None)
        if error is not None:
            # A torn line may be left: new rows go to a new segment (readers skip torn tails).
            self._seal(segment)
            self._failed(error, "write to")
        elif segment.size >= self._max_bytes:
            self._seal(segment)

    @staticmethod
    def _write(segment: _Segment, line: bytes) -> tuple[int, OSError | None]:
        """Append ``line``; the bytes written, and the error that stopped it (if any)."""
        view = memoryview(line)
        done = 0
        try:
            while done < len(line):
                done += os.write(segment.fd, view[done:])
        except OSError as exc:
            return done, exc
        finally:
            segment.size += done
        return done, None

    def _add_run(self, segment: _Segment | None) -> None:
        runs = self._runs
        if runs and runs[-1].segment is segment:
            runs[-1].count += 1
        else:
            runs.append(_Run(segment, 1))

    # ---- the writer side: rows leave the buffer in order ------------------------------------

    def done(self, count: int) -> None:
        """The next ``count`` rows are stored or spooled: forget them."""
        self._retire(count, keep=False)

    def keep(self, count: int) -> int:
        """The next ``count`` rows could not be stored or spooled: leave the ones journaled
        on disk for the file spool to replay; return how many of them were journaled."""
        return self._retire(count, keep=True)

    def _retire(self, count: int, *, keep: bool) -> int:
        journaled = 0
        runs = self._runs
        while count > 0 and runs:
            run = runs[0]
            taken = min(count, run.count)
            self._retired += taken
            run.count -= taken
            count -= taken
            if run.count == 0:
                runs.popleft()
            segment = run.segment
            if segment is None:
                continue
            journaled += taken
            segment.pending -= taken
            if keep:
                self._kept_unsynced = True  # durable nowhere else: the next sync fsyncs them
            if keep and not segment.kept:
                segment.kept = True
                if not segment.sealed:
                    self._seal(segment)  # so it can be released once its other rows settle
            if segment.sealed:
                self._settle(segment)
        return journaled

    @property
    def pending(self) -> int:
        """Rows appended and not yet done or kept (journaled or not)."""
        return sum(run.count for run in self._runs)

    # ---- durability ----------------------------------------------------------------------

    async def sync(self, *, force: bool = False) -> None:
        """fsync every segment appended to since the last fsync (in threads), and the directory
        after segments were created, when some row appended before the previous call is still
        neither stored nor spooled, or rows were kept since (or ``force``). OS errors are
        reported, not raised.

        Called every half ``fsync_interval_s``, this makes every row durable (stored, spooled
        or fsynced) at most ``fsync_interval_s`` after it was appended. With a healthy store
        rows are stored within a flush interval, so the journal then costs no fsync, and no
        disk write at all once its segments are deleted (fsyncing every second anyway cost
        ~15% of the gateway's CPU at full load: bench/README.md)."""
        behind = self._retired < self._mark or self._kept_unsynced
        self._mark = self._appended
        if not (behind or force):
            return
        self._kept_unsynced = False
        dirty = [segment for segment in self._segments if segment.dirty]
        try:
            for segment in dirty:
                segment.dirty = False
                fd = os.dup(segment.fd)  # survives the segment being deleted meanwhile
                try:
                    await asyncio.to_thread(os.fsync, fd)
                finally:
                    os.close(fd)
            if self._dir_dirty:
                self._dir_dirty = False
                await asyncio.to_thread(_fsync_dir, self._dir)
        except OSError as exc:
            self._failed(exc, "fsync")

    async def aclose(self) -> None:
        """fsync, delete segments whose rows are all done, and unlock the others (their rows
        stay on disk for the next taker). Idempotent."""
        if self._closed:
            return
        await self.sync(force=True)
        self._closed = True
        for segment in list(self._segments):
            if not segment.sealed:
                self._seal(segment)
            if segment.pending == 0 and not segment.kept:
                self._delete(segment)
            else:
                self._release(segment)
        self._runs.clear()

    # ---- segments ------------------------------------------------------------------------

    def _reopen(self, *, force: bool) -> _Segment | None:
        """A new active segment, or ``None`` (reported) when the directory cannot take one.
        Without ``force``, tries at most every ``retry_s``."""
        if self._closed:
            return None
        now = time.monotonic()
        if not force and now < self._retry_at:
            return None
        try:
            segment = self._create()
        except OSError as exc:
            self._retry_at = now + self._retry_s
            self._failed(exc, "create a segment in")
            return None
        if self._failing.active or force:
            self._failing.clear("call-log journal in %s writable again", self._dir)
            if self._report is not None:
                self._report(Condition(up=True))
        self._active = segment
        self._segments.append(segment)
        return segment

    def _create(self) -> _Segment:
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        name, fd = create_segment(self._dir, self._last_ns, "-journal")
        self._dir_dirty = True
        return _Segment(name=name, fd=fd)

    def _seal(self, segment: _Segment) -> None:
        segment.sealed = True
        if segment is self._active:
            self._active = None
        self._settle(segment)

    def _settle(self, segment: _Segment) -> None:
        """A sealed segment with every row retired: deleted, or (holding kept rows) unlocked."""
        if segment.pending > 0 or not segment.sealed or self._closed:
            return
        if segment.kept:
            self._release(segment)
        else:
            self._delete(segment)

    def _delete(self, segment: _Segment) -> None:
        # Unlink before unlocking, so no reader can lock it in between and replay it.
        try:
            (self._dir / segment.name).unlink(missing_ok=True)
        except OSError as exc:
            self._failed(exc, "delete a segment in")
        self._close(segment)

    def _release(self, segment: _Segment) -> None:
        """Unlock a segment whose rows stay on disk for a reader."""
        if segment.dirty:
            # As durable as the rest before letting go (a rare path: only after a batch no
            # spool could take, or at close after ``sync``), so a blocking fsync is acceptable.
            segment.dirty = False
            try:
                os.fsync(segment.fd)
            except OSError as exc:
                self._failed(exc, "fsync")
        self._close(segment)

    def _close(self, segment: _Segment) -> None:
        if segment in self._segments:
            self._segments.remove(segment)
            os.close(segment.fd)

    def _failed(self, exc: OSError, action: str) -> None:
        reason = os_reason(exc)
        self._failing("call-log journal: could not %s %s: %s; call records are kept in memory "
                      "until stored or spooled", action, self._dir, reason)
        if self._report is not None:
            self._report(Condition(up=False, reason=errno_name(exc.errno),
                                   detail=f"{self._dir}: {exc.strerror or exc}"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
