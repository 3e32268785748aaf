"""LocalLimiter: the same semantics as the Redis one, in this process."""

from __future__ import annotations

from app.limits import ADMITTED, Bucket, LocalLimiter
from tests.limits.clock import Clock


async def test_burst_then_refusal_then_window_slides() -> None:
    """N requests at once are admitted, the next is refused until the first slot leaves."""
    clock = Clock()
    limiter = LocalLimiter(clock=clock)
    key = [Bucket("key", "k", 5, None, None)]
    for n in range(5):
        decision = await limiter.admit(key, 0)
        assert decision.admitted and decision.remaining_requests == 4 - n
    refused = await limiter.admit(key, 0)
    assert (refused.admitted, refused.reason, refused.scope) == (False, "rate_limit", "key")
    assert 60 < refused.retry_after_s <= 61
    clock.t += refused.retry_after_s
    assert (await limiter.admit(key, 0)).admitted


async def test_all_or_nothing_across_buckets() -> None:
    """A team bucket that refuses leaves the key's bucket uncharged."""
    limiter = LocalLimiter(clock=Clock())
    team = Bucket("team", "t", 1, None, None)
    key_a = Bucket("key", "a", 3, None, None, team="t")
    key_b = Bucket("key", "b", 3, None, None, team="t")
    assert (await limiter.admit([key_a, team], 0)).admitted
    refused = await limiter.admit([key_b, team], 0)
    assert not refused.admitted and refused.scope == "team"
    alone = await limiter.admit([key_b], 0)
    assert alone.remaining_requests == 2  # the refused call charged nothing to b


async def test_a_refusal_counts_only_what_was_charged() -> None:
    """A call the token window refuses is not counted in the request window that had room:
    its headers say what the next call finds (as the Redis limiter's do)."""
    limiter = LocalLimiter(clock=Clock())
    key = [Bucket("key", "k", 100, 60, None)]
    assert (await limiter.admit(key, 50)).remaining_requests == 99
    refused = await limiter.admit(key, 20)
    assert (refused.admitted, refused.reason) == (False, "rate_limit")
    assert (refused.remaining_requests, refused.remaining_tokens) == (99, 10)
    after = await limiter.admit(key, 10)
    assert (after.remaining_requests, after.remaining_tokens) == (98, 0)


async def test_settle_gives_tokens_back() -> None:
    """A call that used fewer tokens than reserved returns the difference to the window."""
    clock = Clock()
    limiter = LocalLimiter(clock=clock)
    key = [Bucket("key", "k", None, 1000, None)]
    assert (await limiter.admit(key, 900)).remaining_tokens == 100
    assert not (await limiter.admit(key, 200)).admitted
    clock.t += 5
    limiter.settle(key, 900, 100, 0.0, elapsed_s=5)
    decision = await limiter.admit(key, 200)
    assert decision.admitted and decision.remaining_tokens == 700


async def test_settle_overage_is_charged() -> None:
    """A call that used more than reserved charges the excess."""
    limiter = LocalLimiter(clock=Clock())
    key = [Bucket("key", "k", None, 1000, None)]
    await limiter.admit(key, 100)
    limiter.settle(key, 100, 600, 0.0)
    assert (await limiter.admit(key, 0)).remaining_tokens == 400


async def test_budget_refuses_after_spend_until_next_period() -> None:
    """Spend settled up to the budget refuses the next call with reason budget."""
    clock = Clock(t=1_767_225_000.0)  # 2025-12-31 23:50 UTC
    limiter = LocalLimiter(clock=clock)
    key = [Bucket("key", "k", None, None, 1.0, "day")]
    assert (await limiter.admit(key, 0)).admitted
    limiter.settle(key, 0, 0, 0.6)
    assert (await limiter.admit(key, 0)).admitted
    limiter.settle(key, 0, 0, 0.4)
    refused = await limiter.admit(key, 0)
    assert (refused.admitted, refused.reason) == (False, "budget")
    assert refused.retry_after_s == 600
    assert refused.headers() == [(b"x-should-retry", b"false")]
    clock.t += 600
    assert (await limiter.admit(key, 0)).admitted


async def test_a_budget_of_tiny_calls_lasts_to_its_amount() -> None:
    """Spend counts in nano-dollars: a $0.000002 budget of $0.00000014 embeddings admits 15
    calls, the one that reaches it included (with each call rounded up to a micro-dollar it
    admitted 2, and refused at 14% of the budget), and a budget keeps its last $0.0000001."""
    assert await admitted_until_refused(LocalLimiter(), 0.000002, 0.00000014) == 15
    assert await admitted_until_refused(LocalLimiter(), 0.0002671, 0.000267) == 2


async def admitted_until_refused(limiter: LocalLimiter, budget: float, cost: float) -> int:
    """How many calls of ``cost`` a sequential client gets from a ``total`` ``budget``."""
    key = [Bucket("key", "k", None, None, budget, "total")]
    for calls in range(1000):
        if not (await limiter.admit(key, 0)).admitted:
            return calls
        limiter.settle(key, 0, 0, cost)
    raise AssertionError("never refused")


async def test_no_buckets_is_the_shared_decision() -> None:
    """An empty bucket list returns the shared admitted decision."""
    assert await LocalLimiter().admit([], 10) is ADMITTED


async def test_a_refusal_reports_the_uncharged_windows_reset() -> None:
    """A window with room, in a call another window refused, reports its reset as it stands:
    when its last charge leaves (0 when it holds none), not a full minute as if charged (it was
    not)."""
    clock = Clock()
    limiter = LocalLimiter(clock=clock)
    key = [Bucket("key", "k", 2, 1000, None)]
    assert (await limiter.admit(key, 9)).admitted
    clock.t += 5
    assert (await limiter.admit(key, 9)).admitted
    clock.t += 5
    refused = await limiter.admit(key, 9)
    assert (refused.admitted, refused.remaining_tokens) == (False, 982)
    assert refused.reset_requests_s == refused.reset_tokens_s == 55.75
    team = Bucket("team", "t", None, 10, None)
    assert (await limiter.admit([Bucket("key", "a", 5, None, None, team="t"), team], 10)).admitted
    by_tokens = await limiter.admit([Bucket("key", "b", 5, None, None, team="t"), team], 5)
    assert (by_tokens.admitted, by_tokens.remaining_requests) == (False, 5)
    assert by_tokens.reset_requests_s == 0.0  # b's window holds nothing
