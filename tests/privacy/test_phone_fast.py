"""The phone check on a candidate alone (``phone_number``) and the overlap resolution: what the
matcher-based detector accepted it accepts, what it refused it refuses, and the resolution keeps
exactly what the all-pairs check kept."""

from __future__ import annotations

import random

import pytest

from app.privacy.detect import PRIORITY, Detector, Finding, _resolve
from app.privacy.phones import phone_number


@pytest.mark.parametrize(("text", "region"), [
    ("(415) 555-2671", "US"), ("415.555.2671", "US"), ("415-555-2671 x12", "US"),
    ("1 415 555 2671", "US"), ("+49 30 901820", "US"), ("030 901820", "DE"),
    ("06 12 34 56 78", "FR"), ("020 7946 0958", "GB"),
])
def test_numbers_as_written_are_phone_numbers(text: str, region: str) -> None:
    """Valid numbers as people write them, national prefix included where the region has one."""
    assert phone_number(text, region)


@pytest.mark.parametrize(("text", "region"), [
    ("30 901820", "DE"),  # Germany writes the national prefix 0
    ("854-1987", "DE"), ("1 2 3 13 14 15", "FR"), ("527 2006", "DE"),
    ("(415 555-2671", "US"),  # brackets must pair up
    ("415/555/2671", "US"),  # more than one slash: a date or a path
    ("1234567", "US"), ("555-0000-12345", "US"),
])
def test_digit_groups_that_are_no_number_are_refused(text: str, region: str) -> None:
    """Groups of digits that parse as a number of the region but are not written as one."""
    assert not phone_number(text, region)


def test_a_number_inside_a_longer_run_is_found_by_the_matcher() -> None:
    """A run that is no number as a whole, nor without its first or last group, but holds one:
    the matcher (the fallback for runs with room for two numbers) finds it."""
    text = "ref 12 415-555-2671 99 ok"
    assert not any(phone_number(t, "US") for t in ("12 415-555-2671 99", "12 415-555-2671",
                                                   "415-555-2671 99"))
    found = Detector(entities={"PHONE"}).scan(text)
    assert [text[f.start:f.end] for f in found] == ["415-555-2671"]


def _all_pairs(findings: list[Finding]) -> list[Finding]:
    ordered = sorted(findings, key=lambda f: (f.start - f.end, -PRIORITY.get(f.entity, 99),
                                              f.start))
    kept: list[Finding] = []
    for finding in ordered:
        if all(finding.end <= k.start or finding.start >= k.end for k in kept):
            kept.append(finding)
    return sorted(kept, key=lambda f: f.start)


def test_resolution_keeps_what_the_all_pairs_check_keeps() -> None:
    """Random overlapping findings, and disjoint ones touching or not, some found twice: the
    resolution equals the quadratic one."""
    rng = random.Random(7)
    for _ in range(500):
        findings = []
        for _ in range(rng.randint(2, 30)):
            start = rng.randint(0, 200)
            findings.append(Finding(rng.choice(list(PRIORITY)), start,
                                    start + rng.randint(1, 25)))
        assert _resolve(list(findings), PRIORITY) == _all_pairs(findings)
        disjoint, at = [], 0
        for _ in range(rng.randint(2, 30)):
            at += rng.randint(0, 5)
            disjoint.append(Finding(rng.choice(list(PRIORITY)), at, at + rng.randint(1, 9)))
            at = disjoint[-1].end
        rng.shuffle(disjoint)
        assert _resolve(list(disjoint), PRIORITY) == _all_pairs(disjoint)
        repeated = [*disjoint, *rng.sample(disjoint, 2)]  # a value found by two detectors
        assert _resolve(list(repeated), PRIORITY) == _all_pairs(repeated)
