"""The validators behind the structured detectors: pure functions over a candidate's text.

Each takes the candidate as the text matched it and says whether it is the real thing: a card
number passes Luhn and has a known issuer prefix; an IBAN has its country's length and a mod-97
checksum of 1; a US SSN has a valid area, group and serial; a secret after a key-ish word is
random enough (Shannon entropy) to be one.
"""

from __future__ import annotations

import math
import re
from collections import Counter

IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
"""IBAN length by country (the SWIFT IBAN registry)."""

_CARD_LENGTHS = range(13, 20)
_DIGIT = re.compile(r"\d")


_DOUBLED = str.maketrans("0123456789", "0246813579")
"""Each digit doubled, less 9 when over 9 (Luhn's every second digit)."""
_IBAN_DIGITS = str.maketrans({chr(c): str(c - 55) for c in range(65, 91)})
"""Each upper-case letter as its IBAN number (A = 10 ... Z = 35)."""


def luhn(digits: str) -> bool:
    """Whether the digit string passes the Luhn (mod 10) check (summed by ``translate`` and
    ``sum`` over bytes, a few times faster than a loop a digit)."""
    if not digits.isascii():
        digits = "".join(str(int(char)) for char in digits)  # other scripts' digits
    backwards = digits[::-1]
    kept, doubled = backwards[0::2], backwards[1::2].translate(_DOUBLED)
    return (sum(kept.encode()) + sum(doubled.encode()) - 48 * len(digits)) % 10 == 0


def card_issuer(digits: str) -> bool:
    """Whether ``digits`` starts like a card of a known network: Visa 4; Mastercard 51-55 and
    2221-2720; American Express 34, 37; Diners 30, 36, 38, 39; JCB 35, 2131, 1800; Discover,
    Maestro and UnionPay 50, 56-69. (A bare Luhn check passes one random digit string in
    ten.)"""
    first = digits[0]
    if first == "4":
        return True
    two = int(digits[:2])
    if first == "5":
        return 50 <= two <= 59
    if first == "3":
        return two in (30, 34, 35, 36, 37, 38, 39)
    if first == "6":
        return True
    if first == "2":
        return 2221 <= int(digits[:4]) <= 2720 or digits[:4] == "2131"
    return digits[:4] == "1800"  # JCB's 15-digit numbers (2131 too, above)


def credit_card(text: str) -> bool:
    """A payment card number: 13-19 digits, one consistent separator (none, spaces or dashes),
    a known issuer prefix, and Luhn."""
    digits = text.replace(" ", "").replace("-", "")
    if len(digits) not in _CARD_LENGTHS or not digits.isdigit():
        return False
    if " " in text and "-" in text:
        return False
    return card_issuer(digits) and luhn(digits)


def iban(text: str) -> bool:
    """An IBAN: a known country code, that country's length, and ``mod 97 == 1`` of the
    rearranged number (ISO 13616)."""
    compact = text.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    if not compact.isalnum() or not compact.isascii():
        return False
    return int((compact[4:] + compact[:4]).translate(_IBAN_DIGITS)) % 97 == 1


def ipv4(text: str) -> bool:
    """An IPv4 address as ``ipaddress.IPv4Address`` accepts one: four dot-separated decimal
    octets of 1-3 ASCII digits, no leading zero, each at most 255 (checked here directly: the
    class costs ~2 us a call)."""
    octets = text.split(".")
    return len(octets) == 4 and all(
        octet.isascii() and octet.isdigit() and len(octet) <= 3
        and (octet == "0" or octet[0] != "0") and int(octet) <= 255 for octet in octets)


def us_ssn(area: str, group: str, serial: str) -> bool:
    """A valid US Social Security number: area not 000, 666 or 900-999; group not 00; serial
    not 0000; and not one of the numbers published as examples (078-05-1120, 219-09-9999)."""
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return f"{area}{group}{serial}" not in ("078051120", "219099999")


def entropy(text: str) -> float:
    """Shannon entropy of ``text`` in bits per character."""
    length = len(text)
    counts = Counter(text).values()
    # Each distinct count's term once (a token's counts are mostly 1s and 2s), summed in the
    # characters' order: the same floats, added in the same order, as a term a character.
    terms = {n: n / length * math.log2(n / length) for n in set(counts)}
    return -sum(map(terms.__getitem__, counts))


def random_token(text: str, *, min_bits: float) -> bool:
    """Whether a value after a key-ish word looks generated: at least ``min_bits`` of entropy
    per character and at least two of lower case, upper case and digits (a plain word or a
    sentence fails)."""
    if text.isascii():  # a case change shows a letter of the other case (ASCII only)
        classes = (text != text.upper()) + (text != text.lower()) + (not text.isalpha()
                                                                     and _DIGIT.search(text)
                                                                     is not None)
    else:
        classes = (any(c.islower() for c in text) + any(c.isupper() for c in text)
                   + any(c.isdigit() for c in text))
    return classes >= 2 and entropy(text) >= min_bits
