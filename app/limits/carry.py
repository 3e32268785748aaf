"""Carry: between reconciles (``app.limits.budget``) a call's spend is settled into the counter
of its buckets' budget period only (a key or team with no limits has no bucket, and no counter
kept), so a change that makes the calls settle into another counter (a key moved to another
team, a key or team given limits where it had none, or another budget period) raises that
counter at once to what was spent in its period (``carried``): in Redis before the change is
published (``carry_key_spend``, ``carry_team_spend``, run by ``KeyDirectory.update_key`` and
``update_team``), and in the in-process limiter by each process as it builds the key's caller
anew (``LocalCarry``). The key's next call is then decided with that spend counted by its
budget, now or once one is set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import get_args

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import DATABASE_ERRORS, describe_error
from app.limits import scripts
from app.limits.budget import spend_sums
from app.limits.local import LocalLimiter
from app.limits.model import Bucket, Period, Scope, period_name, period_start
from app.limits.redis import spend_key, spend_ttl_s

log = logging.getLogger("switchboard.limits")


async def carry_key_spend(engine: AsyncEngine, redis: aioredis.Redis, *, prefix: str,
                          key_id: str, old_team: str | None, new_team: str | None,
                          now: datetime | None = None) -> None:
    """A key moved from ``old_team`` to ``new_team`` (``None``: no team), or given limits where
    it had none or another budget period (``old_team == new_team``): raise its spend counters
    under its new team's hash tag, where they would start anew (a move) or which its settles
    did not keep, to its spend in each current period (``carried``). Run at the change,
    before the gateways hear of it; spend settled under the old tag, or by calls under the old
    limits, after that read is left to the reconcile (``log_spend``). Database and Redis errors
    propagate."""
    await _carry(engine, redis, prefix=prefix, scope="key", id=key_id,
                 old_tag=old_team or key_id, new_tag=new_team or key_id, now=now)


async def carry_team_spend(engine: AsyncEngine, redis: aioredis.Redis, *, prefix: str,
                           team_id: str, now: datetime | None = None) -> None:
    """A team given limits where it had none, or another budget period: raise its spend
    counters to its spend in each current period, as ``carry_key_spend`` does a key's."""
    await _carry(engine, redis, prefix=prefix, scope="team", id=team_id, old_tag=team_id,
                 new_tag=team_id, now=now)


def carried(counted: list[int], logged: list[int]) -> list[int]:
    """The spend to carry into each current period (``day``, ``month``, ``total``, in that
    order, each within the next), in nano-dollars: the most that the counters (``counted``)
    or the spend ledger (``logged``) prove was spent in it or in a shorter period. A budget's
    counter is kept only in its own period, so a day budget changed to a month one finds its
    month counter as the last reconcile left it; today's counter holds spend the ledger may
    not have yet (calls still in the call log's queue)."""
    out: list[int] = []
    floor = 0
    for counter, ledger in zip(counted, logged, strict=True):
        floor = max(floor, counter, ledger)
        out.append(floor)
    return out


async def _carry(engine: AsyncEngine, redis: aioredis.Redis, *, prefix: str, scope: Scope,
                 id: str, old_tag: str, new_tag: str, now: datetime | None) -> None:
    """Raise ``scope`` ``id``'s counters of the current periods under ``new_tag`` to what its
    counters under ``old_tag`` and the spend ledger prove was spent (``carried``)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    periods: tuple[Period, ...] = get_args(Period)
    names = [period_name(period, moment) for period in periods]
    logged = await _spent(engine, scope, id, moment)
    old = await redis.mget([spend_key(prefix, tag=old_tag, scope=scope, id=id, period=name)
                            for name in names])
    counters: list[str | int] = []
    values: list[int] = []
    for period, name, value in zip(periods, names,
                                   carried([int(n or 0) for n in old], logged), strict=True):
        if value > 0:
            counters.append(spend_key(prefix, tag=new_tag, scope=scope, id=id, period=name))
            values += [value, spend_ttl_s(period, moment)]
    if counters:
        await redis.eval(scripts.RAISE, len(counters), *counters, *values)


async def _spent(engine: AsyncEngine, scope: Scope, id: str, moment: datetime) -> list[int]:
    """What the spend ledger says key or team ``id`` spent in each current period (a key's in
    all its teams together), in nano-dollars."""
    starts = [period_start(period, moment) for period in get_args(Period)]
    rows = await (spend_sums(engine, starts, key_id=id) if scope == "key"
                  else spend_sums(engine, starts, team_id=id))
    return [sum(totals[column] for _, _, totals in rows) for column in range(len(starts))]


CARRY_WAIT_S = 3.0
"""Longest a call waits for ``LocalCarry`` to read the spend ledger (a hung database would hold
it for the engine's bounds); past it the call is decided without, and the carry goes on."""
MAX_MISSED = 200_000
"""Most keys and teams ``LocalCarry`` notes; past it every caller with a budget carries."""


class LocalCarry:
    """``carry_key_spend`` for the in-process limiter, whose counters only its own process
    sees: each process carries for itself, when it builds a caller anew after a change it heard
    of (``app.stages.authenticate``; the change reached it from its own admin API, over Redis,
    or from the key change log).

    A caller's calls are settled into the counters of its buckets' budget periods only (a key
    or team with no limits has no bucket, and its calls are settled nowhere). So once this
    process replaced a key's caller, the key's and its team's counters may miss spend:
    ``missed`` notes them, and the next caller built with a budget of theirs waits, before its
    first admission, until those counters are raised to what the spend ledger and the
    limiter's own counters prove was spent in each current period (``carried``). A note stays
    until such a caller is built (a caller without a budget still settles nowhere, or in
    another period). Concurrent callers share one carry of a key or team."""

    def __init__(self, engine: AsyncEngine, limiter: LocalLimiter) -> None:
        self._engine = engine
        self._limiter = limiter
        self._missed: set[tuple[Scope, str]] = set()
        self._all = False
        """More than ``MAX_MISSED`` were noted: every caller with a budget carries."""
        self._carrying: dict[tuple[Scope, str], asyncio.Task[None]] = {}

    def missed(self, key_id: str, team_id: str | None) -> None:
        """A caller of ``key_id`` (in ``team_id``) was replaced."""
        if self._all:
            return
        if len(self._missed) >= MAX_MISSED:
            self._all = True
            self._missed.clear()
            return
        self._missed.add(("key", key_id))
        if team_id is not None:
            self._missed.add(("team", team_id))

    async def ready(self, buckets: Sequence[Bucket]) -> None:
        """Return once the counters that ``buckets``' budgets read count what was spent, or
        after ``CARRY_WAIT_S``. No I/O when none of them was noted."""
        waits: list[asyncio.Task[None]] = []
        for b in buckets:
            if b.budget_usd is None or b.scope == "model":
                continue
            name: tuple[Scope, str] = (b.scope, b.id)
            running = self._carrying.get(name)
            if running is None:
                if not self._all and name not in self._missed:
                    continue
                self._missed.discard(name)  # a change heard from now on notes it again
                running = asyncio.create_task(self._carry(name), name="budget-carry")
                self._carrying[name] = running
            waits.append(running)
        if not waits:
            return
        done, _ = await asyncio.wait(waits, timeout=CARRY_WAIT_S)
        if len(done) < len(waits):
            log.warning("carrying spend to a changed budget took over %.0f s; deciding the "
                        "call without it", CARRY_WAIT_S)
        for task in done:
            task.result()  # a bug, not a database error: raised, not hidden

    async def _carry(self, name: tuple[Scope, str]) -> None:
        scope, id = name
        try:
            moment = datetime.now(UTC)
            logged = await _spent(self._engine, scope, id, moment)
            names = [period_name(period, moment) for period in get_args(Period)]
            values = carried(self._limiter.counted(scope, id, names), logged)
            self._limiter.raise_spend({(scope, id, period): value
                                       for period, value in zip(names, values, strict=True)})
        except DATABASE_ERRORS as exc:
            if not self._all:
                self._missed.add(name)  # the next caller built tries again
            log.warning("could not carry the spend of %s %s to its changed budget (%s); the "
                        "next budget reconcile will", scope, id, describe_error(exc))
        finally:
            del self._carrying[name]
