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
