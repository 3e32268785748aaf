"""Where the number detectors look: small windows of the text, found at C speed.

A regex scan of a whole text costs 4-15 ns a character in ``re`` for each pattern that starts
with a character class (the detectors' patterns do), and text dense with numbers (addresses,
order lines, tables) keeps most of itself within reach of some digit. So the detectors look only
where a value of their kind can start, found in a one-byte-a-character view of the text
(``narrow``) with ``bytes.translate``, ``bytes.find`` and regexes that start with a literal
byte (which ``re`` finds with a memchr-style loop, ~0.3 ns a character):

- ``number_windows``: runs of digits and phone punctuation (`` ( ) . - / +``, space, tab)
  holding at least seven digits (a phone number's least: SSNs have 9, cards 13) or shaped like
  an IPv4 address, each with its digit count, so a detector skips a window it cannot match in;
- ``iban_starts``: two upper-case letters and two digits;
- ``colon_windows``: two colons at most five characters apart, and the four hex digits an
  address may have on either side (an IPv6 address is such pairs, one after another), with a
  digit within 40 characters (IPv6 written without any digit is not looked for).

Nearby windows are merged, so that a detector's ``finditer`` over a window matches what it
would over the whole text.
"""

from __future__ import annotations

import re

_CLASSES = bytes(48 if 48 <= i <= 57 else 46 if chr(i) in " \t().-/+" else 65 if 65 <= i <= 90
                 else 32 for i in range(256))
"""``bytes.translate`` table: digits to ``0``, phone punctuation to ``.``, upper-case ASCII
letters to ``A``, the rest to a space."""
_RUN = re.compile(rb"0(?=[0.]{6})(?:(?:\.*0){6}|0{0,2}(?:\.0{1,3}){3})[0.]*")
"""A run of digits and phone punctuation with at least seven digits (a phone number's least;
SSNs have 9, cards 13), or shaped like an IPv4 address, to its end. (The lookahead, which
both shapes imply, refuses a short run at once: without it the scan costs 8x as much.)"""
_COLONS = re.compile(rb":[0-9A-Za-z]{0,4}:")
_BEFORE, _AFTER = 2, 13
"""What a window adds around a run: a phone number's ``+`` or ``(`` before its first digit;
after its last, an extension (`` ext. 123456``)."""
_HEXTET, _IPV6_DIGIT = 4, 40
"""An IPv6 group's most digits; how far from a candidate a digit must be."""


def narrow(text: str) -> tuple[bytes, bool]:
    """``text`` one byte a character: its Latin-1 bytes where it has no wider character, else
    the low byte of each character's code point (then ``True``: the view is not the text),
    fullwidth digits (U+FF10-FF19) read as ASCII ones. ASCII characters are
    themselves either way; a wider character may look like an ASCII one (a candidate that the
    detectors, which match the text itself, then refuse), never the other way round."""
    try:
        return text.encode("latin-1"), False
    except UnicodeEncodeError:
        wide = text.encode("utf-32-le")
        view = wide[::4]
        at = wide.find(b"\xff\x00\x00")  # a fullwidth form (U+FFxx): maybe a digit
        if at == -1:
            return view, True
        digits = bytearray(view)
        while at != -1:
            low = wide[at - 1]
            if at % 4 == 1 and 0x10 <= low <= 0x19:
                digits[at // 4] = low + 0x20  # U+FF10 + n -> "0" + n
            at = wide.find(b"\xff\x00\x00", at + 1)
        return bytes(digits), True


def classes(view: bytes) -> bytes:
    """``view`` with digits as ``0``, phone punctuation as ``.``, upper-case letters as ``A``
    and the rest as spaces."""
    return view.translate(_CLASSES)


def number_windows(classed: bytes) -> list[tuple[int, int, int]]:
    """``(lo, hi, digits)``: each run of ``classed`` that may hold a number value (``_RUN``),
    widened by what a value may carry around it (``_BEFORE``, ``_AFTER``), overlapping ones
    merged; linear in the text."""
    windows: list[tuple[int, int, int]] = []
    size = len(classed)
    for run in _RUN.finditer(classed):
        lo, hi = max(0, run.start() - _BEFORE), min(size, run.end() + _AFTER)
        if windows and lo <= windows[-1][1]:
            # Merged: only what the run adds past the window is counted (``hi`` never goes
            # back), so a text of overlapping runs costs one pass, not one per run.
            lo, end, digits = windows.pop()
            windows.append((lo, hi, digits + classed.count(b"0", end, hi)))
        else:
            windows.append((lo, hi, classed.count(b"0", lo, hi)))
    return windows


def iban_starts(classed: bytes) -> list[int]:
    """Where an IBAN may start: each ``AA00`` (two upper-case letters, two digits)."""
    starts: list[int] = []
    at = classed.find(b"AA00")
    while at != -1:
        starts.append(at)
        at = classed.find(b"AA00", at + 1)
    return starts


def colon_windows(view: bytes, classed: bytes) -> list[tuple[int, int]]:
    """Spans around each pair of colons no more than five characters apart (``::``, ``:db8:``)
    and a group's length either side, where a digit is near; an address's pairs overlap, so
    its windows merge into one that holds all of it."""
    windows: list[tuple[int, int]] = []
    size = len(view)
    pair = _COLONS.search(view)
    while pair is not None:
        lo, hi = max(0, pair.start() - _HEXTET), min(size, pair.end() + _HEXTET)
        if windows and lo <= windows[-1][1]:
            windows[-1] = (windows[-1][0], hi)
        else:
            windows.append((lo, hi))
        pair = _COLONS.search(view, pair.end() - 1)  # its second colon may start the next
    return [(lo, hi) for lo, hi in windows
            if classed.find(b"0", max(0, lo - _IPV6_DIGIT), hi + _IPV6_DIGIT) != -1]
