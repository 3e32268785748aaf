"""The EMAIL detector on internationalized addresses (RFC 6531): letters, digits and marks of
any script in the local part and the domain, found whole, and what it still leaves alone."""

from __future__ import annotations

import unicodedata

import pytest

from app.privacy.detect import Detector

DETECTOR = Detector(entities=["EMAIL"])


def emails(text: str) -> list[str]:
    return [text[f.start:f.end] for f in DETECTOR.scan(text)]


@pytest.mark.parametrize("value", [
    "jörg.müller@example.de", "用户@例子.中国", "josé@correo.es", "Élodie.M@exemple.fr",
    "naïve@example.com", "anna@почта.рф", "θεός@παράδειγμα.ελ", "राम@डाकघर.भारत",
    "ann@mail.exämple.com", "ünïcode@bücher.de", "用户123@例子.中国", "ivan.иванов@mail.ru",
    unicodedata.normalize("NFD", "josé.müller@bücher.de"),
], ids=["de", "zh", "es", "fr", "diaeresis", "ru", "el", "hi", "inner-label", "both", "digits",
        "mixed", "nfd"])
def test_internationalized_email_found_whole(value: str) -> None:
    """An address with non-ASCII letters, digits or combining marks is found whole, in a
    sentence, the sentence's dot left out (not the ASCII tail after the last non-ASCII
    letter, and not nothing)."""
    assert emails(f"Write to {value}. Thanks") == [value]


@pytest.mark.parametrize(("text", "value"), [
    ("邮箱是zhangsan@example.com谢谢", "zhangsan@example.com"),
    ("メールはtaro.yamada@example.jp。", "taro.yamada@example.jp"),
    ("请联系\uff1a用户@例子.中国\uff0c谢谢", "用户@例子.中国"),  # fullwidth colon, comma
    ("“jörg@x.de”", "jörg@x.de"),
    ("«anna@почта.рф»", "anna@почта.рф"),
    ("(ईमेल: राम@डाकघर.भारत)", "राम@डाकघर.भारत"),
], ids=["zh-ascii", "ja-ascii", "zh-punctuation", "quotes", "guillemets", "brackets"])
def test_internationalized_email_bounds(text: str, value: str) -> None:
    """Where the address ends: at punctuation of any script, and where wide characters (CJK,
    kana) touch ASCII letters (those scripts put no space around an address)."""
    assert emails(text) == [value]


@pytest.mark.parametrize("text", [
    "@property", "größe@", "Preis 5€@Händler", "ünïcode@bücher", "x@例子", "ann@例子.com3",
    "Müller @ Köln.de", "Grüße@2x", "_größe@bücher.de", "é" * 65 + "@bücher.de",
    "日本語のテキスト、メールなし", "a.b@c.d",
], ids=["decorator", "no-domain", "price", "no-top-level", "no-dot", "digit-top-level",
        "spaced", "no-top-level-2", "punctuation-first", "too-long", "no-at", "short-top"])
def test_not_emails_left_alone(text: str) -> None:
    """Text without a local part, a dotted domain or a top level of 2-24 letters finds
    nothing, in any script; nor does a local part longer than 64 characters."""
    assert emails(text) == []


@pytest.mark.parametrize(("text", "value"), [
    ("https://x.test/unsubscribe?email=alice%40example.com&list=7", "alice%40example.com"),
    ("mailto:bob%2Bnews%40mail.example.org", "bob%2Bnews%40mail.example.org"),
    ("next=%2Flogin%3Fu%3Dann%2540corp.io%26a%3D1", "ann%2540corp.io"),
    ("GET /users/carol.d%40bücher.de/profile", "carol.d%40bücher.de"),
    ("both alice%40example.com and dave@example.com", "alice%40example.com"),
], ids=["query", "plus-encoded", "twice-encoded", "unicode-domain", "beside-plain"])
def test_percent_encoded_email_found(text: str, value: str) -> None:
    """An address whose ``@`` is percent-encoded (``%40``, or ``%2540`` encoded twice) is found
    as it is written, bounded as a plain one is."""
    assert emails(text)[0] == value


@pytest.mark.parametrize("text", [
    "50%40 off", "%40example.com", "a %40b.com", "x%40%40y.com", "rate 12%40.5 of it",
    "a%41b.com", "alice%40localhost",
])
def test_percent_encoded_not_emails(text: str) -> None:
    """No local part, no dotted domain, or another character encoded: no address."""
    assert emails(text) == []


def test_percent_encoded_email_redacted_and_restored() -> None:
    """Redacted as written, restored as written (the placeholder stands for the encoded
    text)."""
    from app.privacy.placeholders import Vault

    text = "see https://x.test/?to=alice%40example.com now"
    found = DETECTOR.scan(text)
    vault = Vault()
    redacted = vault.redact(text, found)
    assert redacted == "see https://x.test/?to=<EMAIL_1> now"
    assert vault.restore(redacted) == text
