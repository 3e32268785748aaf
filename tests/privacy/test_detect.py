"""The detectors: what each finds, in several formats and locales, and what it leaves alone."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import math
import random
import uuid

import pytest

from app.privacy import checks
from app.privacy.detect import Custom, Detector, words_pattern

DETECTOR = Detector(phone_regions=("US", "GB", "DE", "FR"))
WIDE = str.maketrans("0123456789", "".join(chr(0xFF10 + n) for n in range(10)))


def wide(text: str) -> str:
    """``text`` with its digits fullwidth (U+FF10-FF19)."""
    return text.translate(WIDE)


def found(text: str, detector: Detector = DETECTOR) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start:f.end]) for f in detector.scan(text)]


@pytest.mark.parametrize("value", [
    "john.doe@example.com", "a+tag@sub.example.co.uk", "Élodie.M@exemple.fr".replace("É", "E"),
    "o'brien@mail.ie", "x_y-z@host-name.io",
])
def test_email_found(value: str) -> None:
    """Emails are found whole inside a sentence, trailing punctuation left out."""
    assert found(f"Write to {value}. Thanks") == [("EMAIL", value)]


@pytest.mark.parametrize("value", [
    "(415) 555-2671", "+1 415-555-2671", "415.555.2671", "+44 20 7946 0958",
    "+49 30 901820", "030 901820", "+33 1 42 68 53 00", "01 42 68 53 00", "020 7946 0958",
])
def test_phone_found(value: str) -> None:
    """Phone numbers of several countries' formats are found (phonenumbers, VALID)."""
    assert found(f"Call me on {value} tomorrow") == [("PHONE", value)]


@pytest.mark.parametrize(("text", "value"), [
    ("call +1 650 253 0000 ext. 123 now", "+1 650 253 0000 ext. 123"),
    ("call +1 650 253 0000 ext. 5 now", "+1 650 253 0000 ext. 5"),
    ("call 650-253-0000 ext. 12 now", "650-253-0000 ext. 12"),
    ("call 650\t253\t0000 now", "650\t253\t0000"),
    (f"call {wide('+1 650 253 0000')} now", wide("+1 650 253 0000")),
    (f"\u96fb\u8a71 {wide('650-253-0000')}\u3002", wide("650-253-0000")),
])
def test_phone_with_extension_tab_or_fullwidth_digits_found(text: str, value: str) -> None:
    """An extension after "ext." (its dot is not the number's), tabs between groups and
    fullwidth digits are phone numbers as phonenumbers reads them."""
    assert Detector(phone_regions=("US",)).scan(text) and found(text) == [("PHONE", value)]


@pytest.mark.parametrize("value", [
    "4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "5500 0000 0000 0004",
    "3400 000000 00009", "6011000000000004", "2223000048400011",
])
def test_card_found(value: str) -> None:
    """Card numbers with spaces, dashes or none are found when Luhn and the issuer agree."""
    assert found(f"card: {value} exp 12/29") == [("CREDIT_CARD", value)]


@pytest.mark.parametrize("value", [
    "DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32",
    "FR14 2004 1010 0505 0001 3M02 606", "NL91ABNA0417164300", "ES9121000418450200051332",
])
def test_iban_found(value: str) -> None:
    """IBANs of several countries, grouped or not, are found by their checksum."""
    assert found(f"IBAN {value} please") == [("IBAN", value)]


@pytest.mark.parametrize(("text", "value"), [
    ("ssn 123-45-6789 on file", "123-45-6789"), ("SSN: 123456789", "123456789"),
    ("number 536 22 1234.", "536 22 1234"),
])
def test_ssn_found(text: str, value: str) -> None:
    """US SSNs with dashes or spaces, and bare nine digits after "SSN"."""
    assert found(text) == [("US_SSN", value)]


@pytest.mark.parametrize("text", [
    "ssn 000-12-3456", "ssn 666-12-3456", "ssn 912-12-3456", "ssn 123-00-4567",
    "ssn 123-45-0000", "id 123456789", "ssn 123-45 6789",
])
def test_ssn_invalid_left(text: str) -> None:
    """Invalid areas, groups, serials, bare digits without context, mixed separators."""
    assert [e for e, _ in found(text) if e == "US_SSN"] == []


@pytest.mark.parametrize("value", ["192.168.1.10", "8.8.8.8", "2001:db8::8a2e:370:7334",
                                   "fe80::1ff:fe23:4567:890a"])
def test_ip_found(value: str) -> None:
    """IPv4 and IPv6 addresses."""
    assert found(f"host {value}, port 22") == [("IP_ADDRESS", value)]


@pytest.mark.parametrize("text", [
    "version 1.2.3", "v1.2.3.4 released", "1.2.3.4.5", "999.1.1.1", "x[1::2]",
    "10:30:45", "python 3.12.1.0", "oid 1.3.6.1.4.1",
])
def test_ip_negatives(text: str) -> None:
    """Version numbers, longer dotted runs, out-of-range octets, slices, times."""
    assert found(text) == []


@pytest.mark.parametrize("value", [
    "sk-proj-" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6", "sk-ant-api03-" + "x" * 40,
    "AKIAIOSFODNN7EXAMPLE", "ghp_" + "A1b2C3d4" * 5, "github_pat_11ABCDEFG0123456789_abcdefXYZ",
    "xoxb-1234567890-abcdefghij", "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "glpat-abcdefghij0123456789",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
])
def test_secret_found(value: str) -> None:
    """Credentials by their known formats."""
    assert found(f"use {value} here") == [("SECRET", value)]


def test_secret_after_keyish_word() -> None:
    """A random value after "password=" or "api_key:" is a secret; a plain word is not."""
    assert found('password="Xk9mP2qL8vZr4T"') == [("SECRET", "Xk9mP2qL8vZr4T")]
    assert found("api_key: q8ZL3nV0tR7wY2mK5pB") == [("SECRET", "q8ZL3nV0tR7wY2mK5pB")]
    assert found("password = correcthorsebattery") == []
    assert found("token: self.next_token_value") == []


@pytest.mark.parametrize(("key", "value", "secret"), [
    ("password", "Xk9mP2qL8vZr4T", "Xk9mP2qL8vZr4T"),
    ("api_key", "q8ZL3nV0tR7wY2mK5pB (rotated)", "q8ZL3nV0tR7wY2mK5pB"),
    ("X-Api-Key", '"q8ZL3nV0tR7wY2mK5pB"', "q8ZL3nV0tR7wY2mK5pB"),
    ("authorization_token", "Zq8vLm2xPw9kRt7Y", "Zq8vLm2xPw9kRt7Y"),
    ("client_secret", "Zq8vLm2xPw9kRt7Y.", "Zq8vLm2xPw9kRt7Y"),
    ("password", "correcthorsebattery", None),  # not random enough
    ("api_key", "short1A", None),
    ("note", "Zq8vLm2xPw9kRt7Y", None),  # not a key-ish name
    ("key name", "Zq8vLm2xPw9kRt7Y", None),  # as in text: "key name: ..." is not a key
])
def test_secret_under_keyish_key(key: str, value: str, secret: str | None) -> None:
    """A JSON object's value under a key-ish key is read as the value after ``key:`` in text
    would be: the secret at its start, when it is random enough."""
    hit = DETECTOR.keyed(key, value)
    assert (None if hit is None else (hit.entity, value[hit.start:hit.end])) == \
        (None if secret is None else ("SECRET", secret))
    assert found(f"{key}: {value}") == ([] if secret is None else [("SECRET", secret)])
    assert Detector(entities=["EMAIL"]).keyed(key, value) is None


def test_negatives_common_shapes() -> None:
    """UUIDs, hashes, base64, log lines, code and version strings find nothing."""
    samples = [
        str(uuid.UUID(int=12345678901234567890)), hashlib.sha256(b"x").hexdigest(),
        hashlib.md5(b"y").hexdigest(), base64.b64encode(bytes(range(48))).decode(),
        "2024-03-01 12:30:45,123 INFO [worker-7] request 4f2a done in 1234 ms",
        "for i in range(1000000): total += i * 31337",
        "numpy==1.26.4 requests>=2.31.0 python_requires='>=3.10'",
        "@property\ndef name(self) -> str: return self._name",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
        "timestamp 1712345678901 and order 20240301",
    ]
    for text in samples:
        assert found(text) == [], text


def test_overlaps_resolved_longest_then_specific() -> None:
    """A card number is not also reported as a phone number; findings never overlap."""
    text = "pay 4111 1111 1111 1111 or mail ann@x.org from 10.0.0.1"
    assert found(text) == [("CREDIT_CARD", "4111 1111 1111 1111"), ("EMAIL", "ann@x.org"),
                           ("IP_ADDRESS", "10.0.0.1")]


def test_entities_limit_what_runs() -> None:
    """A detector asked for some types finds only those."""
    detector = Detector(entities=["EMAIL"])
    assert found("ann@x.org 4111111111111111", detector) == [("EMAIL", "ann@x.org")]


def test_custom_patterns_and_words() -> None:
    """Custom regexes and word lists (whole words, any case) from the config."""
    detector = Detector(entities=[], custom=[
        Custom("EMPLOYEE_ID", __import__("re").compile(r"EMP-\d{6}")),
        Custom("PROJECT", words_pattern(["bluebird", "night jar"]))])
    assert found("EMP-123456 works on Bluebird and Night Jar, not bluebirds", detector) == [
        ("EMPLOYEE_ID", "EMP-123456"), ("PROJECT", "Bluebird"), ("PROJECT", "Night Jar")]


def test_checks() -> None:
    """The validators on known good and bad values."""
    assert checks.luhn("79927398713") and not checks.luhn("79927398710")
    assert checks.iban("GB82WEST12345698765432") and not checks.iban("GB82WEST12345698765433")
    assert not checks.iban("XX82WEST12345698765432")
    assert checks.us_ssn("123", "45", "6789") and not checks.us_ssn("078", "05", "1120")
    assert checks.random_token("q8ZL3nV0tR7wY2mK5pB", min_bits=3.3)
    assert not checks.random_token("aaaaaaaaaaaaaaaa", min_bits=3.3)


def test_luhn_and_iban_checksums_match_their_definitions() -> None:
    """The table-driven Luhn and IBAN sums equal the digit-by-digit definitions on random
    digit strings and random IBAN-shaped strings."""
    rng = random.Random(5)
    for _ in range(2000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 19)))
        values = [int(d) * (2 if i % 2 else 1) for i, d in enumerate(reversed(digits))]
        assert checks.luhn(digits) == (sum(v - 9 if v > 9 else v for v in values) % 10 == 0)
        country = rng.choice(sorted(checks.IBAN_LENGTHS))
        body = "".join(rng.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
                       for _ in range(checks.IBAN_LENGTHS[country] - 4))
        text = f"{country}{rng.randint(0, 99):02d}{body}"
        number = "".join(str(int(c, 36)) for c in text[4:] + text[:4])
        assert checks.iban(text) == (int(number) % 97 == 1)
    assert checks.luhn("٧٩٩٢٧٣٩٨٧١٣")  # 79927398713 in Arabic-Indic digits


def test_random_token_matches_its_definition() -> None:
    """The entropy summed a distinct count at a time, and the character classes read from
    case changes, equal the character-by-character definitions on random values."""
    rng = random.Random(9)
    alphabets = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/_-.=~!@#$%^&*",
                 "aab", "AB1", "xyzXYZ", "0123", "éÉ1ß")
    for _ in range(3000):
        alphabet = rng.choice(alphabets)
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        size = len(value)
        bits = -sum(value.count(c) / size * math.log2(value.count(c) / size)
                    for c in dict.fromkeys(value))
        assert checks.entropy(value) == bits
        kinds = (any(c.islower() for c in value) + any(c.isupper() for c in value)
                 + any(c.isdigit() for c in value))
        assert checks.random_token(value, min_bits=3.3) == (kinds >= 2 and bits >= 3.3)


def test_ipv4_check_accepts_what_ipaddress_accepts() -> None:
    """``checks.ipv4`` agrees with ``ipaddress.IPv4Address`` on dotted strings of octets valid
    and not (leading zeros, over 255, empty, non-ASCII digits, three or five parts)."""
    rng = random.Random(11)
    pieces = ("0", "00", "01", "1", "9", "10", "99", "100", "255", "256", "999", "1000", "",
              "٣", "a")
    accepted = 0
    for _ in range(5000):
        text = ".".join(rng.choice((*pieces, str(rng.randint(0, 300))))
                        for _ in range(rng.choice((3, 4, 4, 4, 5))))
        try:
            ipaddress.IPv4Address(text)
            valid = True
        except ValueError:
            valid = False
        accepted += valid
        assert checks.ipv4(text) == valid, text
    assert accepted > 100
