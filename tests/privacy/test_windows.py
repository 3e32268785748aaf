"""Where the number detectors look (``app.privacy.windows``): the windows change how much of a
text the detectors scan, never what they find."""

from __future__ import annotations

import pytest

from app.privacy import detect, windows
from app.privacy.detect import Detector, Finding
from bench.privacy import negatives, positives

DETECTOR = Detector(phone_regions=("US", "DE", "FR", "GB", "NL", "ES"))


def _everywhere(detector: Detector, text: str) -> list[Finding]:
    """The same detectors, each over the whole text: what the windows must not change."""
    whole = len(text)
    claimed = [*detect._ibans(text, range(whole)), *detect._ipv6s(text, 0, whole)]
    numbers = [*detect._cards(text, 0, whole), *detect._ssns(text, 0, whole),
               *detect._bare_ssns(text, 0, whole), *detect._ipv4s(text, 0, whole)]
    phones = detector._phones(text, 0, whole, numbers + claimed, detect.ScanBudget())
    found = [*detect._emails(text), *claimed, *numbers, *phones,
             *detect._secrets(text, windows.narrow(text)[0])]
    return detect._resolve(found, detect.PRIORITY)


def test_windows_find_what_whole_text_scans_find() -> None:
    """On the labelled corpus and its look-alikes, a scan finds what the detectors find when
    each runs over all of the text."""
    texts = [s.text for s in positives(300, seed=3)] + [s.text for s in negatives(150, seed=3)]
    assert sum(len(DETECTOR.scan(text)) for text in texts) > 300
    for text in texts:
        assert DETECTOR.scan(text) == _everywhere(DETECTOR, text), text


@pytest.mark.parametrize("filler", [
    "plain ASCII text ", "Grüße aus Köln, ça va ", "日本語のテキスト ", "emoji 🙂 here ",
])
def test_windows_are_character_positions_in_any_text(filler: str) -> None:
    """ASCII, Latin-1 and wider text (read by the low byte of each code point): the windows
    are character positions, so the values are found where they are."""
    text = filler * 20 + "call +49 30 901820, card 4111 1111 1111 1111, from 10.1.2.3 " \
        + filler + "IBAN DE89 3704 0044 0532 0130 00 or fe80::1ff:fe23:4567:890a ok"
    found = [(f.entity, text[f.start:f.end]) for f in DETECTOR.scan(text)]
    assert found == [("PHONE", "+49 30 901820"), ("CREDIT_CARD", "4111 1111 1111 1111"),
                     ("IP_ADDRESS", "10.1.2.3"), ("IBAN", "DE89 3704 0044 0532 0130 00"),
                     ("IP_ADDRESS", "fe80::1ff:fe23:4567:890a")]


def test_wide_characters_that_look_like_digits_only_add_windows() -> None:
    """A character whose low byte is an ASCII digit's (U+4E30) may open a window, never a
    finding; a text of them finds nothing."""
    text = "\u4e30\u4e31\u4e32 \u4e33\u4e34\u4e35-\u4e36\u4e37\u4e38\u4e39 call"
    assert windows.number_windows(windows.classes(windows.narrow(text)[0]))
    assert DETECTOR.scan(text) == []


def test_short_runs_open_no_window() -> None:
    """House numbers, postcodes and years are too short for any number value; seven digits
    and an IPv4 address's shape are not."""
    def spans(text: str) -> list[str]:
        found = windows.number_windows(windows.classes(windows.narrow(text)[0]))
        return [text[lo:hi].strip() for lo, hi, _ in found]
    assert spans("Hauptstr. 12, 34900 Berlin, since 2024") == []
    assert spans("call 555 2671 now ok") == ["l 555 2671 now ok"]  # 2 before, 13 after
    assert spans("host 1.2.3.4 up") == ["t 1.2.3.4 up"]


def test_an_ipv6_address_is_one_window() -> None:
    """An IPv6 address's colon pairs merge into one window that holds all of it."""
    text = "host 2001:db8:85a3::8a2e:370:7334 port"
    view, _ = windows.narrow(text)
    (window,) = windows.colon_windows(view, windows.classes(view))
    assert text[window[0]:window[1]].strip() == "2001:db8:85a3::8a2e:370:7334"


def test_fullwidth_digits_read_as_digits_in_the_view() -> None:
    """In a wide text's view, fullwidth digits are ASCII digits; other characters keep their
    low byte (a fullwidth letter is not a digit)."""
    text = "\u65e5 \uff16\uff15\uff10 \uff21\uff01"  # 日, fullwidth 650, A and !
    assert windows.narrow(text) == (b"\xe5 650 !\x01", True)
    assert windows.narrow("日 650") == (b"\xe5 650", True)
