"""The call log's live side in Redis: a capped stream for ``switchboard logs tail`` and per-day
counters of requests, tokens, errors and spend per public model, per caller, per virtual key and
per team.

Best effort by design: the durable record is the store; the writer calls ``publish`` after (or
beside) it and counts a ``SpoolUnavailable`` instead of retrying the batch, so a Redis outage
loses live tail entries, never rows. The day counters lose nothing to an outage the process
lives through: the sums of a batch that could not be sent (``publish`` failed, or the writer
``hold``-s it while Redis is paused) are kept in the process, per counter hash, and added with
the next ``publish`` that gets through. At most ``MAX_UNSENT`` hashes are kept (a day's model,
caller, key and team each one; a few hundred bytes each); the rows of a counter past that are
not counted (logged). A publish that failed after Redis had run it (a reply lost to a timeout)
is added again: counters may then count that batch twice. A process that dies or stops while
Redis is down loses what it kept, and the stream entries of the outage's calls are not
published later (``switchboard logs query`` has their rows).

Keys (``prefix`` defaults to ``switchboard``; dates are the row's ``created_at`` in UTC):

- ``{stream}``: one entry per row (per call), field ``rows`` (a JSON array holding that row;
  earlier gateways wrote one entry per batch, which ``tail`` reads all the same), trimmed to about
  ``maxlen`` entries, so about the last ``maxlen`` calls (``MAXLEN ~``: Redis trims whole nodes
  of entries, so a few hundred more at times, never fewer). One script per batch appends its
  entries and trims once, so a call costs an argument of the batch's one command, not a command
  of its own.
- ``{prefix}:usage:{YYYY-MM-DD}:model:{public_model}`` and ``...:caller:{caller}``: hashes with
  ``requests``, ``prompt_tokens``, ``completion_tokens``, ``errors`` (status not ``ok``) and
  ``cost_usd`` (float), expiring 8 days after their last update. A row without a public model
  (refused before its request was parsed, or naming a model the gateway does not serve:
  ``app.pipeline.Pipeline.admit``), or naming one that does not exist (the routing table's 404
  ``model_not_found``: status 404, error type ``invalid_request_error``, no attempt), counts
  under the model name ``-``, so the model and caller totals of a day agree, and model names a
  client makes up cannot add keys to Redis. Other 404s of a served model (an unknown prompt
  template, an upstream's 404) count under that model, as its row does.
- ``...:key:{key_id}`` and ``...:team:{team_id}``: the same hashes for the rows of calls made
  with a virtual key (``key_id`` set) and with a key of a team (``team_id`` set); ids, never
  keys. Rows without them add to neither, and neither do shadow copies' (``shadow_of`` set:
  a copy is the gateway's, not its caller's; it counts under its model and caller, as in the
  call hours, ``app.db.ledger``). With ``ids_every_s`` (the gateway uses
  ``IDS_EVERY_S``), these are summed in the process, by day, key and team (one sum for both
  counters of a row), and added to Redis about that many seconds after the sum's first row (a
  slice of the due counters rides with each batch, so no batch holds Redis for long;
  ``publish(everything=True)`` adds all, at shutdown): a busy gateway's batches each name most
  of its keys, and adding every key's and team's counter with every batch cost ~5 us of CPU a
  call (bench/README.md). A process that dies loses what it held, as a Redis outage loses
  increments.

Every value is bounded before it gets here (``CallRecord.to_row``); the model name in a key is cut
to ``TEXT_CAPS["public_model"]`` again all the same, whatever the row's origin, and key and team
ids to ``ID_CAP``.

(Just past 400 lines: the sums held on purpose and those an outage holds back are one
bookkeeping with ``publish``, which adds both; apart, each half would need the other's
internals.)
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal, TypedDict, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app import errors
from app.calllog.record import ID_CAP, TEXT_CAPS, Row, bound_text, dump_row
from app.calllog.redis_spool import stream_entries, text
from app.calllog.seams import SpoolUnavailable

__all__ = ["CounterKind", "DayCounters", "LiveFeed"]

CounterKind = Literal["model", "caller", "key", "team"]
_TTL_S = 8 * 24 * 3600
_ADD_COUNTERS = """
local ttl = ARGV[1]
local v = {}
for n in string.gmatch(ARGV[2], '[^,]+') do v[#v + 1] = n end
for i, key in ipairs(KEYS) do
  local at = (i - 1) * 5
  redis.call('HINCRBY', key, 'requests', v[at + 1])
  redis.call('HINCRBY', key, 'prompt_tokens', v[at + 2])
  redis.call('HINCRBY', key, 'completion_tokens', v[at + 3])
  redis.call('HINCRBY', key, 'errors', v[at + 4])
  redis.call('HINCRBYFLOAT', key, 'cost_usd', v[at + 5])
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
"""
"""Adds one batch's sums to the day counters: KEYS are the counters' hashes, ARGV the TTL and one
comma-separated string of five numbers per hash (one argument, not five per hash: redis-py's
packing of each argument was most of the cost). Redis caches the compiled script by its hash, so
EVAL costs no more than EVALSHA here and needs no reload after a restart."""
_APPEND_ROWS = """
local stream, rows, at = KEYS[1], ARGV[2], 1
for n in string.gmatch(ARGV[3], '[^,]+') do
  local upto = at + tonumber(n)
  redis.call('XADD', stream, '*', 'rows', '[' .. string.sub(rows, at, upto - 1) .. ']')
  at = upto
end
redis.call('XTRIM', stream, 'MAXLEN', '~', ARGV[1])
return 1
"""
"""Appends one batch to the live stream, one entry per row (a one-row JSON array), and trims it
once: ARGV are the cap in entries, the batch's rows as JSON, back to back, and their lengths in
bytes, comma-separated. An XADD per row from the gateway cost ~15% of its CPU under load
(packing and parsing a command per row, bench/README.md); redis-py packed an argument per row at
~1 us a row (100-row batches, timeit), the two arguments here at ~0.1 us. One entry per batch
left the stream's length in entries, the only length MAXLEN knows, saying nothing of its
calls."""
IDS_EVERY_S = 5.0
"""How long the gateway's live feed holds a key's or team's counter sums before adding them to
Redis (see the module docstring)."""
_DUE_PER_BATCH = 256
"""Held counters added with one batch at most, besides two per row of the batch (so that the
held ones drain as fast as rows name new ones)."""
_NO_MODEL = "-"
_UNKNOWN_MODEL = errors.ModelNotFound.error_type
"""The error type of a row naming a model the gateway does not serve (a prompt template's 404
is a ``not_found_error``)."""
_K = TypeVar("_K", str, tuple[str, Any, Any])
"""What sums are kept by: a counter's name, or a held sum's day prefix, key id and team id."""
_MODEL_CAP = TEXT_CAPS["public_model"]
MAX_UNSENT = 10_000
"""Counter hashes whose sums a Redis outage keeps in the process at most (see the module
docstring): bounded memory (a few MB) however long the outage, and one script of that many keys
at most when Redis is back."""
_log = logging.getLogger("switchboard.calllog")


class DayCounters(TypedDict):
    """One day's totals for one model, caller, key or team."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    errors: int
    cost_usd: float


_ROWS = "rows"


def _field(fields: dict[Any, Any] | None, name: str) -> Any:
    """One field of a stream entry, whether or not the client decodes responses."""
    if not fields:
        return None
    return fields.get(name.encode()) if name.encode() in fields else fields.get(name)


def _entries(rows: Sequence[Row]) -> tuple[bytes, str]:
    """``rows`` as ``_APPEND_ROWS`` takes them: their JSON back to back and each one's length
    (a row orjson refuses is written by ``dump_row``, so it cannot cost its entry)."""
    dumped = [dump_row(row) for row in rows]
    return b"".join(dumped), ",".join([str(len(one)) for one in dumped])


def _counted_model(row: Row) -> str:
    """The model name a row counts under (see the module docstring)."""
    model = row.get("public_model")
    if not model or (row.get("http_status") == 404 and not row.get("attempts")
                     and row.get("error_type") == _UNKNOWN_MODEL):
        return _NO_MODEL
    return bound_text(model, _MODEL_CAP)


def _add(sums: dict[_K, list[Any]], key: _K, prompt: int, completion: int, error: int,
         cost: float) -> bool:
    """Add one row's numbers to ``key``'s sums; True when ``key`` was not there yet."""
    counted = sums.get(key)
    if counted is None:
        sums[key] = [1, prompt, completion, error, cost]
        return True
    counted[0] += 1
    counted[1] += prompt
    counted[2] += completion
    counted[3] += error
    counted[4] += cost
    return False


def _id_counters(base: str, key_id: Any, team_id: Any) -> list[str]:
    """The names of the key and team counters a row of ``key_id`` and ``team_id`` adds to (none
    for an id that is ``None``), under ``base`` (a day's ``_day_prefix``)."""
    names = []
    if key_id is not None:
        names.append(f"{base}key:{bound_text(key_id, ID_CAP)}")
    if team_id is not None:
        names.append(f"{base}team:{bound_text(team_id, ID_CAP)}")
    return names


def _day(row: Row) -> str:
    return datetime.fromtimestamp(float(row["created_at"]), tz=UTC).strftime("%Y-%m-%d")


class LiveFeed:
    """Publishes rows to the live stream and the day counters; reads them back.

    The client is borrowed (closed by its owner). For ``tail``, the client's ``socket_timeout``
    (if any) must exceed ``block_ms``."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        stream: str = "switchboard:calls",
        maxlen: int = 100_000,
        prefix: str = "switchboard",
        ids_every_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``ids_every_s``: hold key and team counters this long (0: add them with their
        batch); ``clock``: the time that holding is measured with (tests)."""
        self._redis = client
        self._stream = stream
        self._maxlen = maxlen
        self._prefix = prefix
        self._ids_every_s = ids_every_s
        self._clock = clock
        self._held: dict[tuple[str, Any, Any], list[Any]] = {}
        """Key and team counter sums not added yet, by (day prefix, key id, team id) (each
        sum as ``publish``'s ``sums`` has it)."""
        self._due: deque[tuple[float, tuple[str, Any, Any]]] = deque()
        """When each held sum is due, oldest first."""
        self._unsent: dict[str, list[Any]] = {}
        """Counter sums Redis did not take (an outage), by counter hash, added with the next
        ``publish`` that gets through (at most ``MAX_UNSENT`` hashes)."""
        self.uncounted = 0
        """Counter additions lost because ``MAX_UNSENT`` hashes were kept already."""

    @property
    def holding(self) -> bool:
        """Whether counter sums wait to be added: key and team sums held on purpose, or sums
        Redis did not take."""
        return bool(self._held) or bool(self._unsent)

    def hold(self, rows: Sequence[Row]) -> None:
        """Count ``rows`` without sending anything (Redis is known down): their counter sums
        wait for the next ``publish`` that gets through; their stream entries are not kept."""
        sums: dict[str, list[Any]] = {}
        self._count(rows, sums)
        self._keep(sums)

    def _keep(self, sums: dict[str, list[Any]]) -> None:
        """Add ``sums`` (taken over) to the unsent ones, up to ``MAX_UNSENT`` hashes."""
        unsent = self._unsent
        for key, counted in sums.items():
            mine = unsent.get(key)
            if mine is not None:
                for n, value in enumerate(counted):
                    mine[n] += value
            elif len(unsent) < MAX_UNSENT:
                unsent[key] = counted
            else:
                if not self.uncounted:
                    _log.error("live feed: %d counters wait for Redis already; the counts of "
                               "new ones are dropped until it is back", MAX_UNSENT)
                self.uncounted += 1

    @property
    def stream(self) -> str:
        return self._stream

    def counter_key(self, kind: CounterKind, name: str, *, day: date | str) -> str:
        """The hash holding ``day``'s counters for one model, caller, key or team."""
        return f"{self._day_prefix(day if isinstance(day, str) else day.isoformat())}{kind}:{name}"

    def _day_prefix(self, day: str) -> str:
        """What every counter key of ``day`` (``YYYY-MM-DD``) begins with."""
        return f"{self._prefix}:usage:{day}:"

    async def publish(self, rows: Sequence[Row], *, everything: bool = False) -> bool:
        """Append ``rows`` to the live stream (an entry each, ``MAXLEN ~ maxlen``) and add them
        to the day counters, with the held key and team counters that are due (all of them with
        ``everything``), in one pipeline (not a transaction). False when there was nothing to
        send (no rows, nothing due). Raises ``SpoolUnavailable``."""
        sums: dict[str, list[Any]] = {}
        """Per counter hash: requests, prompt tokens, completion tokens, errors, cost."""
        self._count(rows, sums)
        self._take_due(sums, limit=None if everything else _DUE_PER_BATCH + 2 * len(rows))
        if self._unsent:  # what an outage kept back goes with this batch
            unsent, self._unsent = self._unsent, {}
            for key, counted in unsent.items():
                mine = sums.get(key)
                if mine is None:
                    sums[key] = counted
                else:
                    for n, value in enumerate(counted):
                        mine[n] += value
        if not sums:  # no rows, and no held counter due
            return False
        pipe = self._redis.pipeline(transaction=False)
        if rows:
            # An entry per row, so that MAXLEN (in entries) caps the calls kept; one script,
            # not an XADD per row (see _APPEND_ROWS).
            pipe.eval(_APPEND_ROWS, 1, self._stream, self._maxlen, *_entries(rows))
        # One script for every counter of the batch: with many keys and teams, six commands a
        # counter cost a fifth of the gateway's CPU (packing and parsing,
        # bench/keys_overhead.py).
        values = ",".join([f"{r},{p},{c},{e},{usd!r}" for r, p, c, e, usd in sums.values()])
        pipe.eval(_ADD_COUNTERS, len(sums), *sums, _TTL_S, values)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            self._keep(sums)  # for the next publish that gets through
            raise SpoolUnavailable(f"live feed {self._stream}: {exc}") from exc
        except BaseException:  # cancelled (a close past its timeout): kept all the same
            self._keep(sums)
            raise
        if self.uncounted:
            _log.info("live feed: Redis takes counters again (%d counter additions were "
                      "dropped meanwhile)", self.uncounted)
            self.uncounted = 0
        return True

    def _count(self, rows: Sequence[Row], sums: dict[str, list[Any]]) -> None:
        """Add ``rows`` to ``sums`` (model and caller counters; key and team counters too,
        unless they are held: then to the held sums of the row's day, key and team)."""
        days: dict[float, str] = {}
        """Each UTC day's ``_day_prefix``, by day number."""
        held = self._held if self._ids_every_s > 0 else None
        due_at = self._clock() + self._ids_every_s
        for row in rows:
            base = days.get(row["created_at"] // 86400) or days.setdefault(
                row["created_at"] // 86400, self._day_prefix(_day(row)))
            keys = [f"{base}model:{_counted_model(row)}", f"{base}caller:{row.get('caller')}"]
            if row.get("shadow_of") is None:
                key_id, team_id = row.get("key_id") or None, row.get("team_id") or None
            else:  # a shadow copy: no key's or team's (the module docstring)
                key_id = team_id = None
            # The row's numbers once, added to each of its counters (a virtual key's row has
            # four).
            prompt = int(row.get("prompt_tokens") or 0)
            completion = int(row.get("completion_tokens") or 0)
            error = int(row.get("status") != "ok")
            cost = float(row.get("cost_usd") or 0.0)
            if key_id is not None or team_id is not None:
                if held is None:
                    keys += _id_counters(base, key_id, team_id)
                else:
                    # Held by (day, key, team): one sum a row, not one a counter; the ids
                    # become counter names only when the sums are due (``_take_due``).
                    if type(key_id) is not str and key_id is not None:  # a replayed row's
                        key_id = bound_text(key_id, ID_CAP)
                    if type(team_id) is not str and team_id is not None:
                        team_id = bound_text(team_id, ID_CAP)
                    ids = (base, key_id, team_id)
                    if _add(held, ids, prompt, completion, error, cost):
                        self._due.append((due_at, ids))
            for key in keys:
                _add(sums, key, prompt, completion, error, cost)

    def _take_due(self, sums: dict[str, list[Any]], *, limit: int | None) -> None:
        """Move the held sums that are due (all of them when ``limit`` is ``None``; else, oldest
        first, until ``limit`` counters were added) into their key's and team's counters in
        ``sums``."""
        due, held = self._due, self._held
        if not due:
            return
        now = self._clock()
        taken = 0
        while due and (limit is None or (taken < limit and due[0][0] <= now)):
            _, ids = due.popleft()
            counted = held.pop(ids)
            for key in _id_counters(*ids):
                mine = sums.get(key)
                if mine is None:
                    sums[key] = counted.copy()
                    taken += 1
                else:
                    for n, value in enumerate(counted):
                        mine[n] += value

    async def last_id(self) -> str:
        """The id of the newest entry in the stream (``"0-0"`` when empty): a starting point for
        ``tail`` that misses nothing published afterwards. Raises ``SpoolUnavailable``."""
        try:
            newest: Any = await self._redis.xrevrange(self._stream, count=1)
        except (RedisError, OSError) as exc:
            raise SpoolUnavailable(f"live feed {self._stream}: {exc}") from exc
        return text(newest[0][0]) if newest else "0-0"

    async def tail(self, *, last_id: str = "$", block_ms: int = 1000) -> AsyncGenerator[Row, None]:
        """Rows published after ``last_id`` (``"$"``: after the first iteration starts), forever,
        in order; waits up to ``block_ms`` per read. ``"$"`` is resolved to a concrete id once, so
        nothing published between two reads is missed. Raises ``SpoolUnavailable``."""
        cursor = await self.last_id() if last_id == "$" else last_id
        while True:
            try:
                reply: Any = await self._redis.xread(
                    {self._stream: cursor}, count=500, block=block_ms
                )
            except (RedisError, OSError) as exc:
                raise SpoolUnavailable(f"live feed {self._stream}: {exc}") from exc
            for raw_id, fields in stream_entries(reply):
                cursor = text(raw_id)
                batch = _field(fields, _ROWS)
                if batch is not None:
                    for row in orjson.loads(batch):
                        yield row

    async def today(self, kind: CounterKind, name: str, *, day: date | None = None) -> DayCounters:
        """The counters of one model, caller, key or team for ``day`` (default: today, UTC);
        zeros when nothing was counted. Raises ``SpoolUnavailable``."""
        key = self.counter_key(kind, name, day=day or datetime.now(UTC).date())
        try:
            raw: Any = await self._redis.hgetall(key)
        except (RedisError, OSError) as exc:
            raise SpoolUnavailable(f"live feed {self._stream}: {exc}") from exc
        values = {text(k): text(v) for k, v in raw.items()}
        return DayCounters(
            requests=int(values.get("requests", 0)),
            prompt_tokens=int(values.get("prompt_tokens", 0)),
            completion_tokens=int(values.get("completion_tokens", 0)),
            errors=int(values.get("errors", 0)),
            cost_usd=float(values.get("cost_usd", 0.0)),
        )
