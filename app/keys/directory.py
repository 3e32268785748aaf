"""``KeyDirectory``: the gateway's in-memory cache of virtual keys, by key hash.

The hot path is ``cached(hash)``, a dict lookup; ``resolve(key)`` falls back to the database
for a key not cached yet, and remembers unknown hashes for ``NEGATIVE_TTL_S`` (bounded, so random
keys cannot grow memory). A database outage does not stop known keys: cached entries are served
however old they are, and a key that cannot be checked at all raises ``KeysUnavailable`` (the
caller answers 503, never 401).

Lookups are batched: at most one lookup query runs per directory at a time. The keys asked for
while it runs wait in a queue and go together into the next query, ``LOOKUP_BATCH`` at most per
query (more waiting make the queries after it); concurrent resolves of one key share its place.
So a flood of never-issued keys (any client can send them) costs one query per ``LOOKUP_BATCH``
of them, one at a time, instead of one query per key queued on the small connection pool, where
5,000 at once held the lookups past ``LOOKUP_TIMEOUT_S`` and real keys then got 503 (measured).

A query the database does not answer within ``LOOKUP_TIMEOUT_S`` (counted from its start, not
from when its keys were queued) fails its keys as ones that cannot be checked. After a failed
query, the keys that waited for the next one fail at once too, and so do new lookups for
``DOWN_FOR_S``, and then while one lookup asks the database again (a hung database costs one
wait, not one per key).

Freshness:

- ``changed(key_id=..., team_id=...)`` after every admin mutation drops the matching entries here
  and publishes ``{"key_id": ..., "team_id": ...}`` (ids only, never a key) on the Redis channel
  ``CHANNEL``; every directory subscribed (``start()``) drops them too, within a second. The
  publish waits at most ``PUBLISH_TIMEOUT_S`` (a hung Redis does not hold an admin answer); one
  that fails or times out is logged, and the others pick the change up at their next refresh.
- A subscriber that lost its Redis connection drops its whole cache on reconnecting (it may have
  missed messages).
- Every ``refresh_s`` the directory reads the key change log (``app.db.key_changes``: the
  database's triggers log every update or delete of a key or team) for the changes since its
  last read, and re-reads the cached entries they touch (one query per ``REFRESH_CHUNK``), so a
  missed message heals. Its first read, when it did not start with an empty cache, or one after
  the log forgot what it missed (``KEPT_S``), re-reads every cached entry. A refresh the
  database fails keeps the old entries, and the next one reads those changes again.
- Without Redis, invalidation is in-process only: other processes (``--workers`` in embedded
  mode) see a change at their next refresh.
- Whatever drops or replaces an entry tells ``on_dropped`` (the authenticate stage: the
  caller it built from the entry is forgotten, and the limiter settles what it holds of that
  caller's spend, so that a lowered budget counts it at once).

Changes that carry spend: ``update_key`` and ``update_team`` (the admin API's and the CLI's)
make the change and, before ``changed()`` publishes it, raise the spend counters in Redis that
it makes the calls settle into (a key moved to another team; a key or team given limits where
it had none, or another budget period: ``app.limits.carry.carry_key_spend``), so that a budget
reading them, on any gateway, counts what was spent. Without Redis each process carries its own
counters as it builds the key's caller anew (``app.limits.carry.LocalCarry``).

Stale write-back: every ``changed()`` bumps a generation counter; a ``resolve()`` or refresh that
began under an older generation returns its result but does not cache it.

Entries are indexed by key id and by team id, so a change message or a refresh finds the entries
it names without a pass over the cache.

(Past 400 lines: the cache, its batched lookup and the three ways it learns of changes share the
entries, their indexes and the generation counter; split, each part would reach into the
others' state.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.background import pause
from app.db.engine import DATABASE_ERRORS, describe_error
from app.db.key_changes import KEPT_S, OVERLAP_S
from app.keys.model import KeyRecord, KeyUpdate, TeamRecord, TeamUpdate, hash_key
from app.keys.store import LOOKUP_CHUNK, Change, KeyStore
from app.limits.carry import carry_key_spend, carry_team_spend
from app.limits.redis import PREFIX
from app.pubsub import follow

log = logging.getLogger("switchboard.keys")

CHANNEL = "switchboard:keys:changed"
MAX_ENTRIES = 100_000
"""Most keys cached; past it the oldest cached entry is dropped (it is re-read on its next use)."""
NEGATIVE_TTL_S = 2.0
MAX_NEGATIVE = 10_000
"""Most unknown hashes remembered; past it the oldest is forgotten."""
REFRESH_CHUNK = 100
"""Keys re-read per query by ``refresh``: a chunk's rows are decoded while requests wait, so it
is kept to about a millisecond of work."""
LOOKUP_BATCH = LOOKUP_CHUNK
"""Most key hashes looked up by one query (one ``find_many_by_hash`` call, one query); more
waiting go into the queries after it."""
PRUNE_EVERY_S = 3600.0
"""How often a directory deletes the key change log's rows older than ``KEPT_S``."""
LOOKUP_TIMEOUT_S = 3.0
"""Longest wait for the database to find a key not cached; past it the key cannot be checked
(503 ``keys_unavailable``). Without it a hung database held each such request, and its
concurrency slot, for the engine's bounds (a 10 s pool wait, a 60 s statement timeout): 62 s
measured. The call log takes a database without a commit in 5 s for down."""
DOWN_FOR_S = 2.0
"""After a lookup failed (an error, or no answer in ``LOOKUP_TIMEOUT_S``), lookups of keys not
cached fail at once for this long; then the next one asks the database, and the others keep
failing at once until it is answered."""
PUBLISH_TIMEOUT_S = 0.5
"""Longest wait for Redis to take a key change's message (``changed``); it answers in well under
a millisecond when well."""


class KeysUnavailable(Exception):
    """A key that is not cached could not be checked: the database is unreachable."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A cached key with its team."""

    key: KeyRecord
    team: TeamRecord | None


class KeyDirectory:
    """The cache of one gateway process (see the module docstring). ``store`` is what the admin
    API and the CLI change keys through; they call ``changed()`` after each change."""

    def __init__(self, store: KeyStore, redis: aioredis.Redis | None, *,
                 refresh_s: float = 30.0, max_entries: int = MAX_ENTRIES,
                 max_negative: int = MAX_NEGATIVE, negative_ttl_s: float = NEGATIVE_TTL_S,
                 lookup_timeout_s: float = LOOKUP_TIMEOUT_S, down_for_s: float = DOWN_FOR_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._redis = redis
        self._refresh_s = refresh_s
        self._max_entries = max_entries
        self._max_negative = max_negative
        self._negative_ttl_s = negative_ttl_s
        self._lookup_timeout_s = lookup_timeout_s
        self._down_for_s = down_for_s
        self._clock = clock
        self._entries: dict[str, Entry] = {}
        self._by_key: dict[str, set[str]] = {}
        """The cached entries' hashes by key id, and by team id below: a change names ids, and
        finding their entries by scanning the cache held the event loop ~15 ms at 100,000
        keys, for every change message and every refresh that found changes."""
        self._by_team: dict[str, set[str]] = {}
        self._negative: dict[str, float] = {}
        """Unknown hashes and when they may be asked again (insertion order = age)."""
        self._generation = 0
        self._loading: dict[str, asyncio.Future[Entry | None]] = {}
        """Lookups queued or in flight, by hash."""
        self._queued: dict[str, int] = {}
        """The hashes waiting for the next lookup query, oldest first, each with the
        generation it was asked for under."""
        self._looking_up: asyncio.Task[None] | None = None
        """The task running the lookup queries, while there are any to run."""
        self._failing = False
        """The last lookup answered failed (``DOWN_FOR_S``)."""
        self._down_until = -math.inf
        """Until then (``clock``) lookups of keys not cached fail at once."""
        self._tasks: list[asyncio.Task[None]] = []
        self._since: float | None = None
        """The database's clock at the last complete read of the key change log (``None``:
        none yet; the next refresh re-reads every cached entry)."""
        self._applied: set[int] = set()
        """The changes that read applied, among those the next read reads again (from
        ``OVERLAP_S`` before ``_since``)."""
        self._pruned_at = -math.inf
        self.subscribed = asyncio.Event()
        """Set while the subscriber listens (tests wait on it)."""
        self.on_dropped: Callable[[str], None] | None = None
        """Told the hash of every entry that leaves the cache or is replaced by a changed one
        (a change of its key or team, an eviction), after the change: ``app.stages.authenticate``
        forgets the caller it built from it."""

    # ---- lookups

    def cached(self, key_hash: str) -> Entry | None:
        """The cached entry for ``key_hash``; no I/O."""
        return self._entries.get(key_hash)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def negative_size(self) -> int:
        """How many unknown hashes are remembered."""
        return len(self._negative)

    async def resolve(self, key: str) -> Entry | None:
        """The entry for ``key``, from the cache or a database query; ``None`` for a key that
        does not exist. Raises ``KeysUnavailable`` when it is not cached and the database
        cannot be asked, or did not answer its query within ``LOOKUP_TIMEOUT_S``, or failed
        moments ago (``DOWN_FOR_S``). Concurrent calls for one key share one lookup, and the
        lookups of different keys are batched (see the module docstring)."""
        digest = hash_key(key)
        entry = self._entries.get(digest)
        if entry is not None:
            return entry
        until = self._negative.get(digest)
        if until is not None:
            if self._clock() < until:
                return None
            del self._negative[digest]
        loading = self._loading.get(digest)
        if loading is None:
            now = self._clock()
            if now < self._down_until:
                raise KeysUnavailable("the key database failed moments ago")
            if self._failing:  # this lookup asks again; the others fail at once meanwhile
                self._down_until = now + self._lookup_timeout_s
            # Concurrent first uses of one key share one lookup (a cold start under load would
            # otherwise queue one query per request on the small connection pool).
            loading = asyncio.get_running_loop().create_future()
            self._loading[digest] = loading
            self._queued[digest] = self._generation
            if self._looking_up is None:
                self._looking_up = asyncio.create_task(self._look_up_queued(),
                                                       name="keys-lookup")
                self._looking_up.add_done_callback(_retrieved)  # its callers were told
        # Shielded: a caller cancelled leaves the lookup to the others waiting on it.
        return await asyncio.shield(loading)

    async def _look_up_queued(self) -> None:
        """Look the queued hashes up, ``LOOKUP_BATCH`` per query, one query at a time, until
        none is left; hashes queued while a query runs go into the next one."""
        try:
            while self._queued:
                batch = {digest: self._queued.pop(digest)
                         for digest in list(itertools.islice(self._queued, LOOKUP_BATCH))}
                try:
                    await self._look_up(batch)
                except KeysUnavailable as exc:
                    self._settle(list(batch), exc)
                    # Failed moments ago (DOWN_FOR_S): the keys that waited for the next query
                    # fail at once too.
                    queued, self._queued = list(self._queued), {}
                    self._settle(queued, KeysUnavailable("the key database failed moments ago"))
        except BaseException as exc:
            # Cancelled (the event loop closing) or a bug: it ends every lookup left (a
            # cancellation as KeysUnavailable, so that no caller sees one it did not ask for).
            self._queued = {}
            self._settle(list(self._loading), exc if isinstance(exc, Exception)
                         else KeysUnavailable("the key lookup was stopped"))
            raise
        finally:
            self._looking_up = None

    async def _look_up(self, batch: dict[str, int]) -> None:
        """One query for the hashes of ``batch``; settles their lookups (caching what it found
        for each hash whose generation is still current), or raises ``KeysUnavailable``."""
        query = asyncio.ensure_future(self.store.find_many_by_hash(list(batch)))
        try:
            await asyncio.wait((query,), timeout=self._lookup_timeout_s)
        finally:
            if not query.done():
                # Not awaited: SQLAlchemy closes a cancelled query's connection in the
                # background, giving a hung database 2 s more, which no caller waits for.
                query.cancel()
                query.add_done_callback(_retrieved)
        if query.cancelled() or not query.done():
            self._failed()
            log.warning("key lookup failed: the database did not answer within %.1f s",
                        self._lookup_timeout_s)
            raise KeysUnavailable("the key database did not answer")
        try:
            found = query.result()
        except DATABASE_ERRORS as exc:
            self._failed()
            log.warning("key lookup failed, database unreachable: %s", describe_error(exc))
            raise KeysUnavailable("the key database is unreachable") from None
        self._failing = False
        self._down_until = -math.inf
        for digest, generation in batch.items():
            row = found.get(digest)
            entry = None if row is None else Entry(*row)
            if generation == self._generation:  # no change since the key was asked for
                self._remember(digest, entry)
            self._settle([digest], entry)

    def _failed(self) -> None:
        self._failing = True
        self._down_until = self._clock() + self._down_for_s

    def _settle(self, digests: list[str], outcome: Entry | Exception | None) -> None:
        """End the lookups of ``digests`` with ``outcome`` (an entry, ``None`` or an error)."""
        for digest in digests:
            loading = self._loading.pop(digest, None)
            if loading is None or loading.done():
                continue
            if isinstance(outcome, Exception):
                loading.set_exception(outcome)
                loading.exception()  # retrieved here too: every waiter may have been cancelled
            else:
                loading.set_result(outcome)

    def _remember(self, digest: str, entry: Entry | None) -> None:
        if entry is None:
            if len(self._negative) >= self._max_negative:
                del self._negative[next(iter(self._negative))]
            self._negative[digest] = self._clock() + self._negative_ttl_s
            return
        if digest not in self._entries and len(self._entries) >= self._max_entries:
            self._pop(next(iter(self._entries)))
        self._put(digest, entry)

    def _put(self, digest: str, entry: Entry) -> None:
        """Cache ``entry`` under ``digest`` (in the place of what was there), indexed by its
        ids."""
        old = self._entries.get(digest)
        self._entries[digest] = entry
        if old is not None:
            if old is not entry:
                self._dropped(digest)
            if old.key.id == entry.key.id and old.key.team_id == entry.key.team_id:
                return
            self._unindex(digest, old)
        self._by_key.setdefault(entry.key.id, set()).add(digest)
        if entry.key.team_id is not None:
            self._by_team.setdefault(entry.key.team_id, set()).add(digest)

    def _pop(self, digest: str) -> None:
        """Forget the entry cached under ``digest``, if any."""
        entry = self._entries.pop(digest, None)
        if entry is not None:
            self._unindex(digest, entry)
            self._dropped(digest)

    def _dropped(self, digest: str) -> None:
        """Tell ``on_dropped`` of ``digest``; a failure of its is logged, never raised: a
        change must still be published, and the subscriber that heard it must go on
        listening."""
        if self.on_dropped is None:
            return
        try:
            self.on_dropped(digest)
        except Exception:
            log.exception("forgetting a dropped key's caller failed")

    def _unindex(self, digest: str, entry: Entry) -> None:
        _discard(self._by_key, entry.key.id, digest)
        if entry.key.team_id is not None:
            _discard(self._by_team, entry.key.team_id, digest)

    def _matching(self, key_ids: Iterable[str], team_ids: Iterable[str]) -> list[str]:
        """The hashes of the cached entries of these keys and of these teams' keys."""
        found: set[str] = set()
        for index, ids in ((self._by_key, key_ids), (self._by_team, team_ids)):
            for id in ids:
                found.update(index.get(id, ()))
        return list(found)

    # ---- changes that carry spend

    async def update_key(self, key_id: str, spec: KeyUpdate) -> KeyRecord:
        """``store.update_key``, then ``changed``. A key moved into, out of or to another team,
        or whose calls are now settled into a counter they were not (limits where it had none,
        another budget period: ``_new_counter``), keeps what it spent in the current periods:
        with Redis, its spend counters are raised first (``app.limits.carry.carry_key_spend``),
        so that the key's next call, on any gateway, is decided with that spend counted, its
        budget's now or once one is set."""
        before = (await self.store.get_key(key_id)
                  if self._redis is not None and not _CARRIED.isdisjoint(spec.model_fields_set)
                  else None)
        record = await self.store.update_key(key_id, spec)
        if self._redis is not None and before is not None and (
                before.team_id != record.team_id or _new_counter(before, record)):
            await _carried(f"key {key_id}", carry_key_spend(
                self.store.engine, self._redis, prefix=PREFIX, key_id=key_id,
                old_team=before.team_id, new_team=record.team_id))
        await self.changed(key_id=key_id)
        return record

    async def update_team(self, team_id: str, spec: TeamUpdate) -> TeamRecord:
        """``store.update_team``, then ``changed``; a team whose keys' calls are now settled
        into a counter they were not keeps what it spent, as in ``update_key``
        (``app.limits.carry.carry_team_spend``)."""
        before = (await self.store.get_team(team_id)
                  if self._redis is not None and not _CARRIED.isdisjoint(spec.model_fields_set)
                  else None)
        team = await self.store.update_team(team_id, spec)
        if self._redis is not None and before is not None and _new_counter(before, team):
            await _carried(f"team {team_id}", carry_team_spend(
                self.store.engine, self._redis, prefix=PREFIX, team_id=team_id))
        await self.changed(team_id=team_id)
        return team

    # ---- invalidation

    async def changed(self, *, key_id: str | None = None, team_id: str | None = None) -> None:
        """Drop the entries of ``key_id`` and of ``team_id``'s keys here, and tell the other
        processes over Redis. Both ``None``: drop everything. A publish that fails, or waits
        past ``PUBLISH_TIMEOUT_S``, is logged; the others then heal at their next refresh."""
        self.drop(key_id=key_id, team_id=team_id)
        if self._redis is None:
            return
        message = json.dumps({"key_id": key_id, "team_id": team_id})
        try:
            # Cancelled past its time, redis-py drops the connection (no reply left unread).
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self._redis.publish(CHANNEL, message)
        except TimeoutError:
            log.warning("could not publish a key change on Redis: no answer within %.1f s "
                        "(other gateways pick it up within %.0f s)", PUBLISH_TIMEOUT_S,
                        self._refresh_s)
        except (RedisError, OSError) as exc:
            log.warning("could not publish a key change on Redis (other gateways pick it up "
                        "within %.0f s): %s", self._refresh_s, exc)

    def drop(self, *, key_id: str | None = None, team_id: str | None = None) -> None:
        """Drop matching entries (both ``None``: all) and every remembered unknown hash."""
        self._generation += 1
        self._negative.clear()
        if key_id is None and team_id is None:
            dropped = list(self._entries)
            self._entries.clear()
            self._by_key.clear()
            self._by_team.clear()
            for digest in dropped:
                self._dropped(digest)
            return
        for digest in self._matching(() if key_id is None else (key_id,),
                                     () if team_id is None else (team_id,)):
            self._pop(digest)

    def _on_message(self, data: Any) -> None:
        try:
            body = json.loads(data)
            key_id, team_id = body.get("key_id"), body.get("team_id")
        except (ValueError, AttributeError):
            log.warning("ignoring a malformed key-change message; dropping the whole cache")
            self.drop()
            return
        self.drop(key_id=key_id if isinstance(key_id, str) else None,
                  team_id=team_id if isinstance(team_id, str) else None)

    # ---- background tasks

    async def start(self) -> None:
        """Start refreshing, and listening for changes when there is Redis."""
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="keys-refresh"))
        if self._redis is not None:
            self._tasks.append(asyncio.create_task(
                follow(self._redis, CHANNEL, what="key changes", on_message=self._on_message,
                       on_subscribed=self._subscribed, subscribed=self.subscribed,
                       on_reconnect=self._reconnected), name="keys-subscriber"))

    async def aclose(self) -> None:
        """Stop the background tasks and the lookup queries (their callers get ``KeysUnavailable``;
        the store's engine and Redis belong to the caller)."""
        tasks, self._tasks = self._tasks, []
        if self._looking_up is not None:  # its waiters get KeysUnavailable
            tasks.append(self._looking_up)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _subscribed(self, lost: bool) -> None:
        if lost:
            log.info("dropping the key cache: key changes may have been missed")
            self.drop()

    async def _reconnected(self, _connection: Any) -> None:
        log.info("the key-change subscription reconnected; dropping the key cache")
        self.drop()

    async def _refresh_loop(self) -> None:
        if not self._entries:  # nothing cached can predate this read: no first full re-read
            with contextlib.suppress(*DATABASE_ERRORS):
                _, self._since = await self.store.changes_since(None)
        while True:
            await pause(self._refresh_s)
            await self.refresh()

    async def refresh(self) -> None:
        """Re-read the cached entries whose key or team changed since the last refresh (see the
        module docstring); deleted or rotated keys leave the cache. A database error keeps the
        entries as they are."""
        since = self._since
        try:
            changes, now = await self.store.changes_since(
                None if since is None else since - OVERLAP_S)
        except DATABASE_ERRORS as exc:
            log.warning("key refresh failed, serving cached keys: %s", describe_error(exc))
            return
        if since is None or now - since >= KEPT_S - OVERLAP_S:
            hashes = list(self._entries)
        else:
            hashes = self._touched([c for c in changes if c.id not in self._applied])
        if await self._reread(hashes):
            self._since = now
            self._applied = {c.id for c in changes if c.at >= now - OVERLAP_S}
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            try:
                await self.store.prune_changes(now - KEPT_S)
            except DATABASE_ERRORS as exc:
                log.warning("could not prune the key change log: %s", describe_error(exc))

    def _touched(self, changes: list[Change]) -> list[str]:
        """The cached entries (by hash) whose key or team ``changes`` name."""
        if not changes:
            return []
        return self._matching({c.key_id for c in changes if c.key_id is not None},
                              {c.team_id for c in changes if c.team_id is not None})

    async def _reread(self, hashes: list[str]) -> bool:
        """Re-read these cached entries, ``REFRESH_CHUNK`` at a time (so that requests are
        served between the chunks); a chunk that a change overtook while it was read is dropped
        instead (its entries are read again at their next use), so that a fleet whose keys
        change often still makes progress. False when the database failed."""
        for first in range(0, len(hashes), REFRESH_CHUNK):
            chunk = hashes[first:first + REFRESH_CHUNK]
            generation = self._generation
            try:
                found = await self.store.find_many_by_hash(chunk)
            except DATABASE_ERRORS as exc:
                log.warning("key refresh failed, serving cached keys: %s", describe_error(exc))
                return False
            if generation != self._generation:  # a change arrived meanwhile: this read may
                for digest in chunk:              # predate it, and so may these entries
                    self._pop(digest)
                continue
            for digest in chunk:
                old = self._entries.get(digest)
                if old is None:
                    continue
                row = found.get(digest)
                if row is None:
                    self._pop(digest)
                else:
                    fresh = Entry(*row)
                    if fresh != old:  # the same object when unchanged (callers memoise on it)
                        self._put(digest, fresh)
        return True


def _new_counter(before: KeyRecord | TeamRecord, after: KeyRecord | TeamRecord) -> bool:
    """``after``'s calls are settled into a spend counter that ``before``'s were not: it has
    limits (a bucket, whose counter of its budget period its calls are settled into, and which
    a budget reads, now or once set) and ``before`` had none (its calls were settled nowhere)
    or another budget period. A counter kept all along (a budget only raised or lowered) is
    not carried: the raise would count twice the calls whose credit's tally settles after
    it."""
    return after.limited and not (before.limited and before.budget_period == after.budget_period)


_CARRIED = frozenset({"team_id", "rpm", "tpm", "budget_usd", "budget_period"})
"""The fields whose change may call for a carry."""


_CARRY_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, *DATABASE_ERRORS)


async def _carried(what: str, carry: Awaitable[None]) -> None:
    """Run ``carry``; a failure is logged, not raised: the change is made, and the next budget
    reconcile raises the counters from the call log."""
    try:
        await carry
    except _CARRY_ERRORS as exc:
        log.warning("could not carry the spend of %s to its changed limits (%s); the next "
                    "budget reconcile will", what, type(exc).__name__)


def _retrieved(query: asyncio.Future[Any]) -> None:
    """Take a finished task's outcome (a cancelled lookup query's, the lookup task's, whose
    callers were given it), so that an error it ended with is not logged as never
    retrieved."""
    if not query.cancelled():
        query.exception()


def _discard(index: dict[str, set[str]], id: str, digest: str) -> None:
    """Take ``digest`` out of ``index[id]`` (and ``id`` out of ``index`` once it has none)."""
    digests = index.get(id)
    if digests is not None:
        digests.discard(digest)
        if not digests:
            del index[id]
