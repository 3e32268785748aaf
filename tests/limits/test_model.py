"""The pure maths: sliding windows of 1-second slots, budget periods, fail modes."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime

from app.limits import Bucket
from app.limits.model import (
    combine,
    nano_usd,
    period_left_s,
    period_name,
    period_start,
    spent_nano_usd,
    unavailable,
    window,
)
from app.limits.redis import _admitted, _windows


def test_empty_window_fits_and_resets_after_61_slots() -> None:
    """A charge into an empty window fits; the window empties when its slot has aged 61 s."""
    w = window({}, now=100.25, limit=10, want=3)
    assert (w.used, w.remaining, w.retry_s) == (3, 7, 0.0)
    assert w.reset_s == 60.75


def test_full_window_retries_when_enough_oldest_slots_leave() -> None:
    """Retry-After is when the oldest slots holding enough of the count have left."""
    slots = {40: 2, 50: 3, 70: 5}
    w = window(slots, now=100.5, limit=10, want=4)
    # need 4 freed: slot 40 (2) is not enough, slots 40 + 50 (5) are: 50 + 61 - 100.5
    assert w.retry_s == 10.5
    assert w.used == 10 and w.remaining == 0
    assert w.reset_s == 70 + 61 - 100.5


def test_slots_older_than_61_seconds_do_not_count() -> None:
    """A slot counts while now < slot + 61, and not at or after that instant."""
    assert window({39: 10}, now=99.999, limit=10, want=1).retry_s > 0
    assert window({39: 10}, now=100.0, limit=10, want=1).retry_s == 0.0


def test_oversized_charge_fits_only_into_an_empty_window() -> None:
    """A charge over the whole limit waits for an empty window, then is charged in full."""
    assert window({99: 1}, now=100.0, limit=10, want=50).retry_s == 60.0
    fitted = window({}, now=100.0, limit=10, want=50)
    assert fitted.retry_s == 0.0 and fitted.used == 50 and fitted.remaining == 0


def test_periods_are_utc() -> None:
    """Day and month counters follow the UTC calendar; total has no end."""
    moment = datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
    assert period_name("day", moment) == "day:2025-12-31"
    assert period_name("month", moment) == "month:2025-12"
    assert period_name("total", moment) == "total"
    assert period_left_s("day", moment) == 3600
    assert period_left_s("month", moment) == 3600
    assert period_left_s("total", moment) is None
    assert period_start("month", moment) == datetime(2025, 12, 1, tzinfo=UTC)


def test_nano_dollars_round() -> None:
    """USD becomes whole nano-dollars, so sums never drift; a budget to the nearest one (a
    budget of $0.0002671 keeps its last $0.0000001)."""
    assert nano_usd(0.1) + nano_usd(0.2) == nano_usd(0.3) == 300_000_000
    assert nano_usd(0.0002671) == 267_100
    assert nano_usd(1e-10) == 0


def test_spend_rounds_up() -> None:
    """A settle's cost is rounded up to whole nano-dollars (never behind the call log's sum),
    and a whole number stays whole despite the float product. The cheapest calls are charged
    what they cost: a 7-token embedding ($0.00000014) is 140, not a micro-dollar (7x)."""
    assert [spent_nano_usd(usd) for usd in
            (9e-9, 8.55e-9, 1.4e-7, 1e-10, 0.3, 0.0, -1.0, 2.1e-8, 1.23456789012e-3)] == \
        [9, 9, 140, 1, 300_000_000, 0, 0, 21, 1_234_568]


def test_fail_modes() -> None:
    """Unreachable counters: budgets fail closed unless told otherwise, limits as configured."""
    limited = [Bucket("key", "k", 10, None, None)]
    budgeted = [Bucket("key", "k", None, None, 5.0)]
    assert unavailable(limited, fail_open=True, budget_fail_open=False).admitted
    refused = unavailable(limited, fail_open=False, budget_fail_open=True)
    assert not refused.admitted and refused.reason == "unavailable" and refused.scope == "key"
    assert not unavailable(budgeted, fail_open=True, budget_fail_open=False).admitted
    assert unavailable(budgeted, fail_open=True, budget_fail_open=True).reason == "unavailable"


def test_tag_is_the_team_else_the_key() -> None:
    """A bucket's hash tag: its team's id when its key has one, else the key's own id."""
    assert Bucket("team", "t1", 1, None, None).tag == "t1"
    assert Bucket("key", "k1", 1, None, None, team="t1").tag == "t1"
    assert Bucket("key", "k1", 1, None, None).tag == "k1"
    assert Bucket("model", "k1:gpt-4o", 1, None, None).tag == "k1"


def test_the_redis_limiters_admitted_shortcut_matches_combine() -> None:
    """``RedisLimiter`` reads an admitted reply without building its windows
    (``_admitted``); it must pick what ``combine`` picks (fewest remaining, later reset on a
    tie) for every mix of limits, ties included."""
    rng = random.Random(7)
    for _ in range(2000):
        buckets = [Bucket("key" if i == 0 else "team", f"b{i}",
                          rng.choice([None, 5, 60, 1000]), rng.choice([None, 100, 5000]), None)
                   for i in range(rng.randint(1, 3))]
        raw = [0, 0, 1_700_000_000_000]
        for b in buckets:
            for limit in (b.rpm, b.tpm):
                if limit is None:
                    raw += [-1, 0, 0]
                else:
                    raw += [rng.randint(0, limit + 3), rng.choice([1000, 30_000, 61_000]), 0]
        requests, tokens = _windows(buckets, raw)
        read = _admitted(buckets, raw)
        assert read.slot == 1_700_000_000  # the second the reply's charge went to
        assert dataclasses.replace(read, slot=None) == combine(
            buckets, requests, tokens, admitted=True, reason="ok")
