"""The call-log writer: requests hand over records and return; a background task stores them.

Path of a record (see ``app.calllog.seams``)::

    submit() ──► bounded buffer ──► batch ──► store (Postgres/SQLite), within store_timeout_s
                    │ full                      │ down or slow
                    ▼                           ▼
                 file spool ◄── Redis down ── spool (Redis stream) ──► replayed into the store,
                                                                        acknowledged after commit

* Nothing waits on the log: ``submit`` is a deque append (or, past ``buffer_max``, one line
  appended to the local spool file), never I/O on the event loop otherwise.
* Nothing is lost: a batch the store cannot commit in time goes to the durable spool (the Redis
  stream, or the local file when Redis is absent or down), and spooled rows are replayed when
  the store is back, acknowledged only after the commit. The store ignores rows it already has,
  so a replay after a crash or a write that committed after its timeout never duplicates. Only
  if the local disk fails too is a row dropped, and then ``stats.dropped`` says so.
* The healthy path writes straight to the store: spooling every batch through Redis first cost
  ~12% of the gateway's CPU (py-spy, bench/README.md) to protect only the last in-flight batch
  against a crash of the gateway itself.
* Memory is bounded whatever the outage: the buffer holds at most ``buffer_max`` rows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.calllog.record import CallRecord, Row
from app.calllog.seams import CallStore, Spool, SpoolUnavailable, StoreUnavailable

log = logging.getLogger("switchboard.calllog")


class LocalSpool(Spool, Protocol):
    """The file spool: a ``Spool`` that can also take rows synchronously (overflow path)."""

    def put_nowait(self, rows: Sequence[Row]) -> None: ...


class Feed(Protocol):
    """The live tail and daily counters (best effort)."""

    async def publish(self, rows: Sequence[Row]) -> None: ...


@dataclass(slots=True)
class WriterStats:
    submitted: int = 0
    stored: int = 0
    """Rows newly committed to the store."""
    duplicates: int = 0
    """Rows the store already had (a replay after a crash or a lost acknowledgement)."""
    overflowed: int = 0
    """Rows that went straight to the file spool because the buffer was full."""
    redis_spooled: int = 0
    file_spooled: int = 0
    dropped: int = 0
    """Rows lost for good: the store, the Redis spool and the local file all failed."""
    store_failures: int = 0
    spool_failures: int = 0
    feed_failures: int = 0


class CallLogWriter:
    """A ``CallSink`` that batches records into the store through the spools."""

    def __init__(self, *, store: CallStore, file_spool: LocalSpool, spool: Spool | None = None,
                 feed: Feed | None = None, buffer_max: int = 10_000, batch_max: int = 500,
                 flush_interval_s: float = 0.05, retry_s: float = 1.0,
                 store_timeout_s: float = 5.0, strict: bool = False) -> None:
        self._store = store
        self._file = file_spool
        self._spool = spool
        self._feed = feed
        self._buffer: collections.deque[Row] = collections.deque()
        self._buffer_max = buffer_max
        self._batch_max = batch_max
        self._interval = flush_interval_s
        self._retry_s = retry_s
        self._store_timeout_s = store_timeout_s
        self._strict = strict
        self._store_down_until = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.stats = WriterStats()

    # ---- the request side -----------------------------------------------------------------

    def submit(self, record: CallRecord) -> None:
        self.stats.submitted += 1
        row = record.to_row()
        if len(self._buffer) < self._buffer_max and not self._closing:
            self._buffer.append(row)
            if len(self._buffer) >= self._batch_max:
                self._wake.set()
            return
        try:
            self._file.put_nowait([row])
            self.stats.overflowed += 1
        except SpoolUnavailable:
            self.stats.dropped += 1
            log.error("call record %s dropped: buffer full and the spool file failed", row["id"])

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # ---- the background side --------------------------------------------------------------

    async def start(self) -> None:
        """Replay what earlier runs left in the spools, then keep writing in the background."""
        self._task = asyncio.create_task(self._run(), name="calllog-writer")

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.flush_once()
            except Exception:  # the writer must outlive any bug in one cycle (STYLE.md #10)
                if self._strict:
                    raise
                log.exception("call-log writer cycle failed; retrying")
                await asyncio.sleep(self._retry_s)

    async def flush_once(self) -> None:
        """Move everything buffered towards the store, then replay spooled rows if it is up."""
        while self._buffer:
            batch = [self._buffer.popleft()
                     for _ in range(min(self._batch_max, len(self._buffer)))]
            await self._publish(batch)
            await self._persist(batch)
        await self._replay()

    async def _publish(self, batch: list[Row]) -> None:
        if self._feed is None:
            return
        # Bodies stay out of the live stream: it keeps ~100k entries in Redis memory.
        slim = [row if row.get("request_body") is None and row.get("response_body") is None
                else {**row, "request_body": None, "response_body": None} for row in batch]
        try:
            await self._feed.publish(slim)
        except SpoolUnavailable as exc:
            self.stats.feed_failures += 1
            log.debug("live feed unavailable: %s", exc)

    async def _persist(self, batch: list[Row]) -> None:
        if self._store_up():
            try:
                written = await asyncio.wait_for(self._store.write(batch), self._store_timeout_s)
                self._count(written, len(batch))
                return
            except StoreUnavailable as exc:
                self._store_failed(exc)
            except TimeoutError:
                self._store_failed(StoreUnavailable(
                    f"no commit within {self._store_timeout_s:.1f}s"))
        if self._spool is not None:
            try:
                await self._spool.put(batch)
                self.stats.redis_spooled += len(batch)
                return  # durable; _replay stores and acknowledges it
            except SpoolUnavailable as exc:
                self.stats.spool_failures += 1
                log.warning("Redis spool unavailable (%s); spooling to the local file", exc)
        try:
            await self._file.put(batch)
            self.stats.file_spooled += len(batch)
        except SpoolUnavailable:
            self.stats.dropped += len(batch)
            log.error("%d call records dropped: store, Redis and the spool file all failed",
                      len(batch))

    async def _replay(self) -> None:
        spools: list[Spool] = [self._file] if self._spool is None else [self._spool, self._file]
        for spool in spools:
            while self._store_up():
                try:
                    taken = await spool.take(self._batch_max)
                except SpoolUnavailable:
                    self.stats.spool_failures += 1
                    break
                if not taken:
                    break
                try:
                    self._count(await self._store.write([row for _, row in taken]), len(taken))
                except StoreUnavailable as exc:
                    self._store_failed(exc)
                    return
                with contextlib.suppress(SpoolUnavailable):  # unacked rows replay harmlessly
                    await spool.ack([token for token, _ in taken])
                if len(taken) < self._batch_max:
                    break

    def _count(self, new: int, total: int) -> None:
        self.stats.stored += new
        self.stats.duplicates += total - new

    def _store_up(self) -> bool:
        return time.monotonic() >= self._store_down_until

    def _store_failed(self, exc: StoreUnavailable) -> None:
        self.stats.store_failures += 1
        self._store_down_until = time.monotonic() + self._retry_s
        log.warning("call store unavailable (%s); spooling, retry in %.1fs", exc, self._retry_s)

    async def aclose(self, *, timeout_s: float = 10.0) -> None:
        """Stop taking records, flush the buffer, and try to store what is spooled (SIGTERM)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout_s)
        self._store_down_until = 0.0
        try:
            await asyncio.wait_for(self.flush_once(), timeout_s)
        except TimeoutError:
            # Whatever is still buffered goes to the file spool; the next start replays it.
            rest = list(self._buffer)
            self._buffer.clear()
            if rest:
                try:
                    self._file.put_nowait(rest)
                    self.stats.file_spooled += len(rest)
                except SpoolUnavailable:
                    self.stats.dropped += len(rest)
        for closable in (self._spool, self._file, self._store):
            if closable is not None:
                await closable.aclose()
