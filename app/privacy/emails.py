"""Email addresses in text (the ``EMAIL`` detector of ``app.privacy.detect``), found from each
``@`` outwards; internationalized addresses (RFC 6531) included.

- The local part: the characters right before the ``@`` (up to 64) that a local part holds,
  letters and digits of any script (``jörg.müller``, ``用户``), combining marks (``राम``, a
  decomposed ``é``) and ``._%+'-``, from the first that is not that punctuation. It must not
  follow a letter, a digit, a mark or ``._%+-`` (it would be the end of a longer run), except
  where a wide character (CJK, kana) touches a narrow letter: in scripts written without spaces
  that is where it starts (``邮箱是zhangsan@``: ``zhangsan``; so ``用户abc@`` gives ``abc``). A
  local part in such a script takes the wide characters before it too (``请发给用户@``: all of
  them), as nothing marks where it begins: they are redacted with it, and restored.
- The domain: dot-separated labels of letters, digits and combining marks of any script, and
  hyphens inside, up to 63 characters each; the top level 2-24 letters of one kind, ASCII or not
  (``.de``, ``.中国``, ``.рф``; where ASCII letters meet others it ends: ``example.com谢谢``).
  Words written right after a top level in a script without spaces are taken as part of it.
- Only ASCII punctuation belongs to an address: the quotes of ``“ann@x.org”`` and
  ``«ann@x.org»``, or a ``。`` after it, stay out.

A percent-encoded ``@`` stands for one (``encoded_spans``): ``%40`` as a URL's query or path
writes an address (``?to=alice%40example.com``), and ``%2540`` as one encoded twice writes it
(a redirect URL inside another). The address found is the text as written, its local part up to
64 characters before the ``%`` (``%`` is a local part's character, so ``bob%2Bnews%40x.org``
is found whole) from after the last encoded character that no local part holds
(``_ENCODED_STOP``), its domain after the ``40``: restored, it comes back as it was written.
Only a text that holds ``%40`` or ``%2540`` (digits: no case to fold) is searched for them.

An address that is ASCII where it touches other text costs what it cost before these scripts
were read: C loops (``str.rstrip``, one regex match) and a few one-character checks. Python
walks the characters (``str`` methods, ``unicodedata``) only where a non-ASCII letter, digit or
mark touches an ASCII part.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterator

_PUNCTUATION = "._%+'-"
_ASCII_LOCAL = string.ascii_letters + string.digits + _PUNCTUATION
"""An email's local part in ASCII: letters and digits, and this punctuation (not first)."""
_NOT_BEFORE = "._%+-"
"""What may not come right before a local part (besides a letter or digit)."""
_ASCII_DOMAIN = string.ascii_letters + string.digits + ".-"
_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                     r"[A-Za-z]{2,24}(?![A-Za-z0-9-])")
"""An all-ASCII domain (the common case, matched in C)."""
ENCODED_AT = ("%40", "%2540")
"""An ``@`` percent-encoded, once or twice (``%25`` is ``%``): a text holding neither has no
encoded address (``encoded_spans``)."""
_ENCODED = re.compile(r"(?<=[^\s@])%(?:25)?40(?=[^\s@.%]{1,63}\.)")
"""``_CANDIDATE`` for an encoded ``@``: something a local part ends with before it, a first
label and its dot after it (a label holds no ``%``)."""
_ENCODED_STOP = re.compile(r"%(?:25)?(?:2[026CF]|3[ABCDEF]|40|5[BCD])", re.IGNORECASE)
"""A character no local part holds, percent-encoded (once or twice, either case): a space,
``"&,/:;<=>?@[\\]``. An encoded address's local part starts after the last one, where the text
around it is encoded too (``next=%2Flogin%3Fu%3Dann%2540corp.io``: ``ann``)."""
_ASCII_RUN = re.compile(r"[A-Za-z0-9.-]*")
_CANDIDATE = re.compile(r"@(?<=[^\s@]@)(?=[^\s@.]{1,63}\.)")
"""An ``@`` that may be an address's: something a local part ends with before it (not a space
or another ``@``), and after it a first label (1-63 characters, none a space, ``@`` or dot)
and its dot, which every domain has. Past an ``@`` that is not one, the next that is is
searched for in C: text dense with ``@`` that holds no address costs no Python step for each
(``str.find`` finds the first ``@`` of ordinary text quicker than a regex search)."""
_MAX_LOCAL = 64
_MAX_DOMAIN = 255
_WIDE = frozenset({"W", "F"})
"""East Asian widths of the characters of scripts written without spaces (CJK, kana)."""
_NARROW, _WIDE_KIND = 1, 2


def spans(text: str) -> Iterator[tuple[int, int]]:
    """Where the email addresses in ``text`` are: ``(start, end)``, in order."""
    at = text.find("@")
    while at != -1:
        if _CANDIDATE.match(text, at) is None:  # then on to the next that may be, in C
            following = _CANDIDATE.search(text, at + 1)
            if following is None:
                return
            at = following.start()
        found = _address(text, at, at + 1)
        if found is not None:
            yield found
        at = text.find("@", at + 1)


def encoded_spans(text: str) -> Iterator[tuple[int, int]]:
    """Where the email addresses written with a percent-encoded ``@`` (``ENCODED_AT``) are in
    ``text``: ``(start, end)``, in order."""
    for match in _ENCODED.finditer(text):
        found = _address(text, match.start(), match.end(), encoded=True)
        if found is not None:
            yield found


def _address(text: str, at: int, domain: int, *, encoded: bool = False
             ) -> tuple[int, int] | None:
    """The address whose ``@`` (``encoded``: an encoded one) is ``text[at:domain]``; None if
    none."""
    # The local part: str.rstrip and lstrip, C loops (a regex search of the 64 characters
    # before would try each start in turn); the Unicode walk where they stop at a
    # non-ASCII character.
    head = text[max(0, at - _MAX_LOCAL):at]
    cut = len(head.rstrip(_ASCII_LOCAL))
    bounded = False
    if cut and not head[cut - 1].isascii():
        cut, bounded = _unicode_local(head, cut)
    if encoded and "%" in head[cut:]:
        stops = list(_ENCODED_STOP.finditer(head, cut))
        if stops:
            cut, bounded = stops[-1].end(), True  # the escape bounds it
    local = head[cut:].lstrip(_PUNCTUATION)
    start = at - len(local)
    if not local or not (bounded or not start or not (
            (before := text[start - 1]).isalnum() or before in _NOT_BEFORE
            or (not before.isascii() and _word(before)))):  # else: a longer run's end
        return None
    match = _DOMAIN.match(text, domain)
    end = domain - 1 if match is None else match.end()
    after = text[end:end + 2]
    if end >= domain and after.isascii() and (after[:1] != "." or not after[1:].isalnum()):
        return start, end  # all ASCII, and not given up before a label it could not take
    longer = _domain_end(text, domain, end)
    return None if longer is None else (start, longer)


def _word(char: str) -> bool:
    """Whether ``char`` is a letter, a digit or a combining mark (of any script)."""
    return char.isalnum() or unicodedata.category(char)[0] == "M"


def _unicode_local(head: str, cut: int) -> tuple[int, bool]:
    """Where the local part ending ``head`` starts (``head[cut:]``: its ASCII end, right after
    a non-ASCII character), walking back over letters, digits and marks of any script; and
    whether the walk stopped where a wide character (CJK, kana) touches a narrow letter, which
    starts the local part whatever comes before it."""
    after = _NARROW if head[cut:cut + 1].isalpha() else None  # the character after the one seen
    while cut:
        char = head[cut - 1]
        if char.isascii():
            if char not in _ASCII_LOCAL:
                return cut, False
            kind = _NARROW if char.isalpha() else None
        elif not _word(char):
            return cut, False
        elif unicodedata.east_asian_width(char) in _WIDE:
            kind = _WIDE_KIND
        else:
            kind = _NARROW if char.isalpha() else None
        if kind is not None and after is not None and kind != after:
            return cut, True
        after = kind
        cut -= 1
    return 0, False


def _domain_end(text: str, start: int, ascii_end: int) -> int | None:
    """Where the domain starting at ``start`` (after an ``@``) ends, where the all-ASCII match
    (ending at ``ascii_end``; ``start - 1``: none) may not be all of it: a letter, digit or
    mark follows it, or a dot and one; or, where none matched, one follows the ASCII letters,
    digits, dots and hyphens at ``start``. None when there is no domain."""
    if ascii_end >= start:
        after = text[ascii_end:ascii_end + 2]
        beyond = after[1:] if after[:1] == "." else after[:1]
        if not beyond or not _word(beyond):
            return ascii_end
    else:
        run = _ASCII_RUN.match(text, start).end()  # type: ignore[union-attr]  # matches ""
        beyond = text[run:run + 1]
        if beyond.isascii() or not _word(beyond):
            return None
    return _unicode_domain_end(text, start)


def _unicode_domain_end(text: str, start: int) -> int | None:
    """``_domain_end`` where a label holds a non-ASCII letter, digit or mark: the labels
    walked in Python, the domain ending after the last that can be a top level."""
    end, limit = start, min(len(text), start + _MAX_DOMAIN)
    while end < limit and ((char := text[end]) in _ASCII_DOMAIN
                           or (not char.isascii() and _word(char))):
        end += 1
    labels = text[start:end].split(".")
    found, position = None, start
    for i, label in enumerate(labels):
        if not 0 < len(label) <= 63 or label[0] == "-" or label[-1] == "-":
            break
        top = _top_level(label) if i else 0
        if top == len(label) or (top and i == len(labels) - 1):  # the last may end in words
            found = position + top
        position += len(label) + 1
    return found


def _top_level(label: str) -> int:
    """How much of ``label`` (from its start) is a top-level domain: 2-24 letters (marks after
    the first) all ASCII or all not, up to a letter of the other kind; 0 when none is."""
    ascii_ = label[0].isascii()
    if not label[0].isalpha():
        return 0
    size = 1
    while size < len(label) and label[size].isascii() == ascii_:
        char = label[size]
        if not (char.isalpha() or (not ascii_ and unicodedata.category(char)[0] == "M")):
            return 0
        size += 1
    return size if 2 <= size <= 24 else 0
