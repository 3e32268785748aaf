"""Circuit breakers shared by every gateway process through Redis (``breaker.shared``, on
whenever ``SWITCHBOARD_REDIS_URL`` is set): the workers of a host and the replicas behind a load
balancer agree on which targets are open.

What is shared is each breaker's state changes, not its counting: every process counts its own
failed attempts (``app.routing.breaker``), and the first one to open a breaker opens it for all.

- A process whose breaker opens (or whose half-open probe fails) writes ``{state: open,
  opened_at, cooldown_s}`` into the hash ``HASH`` and publishes it on ``CHANNEL``; one whose
  probe succeeds deletes the entry and publishes ``closed``. Every process applies what others
  publish to its own breaker, within a message's delivery time.
- After the cooldown, one call in the whole fleet probes the target: the process whose breaker
  turns half-open first claims ``PROBE_PREFIX + target`` (``SET NX`` for a cooldown, renewed
  every half cooldown for as long as the probe may run: its call's remaining deadline), and
  gives the claim back with its verdict (or when the probe ends without one); a prober that
  dies stops renewing, so its claim lapses within a cooldown. The others keep the target open
  for a cooldown, or until the prober publishes its verdict, and then ask for the claim again. A
  verdict that arrives while a process still waits for Redis's answer to its own claim wins
  over that answer, so every process holds the fleet's newest cooldown (``Router.admit``).
- A process that starts, or resubscribes after losing Redis, reads the hash (it may have missed
  messages). An entry opened longer ago than twice ``breaker.max_cooldown_s`` is stale (its
  prober died): it is ignored and deleted.
- A target is its provider's name, its model and where the provider points (``base_url`` or
  ``endpoint``, and the ``region``, ``project`` and ``location`` of the provider types
  addressed by them: ``location``), so that two deployments sharing one Redis with a provider of the
  same name pointing elsewhere do not share breakers. Each breaker names the location its
  calls went to (``Breaker.location``): a call still running on a provider's old location
  after a reload pointed it elsewhere reports under the old one, and a process applies only
  what is published for where its providers point now (``Router.adopt``).
- A reload that points a provider elsewhere gives its targets fresh breakers there
  (``Router.swap``), closed: the process deletes the hash's entries of that location opened
  before its reload (``moved``: pointed back where it was, its openings there from before are
  stale), and adopts no opening from before it, published or read. Each replica does so when
  it reloads; one still on the old config keeps its own view until it reloads too. (An
  opening published by a replica that reloaded first, before a later one reloads, stays with
  the replicas that heard it, and the later one drops it from the hash: a replica that starts
  then counts the target's failures itself.)
- Redis down: every process goes on with its own breakers (a probe claim that cannot be made,
  or that Redis does not answer within ``app.routing.router.CLAIM_WAIT_S``, is taken), and
  reads the hash again once it is back.

Times cross processes as wall-clock seconds (``time.time()``), converted to each process's
monotonic clock on arrival: hosts' clocks should agree to well under a cooldown (NTP does).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.pubsub import follow

if TYPE_CHECKING:
    from app.config import GatewayConfig
    from app.routing.breaker import Breaker
    from app.routing.router import BreakerKey, Router

log = logging.getLogger("switchboard.routing")
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""Deletes a probe claim only if this process (ARGV[1], its origin) still holds it."""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
"""Extends a probe claim to ARGV[2] ms from now only if this process (ARGV[1]) still holds it."""
_FORGET = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""
"""Deletes a hash entry (ARGV[1]) only if it is still the one read (ARGV[2])."""

HASH = "switchboard:breakers"
CHANNEL = "switchboard:breakers:changed"
PROBE_PREFIX = "switchboard:breakers:probe:"


_REGIONAL = ("region",)
_PROJECT = ("project", "location")
_PLACES: dict[str, tuple[str, ...]] = {
    "bedrock": _REGIONAL, "sagemaker": _REGIONAL, "vertex": _PROJECT, "vertex_anthropic": _PROJECT}
"""By provider type, the settings that say where it calls besides its base URL (AWS's region,
Vertex's project and location: a ``base_url`` replaces only Vertex's host, and AWS signs for
the region)."""


def location(config: GatewayConfig, provider: str) -> str:
    """Where a provider points (its ``base_url`` or ``endpoint``, its type when it has neither;
    then, for AWS and Vertex types, its ``region``, or ``project`` and ``location``), as
    part of its targets' identity: a Bedrock provider moved to another region is a move, and
    two deployments' providers of one name in different regions or projects are apart."""
    found = config.providers.get(provider)
    if found is None:
        return ""
    where = str(getattr(found, "base_url", None) or getattr(found, "endpoint", None)
                or found.type)
    places = [f"{name}={getattr(found, name, '')}" for name in _PLACES.get(found.type, ())]
    return " ".join([where, *places])


class SharedBreakers:
    """One per gateway process; ``Router.shared`` points to it (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis, router: Router, *,
                 max_cooldown_s: Callable[[], float], namespace: str = HASH) -> None:
        """``max_cooldown_s``: the serving config's ``breaker.max_cooldown_s``; ``namespace``:
        the hash's name, which prefixes the channel and the probe claims (tests use their
        own)."""
        self._redis = redis
        self._router = router
        self._max_cooldown_s = max_cooldown_s
        self._hash = namespace
        self._channel = namespace + CHANNEL.removeprefix(HASH)
        self._probe = namespace + PROBE_PREFIX.removeprefix(HASH)
        self.origin = f"{os.getpid()}-{os.urandom(4).hex()}"
        """This process, in what it publishes (its own messages come back and are skipped)."""
        self.subscribed = asyncio.Event()
        """Set while the subscriber listens (tests wait on it)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._holds: dict[str, asyncio.Task[None]] = {}
        """By probe claim, the task renewing this process's claim while its probe runs."""
        self._listener: asyncio.Task[None] | None = None

    # ---- what this process tells the others

    @staticmethod
    def field(key: BreakerKey) -> str:
        """The hash field (and probe-claim suffix) naming a target where its provider points."""
        return json.dumps(list(key), separators=(",", ":"))

    def publish(self, key: BreakerKey, breaker: Breaker) -> None:
        """Tell the others that this process's breaker of ``key`` just opened or closed (a
        turn to half-open is local: the probe claim covers it). Sent in the background."""
        if breaker.state == "half_open":
            return
        field = self.field(key)
        message: dict[str, Any] = {"target": field, "state": breaker.state,
                                   "origin": self.origin}
        if breaker.state == "open":
            message["opened_at"] = time.time() - (time.monotonic() - breaker.opened_at)
            message["cooldown_s"] = breaker.cooldown_s
        self._spawn(self._send(field, message))

    async def _send(self, field: str, message: dict[str, Any]) -> None:
        payload = json.dumps(message, separators=(",", ":"))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if message["state"] == "open":
                    pipe.hset(self._hash, field, payload)
                else:
                    pipe.hdel(self._hash, field)
                    pipe.delete(self._probe + field)
                pipe.publish(self._channel, payload)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not share a circuit breaker's state through Redis: %s", exc)

    def moved(self, provider: str, where: str) -> None:
        """A reload here pointed ``provider`` at ``where``, where its targets start with fresh
        breakers: delete the hash's entries for them opened before now, and their probe
        claims, so that no process that starts or resubscribes adopts them (in the
        background)."""
        self._spawn(self._forget(provider, where, time.time()))

    async def _forget(self, provider: str, where: str, before: float) -> None:
        try:
            entries = await self._redis.hgetall(self._hash)
            for raw_field, raw in entries.items():
                field = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
                try:
                    named, _, at = json.loads(field)
                    opened_at = float(json.loads(raw)["opened_at"])
                except (ValueError, TypeError, KeyError):
                    continue
                if named != provider or at != where or opened_at >= before:
                    continue
                if await self._redis.eval(_FORGET, 1, self._hash, field, raw):
                    await self._redis.delete(self._probe + field)
        except (RedisError, OSError) as exc:
            log.warning("could not clear a repointed provider's circuit breakers in Redis: %s",
                        exc)

    async def claim(self, key: BreakerKey, hold_s: float) -> bool:
        """Take the fleet's one half-open probe of ``key`` for ``hold_s`` (``hold`` renews it;
        this process's verdict or ``release`` gives it back); ``False``: another process holds
        it. Redis down: taken."""
        try:
            taken = await self._redis.set(self._probe + self.field(key), self.origin,
                                          nx=True, px=max(1, int(hold_s * 1000)))
        except (RedisError, OSError) as exc:
            log.warning("could not claim a half-open probe through Redis (probing anyway): %s",
                        exc)
            return True
        return bool(taken)

    def hold(self, key: BreakerKey, hold_s: float, within: float) -> None:
        """Keep this process's claim of ``key``'s probe while the probe may run: renewed for
        ``hold_s`` every half of it until ``release`` (or the verdict, which releases it), or
        until ``within`` seconds from now, the probing call's deadline. A claim taken for the
        whole deadline at once outlived a prober killed mid-probe: no process probed the target
        for up to ``retries.deadline_s`` (300 s). Renewed, it lapses a cooldown after its
        prober dies."""
        name = self._probe + self.field(key)
        old = self._holds.pop(name, None)
        if old is not None:
            old.cancel()
        task = asyncio.ensure_future(self._hold(name, hold_s, time.monotonic() + within))
        self._holds[name] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(functools.partial(self._held, name))

    def _held(self, name: str, task: asyncio.Task[None]) -> None:
        if self._holds.get(name) is task:
            del self._holds[name]

    async def _hold(self, name: str, hold_s: float, until: float) -> None:
        while True:
            await asyncio.sleep(hold_s / 2)
            left = until - time.monotonic()
            if left <= 0:  # the probing call's deadline: the claim lapses where it stands
                return
            try:
                kept = await self._redis.eval(_RENEW, 1, name, self.origin,
                                              max(1, int(min(hold_s, left) * 1000)))
            except (RedisError, OSError) as exc:  # it lapses on its own; others may probe
                log.warning("could not renew a half-open probe's claim through Redis: %s", exc)
                return
            if not kept:  # deleted (a verdict, a reload that moved the provider) or lapsed
                return

    def release(self, key: BreakerKey) -> None:
        """Give back this process's claim of the fleet's half-open probe of ``key`` after a
        probe that ended with no verdict (the client left, a 4xx), so that the next call, here
        or in another process, probes it at once rather than a cooldown later (the claim held
        until it expired, and this process's own next call, failing to claim it, reopened the
        breaker for another cooldown)."""
        name = self._probe + self.field(key)
        held = self._holds.pop(name, None)
        if held is not None:
            held.cancel()
        self._spawn(self._release(name))

    async def _release(self, key: str) -> None:
        try:
            await self._redis.eval(_RELEASE, 1, key, self.origin)
        except (RedisError, OSError) as exc:  # the claim expires on its own
            log.warning("could not give back a half-open probe through Redis: %s", exc)

    # ---- what the others tell this process

    def apply(self, raw: bytes | str) -> None:
        """Apply one published message (or hash entry) to this process's breaker (where the
        target's provider points here: ``Router.adopt``)."""
        try:
            message = json.loads(raw)
            provider, model, where = json.loads(message["target"])
            state = message["state"]
            origin = message.get("origin")
            if state == "open":
                opened_at, cooldown_s = float(message["opened_at"]), float(message["cooldown_s"])
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring a malformed circuit breaker message: %s", exc)
            return
        if origin == self.origin:
            return
        key = (str(provider), str(model), str(where))
        if state == "closed":
            self._router.adopt(key, None)
        elif state == "open":
            ago = max(0.0, time.time() - opened_at)
            self._router.adopt(key, (cooldown_s, time.monotonic() - ago))

    async def load(self) -> None:
        """Apply every entry of the hash (at start, and after losing messages), deleting those
        too old to matter."""
        entries = await self._redis.hgetall(self._hash)
        stale_after = 2 * self._max_cooldown_s()
        stale = []
        for field, raw in entries.items():
            try:
                opened_at = float(json.loads(raw)["opened_at"])
            except (ValueError, TypeError, KeyError):
                opened_at = 0.0
            if time.time() - opened_at > stale_after:
                stale.append(field)
            else:
                self.apply(raw)
        if stale:
            await self._redis.hdel(self._hash, *stale)

    # ---- background

    def start(self) -> None:
        self._listener = asyncio.create_task(
            follow(self._redis, self._channel, what="circuit breaker changes",
                   on_message=self.apply, on_subscribed=self._subscribed,
                   subscribed=self.subscribed), name="breakers-subscriber")

    async def aclose(self) -> None:
        tasks = [*self._tasks, *([self._listener] if self._listener else [])]
        self._listener = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _subscribed(self, lost: bool) -> None:
        await self.load()  # after subscribing: nothing falls between the two
