"""The call-log writer: requests hand over records and return; a background task stores them.

Path of a record (see ``app.calllog.seams``)::

    submit() ──► journal (one write() to a local file) + bounded buffer ──► batch ──► store
                    │ full                                 (Postgres/SQLite), within store_timeout_s
                    ▼                                          │ down, slow, not yet checked
                 file spool ◄────────── Redis down ── spool (Redis stream) ──► replayed into the
                                                                 store, acknowledged after commit

* Nothing waits on the log: ``submit`` appends the row to the journal (``app.calllog.journal``:
  one ``write()`` into the page cache, no fsync) and to a deque (or, past ``buffer_max``, one
  line to the local spool file); no other I/O on the event loop, but for the journal creating
  or deleting a segment file every 1 MiB of rows (fsyncs run in threads).
* Nothing is lost: a batch the store cannot commit in time goes to the durable spool (the Redis
  stream, or the local file when Redis is absent or down), and spooled rows are replayed when
  the store is back, acknowledged only after the commit. The store ignores rows it already has,
  so a replay after a crash or a write that committed after its timeout never duplicates. Rows
  still in memory when the process dies are in the journal, which the file spool replays. A
  batch nothing takes (the store, Redis and the local disk all failing) goes back to the buffer
  and is tried again; only rows past ``buffer_max`` then (or at close) are dropped, and
  ``stats.dropped`` says so.
* A store that could not be checked at start (database unreachable) is not written to until
  ``check_store`` passes, retried every ``retry_s``; rows are spooled meanwhile. A store that
  answers but is not at this version's schema stays unwritten (``unmigrated``) until it is.
* The healthy path writes straight to the store: spooling every batch through Redis first cost
  ~12% of the gateway's CPU (py-spy, bench/README.md) to protect only the last in-flight batch
  against a crash of the gateway itself; the journal protects it for ~5 us a row.
* Memory is bounded whatever the outage: the buffer holds at most ``buffer_max`` rows.
* Trouble is reported, not shouted: ``conditions()`` says whether the store and each spool work
  (``/readyz``, the ``*_up`` gauges), and each recurring problem logs through a ``Throttle``.

(Past 400 lines: the buffer, the store/spool cascade and replay share one ordering
invariant with the journal, kept in one class; its conditions live in ``app.calllog.condition``.)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from app.background import pause
from app.calllog.condition import UP, Condition, Health
from app.calllog.journal import Journal
from app.calllog.record import CallRecord, Row
from app.calllog.seams import (
    CallStore,
    Spool,
    SpoolUnavailable,
    SpoolWriteFailed,
    StoreNotReady,
    StoreUnavailable,
)

_NO_CONNECTION = (ConnectionRefusedError, socket.gaierror)
"""What a store's ``StoreUnavailable`` is raised from (``__cause__``) when the database could not
be reached at all, rather than refusing or dropping a write."""
log = logging.getLogger("switchboard.calllog")

REPLAY_IDLE_S = 1.0
"""How long after a replay pass that found nothing to replay the next pass waits. Rows this
process spools, or a store found back, are replayed at the next cycle; rows another gateway left
in the shared Redis spool wait up to this much longer. Asking both spools every cycle (20 times
a second: Redis round trips, and a lock and listing of the spool directory) was most of an idle
gateway's CPU: with it, the cycle's ``wait_for`` and nothing else to do, a gateway used ~20 ms
of CPU a second; ~6 ms now (bench/README.md)."""


class LocalSpool(Spool, Protocol):
    """The file spool: a ``Spool`` that can also take rows synchronously (overflow path)."""

    def put_nowait(self, rows: Sequence[Row]) -> None: ...


class Feed(Protocol):
    """The live tail and daily counters (best effort)."""

    @property
    def holding(self) -> bool:
        """Whether counter sums wait to be added (``publish`` adds those due)."""
        ...

    async def publish(self, rows: Sequence[Row], *, everything: bool = False) -> bool:
        """Publish ``rows`` (none: only the held counters that are due; ``everything``: all
        the held counters); whether anything was sent. Counter sums it could not send are
        held for the next one."""
        ...

    def hold(self, rows: Sequence[Row]) -> None:
        """Count ``rows`` for the next ``publish`` that gets through, sending nothing now
        (Redis is paused after a failure)."""
        ...


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
    kept_in_journal: int = 0
    """Rows no spool could take that stay in the journal, replayed from it by the file spool."""
    dropped: int = 0
    """Rows lost for good: the store, the Redis spool, the local file and the journal failed."""
    store_failures: int = 0
    spool_failures: int = 0
    feed_failures: int = 0


class CallLogWriter:
    """A ``CallSink`` that batches records into the store through the spools."""

    def __init__(self, *, store: CallStore, file_spool: LocalSpool, spool: Spool | None = None,
                 feed: Feed | None = None, journal_dir: Path | None = None,
                 check_store: Callable[[], Awaitable[None]] | None = None,
                 ping_redis: Callable[[], Awaitable[str | None]] | None = None,
                 store_condition: Condition = UP, buffer_max: int = 10_000,
                 batch_max: int = 500, flush_interval_s: float = 0.05, retry_s: float = 1.0,
                 store_timeout_s: float = 5.0, fsync_interval_s: float = 1.0,
                 warn_every_s: float = 30.0, strict: bool = False) -> None:
        """``check_store``, when given, must pass (return) before the store is written to; it
        raises ``StoreNotReady`` for a store at another schema, ``StoreUnavailable`` otherwise.
        ``store_condition`` is the store's condition at start (why ``check_store`` is needed).
        ``ping_redis``, when given, asks Redis whether it answers (``None``, else why not): while
        Redis is marked down, every ``retry_s``, so its condition comes back with it even when
        no row is written meanwhile.
        With ``journal_dir`` (the file spool's directory), every buffered row is journaled
        there, durable (stored, spooled or fsynced) within ``fsync_interval_s``."""
        self._store = store
        self._file = file_spool
        self._spool = spool
        self._feed = feed
        self._health = Health(log, store=store_condition,
                              redis=spool is not None or feed is not None, retry_s=retry_s,
                              warn_every_s=warn_every_s)
        self._journal = None if journal_dir is None else Journal(
            journal_dir, retry_s=retry_s, report=self._health.file)
        self._check_store = check_store
        self._buffer: collections.deque[Row] = collections.deque()
        self._buffer_max = buffer_max
        self._batch_max = batch_max
        self._interval = flush_interval_s
        self._retry_s = retry_s
        self._store_timeout_s = store_timeout_s
        self._fsync_interval_s = fsync_interval_s
        self._strict = strict
        self._checked = check_store is None
        self._next_check = 0.0
        self._check_task: asyncio.Task[None] | None = None
        self._ping_redis = ping_redis
        self._ping_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._closing = False
        self._replay_at = 0.0
        """``time.monotonic()`` before which a replay pass is skipped (``REPLAY_IDLE_S``)."""
        self._published_ahead = 0
        """How many rows at the buffer's front were put back after the live feed had them."""
        self.stats = WriterStats()

    # ---- the request side -----------------------------------------------------------------

    def submit(self, record: CallRecord) -> None:
        self.stats.submitted += 1
        row = record.to_row()
        if len(self._buffer) < self._buffer_max and not self._closing:
            if self._journal is not None:
                self._journal.append(row)
            self._buffer.append(row)
            if len(self._buffer) >= self._batch_max:
                self._wake.set()
            return
        self._replay_at = 0.0  # spooled here: replay it at the next cycle
        try:
            self._file.put_nowait([row])
        except SpoolUnavailable as exc:
            self._health.spool("file", exc)
            if not (isinstance(exc, SpoolWriteFailed) and exc.kept):  # kept: only its newline
                self.stats.dropped += 1  # was lost, and a take parses the row all the same
                self._health.loss("call record %s dropped: buffer full and the spool file "
                                  "failed: %s", row["id"], exc)
                return
        self.stats.overflowed += 1

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # ---- what works -----------------------------------------------------------------------

    def conditions(self) -> dict[str, Condition]:
        """``store``, ``file`` (the spool directory) and, with Redis configured, ``redis``."""
        return self._health.conditions()

    def health(self) -> dict[str, Any]:
        """The call log's part of ``/readyz``: each condition, and the rows in memory."""
        return {**self._health.as_dict(), "buffered": len(self._buffer)}

    def redis_condition(self, error: str | None) -> None:
        """The outcome of talking to Redis: ``None`` when it answered, else why not (the
        start-up ping reports here)."""
        self._health.redis(error)

    # ---- the background side --------------------------------------------------------------

    async def start(self) -> None:
        """Open the journal (checking the spool directory), then keep writing in the
        background; what earlier runs left in the spools is replayed once the store is up."""
        if self._journal is not None:
            self._journal.open()
            self._sync_task = asyncio.create_task(self._sync_loop(), name="calllog-fsync")
        self._health.store_down_at_start()
        self._task = asyncio.create_task(self._run(), name="calllog-writer")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            # A timer that sets the event, not ``wait_for``: that made and cancelled a task
            # every cycle, 20 times a second whether or not there were calls.
            timer = loop.call_later(self._interval, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()
            self._wake.clear()
            try:
                await self.flush_once()
            except Exception:  # the writer must outlive any bug in one cycle (STYLE.md #10)
                if self._strict:
                    raise
                log.exception("call-log writer cycle failed; retrying")
                await asyncio.sleep(self._retry_s)

    async def _sync_loop(self) -> None:
        """Make every journaled row durable within ``fsync_interval_s`` (``Journal.sync``, every
        half interval), whatever the store is doing (a task of its own: a hung database holds
        ``_run`` for the store timeout)."""
        assert self._journal is not None
        while True:
            await pause(self._fsync_interval_s / 2)
            try:
                await self._journal.sync()
            except Exception:  # the loop must outlive any bug (STYLE.md #10)
                if self._strict:
                    raise
                log.exception("call-log journal fsync failed; retrying")

    async def flush_once(self) -> None:
        """Move everything buffered towards the store, then replay spooled rows if it is up."""
        self._start_check()
        self._start_ping()
        while self._buffer:
            batch = [self._buffer.popleft()
                     for _ in range(min(self._batch_max, len(self._buffer)))]
            # Rows put back (``_requeue``) went to the live feed already (or it holds them).
            published, self._published_ahead = self._published_ahead, 0
            lost = requeued = len(batch)
            try:
                await self._publish(batch[published:] if published else batch)
                lost = await self._persist(batch)
            finally:  # also when cancelled (a close past its timeout): the journal keeps them
                requeued = self._requeue(batch, lost)
                self._settle(len(batch), lost, requeued)
            if requeued:
                break  # nothing takes rows now: try again next cycle
        if self._feed is not None and self._feed.holding:
            await self._publish([], everything=self._closing)
        await self._replay()

    async def _publish(self, batch: list[Row], *, everything: bool = False) -> None:
        if self._feed is None:
            return
        if not self._health.redis_usable():  # counted now, added once Redis is back
            if batch:
                self._feed.hold(batch)
            return
        # Bodies stay out of the live stream: it keeps ~100k entries in Redis memory.
        slim = [row if row.get("request_body") is None and row.get("response_body") is None
                else {**row, "request_body": None, "response_body": None} for row in batch]
        try:
            sent = await self._feed.publish(slim, everything=everything)
        except SpoolUnavailable as exc:
            self.stats.feed_failures += 1
            self._health.redis(str(exc))
        else:
            if sent:
                self._health.redis(None)

    async def _persist(self, batch: list[Row]) -> int:
        """Store ``batch``, else spool it; return how many of its last rows nothing took."""
        if self._store_up():
            try:
                written = await asyncio.wait_for(self._store.write(batch), self._store_timeout_s)
            except StoreNotReady as exc:  # its tables went (a database dropped and recreated)
                self._store_failed("unmigrated", str(exc))
            except StoreUnavailable as exc:
                self._write_failed(exc)
            except TimeoutError:
                self._store_failed("timeout", f"no commit within {self._store_timeout_s:.1f}s")
            else:
                self._count(written, len(batch))
                self._health.store_back()
                return 0
        rest: Sequence[Row] = batch
        self._replay_at = 0.0  # spooled here: replay it as soon as the store takes rows
        if self._spool is not None and self._health.redis_usable():
            kept = await self._put(self._spool, "redis", rest)
            self.stats.redis_spooled += kept
            rest = rest[kept:]
            if not rest:
                return 0  # durable; _replay stores and acknowledges it
        kept = await self._put(self._file, "file", rest)
        self.stats.file_spooled += kept
        return len(rest) - kept

    async def _put(self, spool: Spool, name: str, rows: Sequence[Row]) -> int:
        """Put ``rows`` in ``spool``; how many of the first of them it took."""
        try:
            await spool.put(rows)
        except SpoolUnavailable as exc:
            self.stats.spool_failures += 1
            self._health.spool(name, exc)
            return exc.kept if isinstance(exc, SpoolWriteFailed) else 0
        self._health.spool(name, None)
        return len(rows)

    def _requeue(self, batch: list[Row], lost: int) -> int:
        """Put the last ``lost`` rows of ``batch`` back at the front of the buffer, when it has
        room for them and the writer is not closing (they are the oldest rows, as in the
        journal); return how many it put back (all or none)."""
        if not lost or self._closing or len(self._buffer) + lost > self._buffer_max:
            return 0
        self._buffer.extendleft(reversed(batch[len(batch) - lost:]))
        self._published_ahead = lost
        return lost

    def _settle(self, total: int, lost: int, requeued: int = 0) -> None:
        """The first ``total - lost`` rows of a batch are stored or spooled, the rest are not:
        retire them from the journal; the rest stay pending there when put back in the buffer
        (``requeued``), else the journal keeps those it has and the others count dropped."""
        kept = 0
        if self._journal is not None:
            self._journal.done(total - lost)
            kept = self._journal.keep(lost) if lost and not requeued else 0
        if not lost:
            return
        if requeued:
            self._health.loss("%d call records could not be stored or spooled (%s); they stay "
                              "in memory (%d buffered) until the store or a spool takes them",
                              requeued, self._health.down(), len(self._buffer))
            return
        self.stats.kept_in_journal += kept
        self.stats.dropped += lost - kept
        conditions = self._health.down()
        if lost > kept:
            self._health.loss("%d call records dropped (%d more kept in the journal): nothing "
                              "could take them (%s)", lost - kept, kept, conditions)
        else:
            self._health.loss("%d call records could not be spooled (%s); they stay in the "
                              "journal and are replayed from it once the store is back",
                              kept, conditions)

    async def _replay(self) -> None:
        if not self._store_up() or (time.monotonic() < self._replay_at and not self._closing):
            return
        self._replay_at = time.monotonic() + REPLAY_IDLE_S  # unless it finds rows (below)
        spools: list[tuple[str, Spool]] = [("file", self._file)]
        if self._spool is not None:
            spools.insert(0, ("redis", self._spool))
        for name, spool in spools:
            if name == "redis" and not self._health.redis_usable():
                continue
            while self._store_up():
                try:
                    taken = await spool.take(self._batch_max)
                except SpoolUnavailable as exc:
                    self.stats.spool_failures += 1
                    self._health.spool(name, exc)
                    break
                if not taken:
                    break
                self._replay_at = 0.0  # there was more: look again at the next cycle
                try:
                    written = await asyncio.wait_for(
                        self._store.write([row for _, row in taken]), self._store_timeout_s)
                except StoreNotReady as exc:
                    self._store_failed("unmigrated", str(exc))
                    return
                except StoreUnavailable as exc:
                    self._write_failed(exc)
                    return
                except TimeoutError:
                    self._store_failed("timeout",
                                       f"no commit within {self._store_timeout_s:.1f}s")
                    return
                self._count(written, len(taken))
                self._health.store_back()
                with contextlib.suppress(SpoolUnavailable):  # unacked rows replay harmlessly
                    await spool.ack([token for token, _ in taken])
                if len(taken) < self._batch_max:
                    break

    def _count(self, new: int, total: int) -> None:
        self.stats.stored += new
        self.stats.duplicates += total - new

    # ---- the store's state ------------------------------------------------------------------

    def _store_up(self) -> bool:
        return self._checked and self._health.store_usable()

    def _start_check(self) -> None:
        """Check an unchecked store in the background, at most every ``retry_s`` (a hung
        database must not hold the writer: rows keep going to the spools meanwhile)."""
        if self._checked or self._check_task is not None or self._check_store is None \
                or time.monotonic() < self._next_check or self._closing:
            return
        self._check_task = asyncio.create_task(self._check(), name="calllog-store-check")

    async def _check(self) -> None:
        assert self._check_store is not None
        try:
            await asyncio.wait_for(self._check_store(), self._store_timeout_s)
        except StoreNotReady as exc:
            self._store_failed("unmigrated", str(exc))
        except StoreUnavailable as exc:
            self._store_failed("unreachable", str(exc))
        except TimeoutError:
            self._store_failed("unreachable", f"no answer within {self._store_timeout_s:.1f}s")
        except Exception:  # the check must not die of a bug unseen (STYLE.md #10)
            if self._strict:
                raise
            log.exception("call-log store check failed; retrying")
        else:
            self._checked = True
            self._health.store_back()
            self._wake.set()  # replay the spools now
        finally:
            self._next_check = time.monotonic() + self._retry_s
            self._check_task = None

    # ---- Redis's state ---------------------------------------------------------------------

    def _start_ping(self) -> None:
        """Ping a Redis marked down, in the background, once its pause (``retry_s``) is over:
        what else talks to Redis (the spool, the live feed) does so only when rows come, so an
        idle gateway kept reporting it down after it was back. Nothing while it is up."""
        if self._ping_redis is None or self._ping_task is not None or self._closing:
            return
        redis = self._health.spools.get("redis")
        if redis is None or redis.up or not self._health.redis_usable():
            return
        self._ping_task = asyncio.create_task(self._ping(), name="calllog-redis-ping")

    async def _ping(self) -> None:
        assert self._ping_redis is not None
        try:
            error = await self._ping_redis()
        except Exception:  # the ping must not die of a bug unseen (STYLE.md #10)
            if self._strict:
                raise
            log.exception("call-log Redis ping failed; retrying")
            return
        finally:
            self._ping_task = None
        self._health.redis(error)
        if error is None:
            self._wake.set()  # what waited for Redis (held counters) goes now

    def _store_failed(self, reason: str, detail: str) -> None:
        if reason != "unreachable" and reason != "unmigrated":  # a write, not a check
            self.stats.store_failures += 1
        self._health.store_failed(reason, detail)

    def _write_failed(self, exc: StoreUnavailable) -> None:
        """A write the store did not take: ``unreachable`` when no connection could be made (a
        stopped database refuses it; a host name that does not resolve), as the check says of
        the same database, else ``write_failed``."""
        self.stats.store_failures += 1
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, _NO_CONNECTION):
            cause = cause.__cause__
        self._health.store_failed("write_failed" if cause is None else "unreachable", str(exc))

    async def aclose(self, *, timeout_s: float = 10.0) -> None:
        """Stop taking records, flush the buffer, and try to store what is spooled (SIGTERM)."""
        self._closing = True
        self._wake.set()
        for task in (self._check_task, self._sync_task, self._ping_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout_s)
        self._health.resume()
        try:
            await asyncio.wait_for(self.flush_once(), timeout_s)
        except TimeoutError:
            # Whatever is still buffered goes to the file spool; the next start replays it.
            rest = list(self._buffer)
            self._buffer.clear()
            if rest:
                kept = 0
                try:
                    self._file.put_nowait(rest)
                    kept = len(rest)
                except SpoolWriteFailed as exc:
                    kept = exc.kept
                except SpoolUnavailable:
                    pass
                self.stats.file_spooled += kept
                self._settle(len(rest), len(rest) - kept)
        if self._journal is not None:
            await self._journal.aclose()
        for closable in (self._spool, self._file, self._store):
            if closable is not None:
                await closable.aclose()
