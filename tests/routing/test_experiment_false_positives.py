"""The experiment report's verdict keeps its promise: in simulated A/A experiments (both
variants drawn from one distribution, a fixed seed) "differs from control" shows in at most 5%
of them, including where a variant's sample happens to have no variation (no error in its
first calls, every rating a 5), which an asymptotic sequence turns into a zero-width one."""

from __future__ import annotations

import random

from app.experiments import ALPHA, RATE, _apart, bounded_confidence_sequence, metric


def rates(rng: random.Random, rate: float, n: int) -> list[float]:
    return [1.0 if rng.random() < rate else 0.0 for _ in range(n)]


def differs(control: list[float], variant: list[float],
            within: tuple[float, float] = RATE) -> bool:
    """The report's verdict on one metric (``report`` compares ``metric`` s with ``_apart``)."""
    return bool(_apart(metric(control, within)["ci95"], metric(variant, within)["ci95"]))


def test_equal_error_rates_rarely_differ_when_the_control_saw_no_error() -> None:
    """The tester's case: a true error rate of 3% in both, 30 calls of the control (no error at
    all in 40% of runs) and 1,000 of the variant; an asymptotic sequence called them different
    in 39% of runs."""
    rng = random.Random(20261207)
    runs, flagged, clean = 500, 0, 0
    for _ in range(runs):
        control, variant = rates(rng, 0.03, 30), rates(rng, 0.03, 1000)
        clean += sum(control) == 0
        flagged += differs(control, variant)
    assert clean > runs // 4  # the zero-variance samples this is about were there
    assert flagged / runs <= ALPHA, flagged


def test_equal_rates_looked_at_again_and_again_rarely_ever_differ() -> None:
    """Both variants at 5%, the report read at 30, 60, 120, 250, 500 and 1,000 calls a
    variant: the share of experiments that ever showed a difference stays within 5%."""
    rng = random.Random(7)
    runs, ever = 200, 0
    for _ in range(runs):
        control, variant = rates(rng, 0.05, 1000), rates(rng, 0.05, 1000)
        ever += any(differs(control[:n], variant[:n]) for n in (30, 60, 120, 250, 500, 1000))
    assert ever / runs <= ALPHA, ever


def test_equal_ratings_rarely_differ_when_every_control_rating_was_the_top() -> None:
    """Ratings 1 to 5, 95% of them 5 in both variants: a control of 30 ratings all 5 (a fifth
    of runs) is no proof that its mean is exactly 5."""
    rng = random.Random(3)

    def ratings(n: int) -> list[float]:
        return [5.0 if rng.random() < 0.95 else float(rng.randint(1, 4)) for _ in range(n)]

    runs, flagged, top = 500, 0, 0
    for _ in range(runs):
        control, variant = ratings(30), ratings(500)
        top += set(control) == {5.0}
        flagged += differs(control, variant, (1.0, 5.0))
    assert top > runs // 10
    assert flagged / runs <= ALPHA, flagged


def test_a_sample_with_no_variation_has_a_sequence_of_positive_width() -> None:
    """0 errors in 30 calls: the upper end is past what even a fixed-sample 97.5% bound allows
    (1 - 0.025 ** (1 / 30), about 0.116); 30 ratings of 5 on a 1-to-5 scale reach below 5."""
    low, high = metric([0.0] * 30, RATE)["ci95"]
    assert low == 0.0 and high > 1 - (ALPHA / 2) ** (1 / 30)
    low, high = metric([5.0] * 30, (1.0, 5.0))["ci95"]
    assert low < 5.0 and high == 5.0
    low, high = metric([1.0] * 500, RATE)["ci95"]
    assert 0.9 < low < 1.0 and high == 1.0


def test_a_real_difference_still_shows() -> None:
    """3% against 9% errors over 1,000 calls each, and 0 refusals in 124 answers against 30% of
    1,000: shown as different. 0 in 124 against 4.1% of 1,000 (the live case the asymptotic
    sequence called different) is not."""
    rng = random.Random(11)
    assert differs(rates(rng, 0.03, 1000), rates(rng, 0.09, 1000))
    assert differs([0.0] * 124, [1.0] * 300 + [0.0] * 700)
    assert not differs([0.0] * 124, [1.0] * 41 + [0.0] * 959)


def test_the_bounded_sequence_covers_the_true_mean_at_every_look() -> None:
    """Coverage of one sequence at level 0.025, looked at 30 to 2,000 samples, for a
    rare, a common and an even rate: the share of runs that ever exclude the true rate stays
    within the level."""
    rng = random.Random(5)
    for rate in (0.002, 0.05, 0.5):
        missed = 0
        for _ in range(150):
            values = rates(rng, rate, 2000)
            for n in (30, 60, 125, 250, 500, 1000, 2000):
                sequence = bounded_confidence_sequence(values[:n], 0.0, 1.0)
                assert sequence is not None
                if not sequence[0] <= rate <= sequence[1]:
                    missed += 1
                    break
        assert missed / 150 <= ALPHA / 2 + 0.02, (rate, missed)  # 0.025, and a binomial margin
