"""A card number or an SSN right after a word and a dash (``ref-``, ``CC-``, ``SSN-``) is found;
one inside a run of digits joined by dashes is not."""

from __future__ import annotations

import pytest

from app.privacy.detect import Detector

DETECTOR = Detector(phone_regions=("US", "GB"))


@pytest.mark.parametrize("text,value", [
    ("card-4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("ref-4111111111111111", "4111111111111111"),
    ("ref-4111-1111-1111-1111", "4111-1111-1111-1111"),
    ("SSN-123-45-6789", "123-45-6789"),
    ("-4111111111111111", "4111111111111111"),
])
def test_a_card_or_ssn_after_a_word_and_a_dash(text: str, value: str) -> None:
    assert [text[f.start:f.end] for f in DETECTOR.scan(text)] == [value]


@pytest.mark.parametrize("text", ["12-4111111111111111", "id 123-45-6789-1",
                                  "4111111111111111-7"])
def test_a_digit_run_joined_by_dashes_is_still_no_value(text: str) -> None:
    assert DETECTOR.scan(text) == []
