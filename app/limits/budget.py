"""Reconcile: raise the spend counters in Redis to what the call log (the source of truth)
proves was spent, for the current UTC day, month and all time, per virtual key and per team.

Each counter is set to ``max(counter, log)`` by a Lua script (``scripts.RAISE``): a reconcile
never lowers a counter (spend the log has not seen yet, calls still in flight or in the writer's
queue, stays counted) and never adds twice (running it again changes nothing). A reconcile that
raised a counter some budget reads (a key's or team's with a budget, for its budget's period) to
half that budget or more publishes budget news (``app.limits.redis.news_channel``): every
gateway then gives back the admission credits of its callers with a budget. Below half, a raise
leaves the credits be: they were granted on a counter under half, which it still is
(``app.limits.model``). The other counters (the periods no budget uses: settles add to none of
them) are raised too, but without news: they fall behind the log between reconciles by design,
and news for them, or for every raise, ended every credit of the fleet at every reconcile (a
credit's calls settle when it ends, so the log is often ahead of a counter by them). A raise
can count such a call twice, when its credit's tally arrives after the reconcile read the log:
a counter then runs ahead of the log by at most what the tallies held (a process's at most 1/256
of the budget, ``app.limits.redis.CREDIT_SHARE``), on the safe side, and a later reconcile does
not raise it again until the log has caught up. The log's sums come from its spend ledger
(``spend_days``, ``app.db.ledger``): the database adds every call row's cost to its key's and
team's day as the row is inserted, so a reconcile reads a row per key, team and day instead of
scanning the log (it did: in every gateway process every minute, over all of the log for
``total``); each reconcile first folds the days of closed months into one row per month
(``fold_ledger``), so that read grows by a row per key and team a month. A key's counters carry
its current team's hash tag (``api_keys.team_id``) and are raised to the key's whole spend,
whatever teams its calls were made in: a key's budget is the key's, and a key moved to another
team (whose counters then start anew under the new tag, ``app.limits.carry``) keeps what it
spent. A team's counters are raised to what its calls spent (``calls.team_id``). Costs are
summed in whole nano-dollars, rounded down (settles round each call's up,
``app.limits.model.spent_nano_usd``, so a counter is never behind the log for rounding
alone; the ledger keeps decimal USD to 1e-10, so a change of the limiters' unit needs no
migration). Gateways sharing a Redis take turns (``reconcile_in_turn``), every interval and as soon
as Redis answers again after an outage (``next_reconcile``): a Redis that restarted empty would
otherwise grant every budget in full again until the next interval. Works on Postgres and
SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_FLOOR, Decimal
from typing import cast, get_args

import redis.asyncio as aioredis
from sqlalchemy import ColumnElement, case, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.background import stop_if_cancelled
from app.db.engine import DATABASE_ERRORS, describe_error
from app.db.ledger import any_to_fold, fold_closed_months
from app.db.models import ApiKey, SpendDay, Team
from app.limits import scripts
from app.limits.local import LocalLimiter
from app.limits.model import NANO, Period, Scope, nano_usd, period_name, period_start
from app.limits.redis import news_channel, spend_key, spend_ttl_s

log = logging.getLogger("switchboard.limits")
_days = SpendDay.__table__
_PER_CALL = 64
"""Most counters one RAISE call raises (the counters of one hash tag go together: one script
call each, not one per counter, which cost ~25 us of this process's CPU a counter)."""
_CHUNK = 32
"""RAISE calls per pipelined round trip (small: packing one holds the event loop)."""


@dataclass(frozen=True, slots=True)
class Spent:
    """What the call log proves a key or team spent in one period."""

    scope: Scope
    id: str
    tag: str
    """The Redis hash tag of its counter: a team's own id; a key's current team, else the
    key."""
    period: Period
    name: str
    """The period's name (``app.limits.model.period_name``)."""
    nano_usd: int


async def log_spend(engine: AsyncEngine, *, now: datetime | None = None) -> list[Spent]:
    """The spend of every key and team that keeps counters (``_counted``: one stored with
    limits, a key not revoked) in the current day, month and all time, from the spend ledger:
    a key's in all its teams together, tagged with its current team; a team's from all its
    calls, those of keys since deleted included. Database errors propagate."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    periods: tuple[Period, ...] = get_args(Period)
    rows = await spend_sums(engine, [period_start(period, moment) for period in periods])
    keys_teams, teams = await _counted(engine)
    out: list[Spent] = []
    for column, period in enumerate(periods):
        name = period_name(period, moment)
        sums = [(key_id, team_id, totals[column]) for key_id, team_id, totals in rows
                if totals[column] > 0]
        keys: dict[tuple[str, str], int] = {}
        for key_id, _, total in sums:
            if key_id in keys_teams:
                tag = keys_teams[key_id] or key_id
                keys[(key_id, tag)] = keys.get((key_id, tag), 0) + total
        out += [Spent("key", key_id, tag, period, name, total)
                for (key_id, tag), total in sorted(keys.items())]
        out += [Spent("team", team_id, team_id, period, name, total)
                for team_id, total in _by_team(sums) if team_id in teams]
    return out


async def fold_ledger(engine: AsyncEngine, *, now: datetime | None = None) -> None:
    """Fold the spend ledger's days of closed months into one row per month, key and team
    (``app.db.ledger.fold_closed_months``): the sums ``log_spend`` reads stay the same, and
    the rows a ``total`` budget reads grow by one per key a month, not one a day. Cheap when
    there is nothing to fold; run by every reconcile. A fold that fails (a lock it lost to a
    writer replaying old rows, say) is logged and left for the next: the reconcile reads the
    same sums either way."""
    month = period_start("month", (now or datetime.now(UTC)).astimezone(UTC))
    assert month is not None
    try:
        async with engine.begin() as conn:
            dialect = conn.dialect.name
            cut: date | str = (month.date() if dialect == "postgresql"
                               else month.date().isoformat())
            if (await conn.execute(text(any_to_fold(dialect)), {"cut": cut})).first() is None:
                return
            for statement in fold_closed_months(dialect):
                await conn.execute(text(statement), {"cut": cut})
    except DATABASE_ERRORS as exc:
        log.warning("could not fold the spend ledger's closed months: %s", describe_error(exc))


async def reconcile_local(engine: AsyncEngine, limiter: LocalLimiter, *,
                          now: datetime | None = None) -> int:
    """``reconcile`` for the in-process limiter (no Redis): its counters are raised to the call
    log's sums, so a restart does not reset a budget, and several worker processes sharing one
    database see each other's spend at the next reconcile. Returns how many it raised."""
    await fold_ledger(engine, now=now)
    totals: dict[tuple[str, str, str], int] = {}
    for s in await log_spend(engine, now=now):
        totals[(s.scope, s.id, s.name)] = totals.get((s.scope, s.id, s.name), 0) + s.nano_usd
    return limiter.raise_spend(totals)


async def reconcile(engine: AsyncEngine, redis: aioredis.Redis, *, prefix: str,
                    now: datetime | None = None) -> int:
    """Raise every key's and team's spend counters of the current periods to the call log's
    sums (budget news when one that a budget reads was raised); returns how many counters it
    raised. Database and Redis errors propagate (the caller logs them and tries again at its
    next interval)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    await fold_ledger(engine, now=moment)
    spent = await log_spend(engine, now=moment)
    budgets = await _budgets(engine)
    raised = 0
    news = False
    sha = scripts.sha1(scripts.RAISE)
    await redis.script_load(scripts.RAISE)
    calls = [tagged[first:first + _PER_CALL] for tagged in _by_tag(spent).values()
             for first in range(0, len(tagged), _PER_CALL)]
    for first in range(0, len(calls), _CHUNK):
        chunk = calls[first:first + _CHUNK]
        pipe = redis.pipeline(transaction=False)
        for counters in chunk:
            pipe.execute_command(
                "EVALSHA", sha, len(counters),
                *[spend_key(prefix, tag=s.tag, scope=s.scope, id=s.id, period=s.name)
                  for s in counters],
                *[n for s in counters for n in (s.nano_usd, spend_ttl_s(s.period, moment))])
        for counters, positions in zip(chunk, await pipe.execute(), strict=True):
            for position in positions:
                s = counters[int(position) - 1]
                raised += 1
                budget = budgets.get((s.scope, s.id, s.period))
                news = news or (budget is not None and s.nano_usd * 2 >= budget)
    if news:  # a credit granted before the raise must not outlive it
        await redis.publish(news_channel(prefix), "raised")
    return raised


TURN_SHARE = 0.9
"""A reconcile turn lasts this share of the interval: the gateway whose turn it was can take the
next one at its next try, and so can any other, so there is one reconcile an interval."""


def turn_key(prefix: str) -> str:
    """Whose turn it is (``-nano``: the gateways that count spend in nano-dollars take turns
    apart from any older ones still counting micro-dollars under other keys in a rolling
    upgrade, so the first of them to start fills its counters at once)."""
    return f"{prefix}:budget:reconcile-turn-nano"


async def reconcile_in_turn(engine: AsyncEngine, redis: aioredis.Redis, *, prefix: str,
                            interval_s: float, now: datetime | None = None) -> int | None:
    """``reconcile``, run by one of the gateways sharing this Redis each ``interval_s``: each
    tries every interval, and the first to take the turn (a Redis key living ``TURN_SHARE`` of
    the interval) runs it, so N replicas read the log and raise the counters once an interval
    between them, not N times. ``None``: another gateway's turn. A reconcile that fails gives
    the turn back, for the next gateway that tries. After Redis loses its data the turn is free
    too, and the next try rebuilds the counters."""
    key = turn_key(prefix)
    if not await redis.set(key, b"1", nx=True, px=max(1, round(interval_s * TURN_SHARE * 1000))):
        return None
    try:
        return await reconcile(engine, redis, prefix=prefix, now=now)
    except Exception:
        with contextlib.suppress(Exception):  # Redis may be what failed: the turn then expires
            await redis.delete(key)
        raise


async def next_reconcile(interval_s: float, wake: asyncio.Event | None = None) -> None:
    """Wait until the next reconcile is due: ``interval_s``, or sooner once ``wake`` is set
    (``RedisLimiter.reconnected``: Redis answers again after an outage, and may have lost its
    counters), which it clears. The gateway sharing that Redis whose turn it is then rebuilds
    them; for the others, whose turn it was not, the try costs one Redis command."""
    stop_if_cancelled()  # a cancellation an await in the reconcile swallowed (app.background)
    if wake is None:
        await asyncio.sleep(interval_s)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(interval_s):
            await wake.wait()
    wake.clear()


FIRST_RECONCILE_WAIT_S = 10.0
"""Longest a starting gateway waits for its first reconcile before it serves (a database that
hangs must not keep it from serving: every call is still answered and recorded)."""


@dataclass
class Reconciles:
    """A gateway process's reconciles: ``first`` at start-up, then ``then`` every interval and
    when Redis answers again after an outage (``next_reconcile``).

    The start-up one runs whoever's turn it is (``reconcile``, not ``reconcile_in_turn``), and
    the process does not serve until it has finished (``started``): a Redis that lost its
    counters (restarted empty, flushed, or a first start after counters were renamed) would
    otherwise admit a burst of calls against empty counters until some gateway's turn came
    round. Its cost is one read of the spend ledger per process start."""

    first: Callable[[], Awaitable[int | None]]
    then: Callable[[], Awaitable[int | None]]
    done: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the first reconcile has finished, raised counters or failed."""

    @classmethod
    def each(cls, run: Callable[[], Awaitable[int | None]]) -> Reconciles:
        """The same reconcile at start-up and after (the in-process limiter's: no turns)."""
        return cls(first=run, then=run)

    async def loop(self, interval_s: float, wake: asyncio.Event | None) -> None:
        """Reconcile now, then as ``next_reconcile`` says, for good; a failure is logged and
        tried again at the next."""
        run = self.first
        while True:
            try:
                raised = await run()
                if raised:
                    log.info("budgets reconciled from the call log: %d spend counters raised",
                             raised)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: try again next interval
                log.warning("budget reconcile failed (%s); retrying in %.0f s",
                            describe_error(exc), interval_s)
            self.done.set()
            run = self.then
            await next_reconcile(interval_s, wake)

    async def started(self, wait_s: float) -> None:
        """Wait for the first reconcile, at most ``wait_s``; past that, log that budgets admit
        against counters that may miss spend until it finishes, and return."""
        try:
            async with asyncio.timeout(wait_s):
                await self.done.wait()
        except TimeoutError:
            log.warning("budgets not reconciled from the call log within %.0f s of starting; "
                        "serving meanwhile: until the reconcile finishes, budgets admit against "
                        "spend counters that may miss what was spent", wait_s)


async def _budgets(engine: AsyncEngine) -> dict[tuple[Scope, str, Period], int]:
    """The counters admissions read, (scope, id, budget period) of every key and team with a
    budget, and each one's budget in nano-dollars."""
    async with engine.connect() as conn:
        keys = (await conn.execute(select(ApiKey.id, ApiKey.budget_period, ApiKey.budget_usd)
                                   .where(ApiKey.budget_usd.is_not(None)))).all()
        teams = (await conn.execute(select(Team.id, Team.budget_period, Team.budget_usd)
                                    .where(Team.budget_usd.is_not(None)))).all()
    return ({("key", id, cast(Period, period)): nano_usd(float(budget or 0))
             for id, period, budget in keys}
            | {("team", id, cast(Period, period)): nano_usd(float(budget or 0))
               for id, period, budget in teams})


async def spend_sums(engine: AsyncEngine, starts: list[datetime | None], *,
                key_id: str | None = None, team_id: str | None = None,
                ) -> list[tuple[str | None, str | None, list[int]]]:
    """Nano-dollars per (key id, team id) since each of ``starts`` (``None``: all time), in
    one pass over the ledger (one key's or one team's rows only, with ``key_id`` or
    ``team_id``)."""
    cost = _days.c.cost_usd
    query = (select(_days.c.key_id, _days.c.team_id,
                    *[func.sum(cost if start is None
                               else case((_days.c.day >= start.date(), cost), else_=0))
                      for start in starts])
             .group_by(_days.c.key_id, _days.c.team_id))
    if key_id is not None:
        query = query.where(_days.c.key_id == key_id)
    if team_id is not None:
        query = query.where(_days.c.team_id == team_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [(key_id or None, team_id or None, [_nano(total or 0) for total in totals])
            for key_id, team_id, *totals in rows]


async def _counted(engine: AsyncEngine) -> tuple[dict[str, str | None], set[str]]:
    """The keys and teams whose spend counters a reconcile raises: those with limits (an
    RPM, TPM or budget), as settles count spend only for them, and of keys only those not
    revoked: each key's current team (``None``: none), and the teams. A key or team without
    limits, revoked or deleted keeps no counter (a counter of all time has no TTL: one per key
    ever used would stay in Redis for good); a budget given later carries its spend from the
    ledger first (``app.limits.carry``)."""
    def limited(table: type[ApiKey] | type[Team]) -> ColumnElement[bool]:
        return or_(table.rpm.is_not(None), table.tpm.is_not(None),
                   table.budget_usd.is_not(None))

    async with engine.connect() as conn:
        keys = (await conn.execute(select(ApiKey.id, ApiKey.team_id).where(
            limited(ApiKey), ApiKey.revoked_at.is_(None)))).all()
        teams = (await conn.execute(select(Team.id).where(limited(Team)))).scalars().all()
    return {key_id: team_id for key_id, team_id in keys}, set(teams)


def _by_tag(spent: list[Spent]) -> dict[str, list[Spent]]:
    """``spent`` by the hash tag of its counters (one RAISE call may only touch one tag's:
    Redis Cluster runs a script on one slot)."""
    tagged: dict[str, list[Spent]] = {}
    for s in spent:
        tagged.setdefault(s.tag, []).append(s)
    return tagged


def _by_team(sums: list[tuple[str | None, str | None, int]]) -> list[tuple[str, int]]:
    teams: dict[str, int] = {}
    for _, team_id, total in sums:
        if team_id is not None:
            teams[team_id] = teams.get(team_id, 0) + total
    return sorted(teams.items())


def _nano(total: Decimal | float | int) -> int:
    return int((Decimal(str(total)) * NANO).to_integral_value(rounding=ROUND_FLOOR))
