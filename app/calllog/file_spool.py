"""The call log's last line of defence: an append-only spool of JSON-lines files on local disk.

Layout: ``<directory>/spool-<20-digit epoch ns>-<pid>.jsonl``, one row per line; names sort by
creation time (the journal's segments, ``spool-<ns>-<pid>-journal.jsonl``, are spool segments
too: ``app.calllog.journal``). One module past 400 lines: the segment format, locking, writing
and taking are one protocol, and splitting them would spread its invariants over two files.

A process appends to one *active* segment, holding an exclusive ``flock`` on it for as long as it
writes there. A segment is *sealed* once its writer lets go of it (rotation past
``max_segment_bytes``, ``take``, ``aclose``, or the writer's death, which releases its locks).

Taking (at-least-once):

- ``take`` first seals this process's active segment, then walks sealed segments oldest first. It
  locks each segment it reads from, so several processes may share one directory without handing
  out the same segment twice at the same time; a segment locked by another live process is skipped.
- ``take`` is not a pop: it returns the oldest rows *not yet acknowledged*, so rows taken and not
  acked come back at the next ``take`` of the same object (e.g. after a failed store write).
- Acknowledgements are kept in memory per segment; a segment is deleted once every row of it is
  acknowledged. When a process dies or calls ``aclose`` with a segment partly acknowledged, the
  lock goes, and the next taker gets the *whole* segment again (acknowledged rows included: the
  store ignores rows it already has).
- A torn last line (a crash mid-append) is skipped with a warning; any other line that is not JSON
  is dropped with an error log, so it cannot block the spool.

Durability: ``put`` fsyncs before returning (when ``fsync``); ``put_nowait`` only appends (the rows
survive a crash of the process, not of the machine, until the next ``put``/``take``/``aclose``).
Not thread-safe: call everything from the event loop's thread. OS errors raise
``SpoolUnavailable`` (from ``put``: ``SpoolWriteFailed``, saying how many rows were written and
why not the rest). Rows are written with ``dump_row``, which never fails on a row.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from app.calllog.record import Row, dump_row
from app.calllog.seams import SpoolUnavailable, SpoolWriteFailed

__all__ = ["FileSpool"]

_log = logging.getLogger("switchboard.calllog.spool")
_PREFIX = "spool-"
_SUFFIX = ".jsonl"


@dataclass(slots=True)
class _Active:
    """The segment this process appends to; ``fd`` is write-only, append, exclusively locked."""

    name: str
    fd: int
    lines: int = 0
    size: int = 0


@dataclass(slots=True)
class _Held:
    """A sealed segment this process has locked for taking. ``pending`` maps line number to the
    raw line for rows not yet acknowledged (``None`` until the file is read)."""

    fd: int
    pending: dict[int, bytes] | None = None


def _is_segment(name: str) -> bool:
    return name.startswith(_PREFIX) and name.endswith(_SUFFIX)


class _PartialWrite(Exception):
    """``error`` stopped ``_write_all`` after ``written`` bytes."""

    def __init__(self, error: OSError, written: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.written = written


def _write_all(fd: int, data: bytes) -> int:
    """Write all of ``data``; return its length. Raises ``_PartialWrite``."""
    view = memoryview(data)
    done = 0
    while done < len(data):
        try:
            done += os.write(fd, view[done:])
        except OSError as exc:
            raise _PartialWrite(exc, done) from exc
    return done


def _whole_rows(lines: Sequence[bytes], written: int) -> int:
    """How many of ``lines`` (written one after another, each ended by a newline) are whole in
    the first ``written`` bytes. A row whose newline is missing counts: taking parses it."""
    offset = 0
    for count, line in enumerate(lines):
        offset += len(line)
        if offset > written:
            return count
        offset += 1
    return len(lines)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_segment(name: str, data: bytes) -> dict[int, bytes]:
    """Line number -> raw line, skipping blank lines and a torn (unterminated, invalid) tail."""
    lines = data.split(b"\n")
    tail = lines.pop()
    pending = {i: raw for i, raw in enumerate(lines) if raw.strip()}
    if tail.strip():
        try:
            orjson.loads(tail)
        except orjson.JSONDecodeError:
            _log.warning("spool segment %s: skipping torn last line (%d bytes)", name, len(tail))
        else:  # complete row, only its newline was lost
            pending[len(lines)] = tail
    return pending


def create_segment(directory: Path, stamp_ns: int, tag: str = "") -> tuple[str, int]:
    """(name, fd) of a new segment ``spool-<stamp_ns>-<pid><tag>.jsonl`` in ``directory``, open
    for appending and locked: created under a hidden name, locked, then renamed into view, so no
    other process ever sees it unlocked (the journal's segments are spool segments too)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"{_PREFIX}{stamp_ns:020d}-{os.getpid()}{tag}{_SUFFIX}"
    tmp = directory / f".{name}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(tmp, directory / name)
    except OSError:
        os.close(fd)
        raise
    return name, fd


class FileSpool:
    """A ``Spool`` in append-only JSON-lines segment files under ``directory`` (see module doc).

    The directory (mode 0700) and its files (mode 0600) are created on first use, so a bad path
    shows up as ``SpoolUnavailable`` from the first call rather than at construction.
    """

    def __init__(
        self, directory: Path, *, fsync: bool = True, max_segment_bytes: int = 8 << 20
    ) -> None:
        self._dir = Path(directory)
        self._fsync = fsync
        self._max_bytes = max_segment_bytes
        self._active: _Active | None = None
        self._held: dict[str, _Held] = {}
        self._unsynced: list[int] = []  # fds of rotated segments, closed after their fsync
        self._dir_dirty = False
        self._last_ns = 0
        self._counts: dict[str, tuple[int, int]] = {}  # name -> (size, lines), for rows_waiting

    @property
    def directory(self) -> Path:
        return self._dir

    def put_nowait(self, rows: Sequence[Row]) -> None:
        """Append ``rows`` now, without fsync (safe from sync code inside the event loop). Each
        row is written with ``dump_row``, so no row can fail the others.

        Raises ``SpoolWriteFailed`` on an OS error, with ``kept``: how many of the first rows
        were appended whole before it (they stay and will be taken) and the OS reason. A write
        that appended nothing to a new segment (a full disk) leaves that segment active for the
        next put, so retries on a full disk create no files."""
        if not rows:
            return
        lines = [dump_row(row) for row in rows]
        data = b"\n".join(lines) + b"\n"
        try:
            active = self._writable(len(data))
        except OSError as exc:
            raise self._failed(exc, kept=0) from exc
        try:
            written = _write_all(active.fd, data)
        except _PartialWrite as partial:
            if partial.written or active.size:
                # A partial append leaves a torn line (and a file past a size limit takes no
                # more): end the segment there, new rows go to a new one.
                active.size += partial.written
                self._seal_active(keep_lock=False)
            # else a new segment that took nothing (a full disk): it stays active, empty, for
            # the next try (sealing it started a new empty file at every try)
            raise self._failed(partial.error, kept=_whole_rows(lines, partial.written)) \
                from partial.error
        active.lines += len(rows)
        active.size += written

    async def put(self, rows: Sequence[Row]) -> None:
        """Append ``rows`` and, when ``fsync``, return only once they are on disk (the fsync
        runs in a thread). Raises ``SpoolWriteFailed`` (see ``put_nowait``); when only the
        fsync fails, every row is appended (``kept`` is all of them) but may not survive a
        crash of the machine."""
        self.put_nowait(rows)
        if not self._fsync or self._active is None:
            return
        try:
            fd = os.dup(self._active.fd)  # survives a rotation that closes the original
            try:
                await asyncio.to_thread(os.fsync, fd)
            finally:
                os.close(fd)
            await self._flush_unsynced()
        except OSError as exc:
            raise self._failed(exc, kept=len(rows)) from exc

    async def take(self, limit: int) -> list[tuple[str, Row]]:
        """Up to ``limit`` rows not yet acknowledged, oldest segment first, each with its token
        ``"<segment>:<line>"``. Seals this process's active segment first. Raises
        ``SpoolUnavailable``."""
        if limit <= 0:
            return []
        try:
            await self._flush_unsynced()
            if self._active is not None and self._active.lines:
                if self._fsync:
                    await asyncio.to_thread(os.fsync, self._active.fd)
                self._seal_active(keep_lock=True)
            out: list[tuple[str, Row]] = []
            for name in self._segment_names():
                if len(out) >= limit:
                    break
                await self._take_from(name, limit, out)
            return out
        except OSError as exc:
            raise SpoolUnavailable(f"file spool {self._dir}: {exc}") from exc

    async def ack(self, tokens: Sequence[str]) -> None:
        """Acknowledge rows by token; a segment with every row acknowledged is deleted. Tokens of
        segments this object does not hold (another process's, or already deleted) are ignored.
        Raises ``SpoolUnavailable``; ``ValueError`` for a malformed token."""
        touched: set[str] = set()
        for token in tokens:
            name, _, line = token.rpartition(":")
            held = self._held.get(name)
            if held is None or held.pending is None:
                continue
            held.pending.pop(int(line), None)
            touched.add(name)
        try:
            for name in touched:
                if not self._held[name].pending:
                    self._finish(name)
        except OSError as exc:
            raise SpoolUnavailable(f"file spool {self._dir}: {exc}") from exc

    def rows_waiting(self) -> int:
        """Rows in the directory not yet acknowledged (every process's segments; rows of a
        segment partly acknowledged by a dead process count again). Reads each sealed file once
        per size to count its lines: call it from a metrics scrape, not per request."""
        try:
            names = self._segment_names()
            total = 0
            for name in names:
                held = self._held.get(name)
                if self._active is not None and name == self._active.name:
                    total += self._active.lines
                elif held is not None and held.pending is not None:
                    total += len(held.pending)
                else:
                    total += self._count_lines(name)
            self._counts = {k: v for k, v in self._counts.items() if k in names}
            return total
        except OSError as exc:
            raise SpoolUnavailable(f"file spool {self._dir}: {exc}") from exc

    async def aclose(self) -> None:
        """Make appended rows durable and let go of every segment (unacknowledged rows stay on
        disk for the next taker). Idempotent."""
        try:
            if self._active is not None and self._fsync:
                await asyncio.to_thread(os.fsync, self._active.fd)
            self._seal_active(keep_lock=False)
            await self._flush_unsynced()
        except OSError as exc:
            raise SpoolUnavailable(f"file spool {self._dir}: {exc}") from exc
        finally:
            for held in self._held.values():
                os.close(held.fd)
            self._held.clear()

    # -- internals ---------------------------------------------------------------------------

    def _failed(self, exc: OSError, *, kept: int) -> SpoolWriteFailed:
        """The error of a put stopped by ``exc``: its errno's name and the OS's words."""
        name = errno.errorcode.get(exc.errno, "?") if exc.errno is not None else "?"
        reason = exc.strerror or str(exc)
        return SpoolWriteFailed(f"file spool {self._dir}: {name} ({reason}); {kept} row(s) "
                                "of the batch written", kept=kept, errno=exc.errno,
                                strerror=reason)

    def _segment_names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self._dir) if _is_segment(n))
        except FileNotFoundError:
            return []

    def _writable(self, incoming: int) -> _Active:
        """The active segment, rotated first when ``incoming`` bytes would overflow it."""
        active = self._active
        if active is not None and active.lines and active.size + incoming > self._max_bytes:
            if self._fsync:
                self._unsynced.append(active.fd)  # keep the lock until it is on disk
                self._active = None
            else:
                self._seal_active(keep_lock=False)
            active = None
        if active is None:
            active = self._active = self._new_segment()
        return active

    def _new_segment(self) -> _Active:
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        name, fd = create_segment(self._dir, self._last_ns)
        self._dir_dirty = True
        return _Active(name=name, fd=fd)

    def _seal_active(self, *, keep_lock: bool) -> None:
        """Stop appending to the active segment; keep its lock for taking, or release it. A
        segment released with nothing in it is deleted first (unlinked while still locked, so
        no one takes it in between): no empty segment is left behind."""
        active, self._active = self._active, None
        if active is None:
            return
        if keep_lock:
            self._held[active.name] = _Held(fd=active.fd)
            return
        try:
            if active.size == 0:
                (self._dir / active.name).unlink(missing_ok=True)
        finally:
            os.close(active.fd)

    async def _flush_unsynced(self) -> None:
        while self._unsynced:
            fd = self._unsynced[0]
            await asyncio.to_thread(os.fsync, fd)
            self._unsynced.pop(0)
            os.close(fd)
        if self._dir_dirty:
            self._dir_dirty = False
            await asyncio.to_thread(_fsync_path, self._dir)

    async def _take_from(self, name: str, limit: int, out: list[tuple[str, Row]]) -> None:
        """Append to ``out`` the pending rows of segment ``name``, up to ``limit`` in all."""
        held = self._held.get(name) or self._lock(name)
        if held is None:
            return
        if held.pending is None:
            data = await asyncio.to_thread((self._dir / name).read_bytes)
            held.pending = _parse_segment(name, data)
        for line, raw in list(held.pending.items()):
            if len(out) >= limit:
                return
            try:
                out.append((f"{name}:{line}", orjson.loads(raw)))
            except orjson.JSONDecodeError:
                _log.error("spool segment %s line %d is not JSON; dropping it", name, line)
                del held.pending[line]
        if not held.pending:
            self._finish(name)

    def _lock(self, name: str) -> _Held | None:
        """Lock a sealed segment for this process; ``None`` when another process holds it or it
        has just been deleted."""
        try:
            fd = os.open(self._dir / name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if os.fstat(fd).st_nlink == 0:  # deleted by its taker after we listed it
            os.close(fd)
            return None
        held = self._held[name] = _Held(fd=fd)
        return held

    def _finish(self, name: str) -> None:
        """Delete a fully acknowledged segment, then release it (unlink first, so no one can lock
        it in between and replay it)."""
        held = self._held.pop(name)
        try:
            (self._dir / name).unlink(missing_ok=True)
        finally:
            os.close(held.fd)

    def _count_lines(self, name: str) -> int:
        try:
            size = (self._dir / name).stat().st_size
            cached = self._counts.get(name)
            if cached is not None and cached[0] == size:
                return cached[1]
            lines = (self._dir / name).read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0
        self._counts[name] = (size, lines)
        return lines
