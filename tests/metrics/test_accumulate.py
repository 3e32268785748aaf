"""Pending metric values: one value a counter refuses never stops the others, or a later
flush."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter

from app.metrics.accumulate import Pending


def _counter() -> Counter:
    return Counter("things", "Things.", ["kind"], registry=CollectorRegistry())


@pytest.mark.parametrize("bad", [-5.0, math.nan, math.inf])
def test_a_refused_value_is_dropped_and_the_rest_flushed(bad: float) -> None:
    """A negative, NaN or infinite sum is dropped (counted in the return value); the values
    after it reach their counters, and the next flush has nothing left to refuse."""
    counter = _counter()
    pending = Pending()
    broken, fine = pending.count(counter.labels("a")), pending.count(counter.labels("b"))
    broken.n, fine.n = bad, 3
    assert pending.flush() == 1
    assert counter.labels("b")._value.get() == 3
    assert counter.labels("a")._value.get() == 0
    broken.n, fine.n = 2, 1
    assert pending.flush() == 0
    assert counter.labels("a")._value.get() == 2
    assert counter.labels("b")._value.get() == 4
