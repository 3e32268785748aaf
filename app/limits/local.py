"""``LocalLimiter``: the same limits and budgets as ``RedisLimiter``, held in this process's
memory (embedded mode, no Redis). Single-process only: each worker or replica counts on its own,
so N processes together admit up to N times the limits. Counters start empty at every start
(the budget reconcile raises them from the call log, ``app.limits.budget.reconcile_local``), and
a key's or team's are carried when its caller is built anew after a change
(``app.limits.carry.LocalCarry``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from app.limits.model import (
    ADMITTED,
    NANO,
    SLOT_LIFE_S,
    Bucket,
    Decision,
    Window,
    combine,
    idle_reset,
    nano_usd,
    period_left_s,
    period_name,
    spent_nano_usd,
    uncharged,
    window,
)

_Slots = dict[int, int]


class LocalLimiter:
    """In-process sliding windows and spend counters (see ``app.limits.model``)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._requests: dict[tuple[str, str], _Slots] = {}
        self._tokens: dict[tuple[str, str], _Slots] = {}
        self._spend: dict[tuple[str, str, str], int] = {}
        """Nano-dollars by (scope, id, period name)."""

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def forget(self, buckets: Sequence[Bucket]) -> None:
        """Nothing to do: every call's spend is counted when it is settled."""

    async def admit(self, buckets: Sequence[Bucket], tokens: int) -> Decision:
        """Charge one request and ``tokens`` to every bucket, or to none."""
        return self.admit_now(buckets, tokens)

    def admit_now(self, buckets: Sequence[Bucket], tokens: int) -> Decision:
        """``admit``, which never waits here."""
        if not buckets:
            return ADMITTED
        now = self._clock()
        moment = datetime.fromtimestamp(now, UTC)
        for i, b in enumerate(buckets):
            if b.budget_usd is None:
                continue
            spent = self._spend.get((b.scope, b.id, period_name(b.budget_period, moment)), 0)
            if spent >= nano_usd(b.budget_usd):
                left = period_left_s(b.budget_period, moment)
                return combine(buckets, [], [], admitted=False, reason="budget", refused_by=i,
                               retry_s=0.0 if left is None else left)
        requests = [self._window(self._requests, b, b.rpm, 1, now) for b in buckets]
        charged = [self._window(self._tokens, b, b.tpm, tokens, now) for b in buckets]
        refusing = [(w.retry_s, i) for i, w in _indexed(requests, charged) if w.retry_s > 0]
        if refusing:
            retry, index = max(refusing)
            return combine(buckets, uncharged(requests, 1, self._resets(self._requests, buckets,
                                                                        now)),
                           uncharged(charged, tokens, self._resets(self._tokens, buckets, now)),
                           admitted=False, reason="rate_limit", refused_by=index, retry_s=retry)
        second = int(now // 1)
        for b in buckets:
            if b.rpm is not None:
                _add(self._requests.setdefault((b.scope, b.id), {}), second, 1)
            if b.tpm is not None:
                _add(self._tokens.setdefault((b.scope, b.id), {}), second, tokens)
        return combine(buckets, requests, charged, admitted=True, reason="ok")

    async def peek(self, buckets: Sequence[Bucket]) -> Decision | None:
        """The buckets' windows as they stand, charging nothing."""
        now = self._clock()
        return combine(buckets, [self._window(self._requests, b, b.rpm, 0, now) for b in buckets],
                       [self._window(self._tokens, b, b.tpm, 0, now) for b in buckets],
                       admitted=True, reason="ok")

    def settle(self, buckets: Sequence[Bucket], reserved: int, used: int, cost_usd: float,
               *, elapsed_s: float | None = None, slot: int | None = None) -> None:
        """Correct TPM by ``used - reserved`` and add ``cost_usd`` to every bucket's budget."""
        now = self._clock()
        moment = datetime.fromtimestamp(now, UTC)
        cost = spent_nano_usd(cost_usd)
        for b in buckets:
            if b.tpm is not None and used != reserved:
                slots = self._tokens.setdefault((b.scope, b.id), {})
                correct(slots, now=now, delta=used - reserved, elapsed_s=elapsed_s)
            if cost > 0:
                name = (b.scope, b.id, period_name(b.budget_period, moment))
                self._spend[name] = self._spend.get(name, 0) + cost

    def raise_spend(self, totals: Mapping[tuple[str, str, str], int]) -> int:
        """Raise spend counters, by (scope, id, period name), to at least the given
        nano-dollars (``app.limits.budget.reconcile_local``); never lowers one. Returns how
        many it raised."""
        raised = 0
        for name, nano in totals.items():
            if nano > self._spend.get(name, 0):
                self._spend[name] = nano
                raised += 1
        return raised

    def counted(self, scope: str, id: str, periods: Sequence[str]) -> list[int]:
        """The nano-dollars counted for ``scope`` ``id`` in each of ``periods`` (period
        names, ``app.limits.model.period_name``)."""
        return [self._spend.get((scope, id, period), 0) for period in periods]

    def spent_usd(self, bucket: Bucket) -> float:
        """The bucket's spend in its current period, in USD."""
        moment = datetime.fromtimestamp(self._clock(), UTC)
        name = (bucket.scope, bucket.id, period_name(bucket.budget_period, moment))
        return self._spend.get(name, 0) / NANO

    @staticmethod
    def _resets(table: dict[tuple[str, str], _Slots], buckets: Sequence[Bucket],
                now: float) -> list[float]:
        """Each bucket's reset in ``table`` as it stands (a refusal's, ``uncharged``)."""
        return [idle_reset(table.get((b.scope, b.id), {}), now=now) for b in buckets]

    def _window(self, table: dict[tuple[str, str], _Slots], bucket: Bucket, limit: int | None,
                want: int, now: float) -> Window | None:
        if limit is None:
            return None
        slots = table.get((bucket.scope, bucket.id))
        if slots is None:
            return window({}, now=now, limit=limit, want=want)
        _trim(slots, int(now // 1))
        return window(slots, now=now, limit=limit, want=want)


def correct(slots: _Slots, *, now: float, delta: int, elapsed_s: float | None) -> None:
    """Apply a TPM correction to ``slots`` (the same rule as the Redis script).

    More tokens than reserved are charged to the current second. Tokens given back come out of
    the slot the reservation was charged to when ``elapsed_s`` says which (nothing when that
    slot has left the window), else out of the oldest slots first; never below zero in a slot.
    Taking them from older slots than the reservation's errs on the safe side (the window then
    over-counts until the reservation's slot leaves it)."""
    second = int(now // 1)
    _trim(slots, second)
    if delta > 0:
        _add(slots, second, delta)
        return
    owed = -delta
    if elapsed_s is not None:
        target = int((now - elapsed_s) // 1)
        order = [target] if target in slots else []
    else:
        order = sorted(slots)
    for s in order:
        take = min(owed, slots[s])
        slots[s] -= take
        owed -= take
        if owed == 0:
            break


def _indexed(requests: list[Window | None],
             tokens: list[Window | None]) -> list[tuple[int, Window]]:
    return [(i, w) for i, pair in enumerate(zip(requests, tokens, strict=True))
            for w in pair if w is not None]


def _add(slots: _Slots, second: int, count: int) -> None:
    slots[second] = slots.get(second, 0) + count


def _trim(slots: _Slots, second: int) -> None:
    for s in [s for s in slots if s + SLOT_LIFE_S <= second]:
        del slots[s]
