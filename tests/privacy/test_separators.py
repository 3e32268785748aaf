"""Numbers whose digit groups are separated by Unicode spaces or dashes (text pasted from web
pages, PDFs and word processors)."""

from __future__ import annotations

import pytest

from app.privacy.detect import Detector

DETECTOR = Detector(phone_regions=("US", "GB"))


@pytest.mark.parametrize("text,entity", [
    ("+1\xa0415\xa0555\xa02671", "PHONE"),
    ("+1 415\u2013555\u20132671", "PHONE"),
    ("+1\u202f415\u202f555\u202f2671", "PHONE"),
    ("+1 415\u2010555\u20102671", "PHONE"),
    ("+44\xa020\xa07946\xa00958", "PHONE"),
    ("call (415) 555\u20132671", "PHONE"),
    ("日本 +1 415\u2014555\u20142671", "PHONE"),
    ("4111\xa01111\xa01111\xa01111", "CREDIT_CARD"),
    ("\u201ccard\u201d 4111\xa01111\xa01111\xa01111", "CREDIT_CARD"),  # beside non-Latin-1
    ("日本 +1\xa0415\xa0555\xa02671", "PHONE"),
    ("4111\u20131111\u20131111\u20131111", "CREDIT_CARD"),
    ("SSN 123\u201345\u20136789", "US_SSN"),
    ("SSN 123\xa045\xa06789", "US_SSN"),
    ("DE89\xa03704\xa00044\xa00532\xa00130\xa000", "IBAN"),
])
def test_unicode_spaces_and_dashes_separate_groups(text: str, entity: str) -> None:
    found = DETECTOR.scan(text)
    assert [f.entity for f in found] == [entity]
    # The whole number, its separators included (the span is the text's own).
    span = text[found[0].start:found[0].end]
    assert found[0].end == len(text) and sum(map(str.isdigit, span)) == sum(
        map(str.isdigit, text))
