"""What a scan may cost: text made to be expensive (digit groups, ``@`` runs) costs one pass over
it, and the phone checks one request may make are bounded (``ScanBudget``). Work is counted,
never timed."""

from __future__ import annotations

import random

from app.privacy import emails, windows
from app.privacy.detect import PHONE, Detector, ScanBudget

DETECTOR = Detector(phone_regions=("US", "DE"))


class _Counted(bytes):
    """A classed view that adds up how many bytes ``count`` reads."""

    read = 0

    def count(self, sub: object, start: object = None, end: object = None) -> int:
        assert isinstance(start, int) and isinstance(end, int)
        _Counted.read += end - start
        return super().count(sub, start, end)  # type: ignore[arg-type]


def test_number_windows_count_each_digit_once() -> None:
    """Runs that overlap merge into one window whose digits are counted as it grows: the
    digits of the merged window are not counted again for each run (which cost quadratic
    time on ``call +1 (212) 555-01 `` repeated), and the count is the window's."""
    text = "call +1 (212) 555-01 " * 2000
    classed = windows.classes(windows.narrow(text)[0])
    _Counted.read = 0
    found = windows.number_windows(_Counted(classed))
    assert [(lo, hi) for lo, hi, _ in found] == [(4, len(text))]
    assert found[0][2] == classed.count(b"0", 4, len(text))
    assert _Counted.read <= 2 * len(text)


def test_at_runs_are_no_candidates() -> None:
    """An ``@`` with nothing a local part ends with before it, or no dotted domain after it,
    is passed over in C: a text of ``@`` and ``a@`` costs no Python step for each."""
    dense = "@" * 5000 + "a@" * 5000 + "x@y@z " * 1000
    text = _Sliced(dense + " write to ann@example.org " + dense)
    assert [text[s:e] for s, e in emails.spans(text)] == ["ann@example.org"]
    assert _Sliced.reads < 20  # the found address's neighbourhood, not one read per @


class _Sliced(str):
    """A text that counts the Python-level reads of it (indexing, slicing)."""

    reads = 0

    def __getitem__(self, key: object) -> str:
        _Sliced.reads += 1
        return super().__getitem__(key)  # type: ignore[index]


def test_a_candidate_seen_again_is_not_checked_again() -> None:
    """The same digit groups over and over (``12 12 12 ...``) cost one candidate's checks."""
    budget = ScanBudget()
    assert DETECTOR.scan("12 " * 20_000, budget=budget) == []
    assert not budget.exhausted
    spent = ScanBudget().left - budget.left
    assert 0 < spent <= 3 * 2 + 30 * 2  # three tries and the matcher, in two regions


def test_a_spent_budget_fails_closed() -> None:
    """Past the budget (thousands of distinct digit groups), each further phone candidate is
    a phone number unchecked, and the budget says it was exhausted; numbers checked before
    it ran out keep their answer, and the other detectors still run over all of the text."""
    rng = random.Random(5)
    groups = "".join(" ".join(f"{rng.randrange(10, 100)}" for _ in range(8)) + " | "
                     for _ in range(1000))
    text = "call (415) 555-2671 today, and the groups: " + groups \
        + " then card 4111 1111 1111 1111, mail ann@example.org"
    budget = ScanBudget()
    found = DETECTOR.scan(text, budget=budget)
    assert budget.exhausted and budget.left == 0
    assert found[0] == (PHONE, 5, 19)
    assert [(f.entity, text[f.start:f.end]) for f in found[-2:]] == [
        ("CREDIT_CARD", "4111 1111 1111 1111"), ("EMAIL", "ann@example.org")]
    whole = [f for f in found[1:] if f.entity == PHONE and text[f.start:f.end].count(" ") == 7]
    assert len(whole) > 100  # all eight groups: a candidate, taken unchecked
    # The same text with a budget to spare: those groups are no phone numbers.
    roomy = ScanBudget(units=10**7)
    assert [f.entity for f in DETECTOR.scan(text, budget=roomy)].count(PHONE) < 50
    assert not roomy.exhausted


def test_each_scan_has_a_budget_by_default() -> None:
    """A scan given no budget gets its own (one request's texts share the caller's)."""
    rng = random.Random(6)
    text = "".join(" ".join(f"{rng.randrange(10, 100)}" for _ in range(8)) + " | "
                   for _ in range(1000))
    shared = ScanBudget()
    DETECTOR.scan(text[:len(text) // 2], budget=shared)
    DETECTOR.scan(text[len(text) // 2:], budget=shared)
    assert shared.exhausted
    alone = DETECTOR.scan(text[:len(text) // 4])  # on its own budget: checked, few numbers
    assert [f.entity for f in alone].count(PHONE) < 10
