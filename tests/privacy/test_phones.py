"""The phone check's fast path (``phonenumbers``' metadata, compiled once per country) answers
what ``phonenumbers.parse`` + ``is_valid_number`` + ``format_number`` answer, on numbers valid
and not, written nationally, internationally, with an international prefix and mangled."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from app.privacy.phones import _fast, _slow, phone_number

REGIONS = ("US", "CA", "GB", "JE", "DE", "FR", "NL", "ES", "IT", "BR", "AR", "MX", "IN", "JP",
           "AU", "CH", "RU")
"""The bench's six and others with what parsing must get right: NANPA and +44's several
regions, Italy's leading zero, transform rules (AR, MX, BR), trunk prefix 8 (RU)."""
TYPES = (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE,
         PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST, PhoneNumberType.VOIP,
         PhoneNumberType.PERSONAL_NUMBER, PhoneNumberType.UAN)


def _grouped(digits: str, rng: random.Random) -> str:
    groups, at = [], 0
    while at < len(digits):
        size = rng.randint(1, 4)
        groups.append(digits[at:at + size])
        at += size
    sep = rng.choice((" ", "-", ".", "", "/"))
    if len(groups) > 1 and rng.random() < 0.2:
        return f"({groups[0]}) " + sep.join(groups[1:])
    return sep.join(groups)


def _written(region: str, rng: random.Random) -> list[str]:
    """Each type's example number with 0-3 digits changed, one added or dropped, written the
    ways people and ``phonenumbers`` write it, plus random digit groups."""
    out: list[str] = []
    for kind in TYPES:
        example = phonenumbers.example_number_for_type(region, kind)
        if example is None:
            continue
        code = example.country_code
        digits = list(phonenumbers.national_significant_number(example))
        for _ in rng.sample(range(len(digits)), rng.randint(0, min(3, len(digits)))):
            digits[rng.randrange(len(digits))] = str(rng.randrange(10))
        if rng.random() < 0.2:
            digits.append(str(rng.randrange(10)))
        elif rng.random() < 0.2:
            digits.pop()
        nsn = "".join(digits)
        try:
            number = phonenumbers.parse(f"+{code}{nsn}", None)
            out += [phonenumbers.format_number(number, fmt) for fmt in (
                PhoneNumberFormat.NATIONAL, PhoneNumberFormat.INTERNATIONAL,
                PhoneNumberFormat.E164)]
        except phonenumbers.NumberParseException:
            pass
        out += [nsn, "0" + nsn, f"00{code} {nsn}", f"011 {code} {nsn}", f"{code} {nsn}",
                f"+{code} {_grouped(nsn, rng)}", _grouped(nsn, rng), "0" + _grouped(nsn, rng),
                "1 " + _grouped(nsn, rng), "8 " + _grouped(nsn, rng)]
    for _ in range(12):
        run = "".join(str(rng.randrange(10)) for _ in range(rng.randint(3, 18)))
        out.append(("+" if rng.random() < 0.3 else "") + _grouped(run, rng))
    return [text for text in out if text]


def test_fast_path_agrees_with_phonenumbers() -> None:
    """Thousands of candidates in 17 regions: where the fast path answers, it answers what
    ``phonenumbers`` does, and it answers nearly all of them, valid ones and invalid ones."""
    rng = random.Random(13)
    answered = valid = total = 0
    for region in REGIONS:
        for text in _written(region, rng):
            total += 1
            fast = _fast(text, region)
            if fast is None:
                continue
            answered += 1
            valid += fast
            assert fast == _slow(text, region), (text, region)
    assert answered >= 0.95 * total
    assert 0.15 * answered <= valid <= 0.85 * answered


@pytest.mark.parametrize(("text", "region", "expected"), [
    ("415-555-2671 x12", "US", True),  # an extension
    ("+49\t30 901820", "DE", False),  # a tab: not viable for parse
    ("٠٣٠ ٩٠١٨٢٠", "DE", False),  # Arabic-Indic digits: valid, but not the ASCII prefix 0
    ("+0 415 555 2671", "US", False),  # no country code after the plus
])
def test_what_the_fast_path_leaves_to_phonenumbers(text: str, region: str,
                                                   expected: bool) -> None:
    """Extensions, tabs, Unicode digits and a plus without a country code are not read by the
    fast path; ``phonenumbers`` answers them."""
    assert _fast(text, region) is None
    assert phone_number(text, region) is expected


@pytest.mark.parametrize(("text", "region", "expected"), [
    ("00 33 1 42 68 53 00", "DE", True),  # Germany's international prefix, a French number
    ("011 44 20 7946 0958", "US", True),
    ("1 415 555 2671", "US", True),  # the region's country code without a plus
    ("49 30 901820", "DE", False),  # ... where Germany writes the prefix 0 nationally
    ("0039 06 6982 1234", "FR", True),  # Italy's leading zero
    ("8 (495) 123-45-67", "RU", True),  # Russia's trunk prefix 8
    ("011 15 2345-6789", "AR", True),  # Argentina's mobile transform (15)
])
def test_the_fast_path_reads_prefixes_as_parse_does(text: str, region: str,
                                                    expected: bool) -> None:
    """International and national prefixes, a country code without a plus, a leading zero and
    a transform rule read the same way on both paths."""
    assert _fast(text, region) is expected
    assert _slow(text, region) is expected
