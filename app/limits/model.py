"""The limiter's data model: the buckets a call is charged to, the decision an admission returns,
the ``Limiter`` seam, and the pure maths both limiters share (sliding windows of 1-second slots,
budget periods, nano-dollars).

Sliding window: a bucket's requests (or tokens) are counted in 1-second slots, keyed by the epoch
second they were charged in. A slot ``s`` counts while ``now < s + 61``: 61 slots, not 60, so a
charge made at any instant of second ``s`` is still counted a full 60 seconds later. The window
is therefore exact to within one second and errs on the safe side: a limit of N admits a burst of
N at once and never more than N in any 60-second interval; a charge may hold its place for up to
61 s.

Admission credits (the Redis limiter): an admission that goes to Redis may also charge a credit of
a few requests (and as many times the call's tokens) to the slot thirty seconds ahead, ``s + 30``.
The process then admits the caller's next calls from the credit without asking Redis, for 29
seconds (its own clock, from when it sent the admission). Each of those calls is counted from
before it happens until at least 60 s after it, so the rule above holds across processes. What a
credit did not use is given back when it ends, and the calls it admitted stay counted up to thirty
seconds longer than their own (a caller that calls every few seconds, as each of 1,000 keys does at
300 requests a second, gets several calls out of one credit). A call admitted from a credit in its
last few seconds (``app.limits.redis.RENEW_S``), or leaving a quarter of it, asks for the next one
without waiting (a renewal): a credit-only admission, which charges no call and is granted on the
same terms; its answer replaces the credit, and what is left of that goes back. A credit is granted
only where it costs others nothing they would notice: at most 1/256 of every limit of the caller
(so none under 256 requests a minute, or under 256 times the call's tokens a minute: every call
then asks Redis), and only while the window, credit included, is under an eighth of every limit. So
a burst on one process is short by what the credits other processes hold, never more than N/8,
until they come back. A credit's calls are charged already, so they are admitted even while Redis
is down.

Credits and budgets: a credit's calls do not see the spend, so a caller with a budget is granted
one only while its spend is under half of every budget it has, and only by a process that
follows the budget news (``app.limits.redis.news_channel``, Redis pub/sub). The settle that takes
a spend counter from under half its budget to half or more publishes news, and so does a
reconcile that raised a counter some budget reads to half that budget or more
(``app.limits.budget``); every process then gives back the credits of all its callers with a
budget, and drops a grant that arrives after news it heard since asking for it (the grant may
have been decided before the news). A process whose subscription is down neither grants nor
uses such credits. The settle that publishes the news tells its own process so in its answer,
which ends the credits there at once. So a credited call is admitted while its caller's spend
is under half the budget, or in the moment the news takes to reach another process.

A credit's calls do not see spend that is on its way to Redis either, and one call can be a
large part of a budget (a budget of three calls is granted a credit of 32 while its spend is
0): that premise, "only calls in flight take spend from half the budget to all of it", holds
only while the spend Redis has not counted is small against the budget. So a process counts,
per budget, the spend of its calls that Redis has not counted yet (the tallies below, and the
settles queued or on their way until they are answered), and once that passes 1/256 of the
budget (``app.limits.redis.CREDIT_SHARE``), every credit holding that budget is paused: its
tally is settled, the settles go at once (not after ``SETTLE_DELAY_S``), and its calls ask
Redis (for no new credit), behind those settles on the same connection, so Redis decides them
with the spend counted. A paused credit admits again once the settles are answered. A caller
whose calls are small against its budget never reaches that and keeps its credits; one whose
calls are material to it (a call costing more than 1/256 of it) is decided by Redis with the
spend of every call before it counted, as without credits. Across processes, a material call's
spend reaches Redis before its answer leaves the gateway; another process's credit admits a
call of the same caller until the news (if the spend reached half the budget) reaches it, so
there the bound holds as long as the news is faster than the caller's next call.

Tallies: a credit's calls are not settled one by one. Each adds its spend and its token
correction to the credit's tally, which is settled as one call when the credit ends (used up,
run out, renewed, given back on budget news or at shutdown, or its caller's key or team changed:
``Limiter.forget``, so that a lowered budget counts it before the caller's next admission). Two
bounds keep this safe:
- a call that used more tokens than its estimate settles on its own, at once, so a TPM window
  never counts less than was used (a tally only gives tokens back, a little later);
- the tallies of one process hold at most 1/256 of each budget between them
  (``app.limits.redis.CREDIT_SHARE``; a team's budget is held by the credits of all its keys):
  the call that takes a budget's uncounted spend past that settles every tally holding some of
  it, and pauses their credits until Redis has counted it (above).
So while a caller's spend is under half its budget, the counter may lag the spend by what the
tallies hold, at most 1/256 of the budget per process (and the call that passed it). When the
counter reaches half, the news ends every credit of the caller, settling the tallies, and from
then on its calls are settled one by one (no credits past half). The overshoot below is
therefore unchanged as long as fewer than 128 processes hold credits for one budget: the spend
is then still under the budget when its counter reaches half.
A process that dies loses its tallies: the next reconcile restores their spend from the call
log, and their tokens age out of the window.

Budgets: spend is counted in integer nano-dollars (1e-9 USD; each call's cost rounded up,
``spent_nano_usd``, so a counter runs ahead of the spend by under a nano-dollar a call, under 5%
of the cheapest real call, an embedding of a few tokens at ~20 nano-dollars) per bucket and
period (``day``: the UTC date, ``month``: the UTC year and month, ``total``: forever). A bucket
whose counter has reached its budget refuses. Spend is added when a call ends
(``Limiter.settle``; the Redis limiter sends it with the next admission, or on its own within
``app.limits.redis.SETTLE_DELAY_S``, at once when it is material to a budget some credit holds;
a credit's calls with its tally, above), so the overshoot past a budget is at most the cost of
the calls admitted before the counter reached it: those still in flight then (admissions that go
to Redis carry the settles queued before them, and credits pause while material spend is on its
way: above). A tally settled just after a period ends counts towards the next one (a ``day`` or
``month`` budget may then start with up to 1/256 of itself per process spent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from app.limits.headers import Header, ratelimit_headers

Scope = Literal["key", "team", "model"]
Period = Literal["day", "month", "total"]
Reason = Literal["ok", "rate_limit", "budget", "unavailable"]

WINDOW_S = 60
SLOT_LIFE_S = WINDOW_S + 1
"""Seconds a 1-second slot is counted (see the module docstring)."""
NANO = 1_000_000_000
"""Nano-dollars a dollar: the unit of spend counters and budgets in the limiters. (Micro-dollars,
with each call rounded up, charged a $0.00000014 embedding seven times its cost, and such a
caller's budget ran out at a seventh of its amount.)"""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One set of limits to charge: a key's, a team's, or a key's for one public model."""

    scope: Scope
    id: str
    """Key id, team id, or ``"<key id>:<public model>"``."""
    rpm: int | None
    tpm: int | None
    budget_usd: float | None
    budget_period: Period = "month"
    team: str | None = None
    """The team of a ``key`` or ``model`` bucket's key: its counters then live with the team's
    (one Redis Cluster hash tag per team, see ``app.limits.redis``)."""

    @property
    def tag(self) -> str:
        """The Redis Cluster hash tag of this bucket's counters: the team's id, else the key's."""
        if self.scope == "team":
            return self.id
        if self.team is not None:
            return self.team
        return self.id.split(":", 1)[0] if self.scope == "model" else self.id


@dataclass(slots=True)
class Decision:
    """What an admission decided, with the most constraining bucket's numbers for the headers.

    Never changed once made (``ADMITTED`` is shared). Not frozen: every admitted call gets one,
    and a frozen dataclass's ``__init__`` (an ``object.__setattr__`` a field) cost 1.7 us
    against 0.3 us, a tenth of what a key's limits add to a call's own Python."""

    admitted: bool
    reason: Reason
    scope: Scope | None = None
    """The scope of the bucket that refused (``None`` when admitted)."""
    retry_after_s: float = 0.0
    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None
    slot: int | None = None
    """The epoch second (Redis's clock) the admission's tokens were charged to, when known: its
    settle corrects that slot."""

    def headers(self) -> list[Header]:
        """OpenAI's ``x-ratelimit-*`` headers (none when no limit applies), and
        ``x-should-retry: false`` on a budget refusal, as the server writes them."""
        return ratelimit_headers(self.limit_requests, self.remaining_requests,
                                 self.reset_requests_s, self.limit_tokens,
                                 self.remaining_tokens, self.reset_tokens_s,
                                 self.reason == "budget")

    @property
    def refused_requests(self) -> bool:
        """Whether a request (RPM) limit refused this rate-limit refusal, else a TPM limit
        did. A refusal carries its windows as they stand without its charge (``uncharged``),
        the tightest first: a request window refuses exactly when it has no request left, so
        0 remaining requests says one did (read only when answering a refusal: admitted
        calls pay nothing for it)."""
        return self.remaining_requests == 0


ADMITTED = Decision(True, "ok")
"""The decision for a call with no buckets (shared: costs nothing)."""


class Limiter(Protocol):
    def admit_now(self, buckets: Sequence[Bucket], tokens: int) -> Decision | None:
        """``admit``'s decision when it needs no waiting (a call an admission credit holds,
        a limiter in this process), else ``None``. Never raises."""
        ...

    async def admit(self, buckets: Sequence[Bucket], tokens: int) -> Decision:
        """Charge one request and ``tokens`` to every bucket, or to none; never raises."""
        ...

    async def peek(self, buckets: Sequence[Bucket]) -> Decision | None:
        """The buckets' windows as they stand, charging nothing (for the headers of a call
        refused before it is admitted); ``None`` when not known (Redis down, a budget spent).
        Never raises."""
        ...

    def settle(self, buckets: Sequence[Bucket], reserved: int, used: int,
               cost_usd: float, *, elapsed_s: float | None = None,
               slot: int | None = None) -> None:
        """Correct the buckets' TPM by ``used - reserved`` and add ``cost_usd`` to their
        budgets; fire-and-forget, never raises. ``slot`` (the admission's ``Decision.slot``),
        else ``elapsed_s`` (since the admission), lets the correction land in the slot the
        reservation was charged to."""
        ...

    def forget(self, buckets: Sequence[Bucket]) -> None:
        """``buckets`` are replaced (their caller's key or team changed): nothing this process
        holds of their spend may wait any longer (the Redis limiter settles a credit's tally
        now, ahead of the new buckets' next admission). Never raises."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Window:
    """One bucket's window for one kind (requests or tokens), as an admission saw it."""

    limit: int
    used: int
    """The window's count after this admission (charged if admitted)."""
    reset_s: float
    """Seconds until the window is empty."""
    retry_s: float
    """Seconds until this admission would fit (0 when it fits now)."""

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


def uncharged(windows: Sequence[Window | None], want: int,
              resets: Sequence[float] | None = None) -> list[Window | None]:
    """``windows`` as they stand without a charge of ``want`` the ones with room counted in
    (``window`` counts it): their numbers for a call another window refused, which nothing
    charged. ``resets``: each window's reset as it stands uncharged (``idle_reset``; ``window``
    gave the one of the charged window, a full ``SLOT_LIFE_S`` away); without, the windows'
    own (the Redis script reports the uncharged reset itself on a refusal)."""
    return [w if w is None or w.retry_s > 0 else
            Window(w.limit, w.used - want, w.reset_s if resets is None else resets[i], 0.0)
            for i, w in enumerate(windows)]


def idle_reset(slots: Mapping[int, int], *, now: float) -> float:
    """Seconds until ``slots`` (epoch second -> count), charged nothing more, are empty: until
    the last slot holding a charge leaves the window, 0 when none does. Only a refusal asks
    (``uncharged``)."""
    second = int(now // 1)
    last = max((s for s, c in slots.items() if c > 0 and s + SLOT_LIFE_S > second),
               default=None)
    return 0.0 if last is None else max(0.0, last + SLOT_LIFE_S - now)


def window(slots: Mapping[int, int], *, now: float, limit: int, want: int) -> Window:
    """The window of ``slots`` (epoch second -> count) at ``now`` for a charge of ``want``.

    A charge larger than the whole limit fits only into an empty window (it is then charged in
    full). ``used`` includes ``want`` when it fits."""
    second = int(now // 1)
    live = sorted((s, c) for s, c in slots.items() if s + SLOT_LIFE_S > second)
    total = sum(c for _, c in live)
    fits_at = min(want, limit)
    if total + fits_at <= limit:
        return Window(limit, total + want, _expiry(second, now), 0.0)
    need, freed, retry = total + fits_at - limit, 0, float(SLOT_LIFE_S)
    for s, c in live:
        freed += c
        if freed >= need:
            retry = s + SLOT_LIFE_S - now
            break
    last = max((s for s, c in live if c > 0), default=second - SLOT_LIFE_S)
    return Window(limit, total, max(0.0, last + SLOT_LIFE_S - now), retry)


def _expiry(second: int, now: float) -> float:
    return second + SLOT_LIFE_S - now


def combine(buckets: Sequence[Bucket], requests: Sequence[Window | None],
            tokens: Sequence[Window | None], *, admitted: bool, reason: Reason,
            refused_by: int | None = None, retry_s: float = 0.0) -> Decision:
    """A decision carrying the most constraining request and token windows (fewest remaining;
    the later reset on a tie)."""
    req = _tightest(requests)
    tok = _tightest(tokens)
    return Decision(
        admitted, reason, None if refused_by is None else buckets[refused_by].scope,
        retry_s if not admitted else 0.0,
        None if req is None else req.limit, None if req is None else req.remaining,
        None if req is None else req.reset_s,
        None if tok is None else tok.limit, None if tok is None else tok.remaining,
        None if tok is None else tok.reset_s)


def _tightest(windows: Sequence[Window | None]) -> Window | None:
    present = [w for w in windows if w is not None]
    if not present:
        return None
    return min(present, key=lambda w: (w.remaining, -w.reset_s))


def unavailable(buckets: Sequence[Bucket], *, fail_open: bool,
                budget_fail_open: bool) -> Decision:
    """The decision when the counters cannot be reached: refused if any bucket's budget, or
    any bucket's rate limit, is configured to fail closed; else admitted."""
    for i, b in enumerate(buckets):
        if b.budget_usd is not None and not budget_fail_open:
            return Decision(False, "unavailable", buckets[i].scope, 1.0)
    for b in buckets:
        if (b.rpm is not None or b.tpm is not None) and not fail_open:
            return Decision(False, "unavailable", b.scope, 1.0)
    return Decision(True, "unavailable")


def nano_usd(usd: float) -> int:
    """``usd`` in whole nano-dollars (rounded to the nearest): a budget."""
    return round(usd * NANO)


def spent_nano_usd(usd: float) -> int:
    """A call's cost in whole nano-dollars, rounded up: what a settle adds to a spend counter.
    Rounded to the nearest, a counter fell behind the call log's exact sums by up to half a
    unit a call, and every reconcile raised nearly every counter (and its budget news ended
    every credit) for rounding alone. Rounded up, a counter runs ahead of the log by under a
    nano-dollar a call, on the safe side, and a reconcile raises only spend that never reached
    it. (The ``1e-6`` keeps a float product such as ``140.00000000000003`` at 140.)"""
    return max(0, math.ceil(usd * NANO - 1e-6))


def period_name(period: Period, now: datetime) -> str:
    """The counter name of ``period`` at ``now`` (UTC): ``day:2025-01-31``, ``month:2025-01``,
    ``total``."""
    moment = now.astimezone(UTC)
    if period == "day":
        return f"day:{moment:%Y-%m-%d}"
    if period == "month":
        return f"month:{moment:%Y-%m}"
    return "total"


def period_start(period: Period, now: datetime) -> datetime | None:
    """The first instant of ``period`` at ``now`` (``None`` for ``total``)."""
    moment = now.astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "month":
        return day.replace(day=1)
    return None


def period_left_s(period: Period, now: datetime) -> float | None:
    """Seconds until ``period`` at ``now`` ends (``None`` for ``total``)."""
    start = period_start(period, now)
    if start is None:
        return None
    if period == "day":
        end = start + timedelta(days=1)
    else:
        end = (start + timedelta(days=32)).replace(day=1)
    return (end - now.astimezone(UTC)).total_seconds()
