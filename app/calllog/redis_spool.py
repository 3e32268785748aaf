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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
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

    @property
    def stream(self) -> str:
        return self._stream

    async def put(self, rows: Sequence[Row]) -> None:
        """Append ``rows`` to the stream in one pipeline (no MAXLEN: a spool never trims), each
        written with ``dump_row``, so no row can fail the others.

        When Redis refuses an entry (out of memory), ``SpoolWriteFailed`` says how many of the
        first rows were appended (``kept``). On any ``SpoolUnavailable`` some later rows may have
        been appended all the same; putting them again elsewhere only makes duplicates, which the
        store ignores."""
        if not rows:
            return

        async def run() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for row in rows:
                pipe.xadd(self._stream, {_FIELD: dump_row(row)})
            results = await pipe.execute(raise_on_error=False)
            for kept, result in enumerate(results):
                if isinstance(result, Exception):  # e.g. OOM: Redis is out of memory
                    raise SpoolWriteFailed(f"redis spool {self._stream}: {result}; {kept} "
                                           "row(s) of the batch written", kept=kept)

        await self._call(run)

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
