"""The circuit breaker's states on a test clock (``app.routing.breaker``)."""

from __future__ import annotations

from app.config import BreakerConfig
from app.routing.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def state(made: Breaker) -> str:
    """The state as a plain string (mypy would narrow the attribute between calls)."""
    return made.state


def breaker(**settings: float) -> tuple[Breaker, Clock]:
    clock = Clock()
    return Breaker(BreakerConfig(**settings), clock=clock), clock  # type: ignore[arg-type]


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    made, _ = breaker(failures=3)
    made.failed()
    made.failed()
    made.succeeded()
    made.failed()
    made.failed()
    assert state(made) == "closed" and made.available()
    made.failed()
    assert state(made) == "open" and made.blocked() and not made.available()


def test_an_error_rate_over_the_window_opens_it() -> None:
    made, clock = breaker(failures=100, error_rate=0.5, min_calls=10, window_s=30)
    for i in range(9):
        made.failed() if i % 2 else made.succeeded()
    assert state(made) == "closed"  # 9 attempts: under min_calls
    made.failed()
    assert state(made) == "open"  # 5 of 10 failed
    fresh, clock = breaker(failures=100, error_rate=0.5, min_calls=4, window_s=30)
    fresh.failed()
    fresh.failed()
    clock.t += 31  # those two left the window
    fresh.succeeded()
    fresh.succeeded()
    fresh.failed()
    assert state(fresh) == "closed"  # 1 of 3 in the window


def test_one_probe_after_the_cooldown_which_doubles_on_failure() -> None:
    made, clock = breaker(failures=1, cooldown_s=5, max_cooldown_s=12)
    made.failed()
    clock.t += 4.9
    assert made.blocked()
    clock.t += 0.2
    assert not made.blocked()
    assert made.available() and state(made) == "half_open"
    assert made.blocked() and not made.available()  # one probe at a time
    made.failed()
    assert state(made) == "open" and made.cooldown_s == 10
    clock.t += 10.1
    assert made.available()
    made.failed()
    assert made.cooldown_s == 12  # capped
    clock.t += 12.1
    assert made.available()
    made.released()  # the probe said nothing (the client left): another may probe
    assert made.available()
    made.succeeded()
    assert state(made) == "closed" and made.cooldown_s == 0 and not made.blocked()


def test_a_verdict_from_before_it_opened_neither_closes_nor_reopens_it() -> None:
    """An attempt admitted before the breaker opened (a long stream, a slow answer) that ends
    well afterwards does not close it, nor, failing, reopen it while the probe runs: only the
    probe's verdict, or that of a call admitted while it was open, counts."""
    made, clock = breaker(failures=2, cooldown_s=5, max_cooldown_s=60)
    old = made.changes  # a stream admitted while it was closed
    made.failed()
    made.failed()
    assert state(made) == "open"
    made.succeeded(since=old)  # the stream ends well
    assert state(made) == "open" and made.cooldown_s == 5 and made.blocked()
    clock.t += 5.1
    assert made.available() and state(made) == "half_open"  # the probe
    probe = made.changes
    made.failed(since=old)  # another old call fails late
    made.released(since=old)
    assert state(made) == "half_open" and made.blocked()  # the probe is still the one
    made.failed(since=probe)
    assert state(made) == "open" and made.cooldown_s == 10
    admitted = made.changes  # a call tried while it is open (every target open)
    made.succeeded(since=admitted)
    assert state(made) == "closed"
