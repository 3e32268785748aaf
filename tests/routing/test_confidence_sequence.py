"""The experiment report's confidence sequences (``app.experiments``): narrower with more data,
and valid at every sample size at once (the report may be read again and again)."""

from __future__ import annotations

import json
import math
import random
import statistics

from app.experiments import (
    MIN_SAMPLES,
    NON_NEGATIVE,
    RATE,
    _apart,
    confidence_sequence,
    metric,
)


def test_too_few_samples_have_none_and_more_samples_narrow_it() -> None:
    rng = random.Random(3)
    values = [rng.gauss(5.0, 2.0) for _ in range(5000)]
    assert confidence_sequence(values[:MIN_SAMPLES - 1]) is None
    widths = []
    for n in (100, 1000, 5000):
        sequence = confidence_sequence(values[:n])
        assert sequence is not None and sequence[0] < 5.0 < sequence[1]
        widths.append(sequence[1] - sequence[0])
    assert widths[0] > widths[1] > widths[2]


def test_peeking_at_every_sample_size_rarely_excludes_the_true_mean() -> None:
    """100 experiments with no effect, each looked at after every sample from 30 to 1,500:
    the share that ever exclude the true mean stays near the level (0.025), where a fixed-sample
    95% interval looked at that often would exclude it in most of them."""
    rng = random.Random(11)
    ever = fixed_ever = 0
    for _ in range(100):
        values: list[float] = []
        excluded = fixed_excluded = False
        total = squares = 0.0
        for n in range(1, 1501):
            x = rng.gauss(0.0, 1.0)
            values.append(x)
            total += x
            squares += x * x
            if n < MIN_SAMPLES or n % 20:  # every 20th size: nearly the same verdict, faster
                continue
            sequence = confidence_sequence(values)
            assert sequence is not None
            excluded = excluded or not sequence[0] <= 0.0 <= sequence[1]
            mean = total / n
            sd = math.sqrt(max(0.0, squares / n - mean * mean))
            fixed_excluded = fixed_excluded or abs(mean) > 1.96 * sd / math.sqrt(n)
        ever += excluded
        fixed_ever += fixed_excluded
    assert ever / 100 <= 0.05, ever
    assert fixed_ever / 100 > 0.2, fixed_ever


def test_a_metric_of_huge_samples_is_finite() -> None:
    """Samples near the float range (whose sum and squares overflow) still have a mean, and a
    sequence when its bounds are floats; the report encodes as JSON."""
    assert metric([1e308, 1e308]) == {"n": 2, "mean": 1e308, "ci95": None}
    spread = metric([1e300, -1e300] * 20)
    assert spread["mean"] == 0.0 and spread["ci95"] is not None
    assert math.isfinite(spread["ci95"][0]) and spread["ci95"][0] < 0 < spread["ci95"][1]
    wide = metric([1.7e308, -1.7e308] * 15)
    assert wide["mean"] == 0.0 and wide["ci95"] is None
    json.dumps([spread, wide], allow_nan=False)
    assert metric([]) == {"n": 0, "mean": None, "ci95": None}


def test_a_sequence_stays_within_the_range_of_its_quantity() -> None:
    """A rate's sequence stays in [0, 1] and a latency's at or above 0, however close to the
    edge its mean is (an unclamped one reached -0.009 for an error rate of 0.004)."""
    errors = [1.0] * 2 + [0.0] * 498
    assert metric(errors)["ci95"][0] < 0  # the raw sequence crosses 0
    low, high = metric(errors, RATE)["ci95"]
    assert low == 0.0 and 0.004 < high < 1
    successes = [1.0] * 498 + [0.0] * 2
    low, high = metric(successes, RATE)["ci95"]
    assert 0 < low < 0.996 and high == 1.0
    latencies = [0.5] * 95 + [60.0] * 5
    low, high = metric(latencies, NON_NEGATIVE)["ci95"]
    assert low == 0.0 and high > statistics.fmean(latencies)


def test_one_value_in_both_variants_never_differs() -> None:
    """Every call of both variants cost the same: the means of 688 and 312 copies of one float
    differ in their last bit, and their zero-width sequences must still touch. (``_apart`` is
    the report's private comparison.)"""
    a, b = metric([1.4e-05] * 688, NON_NEGATIVE), metric([1.4e-05] * 312, NON_NEGATIVE)
    assert a["mean"] != b["mean"]  # the rounding this guards against is still there
    assert _apart(a["ci95"], b["ci95"]) is False
    assert _apart([1.0, 1.0], [1.001, 1.001]) is True  # a real difference still counts
