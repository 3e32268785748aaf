"""``RedisLimiter``: rate limits and budgets that hold across processes and replicas, decided by
one Lua script per admission (``app.limits.scripts``) on counters in Redis.

Key layout (``{tag}`` is a Redis Cluster hash tag: the team's id, else the key's, so every key an
admission touches lives in one slot and one script can decide them all):

    <prefix>:rl:{<tag>}:<scope>:<id>:req           hash, epoch second -> requests (TTL 62 s)
    <prefix>:rl:{<tag>}:<scope>:<id>:tok           hash, epoch second -> tokens   (TTL 62 s)
    <prefix>:spend-nano:{<tag>}:<scope>:<id>:<period>
                                                   nano-dollars; period day:YYYY-MM-DD
                                                   (TTL to a day past its end),
                                                   month:YYYY-MM (likewise), total
    <prefix>:limits:budget-news                    pub/sub channel (``news_channel``)
    <prefix>:budget:reconcile-turn-nano            whose turn the budget reconcile is
                                                   (``app.limits.budget.reconcile_in_turn``)

(Before nano-dollars, spend counters were micro-dollars under ``<prefix>:spend:`` and the turn
was ``<prefix>:budget:reconcile-turn``: the new names leave those unread, to expire by their
TTLs (a ``total`` one has none: delete ``<prefix>:spend:*`` by hand, if you like), and give
the upgraded gateways a turn of their own, so the first to start fills the new counters from
the call log at once.)

Ids must not contain ``{`` or ``}``. A key that joins or leaves a team moves to another tag: its
windows start empty; its spend counters are carried there at the move
(``app.limits.carry.carry_key_spend``, by ``KeyDirectory.update_key``: the admin API and the
CLI) and raised to its whole spend by every reconcile (``app.limits.budget``). A key or team
given limits where it had none, or another budget period, has its counters carried the same
way: spend is settled into the counter of a bucket's budget period only.

Round trips: one admission round trip is in flight at a time. An admission that finds none
is sent at once; those that arrive while it is out wait for its answer and then go together in
the next (one EVALSHA each, one write on the limiter's own connection, ``app.limits.resp``). At a
few calls a second each admission goes alone and waits for nothing; under load the batches grow
with the load. A caller with a credit (``app.limits.model``) is admitted without a round trip
until it is spent or ends; what is left of it goes back like a settle, after its tally (its
calls' spend and token corrections, summed: one settle a credit, not one a call). A call
admitted in a credit's last ``RENEW_S``, or leaving a quarter of it, asks for the next credit
without waiting: a credit-only ADMIT queued with the settles, whose answer replaces the credit. Only
one admission or renewal of a caller at a time asks for a credit (its concurrent calls go to
Redis without asking). Each round trip takes along the settles (credit returns and renewals
too) queued so far; settles with no admission to ride on go on their own after
``SETTLE_DELAY_S``, or at once when their spend pauses credits (``_hold``). Replies reach the
limiter in the event-loop turn they arrive in (``RespClient.send_then``), and one timer watches
every round trip for lateness. (At a few calls a second, event-loop turns and wake-ups cost more
than the rest of an admission: a settle timer set anew for every call, firing with nothing to
send, woke an idle process once a call; bench/README.md.) A NOSCRIPT reply loads the script and
retries those calls once. The sliding window, its one-second approximation and the budget
overshoot are described in ``app.limits.model``.

Failure: an admission waits for its round trip at most ``timeout_s`` (plus a few event-loop
turns, so that a reply which arrived while this process was busy is still read), and one that
waits behind the round trip in flight no longer than that one: once it is given up on, Redis is
taken as down and the admissions behind it are decided at once (below). A round trip past that
is left to finish on its own, so its connection stays usable (the limiter's client
drops a connection that leaves a round trip unanswered for a second, ``app.limits.resp``);
Redis may then have charged an admission the fail mode refused, which only errs on the safe
side. After a failure, admissions do not ask
Redis for ``DOWN_FOR_S``, nor while ``MAX_ADMITS_IN_FLIGHT`` round trips are unanswered: an
outage costs one timeout a second, not one per request. Whenever Redis is down or too slow, rate
limits admit (``fail_open``) or refuse, and budgets admit (``budget_fail_open``) or refuse, with
reason ``unavailable``; ``admit`` never raises. Settles that fail are dropped and logged
(rate-limited): the reconcile restores the spend they carried. When Redis answers again
(``reconnected``) the budget reconcile runs at once: a Redis that restarted empty lost every
spend counter, and every rate-limit window (those start anew: at most one more window's worth).

(Past 400 lines: the round trip's life, batching, timeouts, fail modes, script reloads, and the
credits that spare round trips, their tallies and the budget news that ends them, is one
mechanism; ``app.limits.resp`` is the wire, ``app.limits.model`` the maths.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import redis.asyncio as aioredis

from app.limits import scripts
from app.limits.headers import RESET_REQUESTS, RESET_TOKENS, Header, go_duration, ratelimit_headers
from app.limits.model import (
    ADMITTED,
    Bucket,
    Decision,
    Period,
    Window,
    combine,
    nano_usd,
    period_left_s,
    period_name,
    spent_nano_usd,
    unavailable,
    uncharged,
)
from app.limits.resp import ReplyError, RespClient, bulk, encode
from app.pubsub import follow

log = logging.getLogger("switchboard.limits")

SETTLE_TIMEOUT_S = 1.0
"""How long loading the scripts may take, and (plus ``timeout_s``) how long ``flush`` waits for
the settles on their way. A batch of settles itself fails when the limiter's client gives up on
its round trip (its ``reply_timeout_s``, 1 s in ``app.resources``)."""
SETTLE_DELAY_S = 0.025
"""How long settles wait to be sent on their own; an admission in the meantime takes them along
in its round trip (from a few calls a second per process on, nearly always: one round trip a
call instead of two). A spend reaches Redis at most this much later, which adds the calls
admitted in that time to a budget's overshoot (``app.limits.model``)."""
CREDIT_S = 30
"""A credit's life: it is charged to the slot this many seconds after the admission that got it
(``credit_life`` in ``app.limits.scripts``), and used for one second less. (10 s gave a key
called every 3 s, 1,000 keys at 300 requests a second, three calls a credit: a third of its
calls still went to Redis.)"""
CREDIT_MAX = 32
"""The most requests a credit holds. (16 gave a key called every second, 1,000 keys at 1,000
requests a second, a renewal and a return every 12 calls; with 32 its credit's life ends
first, at about 23 calls. The bounds that protect other callers are ``CREDIT_SHARE`` and the
window's eighth, not this.)"""
RENEW_S = 6.0
"""A credit used in its last this-many seconds, or down to a quarter of its requests, asks for
the next one without waiting: the ask rides with the settles (a credit-only ADMIT,
``scripts.ADMIT``), and the answer replaces the credit (giving back what is left of it). A
caller that calls at least this often (each of 1,000 keys does at 200 requests a second) then
never waits for Redis after its first call, nor does a busy one that spends its credits."""
CREDIT_SHARE = 256
"""A credit is at most this fraction (1/CREDIT_SHARE) of each of its buckets' limits; the
tallies of a process (what its credits' calls spent, not yet settled) hold at most this fraction
of each budget together: past that, every tally holding that budget's spend is settled."""
MAX_SETTLES_IN_FLIGHT = 64
"""Settle batches waiting on Redis at once; past this, new settles are dropped (and logged)."""
DOWN_FOR_S = 1.0
"""After an admission round trip failed (an error, or no answer in time), admissions are decided
by the fail mode at once, without asking Redis, for this long; then Redis is asked again."""
MAX_ADMITS_IN_FLIGHT = 256
"""Admission round trips unanswered at once (those past their timeout included); past this, new
admissions are decided by the fail mode at once, without asking Redis."""
_LOG_EVERY_S = 10.0
_LATE_TURNS = 3
"""Event-loop turns an admission's round trip gets past its timeout before it is given up: a
reply that arrived while this process was busy (the timer and the socket become ready in the same
turn) is read, not mistaken for a Redis outage."""
_KEYS_CACHED = 100_000
_SPEND_GRACE_S = 86_400
PREFIX = "switchboard"
"""The first part of every limiter key (the call log's keys share it)."""
_Call = tuple[str, bytes, bytes]
"""One EVALSHA, encoded but for its script's digest: the script's source, the command's RESP
array header, and its key count, keys and one ARGV string (``app.limits.scripts``) as bulk
strings."""


def rate_key(prefix: str, bucket: Bucket, kind: str) -> str:
    """The bucket's window of ``kind`` (``req`` or ``tok``)."""
    return f"{prefix}:rl:{{{bucket.tag}}}:{bucket.scope}:{bucket.id}:{kind}"


def spend_key(prefix: str, *, tag: str, scope: str, id: str, period: str) -> str:
    """A spend counter, in nano-dollars (``period`` as ``app.limits.model.period_name`` names
    it)."""
    return f"{prefix}:spend-nano:{{{tag}}}:{scope}:{id}:{period}"


def news_channel(prefix: str) -> str:
    """The pub/sub channel of budget news: a spend counter reached half its budget
    (``scripts.SETTLE``), or a reconcile raised a counter some budget reads
    (``app.limits.budget``)."""
    return f"{prefix}:limits:budget-news"


def spend_ttl_s(period: Period, now: datetime) -> int:
    """The TTL of a spend counter written at ``now``: a day past its period (-1: no TTL)."""
    left = period_left_s(period, now)
    return -1 if left is None else math.ceil(left) + _SPEND_GRACE_S


class RedisLimiter:
    """The ``Limiter`` on Redis (see the module docstring)."""

    def __init__(self, redis: RespClient, *, timeout_s: float, fail_open: bool,
                 budget_fail_open: bool, prefix: str = PREFIX,
                 clock: Callable[[], float] | None = None, credits: bool = False,
                 news: aioredis.Redis | None = None) -> None:
        """``clock``: the time the scripts count with (tests); ``None`` uses Redis's own
        ``TIME``, one clock for every process. Budget periods follow this process's clock.
        ``credits``: ask for admission credits (``app.limits.model``); ``news``: the client
        to follow the budget news with (``news_channel``), without which callers with a
        budget get none."""
        self._redis = redis
        self._timeout_s = timeout_s
        self._fail_open = fail_open
        self._budget_fail_open = budget_fail_open
        self._prefix = prefix
        self._clock = clock
        self._tick: Callable[[], float] = time.monotonic if clock is None else clock
        """The clock a credit's life is measured with: this process's monotonic clock (tests:
        the scripts' clock). The function itself, not a method calling it: a credit's call reads
        it twice (its admission and its headers)."""
        self._admits: list[tuple[_Call, asyncio.Future[list[int] | None]]] = []
        self._settles: list[_Call] = []
        self._settle_timer: asyncio.Handle | None = None
        """Sends the queued settles on their own once ``SETTLE_DELAY_S`` has passed; cancelled
        when an admission takes them along (an idle process is not woken for nothing)."""
        self._settle_soon = False
        """``_settle_timer`` sends the settles in the next event-loop turn (``forget``)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._settles_in_flight = 0
        self._sending_settles: set[asyncio.Future[list[Any]]] = set()
        """Settle batches on their way (``flush`` waits for them)."""
        self._admits_in_flight = 0
        self._in_flight: deque[_RoundTrip] = deque()
        """Admission round trips in the order they were sent (answered ones leave from the
        front), for ``_check_late``."""
        self._late_timer: asyncio.TimerHandle | None = None
        self._sending: _RoundTrip | None = None
        """The admission round trip in flight and not yet given up on: admissions wait for it
        to be answered, then go together (see the module docstring)."""
        self._down_until = 0.0
        """Until then (monotonic) Redis is taken as down: see ``DOWN_FOR_S``."""
        self._logged_at = -math.inf
        self._calls: dict[int, _Prepared] = {}
        self._calls_day = -1
        self._credits_on = credits
        self._credits: dict[int, _Credit] = {}
        """Each caller's credit, by the identity of its bucket tuple (as ``_calls``)."""
        self._sweeper: asyncio.TimerHandle | None = None
        """Returns what is left of the credits that ended (their callers went quiet)."""
        self._asking: set[int] = set()
        """The callers (by bucket tuple identity) whose admission or renewal in flight asks for
        a credit."""
        self._renewing: dict[int, _Renewal] = {}
        """The renewals queued or on their way, by the identity of their call."""
        self._held: dict[str, int] = {}
        """Nano-dollars of this process's spend that Redis has not counted yet, per bucket with
        a budget (``_Prepared.caps``): what the tallies hold, and the settles carrying spend
        that are queued or on their way (with credits on)."""
        self._owed: dict[int, tuple[_Call, tuple[tuple[str, int], ...], int]] = {}
        """The settles carrying spend counted in ``_held``, by their call's identity (the call
        held, so its identity stays its own), with their buckets' caps and nano-dollars:
        taken out of ``_held`` when answered or dropped."""
        self._flushes = 0
        """How many times ``flush`` gave every credit back: a renewal asked for before the
        last is given back when granted."""
        self._forgotten: weakref.WeakSet[_Prepared] = weakref.WeakSet()
        """The callers ``forget`` was told of: a credit they asked for before (or ask for
        after, a call that authenticated before the change) is given back when granted. Weak:
        each stays as long as ``_calls`` or an admission on its way holds it."""
        self._heads = {source: bulk(b"EVALSHA") + bulk(scripts.sha1(source).encode())
                       for source in (scripts.ADMIT, scripts.SETTLE, scripts.RELEASE)}
        """Each script's EVALSHA and digest, encoded once."""
        self._news = news if credits else None
        self._channel = bulk(news_channel(prefix).encode())
        self.hearing = asyncio.Event()
        """Set while this process follows the budget news: only then are callers with a budget
        granted credits, or admitted from them."""
        self._news_at = -math.inf
        """When (``_tick``) budget news last came: a credit asked for before then is given
        back at once, for its grant may have been decided before the news."""
        self._follower: asyncio.Task[None] | None = None
        self.reconnected = asyncio.Event()
        """Set when Redis answers again after this process lost it: the budget news
        subscription came back, or an admission round trip was answered after one failed.
        Redis may have restarted empty, its spend counters with it, so the budget reconcile
        runs at once (``app.limits.budget.next_reconcile``), which also clears it."""

    async def start(self) -> None:
        """Load the scripts (best effort: a Redis that is down now is retried per call), and
        start following the budget news."""
        if self._news is not None and self._follower is None:
            self._follower = asyncio.get_running_loop().create_task(follow(
                self._news, news_channel(self._prefix), what="budget news",
                on_message=self._heard, on_subscribed=self._subscribed,
                subscribed=self.hearing, on_reconnect=self._resubscribed),
                name="budget-news-subscriber")
        try:
            async with asyncio.timeout(max(self._timeout_s, SETTLE_TIMEOUT_S)):
                for reply in await self._redis.execute(
                        [("SCRIPT", "LOAD", source) for source in self._heads]):
                    if isinstance(reply, ReplyError):
                        raise reply
        except (ReplyError, OSError, TimeoutError) as exc:
            self._warn("could not load the limiter's scripts", exc)

    async def aclose(self) -> None:
        """Stop following the budget news, send the settles still queued and wait (bounded)
        for them; the clients stay open (their owner closes them)."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
            self.hearing.clear()
        await self.flush()

    async def flush(self) -> None:
        """Return every credit, send the settles queued so far and wait (bounded) for every
        batch in flight. A renewal on its way is given back when granted: if that happens
        while waiting, its return is sent and waited for too."""
        self._flushes += 1
        for credit in list(self._credits.values()):
            self._release(credit)
        for _ in range(2):
            if self._settles:
                self._flush_settles()
            waiting = [*self._tasks, *self._sending_settles]
            if not waiting:
                return
            await asyncio.wait(waiting, timeout=SETTLE_TIMEOUT_S + self._timeout_s)

    def forget(self, buckets: Sequence[Bucket]) -> None:
        """The caller of ``buckets`` has new ones (its key or team changed, and
        ``app.stages.authenticate`` built its caller anew): its credit is given back now, not
        when it would have ended, and its tally settled, at once, ahead of any admission of the
        new buckets (one connection: Redis decides those with this spend counted). Without
        this, a lowered budget admitted one more call in each process whose tally held
        spend the new budget had no room for. Not a call's path: once per key change."""
        if not buckets:
            return
        known = self._calls.get(id(buckets))
        if known is not None and known.buckets is buckets:
            self._forgotten.add(known)
        held = self._credits.get(id(buckets))
        if held is not None and held.known.buckets is buckets:
            self._forgotten.add(held.known)
            self._release(held)
        timer = self._settle_timer
        if timer is None or self._settle_soon:
            return
        # Sent in the next event-loop turn: a change of a team (or of the whole key cache)
        # forgets many callers at once, whose settles go as one batch. (Its own flag, not the
        # timer's ``when()``: uvloop's handle of a ``call_soon`` has none.)
        timer.cancel()
        self._settle_timer = asyncio.get_running_loop().call_soon(self._flush_settles)
        self._settle_soon = True

    def admit_now(self, buckets: Sequence[Bucket], tokens: int) -> Decision | None:
        """The call admitted from the caller's credit, if it has one that holds it (an ended
        or spent credit is given back); ``None``: ``admit`` must ask Redis."""
        if not buckets:
            return ADMITTED
        held = self._credits.get(id(buckets))
        if held is None or held.known.buckets is not buckets:
            return None
        moment = self._tick()
        if moment < held.until and held.requests > 0 and held.tokens >= tokens and (
                not held.paused) and (not held.known.budgeted or self.hearing.is_set()):
            held.requests -= 1
            held.tokens -= max(0, tokens)
            if not held.renewing and (moment >= held.until - RENEW_S
                                      or held.requests <= held.renew_below):
                self._renew(held, tokens, moment)
            return held.decision
        if held.paused and moment < held.until and held.requests > 0 and self.hearing.is_set():
            return None  # kept: it admits again once Redis has counted the spend
        self._release(held)
        return None

    async def admit(self, buckets: Sequence[Bucket], tokens: int) -> Decision:
        """Charge one request and ``tokens`` to every bucket, or to none; never raises."""
        decision = self.admit_now(buckets, tokens)
        if decision is not None:
            return decision
        now = self._now()
        known = self._prepared(buckets, now)
        asking = self._asking
        asked = known.credit_size(tokens) if self._credits_on and id(buckets) not in asking and (
            id(buckets) not in self._credits) and (
            not known.budgeted or self.hearing.is_set()) else 0  # a credit held is paused
        sent = 0.0
        if asked:  # one credit asked for at a time: concurrent calls would replace each other's
            sent = self._tick()
            asking.add(id(buckets))
        future: asyncio.Future[list[int] | None] = asyncio.get_running_loop().create_future()
        self._admits.append((known.admit_call(self._now_ms(now), tokens, asked), future))
        if self._sending is None:  # else it goes with the others when that one is answered
            self._flush_admits()
        try:
            raw = await future
        finally:
            if asked:
                asking.discard(id(buckets))
        if raw is None:
            return unavailable(buckets, fail_open=self._fail_open,
                               budget_fail_open=self._budget_fail_open)
        decision = _decision(buckets, raw, now, tokens)
        if asked and decision.admitted and len(raw) == 5 + 6 * len(buckets) and raw[-2] > 0:
            self._grant(known, raw[-2], raw[-1], max(0, tokens), sent, decision)
        return decision

    async def peek(self, buckets: Sequence[Bucket]) -> Decision | None:
        """The buckets' windows as they stand, charging nothing: an admission of no call, no
        tokens and no credit (``scripts.ADMIT`` charges nothing then), in the queue with the
        others; ``None`` when Redis does not answer or a budget is spent."""
        now = self._now()
        future: asyncio.Future[list[int] | None] = asyncio.get_running_loop().create_future()
        self._admits.append((self._prepared(buckets, now).admit_call(
            self._now_ms(now), 0, 0, charge=False), future))
        if self._sending is None:
            self._flush_admits()
        raw = await future
        if raw is None or raw[0] == 2:
            return None
        requests, tokens = _windows(buckets, raw)
        return combine(buckets, requests, tokens, admitted=True, reason="ok")

    def settle(self, buckets: Sequence[Bucket], reserved: int, used: int, cost_usd: float,
               *, elapsed_s: float | None = None, slot: int | None = None) -> None:
        """Queue a TPM correction and the spend of one call; sent with the next admission, or
        on its own within ``SETTLE_DELAY_S``. A call of the caller's credit (``slot`` is the
        credit's) that used no more tokens than its estimate, or has no TPM limit, is added to
        the credit's tally instead (``app.limits.model``). Spend that takes a budget's
        uncounted spend in this process past its cap pauses every credit of that budget and
        goes at once (``_hold``)."""
        cost = spent_nano_usd(cost_usd)
        delta = used - reserved
        if not buckets or (cost <= 0 and delta == 0):
            return
        held = self._credits.get(id(buckets))
        if held is not None and held.slot == slot and held.known.buckets is buckets and (
                delta <= 0 or held.known.credit_tokens is None):
            held.spent += cost
            held.over += delta
            if cost > 0 and held.known.caps:
                self._hold(held.known.caps, cost)
            return
        if cost <= 0 and all(b.tpm is None for b in buckets):
            return
        self._queue_settle(buckets, delta, cost, slot,
                           -1 if elapsed_s is None else max(0, round(elapsed_s * 1000)))

    def _hold(self, caps: tuple[tuple[str, int], ...], cost: int) -> None:
        """Count ``cost`` as this process's spend not yet in Redis for each budgeted bucket. A
        bucket past its cap (1/CREDIT_SHARE of its budget) has every credit holding its spend
        paused and its tally settled, and the settles go at once: a credit admits no call
        while spend its calls cannot see is material to its budget (``app.limits.model``)."""
        held = self._held
        full: list[str] = []
        for name, cap in caps:
            total = held.get(name, 0) + cost
            held[name] = total
            if total > cap:
                full.append(name)
        if not full:
            return
        for credit in self._credits.values():  # settling a tally leaves it in place
            if any(n in full for n, _ in credit.known.caps):
                credit.paused = True
                if credit.spent > 0 or credit.over != 0:
                    self._send_tally(credit)
        if self._settles:
            self._flush_settles()

    def _unhold(self, caps: tuple[tuple[str, int], ...], cost: int) -> None:
        """``cost`` of each of these buckets is counted in Redis now (or was lost): a credit
        paused for it admits again once none of its budgets is past its cap."""
        held = self._held
        freed = False
        for name, cap in caps:
            before = held.get(name, 0)
            left = before - cost
            if left > 0:
                held[name] = left
            else:
                held.pop(name, None)
            freed = freed or left <= cap < before
        if freed:
            for credit in self._credits.values():
                if credit.paused and not self._over(credit.known.caps):
                    credit.paused = False

    def _over(self, caps: tuple[tuple[str, int], ...]) -> bool:
        """Some budget of ``caps`` has more of this process's spend not yet in Redis than its
        cap."""
        held = self._held
        return bool(held) and any(held.get(name, 0) > cap for name, cap in caps)

    def _queue_settle(self, buckets: Sequence[Bucket], delta: int, cost: int, slot: int | None,
                      elapsed_ms: int, *, tally: bool = False) -> None:
        """Queue a SETTLE; with credits on, spend of a bucket with a budget is counted in
        ``_held`` until it is answered (a ``tally``'s is counted there already)."""
        now = self._now()
        known = self._prepared(buckets, now)
        body = known.settle_keys + bulk(b"%d,%d,%d,%d,%d%s" % (
            self._now_ms(now), delta, elapsed_ms, max(0, cost), -1 if slot is None else slot,
            known.settle_args)) + self._channel
        call = (scripts.SETTLE, known.settle_size, body)
        queued = self._queue(call)
        if cost <= 0 or not known.caps or not self._credits_on:
            return
        if not queued:
            if tally:
                self._unhold(known.caps, cost)
            return
        self._owed[id(call)] = (call, known.caps, cost)
        if not tally:
            self._hold(known.caps, cost)

    def _send_tally(self, credit: _Credit) -> None:
        """Queue the settle of what ``credit``'s calls used and spent so far (one SETTLE of
        their sums, to the credit's slot), and start its tally anew (its spend stays counted
        in ``_held`` until the settle is answered)."""
        spent, over = credit.spent, credit.over
        credit.spent = credit.over = 0
        if spent > 0 or over != 0:
            self._queue_settle(credit.known.buckets, over, spent, credit.slot, -1, tally=True)

    def _queue(self, call: _Call) -> bool:
        """Queue a settle, a credit's return or a renewal: sent with the next admission, or on
        its own within ``SETTLE_DELAY_S``. False: not queued (no event loop)."""
        if self._settle_timer is None:
            try:
                self._settle_timer = asyncio.get_running_loop().call_later(
                    SETTLE_DELAY_S, self._flush_settles)
            except RuntimeError:  # no loop (shutdown): nothing can send it
                return False
        self._settles.append(call)
        return True

    def _renew(self, held: _Credit, tokens: int, moment: float) -> None:
        """Ask for the caller's next credit (see ``RENEW_S``), once per credit, ``tokens`` a
        call, unless one of its admissions is asking already."""
        held.renewing = True
        known = held.known
        asked = known.credit_size(tokens)
        if not asked or id(known.buckets) in self._asking:
            return
        call = known.admit_call(self._now_ms(self._now()), tokens, asked, charge=False)
        if self._queue(call):
            self._asking.add(id(known.buckets))
            self._renewing[id(call)] = _Renewal(call, known, max(0, tokens), moment,
                                                self._flushes)

    def _renewed(self, call: _Call, reply: object) -> None:
        """A renewal's answer: the new credit replaces the caller's (if granted)."""
        renewal = self._renewing.pop(id(call), None)
        if renewal is None:
            return
        known = renewal.known
        self._asking.discard(id(known.buckets))
        raw = _numbers(reply)
        if raw is None:
            self._warn("credit renewal failed", reply if isinstance(reply, Exception)
                       else RuntimeError("no answer"))
        elif raw[0] == 0 and len(raw) == 5 + 6 * len(known.buckets) and raw[-2] > 0:
            self._grant(known, raw[-2], raw[-1], renewal.tokens, renewal.sent,
                        _admitted(known.buckets, raw), stale=renewal.flushes != self._flushes)

    def _grant(self, known: _Prepared, requests: int, slot: int, tokens: int, sent: float,
               decision: Decision, *, stale: bool = False) -> None:
        """Keep the credit an admission got (a caller's earlier one, if any, is returned); it
        is given back at once if ``stale`` (asked for before a ``flush``) or its caller was
        forgotten (``forget``), and a caller with a budget's if budget news came since it was
        asked for, or this process is not following the news now."""
        key = id(known.buckets)
        old = self._credits.get(key)
        if old is not None:
            self._release(old)
        credit = _Credit(known, slot, sent + CREDIT_S - 1, requests, requests * tokens,
                         _CreditDecision(decision, slot, self._tick(), self._tick))
        credit.paused = self._over(known.caps)
        if stale or known in self._forgotten or (known.budgeted and (
                self._news_at >= sent or not self.hearing.is_set())):
            self._release(credit)
            return
        self._credits[key] = credit
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(CREDIT_S, self._sweep)

    def _release(self, credit: _Credit) -> None:
        """Forget ``credit``, settle its tally and give back what is left of it."""
        key = id(credit.known.buckets)
        if self._credits.get(key) is credit:
            del self._credits[key]
        self._send_tally(credit)
        if credit.requests > 0 or credit.tokens > 0:
            self._queue((scripts.RELEASE, credit.known.release_size, credit.known.release_keys
                         + bulk(b"%d,%d,%d" % (credit.slot, max(0, credit.requests),
                                               max(0, credit.tokens)))))
            credit.requests = credit.tokens = 0

    def _heard(self, _data: object) -> None:
        """Budget news: a caller's spend reached half its budget, or a reconcile raised spend
        counters. Every credit of a caller with a budget is given back."""
        self._news_at = self._tick()
        for credit in [c for c in self._credits.values() if c.known.budgeted]:
            self._release(credit)

    async def _subscribed(self, lost: bool) -> None:
        """Subscribed: news may have been missed before (``lost``: Redis was lost
        meanwhile)."""
        if lost:
            await self._resubscribed(None)
        else:
            self._heard(None)

    async def _resubscribed(self, _connection: object) -> None:
        """Subscribed again after losing Redis, or the subscription's connection was made
        anew: news may have been missed, and Redis may have lost its counters."""
        self._heard(None)
        self.reconnected.set()

    def _sweep(self) -> None:
        """Return the credits that have ended; look again in ``CREDIT_S`` while any are held."""
        self._sweeper = None
        moment = self._tick()
        for credit in [c for c in self._credits.values() if moment >= c.until]:
            self._release(credit)
        if self._credits:
            self._sweeper = asyncio.get_running_loop().call_later(CREDIT_S, self._sweep)

    def _flush_admits(self) -> None:
        """Send the admissions queued so far, with the settles queued so far riding along, as
        one round trip, answered by ``_answered`` (callbacks, not a task: this runs once per
        round trip and is most of the limiter's own CPU)."""
        batch, self._admits = self._admits, []
        settles = self._take_settles()
        skip: BaseException | None = None
        if time.monotonic() < self._down_until:
            skip = _MarkedDown("Redis failed less than a second ago")
        elif self._admits_in_flight >= MAX_ADMITS_IN_FLIGHT:
            skip = TimeoutError(f"{self._admits_in_flight} admissions still unanswered")
        if skip is not None:  # decided without asking Redis; the settles go on their own
            self._send_settles(settles)
            self._give_up(batch, [], skip)
            return
        trip = _RoundTrip(settles + [call for call, _ in batch], batch, len(settles),
                          time.monotonic() + self._timeout_s)
        self._admits_in_flight += 1
        self._sending = trip
        self._in_flight.append(trip)
        if self._late_timer is None:
            self._late_timer = asyncio.get_running_loop().call_later(
                self._timeout_s, self._check_late)
        self._redis.send_then(self._encoded(trip.calls), len(trip.calls),
                              partial(self._answered, trip))

    def _flush_settles(self) -> None:
        self._send_settles(self._take_settles())

    def _take_settles(self) -> list[_Call]:
        """The settles queued so far (their timer is stopped: they are on their way)."""
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
            self._settle_soon = False
        settles, self._settles = self._settles, []
        return settles

    def _send_settles(self, batch: list[_Call]) -> None:
        if not batch:
            return
        if self._settles_in_flight >= MAX_SETTLES_IN_FLIGHT:
            self._warn(f"dropped {len(batch)} settles", RuntimeError("Redis too slow"))
            self._dropped(batch)
            return
        # A future and a callback, not a task: this runs every SETTLE_DELAY_S while calls
        # settle on their own (admitted from credits). The client answers within its reply
        # timeout, or fails the round trip.
        self._settles_in_flight += 1
        sent = self._redis.send(self._encoded(batch), len(batch))
        self._sending_settles.add(sent)
        sent.add_done_callback(partial(self._settles_answered, batch))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _answered(self, trip: _RoundTrip, result: list[Any] | BaseException, *,
                   retried: bool = False) -> None:
        if not retried and not isinstance(result, BaseException) and _missing(result):
            # Redis lost the scripts (a restart, SCRIPT FLUSH, a failover): load them and
            # send the calls that did not run again, then come back here (once).
            again = self._spawn(self._run_missing(trip.calls, result))
            again.add_done_callback(lambda done: self._answered(
                trip, _outcome(done), retried=True))
            return
        trip.answered = True
        self._admits_in_flight -= 1
        in_flight = self._in_flight
        while in_flight and in_flight[0].answered:
            in_flight.popleft()
        if isinstance(result, BaseException):
            self._give_up(trip.batch, trip.calls[:trip.settles], result)
        else:
            self._settled(trip.calls[:trip.settles], result[:trip.settles])
            if self._down_until:  # answered again after a failure: it may have restarted
                self._down_until = 0.0
                self.reconnected.set()
            for (_, future), answer in zip(trip.batch, result[trip.settles:], strict=True):
                if isinstance(answer, Exception):
                    self._warn("admission script failed", answer)
                if not future.done():  # done: given up on as late, decided by the fail mode
                    future.set_result(_numbers(answer))
        self._next(trip)

    def _next(self, trip: _RoundTrip) -> None:
        """``trip`` is answered or given up on: the admissions that waited for it go now."""
        if self._sending is trip:
            self._sending = None
            if self._admits:
                self._flush_admits()

    def _check_late(self) -> None:
        """The timer of the oldest round trip in flight: those past their time get a few more
        event-loop turns (``_late``), then it is set for the next one. One timer for all round
        trips, left running when they are answered: at a few calls a second it fires about
        once per ``timeout_s``, where a timer set and cancelled per round trip was work on
        every call."""
        self._late_timer = None
        in_flight = self._in_flight
        while in_flight and in_flight[0].answered:
            in_flight.popleft()
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        for trip in in_flight:
            if trip.deadline > now:
                self._late_timer = loop.call_later(trip.deadline - now, self._check_late)
                return
            if not trip.answered and not trip.late:
                trip.late = True
                loop.call_soon(self._late, trip, _LATE_TURNS)

    def _late(self, trip: _RoundTrip, turns: int) -> None:
        """The round trip's time is up: a few more event-loop turns for a reply that arrived
        while this process was busy, then its admissions are decided by the fail mode (the
        round trip is left to finish: cancelling it would drop its connection)."""
        if trip.answered:
            return
        if turns > 0:
            asyncio.get_running_loop().call_soon(self._late, trip, turns - 1)
            return
        self._give_up(trip.batch, [], TimeoutError(  # its settles were sent: they may still land
            f"no answer within {self._timeout_s * 1000:.0f} ms"))
        self._next(trip)

    def _give_up(self, batch: list[tuple[_Call, asyncio.Future[list[int] | None]]],
                 settles: list[_Call], exc: BaseException) -> None:
        """Decide ``batch`` by the fail mode (an answer of ``None``); Redis is taken as down
        for ``DOWN_FOR_S`` unless it already was."""
        if not isinstance(exc, _MarkedDown):
            self._down_until = time.monotonic() + DOWN_FOR_S
        self._warn("rate limiter unavailable"
                   + (f" ({len(settles)} settles dropped)" if settles else ""), exc)
        self._dropped(settles)
        for _, future in batch:
            if not future.done():
                future.set_result(None)

    def _settles_answered(self, batch: list[_Call], sent: asyncio.Future[list[Any]], *,
                          retried: bool = False) -> None:
        """A batch of settles is answered (or failed); NOSCRIPT replies are loaded and sent
        again, once."""
        self._sending_settles.discard(sent)
        result = _outcome(sent)
        if not retried and not isinstance(result, BaseException) and _missing(result):
            again = self._spawn(self._run_missing(batch, result))
            again.add_done_callback(partial(self._settles_answered, batch, retried=True))
            return
        self._settles_in_flight -= 1
        if isinstance(result, BaseException):
            self._warn(f"dropped {len(batch)} settles", result)
            self._dropped(batch)
        else:
            self._settled(batch, result)

    async def _run_missing(self, calls: list[_Call], results: list[Any]) -> list[Any]:
        """``results`` with the calls answered NOSCRIPT loaded and run again (one round
        trip: the scripts, then those calls)."""
        missing = _missing(results)
        sources = list(dict.fromkeys(calls[i][0] for i in missing))
        again = await self._redis.send(
            encode([("SCRIPT", "LOAD", source) for source in sources])
            + self._encoded([calls[i] for i in missing]), len(sources) + len(missing))
        results = list(results)
        for i, result in zip(missing, again[len(sources):], strict=True):
            results[i] = result
        return results

    def _settled(self, calls: list[_Call], results: list[Any]) -> None:
        """The answers to a batch of settles, credit returns and renewals. A settle that took a
        spend counter to half its budget (it published budget news) is news heard here at
        once: the credits it ends admit nothing while the news is on its way."""
        renewing, owed = self._renewing, self._owed
        crossed = False
        for call, result in zip(calls, results, strict=True):
            if renewing and id(call) in renewing:
                self._renewed(call, result)
            elif isinstance(result, Exception):
                self._warn("settle script failed", result)
            elif result == 2:
                crossed = True
            if owed and id(call) in owed:
                _, caps, cost = owed.pop(id(call))
                self._unhold(caps, cost)
        if crossed:
            self._heard(None)

    def _dropped(self, calls: list[_Call]) -> None:
        """A batch of settles that will not be answered: its renewals asked for nothing, and
        its spend is left to the reconcile (the credits it paused admit again)."""
        if self._renewing or self._owed:
            for call in calls:
                self._renewed(call, None)
                spend = self._owed.pop(id(call), None)
                if spend is not None:
                    self._unhold(spend[1], spend[2])

    def _encoded(self, calls: list[_Call]) -> bytes:
        heads = self._heads
        return b"".join([part for source, size, body in calls
                         for part in (size, heads[source], body)])

    def _now(self) -> float:
        return time.time() if self._clock is None else self._clock()

    def _now_ms(self, now: float) -> int:
        return 0 if self._clock is None else round(now * 1000)

    def _prepared(self, buckets: Sequence[Bucket], now: float) -> _Prepared:
        """What every admission and settle of ``buckets`` sends alike, encoded once for the UTC
        day: a caller's buckets are one tuple for as long as its key is cached
        (``app.stages.authenticate``), so the cache is keyed by the tuple's identity, and
        holds the tuple (its id cannot be reused meanwhile). Building this costs more than
        the rest of an admission's Python."""
        day = int(now // 86_400)
        if day != self._calls_day or len(self._calls) > _KEYS_CACHED:
            self._calls_day = day
            self._calls.clear()
        known = self._calls.get(id(buckets))
        if known is not None and known.buckets is buckets:
            return known
        moment = datetime.fromtimestamp(now, UTC)
        admit: list[bytes] = [bulk(b"%d" % (3 * len(buckets)))]
        settle: list[bytes] = [bulk(b"%d" % (2 * len(buckets)))]
        release: list[bytes] = [bulk(b"%d" % (2 * len(buckets)))]
        budgeted = any(b.budget_usd is not None for b in buckets)
        limits: list[int] = []
        settle_args: list[int] = []
        for b in buckets:
            req, tok = (bulk(rate_key(self._prefix, b, kind).encode()) for kind in ("req", "tok"))
            spend = bulk(spend_key(self._prefix, tag=b.tag, scope=b.scope, id=b.id,
                                   period=period_name(b.budget_period, moment)).encode())
            admit += [req, tok, spend]
            settle += [tok, spend]
            release += [req, tok]
            limits += [_or_none(b.rpm), _or_none(b.tpm),
                       -1 if b.budget_usd is None else nano_usd(b.budget_usd)]
            settle_args += [0 if b.tpm is None else 1, spend_ttl_s(b.budget_period, moment),
                            -1 if b.budget_usd is None else nano_usd(b.budget_usd)]
        known = _Prepared(
            buckets=buckets, admit_size=b"*%d\r\n" % (4 + 3 * len(buckets)),
            admit_keys=b"".join(admit), limits="".join(f",{n}" for n in limits).encode(),
            settle_size=b"*%d\r\n" % (5 + 2 * len(buckets)), settle_keys=b"".join(settle),
            settle_args="".join(f",{n}" for n in settle_args).encode(),
            release_size=b"*%d\r\n" % (4 + 2 * len(buckets)), release_keys=b"".join(release),
            budgeted=budgeted, credit_requests=min(
                [CREDIT_MAX] + [b.rpm // CREDIT_SHARE for b in buckets if b.rpm is not None]),
            credit_tokens=min((b.tpm // CREDIT_SHARE for b in buckets if b.tpm is not None),
                              default=None),
            caps=tuple((f"{b.scope}:{b.id}", nano_usd(b.budget_usd) // CREDIT_SHARE)
                       for b in buckets if b.budget_usd is not None))
        if isinstance(buckets, tuple):  # a list may change in place: built anew each time
            self._calls[id(buckets)] = known
        return known

    def _warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:  # Redis down is many calls: one line per 10 s
            self._logged_at = now
            log.warning("%s: %s", what, type(exc).__name__)


class _RoundTrip:
    """One admission round trip: its calls (the settles riding along first), the admissions'
    futures, and when it is late."""

    __slots__ = ("answered", "batch", "calls", "deadline", "late", "settles")

    def __init__(self, calls: list[_Call],
                 batch: list[tuple[_Call, asyncio.Future[list[int] | None]]], settles: int,
                 deadline: float) -> None:
        self.calls = calls
        self.batch = batch
        self.settles = settles
        """How many of ``calls`` are settles."""
        self.deadline = deadline
        self.answered = False
        self.late = False


class _Credit:
    """A caller's admission credit: requests and tokens charged ahead to ``slot``, for this
    process to admit the caller's calls with until ``until`` (``RedisLimiter._tick``)."""

    __slots__ = ("decision", "known", "over", "paused", "renew_below", "renewing", "requests",
                 "slot", "spent", "tokens", "until")

    def __init__(self, known: _Prepared, slot: int, until: float, requests: int, tokens: int,
                 decision: _CreditDecision) -> None:
        self.known = known
        self.slot = slot
        self.until = until
        self.requests = requests
        self.tokens = tokens
        self.decision = decision
        """The decision of every call it admits."""
        self.renewing = False
        """Its renewal was asked for (``RENEW_S``): once per credit."""
        self.renew_below = requests // 4
        """Its renewal is asked for when no more requests than this are left."""
        self.spent = 0
        """The tally: nano-dollars its calls spent, not yet settled."""
        self.over = 0
        """The tally: tokens its calls used beyond their estimates, summed (never positive
        while the caller has a TPM limit: a call that used more settles on its own), not yet
        settled."""
        self.paused = False
        """Admits no call while this process holds more spend of one of its budgets than Redis
        has counted than that budget's cap (``RedisLimiter._hold``)."""


class _CreditDecision(Decision):
    """The decision every call a credit admits shares: the windows of the admission that got
    the credit (they count the whole credit, so their limits and remaining counts hold for each
    of its calls), with the resets aged to when ``headers`` is asked for (the admission's own
    event-loop turn). The headers are encoded once per whole second of the resets (they are
    written to the second, ``app.limits.headers``), and the calls in between share that list:
    a keyed call's Decision and headers, built anew each time, cost more than taking the call
    from the credit."""

    __slots__ = ("_at", "_fresh_until", "_requests", "_tick", "_tokens", "_written")

    def __init__(self, granted: Decision, slot: int, at: float,
                 tick: Callable[[], float]) -> None:
        super().__init__(True, "ok", None, 0.0, granted.limit_requests,
                         granted.remaining_requests, granted.reset_requests_s,
                         granted.limit_tokens, granted.remaining_tokens,
                         granted.reset_tokens_s, slot)
        self._at = at
        self._tick = tick
        self._requests = ratelimit_headers(granted.limit_requests, granted.remaining_requests,
                                           0.0, None, None, None, False)[:2]
        """The request limit's and remaining count's headers (none without an RPM limit)."""
        self._tokens = ratelimit_headers(None, None, None, granted.limit_tokens,
                                         granted.remaining_tokens, 0.0, False)[:2]
        self._written: list[Header] = []
        self._fresh_until = -math.inf
        """``_tick`` time until which ``_written`` holds: when a reset's whole second changes."""

    def headers(self) -> list[Header]:
        """The credit's headers now; the list is shared until a reset changes (read it, do
        not change it)."""
        now = self._tick()
        if now < self._fresh_until:
            return self._written
        gone = now - self._at
        out: list[Header] = []
        fresh = math.inf
        if self._requests:
            left = (self.reset_requests_s or 0.0) - gone
            out += self._requests
            out.append((RESET_REQUESTS, go_duration(left)))
            fresh = _next_second(left)
        if self._tokens:
            left = (self.reset_tokens_s or 0.0) - gone
            out += self._tokens
            out.append((RESET_TOKENS, go_duration(left)))
            fresh = min(fresh, _next_second(left))
        self._written, self._fresh_until = out, now + fresh
        return out


def _next_second(left: float) -> float:
    """Seconds until a reset ``left`` seconds away is written as one second less
    (``go_duration`` rounds up); never, once it is ``0s``."""
    if left <= 0:
        return math.inf
    return left - (math.ceil(left) - 1)


@dataclass(frozen=True, slots=True)
class _Renewal:
    """A credit-only ADMIT on its way (``RedisLimiter._renew``): the call (held, so its identity
    stays its own), the caller, each call's tokens, when it was asked for, and
    ``RedisLimiter._flushes`` then."""

    call: _Call
    known: _Prepared
    tokens: int
    sent: float
    flushes: int


def _outcome(done: asyncio.Future[list[Any]]) -> list[Any] | BaseException:
    if done.cancelled():
        return TimeoutError("round trip cancelled")
    return done.exception() or done.result()


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class _Prepared:
    """One tuple of buckets' share of its ADMIT and SETTLE calls, encoded as ``RespClient``
    sends them, for one UTC day (``RedisLimiter._prepared``). Compared and hashed by identity,
    as its tuple is (``RedisLimiter._forgotten``: a caller's new buckets may equal its old
    ones)."""

    buckets: Sequence[Bucket]
    admit_size: bytes
    """ADMIT's RESP array header."""
    admit_keys: bytes
    """Its key count and keys: per bucket its request window, token window and spend
    counter."""
    limits: bytes
    """The end of its ARGV string: per bucket ``,rpm,tpm,budget`` (``-1``: none)."""
    settle_size: bytes
    settle_keys: bytes
    """SETTLE's key count and keys: per bucket its token window and spend counter."""
    settle_args: bytes
    """The end of its ARGV string: per bucket ``,1`` if it has a TPM limit else ``,0``, then
    its spend counter's TTL in seconds (``-1``: none), as of when this was built: a day past
    the budget period's end then, so a settle later that day sets a TTL that much longer
    (the counter outlives its period by up to two days instead of one), then its budget in
    nano-dollars (``-1``: none)."""
    release_size: bytes
    release_keys: bytes
    """RELEASE's key count and keys: per bucket its request window and token window."""
    budgeted: bool
    """Some bucket has a budget: credits only while following the budget news."""
    credit_requests: int
    """The most requests a credit may hold: ``CREDIT_MAX``, at most ``1/CREDIT_SHARE`` of every
    RPM limit."""
    credit_tokens: int | None
    """The most tokens a credit may hold: ``1/CREDIT_SHARE`` of the smallest TPM limit
    (``None``: no TPM limit)."""
    caps: tuple[tuple[str, int], ...]
    """Per bucket with a budget, its name (``scope:id``) and the most nano-dollars of its spend
    this process's tallies may hold together: ``1/CREDIT_SHARE`` of its budget."""

    def admit_call(self, now_ms: int, tokens: int, asked: int, *, charge: bool = True) -> _Call:
        """An ADMIT of one call of ``tokens`` asking for a credit of ``asked`` requests (0:
        none); ``charge=False``: a renewal, charging no call (``scripts.ADMIT``)."""
        return (scripts.ADMIT, self.admit_size, self.admit_keys + bulk(b"%d,%d%s,%d%s" % (
            now_ms, max(0, tokens), self.limits, asked, b"" if charge else b",0")))

    def credit_size(self, tokens: int) -> int:
        """The credit to ask for with an admission of ``tokens`` (0: none)."""
        if self.credit_tokens is None:
            return self.credit_requests
        return min(self.credit_requests, self.credit_tokens // max(1, tokens))


def _missing(results: list[Any]) -> list[int]:
    """The calls Redis answered NOSCRIPT."""
    return [i for i, r in enumerate(results) if isinstance(r, ReplyError) and r.code == "NOSCRIPT"]


class _MarkedDown(Exception):
    """An admission not sent: Redis failed moments ago (``DOWN_FOR_S``)."""


def _numbers(reply: object) -> list[int] | None:
    """The integers of a script's comma-separated reply (``None`` for an error or nothing)."""
    if isinstance(reply, bytes):
        return list(map(int, reply.split(b",")))
    if isinstance(reply, str):
        return list(map(int, reply.split(",")))
    return None


def _or_none(limit: int | None) -> int:
    return -1 if limit is None else limit


def _decision(buckets: Sequence[Bucket], raw: list[int], now: float, tokens: int) -> Decision:
    """The decision an ADMIT reply for a call of ``tokens`` carries."""
    status, index = raw[0], raw[1]
    if status == 0:
        return _admitted(buckets, raw)
    if status == 2:
        left = period_left_s(buckets[index - 1].budget_period, datetime.fromtimestamp(now, UTC))
        return combine(buckets, [], [], admitted=False, reason="budget", refused_by=index - 1,
                       retry_s=0.0 if left is None else left)
    requests, charged = _windows(buckets, raw)
    refusing = [(w.retry_s, i) for i in range(len(buckets))
                for w in (requests[i], charged[i]) if w is not None and w.retry_s > 0]
    retry, at = max(refusing, default=(1.0, 0))
    return combine(buckets, uncharged(requests, 1), uncharged(charged, max(0, tokens)),
                   admitted=False, reason="rate_limit", refused_by=at, retry_s=retry)


def _windows(buckets: Sequence[Bucket], raw: list[int]
             ) -> tuple[list[Window | None], list[Window | None]]:
    """The request and token window of each bucket in an ADMIT reply (``None``: no limit)."""
    requests: list[Window | None] = []
    tokens: list[Window | None] = []
    for i, b in enumerate(buckets):
        r_used, r_reset, r_retry, t_used, t_reset, t_retry = raw[3 + 6 * i: 9 + 6 * i]
        requests.append(None if b.rpm is None or r_used < 0 else
                        Window(b.rpm, r_used, r_reset / 1000, r_retry / 1000))
        tokens.append(None if b.tpm is None or t_used < 0 else
                      Window(b.tpm, t_used, t_reset / 1000, t_retry / 1000))
    return requests, tokens


def _admitted(buckets: Sequence[Bucket], raw: list[int]) -> Decision:
    """``combine(..., admitted=True)`` of an ADMIT reply's windows without building them
    (every admission not refused comes here): the tightest request and token window, fewest
    remaining first, the later reset on a tie."""
    req: tuple[int, int, int] | None = None  # (remaining, -reset ms, limit)
    tok: tuple[int, int, int] | None = None
    at = 3
    for b in buckets:
        if b.rpm is not None and raw[at] >= 0:
            seen = (max(0, b.rpm - raw[at]), -raw[at + 1], b.rpm)
            if req is None or seen[:2] < req[:2]:
                req = seen
        if b.tpm is not None and raw[at + 3] >= 0:
            seen = (max(0, b.tpm - raw[at + 3]), -raw[at + 4], b.tpm)
            if tok is None or seen[:2] < tok[:2]:
                tok = seen
        at += 6
    return Decision(
        True, "ok", None, 0.0,
        None if req is None else req[2], None if req is None else req[0],
        None if req is None else -req[1] / 1000,
        None if tok is None else tok[2], None if tok is None else tok[0],
        None if tok is None else -tok[1] / 1000, raw[2] // 1000)
