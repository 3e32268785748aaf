"""The call log's spool on a Redis stream with a consumer group (at-least-once).

Each row is one stream entry (field ``row``: the row as orjson). ``take`` hands entries to this
consumer; ``ack`` removes them (XACK + XDEL) once the store has committed them. An entry handed out
and never acknowledged stays in the group's pending list: it comes back to the same consumer at its
next ``take``, or, when that consumer died (``kill -9``), to any other consumer once it has been
idle for ``claim_idle_s``. The stream is never trimmed: only ``ack`` removes entries.

Consumers of dead processes (each process reads as ``host-pid``) would pile up in the group
across restarts. ``take`` therefore forgets, when it starts and then every ``forget_every_s``,
every other consumer that has no pending entry and has been idle for ``forget_idle_s``: a dead
one's entries are claimed first (above), and then it goes. The check and the deletion run as one
Lua script, atomic in Redis, so a consumer that has just read entries is never deleted with them
(``XGROUP DELCONSUMER`` drops a consumer's pending entries); a live consumer that was only idle
is recreated by its next read, having lost nothing.

A Sentinel-managed Redis (a client from ``Sentinel.master_for``, ``redis+sentinel://``): after a
failover the old master stays a writable master until Sentinel turns it into a replica (~10 s:
it waits for the old master to report its role), and the resync then erases what it took in
between. redis-py's pooled connections move only on a connection error or READONLY, so a
spooled batch could land there, be confirmed to the writer (which drops it from the journal) and
vanish. So ``put`` writes each batch on a connection it holds, whose address it knows, and only
*after* the write asks every sentinel (``SENTINEL MASTER``, concurrently, no cache: an answer
older than the write could not vouch for it) which master they name:

- all that answer name that address, with no failover in progress: the batch is confirmed. A
  failover that starts later promotes a replica that already had it, as with any write
  (replication lag aside: Redis's own durability, as for persistence);
- they all name another address (the failover is over): the batch went to a stale master. The
  pool's idle connections are dropped, so the next one asks the sentinels again, and the batch
  is written again to the master they name (the copy on the old master is a duplicate the store
  ignores, if the resync does not erase it first);
- a failover in progress that has not yet promoted a replica, or a master reported down (the
  sentinels still name the old master, which may yet be demoted), sentinels that disagree (one
  has not heard of the switch yet), or no answer: ``SpoolUnavailable``, so the writer spools the
  batch to the local file instead (replayed from there), and tries Redis again after
  ``retry_s``. So does a master that moves again each time the batch is written (``_WRITES``).

That costs one round trip to the sentinels per spooled batch (up to ``batch_max`` rows), on the
spool's path only: a plain ``redis://`` spool writes exactly as before.

(Past 400 lines: the Sentinel confirmation is about a quarter of it, and it must hold the very
connection the batch was written on, so it lives beside ``put`` rather than in a module of its
own.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from app.calllog.record import Row, dump_row
from app.calllog.seams import SpoolUnavailable, SpoolWriteFailed

__all__ = ["RedisSpool", "row_data", "stream_entries", "text"]

_log = logging.getLogger("switchboard.calllog.spool")
_FIELD = "row"
_FORGET_IDLE = """
local forgotten = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info['name'] ~= ARGV[2] and info['pending'] == 0 and info['idle'] >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    table.insert(forgotten, info['name'])
  end
end
return forgotten
"""
"""Deletes the consumers of group ARGV[1] on stream KEYS[1], other than ARGV[2], that have no
pending entry and have been idle for ARGV[3] ms; returns their names."""
_WRITES = 3
"""How many times ``put`` writes one batch on a Sentinel-managed Redis while the sentinels name
another master than the one it went to, before giving up (the file spool takes it)."""
_UNSETTLED = frozenset({"s_down", "o_down", "failover_in_progress"})
"""A master's Sentinel flags that say a failover may be under way."""
_T = TypeVar("_T")
Entry = tuple[Any, dict[Any, Any]]
"""A stream entry as redis-py returns it: ``(id, {field: value})`` (bytes or str)."""


def text(value: bytes | str) -> str:
    """A Redis reply value as ``str``, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


def stream_entries(reply: Any) -> list[Entry]:
    """The entries of an XREAD/XREADGROUP reply on one stream, in either protocol's shape
    (RESP2: ``[[stream, entries]]``; RESP3: ``{stream: [entries]}``)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [e for wrapped in reply.values() for e in wrapped[0]]
    return [e for _, entries in reply for e in entries]


def row_data(fields: dict[Any, Any] | None) -> Any:
    """The ``row`` field of an entry (``None`` when the entry was deleted)."""
    if not fields:
        return None
    return fields.get(_FIELD.encode()) if _FIELD.encode() in fields else fields.get(_FIELD)


class RedisSpool:
    """A ``Spool`` on one Redis stream, read through one consumer group.

    ``consumer`` names this reader within ``group`` and must be unique among live readers (e.g.
    host and pid); a restarted process may reuse its old name, and then gets its old pending rows
    back at once instead of after ``claim_idle_s``. The client is borrowed: ``aclose`` leaves it
    open for its owner. Every Redis failure surfaces as ``SpoolUnavailable``.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        stream: str = "switchboard:spool",
        group: str = "writers",
        consumer: str,
        claim_idle_s: float = 30.0,
        forget_idle_s: float = 600.0,
        forget_every_s: float = 60.0,
    ) -> None:
        self._redis = client
        self._stream = stream
        self._group = group
        self._consumer = consumer
        self._claim_idle_ms = max(0, int(claim_idle_s * 1000))
        self._forget_idle_ms = max(0, int(forget_idle_s * 1000))
        self._forget_every_s = forget_every_s
        self._next_forget = 0.0  # monotonic time of the next clean-up; 0: at the first take
        self._forget_script = client.register_script(_FORGET_IDLE)
        self._group_ready = False
        self._claim_cursor: str = "0-0"
        pool = client.connection_pool
        self._sentinel = _SentinelMaster(pool) if isinstance(pool, SentinelConnectionPool) \
            and pool.is_master else None

    @property
    def stream(self) -> str:
        return self._stream

    async def put(self, rows: Sequence[Row]) -> None:
        """Append ``rows`` to the stream in one pipeline (no MAXLEN: a spool never trims), each
        written with ``dump_row``, so no row can fail the others. On a Sentinel-managed Redis,
        returns only once the sentinels confirm that the batch went to the master they name
        (see the module docstring).

        When Redis refuses an entry (out of memory), ``SpoolWriteFailed`` says how many of the
        first rows were appended (``kept``). On any ``SpoolUnavailable`` some later rows may have
        been appended all the same; putting them again elsewhere only makes duplicates, which the
        store ignores."""
        if not rows:
            return
        if self._sentinel is None:
            await self._call(lambda: self._append(rows))
        else:
            await self._call(lambda: self._append_confirmed(rows))

    async def _append(self, rows: Sequence[Row],
                      connection: Connection | None = None) -> None:
        pipe = self._redis.pipeline(transaction=False)
        if connection is not None:
            pipe.connection = connection  # used by ``execute``, and released by it
        for row in rows:
            pipe.xadd(self._stream, {_FIELD: dump_row(row)})
        results = await pipe.execute(raise_on_error=False)
        for kept, result in enumerate(results):
            if isinstance(result, Exception):  # e.g. OOM: Redis is out of memory
                raise SpoolWriteFailed(f"redis spool {self._stream}: {result}; {kept} "
                                       "row(s) of the batch written", kept=kept)

    async def _append_confirmed(self, rows: Sequence[Row]) -> None:
        """``_append`` on a connection whose server the sentinels, asked after the write, name
        as the master; written again (at most ``_WRITES`` times in all) while they name
        another. Raises ``RedisError`` when they cannot confirm one."""
        assert self._sentinel is not None
        pool = self._redis.connection_pool
        for _ in range(_WRITES):
            # redis-py leaves it untyped; a Sentinel pool's connections are ``Connection``s.
            connection = cast(Connection, await pool.get_connection())  # type: ignore[no-untyped-call]
            refused: SpoolWriteFailed | None = None
            try:
                await self._append(rows, connection)
            except SpoolWriteFailed as exc:  # the rows it kept need the same confirmation
                refused = exc
            wrote_to = (connection.host, connection.port)
            master = await self._sentinel.master()
            if master == wrote_to:
                if refused is not None:
                    raise refused
                return
            # A failover moved the master: this connection (and the pool's others) still
            # reach the old one, which Sentinel will demote, erasing what it took meanwhile.
            # The pool's reconnection asks the sentinels again; while some still name the old
            # master it may reach it again, and after ``_WRITES`` tries the batch goes to the
            # file spool (``SpoolUnavailable``): never counted as spooled unconfirmed.
            _log.warning("spool %s: a batch of %d row(s) went to %s:%s, no longer the master "
                         "(the sentinels name %s:%s); writing it again", self._stream,
                         len(rows), *wrote_to, *master)
            await pool.disconnect(inuse_connections=False)  # the next ones ask the sentinels
        raise RedisConnectionError(f"the master moved again while a batch was written "
                                   f"{_WRITES} times; not confirmed")

    async def take(self, limit: int) -> list[tuple[str, Row]]:
        """Up to ``limit`` unacknowledged rows with their stream ids as tokens, non-blocking.

        In order: this consumer's own pending rows (handed out before and not acknowledged, e.g.
        after a failed store write: ``take`` is not a pop, the same rows come back until acked),
        then rows another consumer left pending for longer than ``claim_idle_s`` (now claimed by
        this one), then rows never handed out. An entry whose data is gone (deleted from the
        stream) or is not JSON is acknowledged and skipped (the latter logged as an error)."""
        if limit <= 0:
            return []
        return await self._call(lambda: self._take(limit))

    async def ack(self, tokens: Sequence[str]) -> None:
        """Acknowledge and delete the entries ``tokens`` in one transaction; unknown ids are
        ignored."""
        if not tokens:
            return

        async def run() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.xack(self._stream, self._group, *tokens)
            pipe.xdel(self._stream, *tokens)
            await pipe.execute()

        await self._call(run)

    async def pending_count(self) -> int:
        """Rows in the spool not yet acknowledged: pending in the group plus never handed out."""
        return await self._call(self._pending_count)

    async def aclose(self) -> None:
        """Nothing to release: the client belongs to the caller, rows stay in Redis."""

    # -- internals ---------------------------------------------------------------------------

    async def _call(self, op: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``op`` with the group in place, recreating it once if Redis lost it (a restart
        without persistence drops the stream and its group: NOGROUP)."""
        try:
            await self._ensure_group()
            try:
                return await op()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                _log.warning("spool group %s on %s is gone; recreating", self._group, self._stream)
                self._group_ready = False
                await self._ensure_group()
                return await op()
        except (RedisError, OSError) as exc:
            raise SpoolUnavailable(f"redis spool {self._stream}: {exc}") from exc

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._redis.xgroup_create(self._stream, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True
        self._claim_cursor = "0-0"

    async def forget_idle_consumers(self) -> list[str]:
        """Delete the group's other consumers that have no pending entry and have been idle for
        ``forget_idle_s`` (see the module docstring); return their names. ``take`` calls this
        itself. Raises ``SpoolUnavailable``."""
        return await self._call(self._forget)

    async def _forget(self) -> list[str]:
        self._next_forget = time.monotonic() + self._forget_every_s
        names: list[Any] = await self._forget_script(
            keys=[self._stream], args=[self._group, self._consumer, self._forget_idle_ms])
        forgotten = [text(name) for name in names]
        if forgotten:
            _log.info("spool %s: forgot %d idle consumer(s) without pending rows",
                      self._stream, len(forgotten))
        return forgotten

    async def _take(self, limit: int) -> list[tuple[str, Row]]:
        if time.monotonic() >= self._next_forget:
            try:
                await self._forget()
            except ResponseError as exc:  # e.g. scripts not allowed: the spool works without
                if "NOGROUP" in str(exc):
                    raise
                _log.warning("spool %s: could not forget idle consumers: %s", self._stream, exc)
        out: list[tuple[str, Row]] = []
        seen: set[str] = set()
        dead: list[str] = []
        own = await self._read_group("0", limit)
        self._collect(own, out, seen, dead)
        if len(out) < limit:
            self._collect(await self._claim(limit - len(out)), out, seen, dead)
        if len(out) < limit:
            self._collect(await self._read_group(">", limit - len(out)), out, seen, dead)
        if dead:
            # Entries deleted while pending, or poison: nothing to replay, drop them.
            await self._redis.xack(self._stream, self._group, *dead)
        return out

    async def _read_group(self, start: str, count: int) -> list[Entry]:
        reply = await self._redis.xreadgroup(
            self._group, self._consumer, {self._stream: start}, count=count
        )
        return stream_entries(reply)

    async def _claim(self, count: int) -> list[Entry]:
        """Claim entries idle past ``claim_idle_s`` (their consumer presumably died), resuming
        the PEL scan where the previous call stopped so a long PEL is covered over time."""
        reply = await self._redis.xautoclaim(
            self._stream,
            self._group,
            self._consumer,
            self._claim_idle_ms,
            start_id=self._claim_cursor,
            count=count,
        )
        self._claim_cursor = text(reply[0])
        entries: list[Entry] = reply[1]
        return entries

    @staticmethod
    def _collect(
        entries: list[Entry], out: list[tuple[str, Row]], seen: set[str], dead: list[str]
    ) -> None:
        for raw_id, fields in entries:
            token = text(raw_id)
            if token in seen:
                continue
            seen.add(token)
            data = row_data(fields)
            if data is None:
                dead.append(token)
                continue
            try:
                row = orjson.loads(data)
            except orjson.JSONDecodeError:
                # A poison entry would come back forever and block the spool behind it.
                _log.error("spool entry %s is not a JSON row; dropping it", token)
                dead.append(token)
                continue
            out.append((token, row))

    async def _pending_count(self) -> int:
        summary = await self._redis.xpending(self._stream, self._group)
        pending = int(summary["pending"])
        for info in await self._redis.xinfo_groups(self._stream):
            if text(info["name"]) != self._group:
                continue
            lag = info.get("lag")
            if lag is not None:
                return pending + int(lag)
        # Lag unknown (entries deleted past the group's position): acked entries are deleted,
        # so the stream's length counts every row not yet acknowledged.
        return max(pending, int(await self._redis.xlen(self._stream)))


class _Unsettled(RedisConnectionError):
    """A sentinel reports a failover under way that may still demote the master it names."""


class _SentinelMaster:
    """The master that the sentinels behind a ``master_for`` pool agree on, asked afresh each
    time (see the module docstring)."""

    def __init__(self, pool: SentinelConnectionPool) -> None:
        self._pool = pool

    async def master(self) -> tuple[str, int]:
        """The master's address, as every sentinel that answers names it, with no failover
        under way that could still demote it; ``RedisConnectionError`` saying why not."""
        name = self._pool.service_name
        sentinels = self._pool.sentinel_manager.sentinels
        replies = await asyncio.gather(*(self._ask(s, name) for s in sentinels),
                                       return_exceptions=True)
        named: set[tuple[str, int]] = set()
        errors: list[str] = []
        for reply in replies:
            if isinstance(reply, _Unsettled):
                raise reply  # one sentinel running a failover vetoes what the others say
            if isinstance(reply, BaseException):
                if not isinstance(reply, (RedisError, OSError)):
                    raise reply
                errors.append(str(reply) or type(reply).__name__)
            else:
                named.add(reply)
        if not named:
            raise RedisConnectionError(f"no sentinel confirmed master {name!r}: "
                                       f"{'; '.join(errors)}")
        if len(named) > 1:
            addresses = ", ".join(f"{host}:{port}" for host, port in sorted(named))
            raise RedisConnectionError(f"the sentinels name different masters for {name!r} "
                                       f"({addresses}): a failover is under way")
        return named.pop()

    @staticmethod
    async def _ask(sentinel: aioredis.Redis, name: str) -> tuple[str, int]:
        """What one sentinel names. ``SENTINEL MASTER`` gives the flags, and the address it
        monitors, which stays the old master's until the failover ends; ``GET-MASTER-ADDR-BY-
        NAME`` names the promoted replica as soon as its promotion is seen. So a failover in
        progress while both still give the old address may yet demote it: not confirmed."""
        state = cast(dict[str, Any], await sentinel.sentinel_master(name))
        reply = cast("tuple[Any, Any] | None",
                     await sentinel.sentinel_get_master_addr_by_name(name))
        if not reply:
            raise RedisConnectionError(f"a sentinel does not know master {name!r}")
        address = (text(reply[0]), int(reply[1]))
        flags = state.get("flags", "")
        flags = set(flags.split(",")) if isinstance(flags, str) else set(flags)
        monitored = (text(state["ip"]), int(state["port"]))
        if address == monitored and ("master" not in flags or flags & _UNSETTLED):
            raise _Unsettled(
                f"a sentinel reports master {name!r} as {','.join(sorted(flags))}: a failover "
                "may be under way; the batch is not confirmed")
        return address
