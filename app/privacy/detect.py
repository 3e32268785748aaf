"""Finding sensitive values in text: pure functions, no I/O, nothing downloaded.

``Detector.scan(text)`` returns ``Finding(entity, start, end)`` spans, sorted and never
overlapping. Built-in entity types:

- ``EMAIL``: found from each ``@`` outwards (a local part before it, a dotted domain with a
  2-24 letter top level after it; letters and digits of any script: ``app.privacy.emails``),
  and from each percent-encoded one (``%40``, ``%2540``: ``alice%40example.com`` in a URL);
- ``PHONE``: candidate runs of 7-21 digits with phone punctuation (dates and times are not
  candidates), each checked as a whole against Google's ``phonenumbers`` in each default region
  (``app.privacy.phones.phone_number``: what ``parse`` and ``is_valid_number`` answer, read
  from the library's metadata compiled once per country, plus the rules of the matcher's
  ``VALID`` leniency: national prefix written where the region writes one, brackets paired);
  the matcher itself (~460 us per KB) runs only on a run long enough to hold two numbers that
  is none as a whole;
- ``CREDIT_CARD``: 13-19 digits, spaces or dashes between groups, a known issuer prefix, Luhn;
- ``IBAN``: country code, its registry length, mod-97 checksum (spaces every 4 allowed);
- ``US_SSN``: ``AAA-GG-SSSS`` (dashes or spaces) with valid area, group and serial; nine bare
  digits only right after "SSN" or "social security";
- ``IP_ADDRESS``: IPv4 and IPv6 as the ``ipaddress`` module accepts them (IPv4 checked by
  ``checks.ipv4``); not a dotted run longer than four parts, not one after ``v`` or "version"
  (``1.2.3.4`` as a version number);
- ``SECRET``: known credential formats (OpenAI ``sk-``/``sk-proj-``, Anthropic ``sk-ant-``, AWS
  ``AKIA``/``ASIA`` access key ids, GitHub ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` and
  ``github_pat_``, Slack ``xox[bpas]-``, Google ``AIza``, GitLab ``glpat-``, PEM private key
  blocks, JWTs), and, after a key-ish word (key, token, secret, password...) and ``:`` or ``=``, a
  value random enough to be generated; the same value held under such a key in a JSON object
  (``{"api_key": ...}``: ``Detector.keyed``, for the string values the walk finds under the
  client's own keys);
- custom types from the config: regexes and word lists (whole words, case-insensitive).

Overlapping findings are resolved longest first, then by specificity (``PRIORITY``): a card
number is not also a phone number, nor an email's digits an IP address.

A ``Detector`` may also hold a ``ModelScanner``: named entities (people, places) found by a
model, Presidio's analyzer (``app.privacy.presidio``), whose findings are resolved with the
built-ins' the same way (ranked below them on a tie). It costs milliseconds per KB where the
built-ins cost microseconds, so callers run such a detector's scans on the scanner's own thread
(``ModelScanner.offload``); ``scan(text, model=False)`` is the built-ins alone.

Each detector runs behind a pre-filter that costs a substring test or a C-level pass (no
``@``, ``%40`` or ``%2540``: no email search; no digit: none of the number detectors). The
number detectors look only in small windows (``app.privacy.windows``: runs of seven digits or
an IPv4 address's shape, where an IBAN or an IPv6 address can start), and in a window only those
whose values fit its digit count, so text without candidates costs a few microseconds per KB
and each value found 10-15 us, its validation included. The phone checks one request may
make are bounded (``ScanBudget``): past the budget a candidate counts as a phone number
unchecked.

(Over 500 lines: one scan over one text, whose detectors share the windows, the boundary
rules and the overlap resolution.)
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

import phonenumbers

from app.privacy import checks, emails, windows
from app.privacy.phones import phone_number

EMAIL, PHONE, CREDIT_CARD, IBAN = "EMAIL", "PHONE", "CREDIT_CARD", "IBAN"
US_SSN, IP_ADDRESS, SECRET = "US_SSN", "IP_ADDRESS", "SECRET"
BUILTIN: tuple[str, ...] = (EMAIL, PHONE, CREDIT_CARD, IBAN, US_SSN, IP_ADDRESS, SECRET)
"""The built-in entity types."""
PRIORITY: dict[str, int] = {SECRET: 7, CREDIT_CARD: 6, IBAN: 5, US_SSN: 4, EMAIL: 3,
                            IP_ADDRESS: 2, PHONE: 1}
"""Which of two findings of the same length wins (higher); custom types rank above all."""


class Finding(NamedTuple):
    """A sensitive value at ``text[start:end]``."""

    entity: str
    start: int
    end: int


T = TypeVar("T")


class ModelScanner(Protocol):
    """Entities found by a model (``app.privacy.presidio.PresidioScanner``)."""

    entities: frozenset[str]
    """The types it can find."""

    def scan(self, text: str, entities: frozenset[str]) -> list[Finding]:
        """The values of ``entities`` (a subset of ``self.entities``) in ``text``; blocking."""
        ...

    async def offload(self, work: Callable[[], T]) -> T:
        """``work()`` run on the scanner's own thread (off the event loop), after the work
        queued before it."""
        ...


@dataclass(frozen=True, slots=True)
class Custom:
    """A custom entity type: ``name`` (upper case) and the regex that finds it."""

    name: str
    pattern: re.Pattern[str]


def words_pattern(words: Sequence[str]) -> re.Pattern[str]:
    """Whole-word, case-insensitive matching of any of ``words`` (longest first)."""
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


_CARD = re.compile(r"(?=[\d -]{13})\d+(?:[ -]\d+)*")
"""A run of digit groups, from where 13 characters of digits, spaces and dashes follow: the
runs long enough to hold a card, without a Python step for each shorter one."""
_GROUP = re.compile(r"\d+")
_SSN = re.compile(r"(\d{3})([- ])(\d{2})\2(\d{4})")
_SSN_BARE = re.compile(r"(?i:ssn|social security(?: number| no\.?)?)\W{0,3}(\d{3})(\d{2})(\d{4})")
_PHONE_CANDIDATE = re.compile(r"(?:\+|\(|\b)\d[\d \t().\-/]{5,22}\d(\s?(?:x|ext\.?)\s?\d{1,6})?")
"""A phone number's shape, its extension (group 1) included."""
_BARE_NUMBER = re.compile(r"\d+(?:\.\d+)?")
"""A candidate without phone punctuation: a phone number only after a phone word (code and
logs are full of bare digit runs and decimals)."""
_PHONE_WORDS = re.compile(
    r"(?i:phone|call|tel|mobile|cell|fax|whatsapp|sms|text me|reach|contact|number|ring"
    r"|telefon|handy|t[ée]l[ée]phone|t[ée]l\.|portable|m[óo]vil|tel[ée]fono|bellen|nummer"
    r"|num[ée]ro)")
_DATE_LIKE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}")
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_IPV6 = re.compile(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}")
_IBAN_SPANS = {length: re.compile(rf"[A-Z]{{2}}\d{{2}}(?: ?[A-Z0-9]){{{length - 4}}}")
               for length in set(checks.IBAN_LENGTHS.values())}
"""An IBAN of each registry length, spaces allowed between characters (not after the last:
what follows may be a word)."""
_VERSION_BEFORE = re.compile(r"(?i:v|version\s?|release\s?|python\s?)\Z")
_SEPARATORS = str.maketrans({
    **dict.fromkeys("\u00a0\u2007\u2009\u202f\u3000", " "),
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\uff0d", "-")})
"""Separators that text pasted from web pages, PDFs and word processors puts between a
number's digit groups, as the number detectors read them: no-break, figure, thin, narrow
no-break and ideographic spaces as a space; Unicode hyphens and dashes and the minus sign as
``-`` (what ``phonenumbers`` takes as punctuation too). One character for one, so a
finding's span is the same in the text."""
_WIDE_SEPARATOR = re.compile("[\u00a0\u2007\u2009\u202f\u3000\u2010-\u2015\u2212\uff0d]")
_SECRETS: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (gate, prefix, re.compile(pattern)) for gate, prefix, pattern in (
        ("-", "sk-", r"sk-ant-[A-Za-z0-9_-]{20,}|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
        ("K", "AKIA", r"AKIA[0-9A-Z]{16}"),
        ("S", "ASIA", r"ASIA[0-9A-Z]{16}"),
        *(("_", f"gh{kind}_", rf"gh{kind}_[A-Za-z0-9]{{36,}}") for kind in "pousr"),
        ("_", "github_pat_", r"github_pat_[A-Za-z0-9_]{22,}"),
        ("-", "xox", r"xox[bpas]-[A-Za-z0-9-]{10,}"),
        ("z", "AIza", r"AIza[0-9A-Za-z_-]{35}"),
        ("-", "glpat-", r"glpat-[0-9A-Za-z_-]{20,}"),
        ("-", "-----BEGIN ", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]{1,16384}?"
                             r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
        ("J", "eyJ", r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ))
"""Each known credential format: a character it needs (a text without it is skipped at once,
memchr-fast), the literal it starts with, its pattern (matched where the literal is)."""
_Format = tuple[str, str, re.Pattern[str]]


def _secret_finders() -> tuple[tuple[str | re.Pattern[str], frozenset[str],
                                     tuple[_Format, ...]], ...]:
    groups: dict[str, list[_Format]] = {}
    for secret in _SECRETS:
        groups.setdefault(secret[1][0], []).append(secret)
    return tuple((formats[0][1] if len(formats) == 1 else re.compile(
        re.escape(first) + "(?=" + "|".join(re.escape(f[1][1:]) for f in formats) + ")"),
        frozenset(f[0] for f in formats), tuple(formats)) for first, formats in groups.items())


_SECRET_FINDERS = _secret_finders()
_SECRET_GATES = "".join(dict.fromkeys(gate for gate, _, _ in _SECRETS))
"""The formats by first character, each group found in one pass: a lone format with
``str.find``, several (``AKIA``, ``ASIA``, ``AIza``; seven starting with ``g``) with a regex
that starts with the literal character (which ``re`` finds memchr-fast) and looks ahead for
the rest, matching one character so that overlapping starts are all found. A pass costs ~0.5 ns
a character: 6 passes where there were 14."""
_KEY_WORD = r"(?:key|secret|token|passw(?:or)?d|passwd|pwd|credentials?)[\w-]{0,20}"
"""A key-ish word, and the rest of the key's name after it (``api_key``, ``token_id``)."""
_SECRET_VALUE = r"\s{0,3}[\"']?([A-Za-z0-9+/_\-.=~!@#$%^&*]{12,200})"
"""What may follow the key as its value (then checked for randomness)."""
_KEYISH = re.compile(
    _KEY_WORD + r"[\"']?\s{0,3}(?::=|=>|[:=])" + _SECRET_VALUE, re.IGNORECASE)
_SECRET_KEY = re.compile(_KEY_WORD + r"\s{0,3}\Z", re.IGNORECASE)
"""A JSON object's key that names a secret: a key-ish word ending it (what ``_KEYISH`` asks
of the words before a ``:`` in text)."""
_KEYED_VALUE = re.compile(_SECRET_VALUE)
_KEYISH_WORDS = (b"key", b"secret", b"token", b"passw", b"pwd", b"credential")
_SECRET_MIN_BITS = 3.3
"""Entropy (bits per character) a value after a key-ish word needs to count as a secret: a
random 12+ character alphanumeric token has over 3.4; words, paths and sentences mostly less."""


_CARD_SHAPE = re.compile(rb"[0-9](?:[ -]?[0-9]){12}")
"""13 digits, single spaces or dashes between (in ``windows.narrow``'s view): what a card
needs."""
_SSN_SHAPE = re.compile(rb"000\.00\.0000")
"""``AAA-GG-SSSS`` in ``windows.classes``' view (a dash or space is a ``.`` there)."""
_LONGEST = 70
"""More than an IBAN or an IPv6 address can span: how far before a window one may start."""


def _boundary(text: str, start: int, end: int, extra: str = "") -> bool:
    """Whether ``text[start:end]`` is not the middle of a longer word (or of a run of
    ``extra`` characters)."""
    if start > 0:
        before = text[start - 1]
        if before.isalnum() or before == "_" or before in extra:
            return False
    if end < len(text):
        after = text[end]
        if after.isalnum() or after == "_" or after in extra:
            return False
    # A dot with a digit beyond it continues a number (3.14, 1.2.3); a sentence's dot does not.
    if text[end:end + 1] == "." and text[end + 1:end + 2].isdigit():
        return False
    return not (start >= 2 and text[start - 1] == "." and text[start - 2].isdigit())


def _run_boundary(text: str, start: int, end: int) -> bool:
    """``_boundary`` for a card or an SSN, where a ``-`` continues a run of digits
    (``12-4111111111111111`` is part of a longer id), except a dash just before the value with
    anything but a digit before it: a prefix such as ``ref-``, ``CC-`` or ``SSN-`` cannot be
    part of a digit run, so the value after it is found as after a space."""
    if start and text[start - 1] == "-" and (start == 1 or not text[start - 2].isdigit()):
        start = 0  # nothing before the value to check: only what follows it
    return _boundary(text, start, end, "-")


def _emails(text: str) -> list[Finding]:
    return [Finding(EMAIL, start, end) for start, end in emails.spans(text)]


def _cards(text: str, lo: int, hi: int) -> Iterable[Finding]:
    """Runs of digit groups; in each, the first stretch of whole groups with 13-19 digits
    that is a card number (a run may hold a card and the expiry or amount after it)."""
    for match in _CARD.finditer(text, lo, hi):
        run = match.group()
        if len(run) < 13:
            continue
        base = match.start()
        groups = [(m.start(), m.end()) for m in _GROUP.finditer(run)]
        for i, (first, _) in enumerate(groups):
            if i and not _run_boundary(text, base + first, base + first):
                continue
            digits = 0
            for j in range(i, len(groups)):
                digits += groups[j][1] - groups[j][0]
                if digits > 19:
                    break
                end = groups[j][1]
                if digits >= 13 and checks.credit_card(run[first:end]) \
                        and _run_boundary(text, base + first, base + end):
                    yield Finding(CREDIT_CARD, base + first, base + end)
                    break
            else:
                continue
            if digits <= 19:
                break


def _ssns(text: str, lo: int, hi: int) -> Iterable[Finding]:
    for match in _SSN.finditer(text, lo, hi):
        start, end = match.span()
        if _run_boundary(text, start, end) and checks.us_ssn(match[1], match[3], match[4]):
            yield Finding(US_SSN, start, end)


def _ssn_word(view: bytes, lo: int, hi: int) -> bool:
    """Whether "ssn" or "social security" (any case) is in the span ``_bare_ssns`` searches,
    read in ``windows.narrow``'s Latin-1 view (no Latin-1 character matches an ASCII letter
    case-blindly, so the view lowered finds what the regex would): the case-blind regex runs
    only where one is."""
    near = view[max(0, lo - 30):hi].lower()
    return b"ssn" in near or b"social security" in near


def _bare_ssns(text: str, lo: int, hi: int) -> Iterable[Finding]:
    """Nine digits in a row after "SSN" or "social security" (up to 30 characters before)."""
    for match in _SSN_BARE.finditer(text, max(0, lo - 30), hi):
        start, end = match.start(1), match.end(3)
        if _boundary(text, start, end) and checks.us_ssn(match[1], match[2], match[3]):
            yield Finding(US_SSN, start, end)


def _ibans(text: str, starts: Iterable[int]) -> Iterable[Finding]:
    """The IBANs starting at ``starts`` (``windows.iban_starts``; several may overlap: a
    postcode before an IBAN must not swallow it)."""
    for start in starts:
        span = _IBAN_SPANS.get(checks.IBAN_LENGTHS.get(text[start:start + 2], 0))
        whole = span.match(text, start) if span is not None else None
        if whole is not None and _boundary(text, start, whole.end()) \
                and checks.iban(whole.group()):
            yield Finding(IBAN, start, whole.end())


def _ipv4s(text: str, lo: int, hi: int) -> Iterable[Finding]:
    for match in _IPV4.finditer(text, lo, hi):
        start, end = match.span()
        before = text[start - 1] if start else " "
        after = text[end:end + 2]
        if before.isalnum() or before in "_." or (after[:1].isalnum() or after[:1] == "_") \
                or (after[:1] == "." and after[1:2].isdigit()):
            continue  # part of a longer word or dotted sequence (1.2.3.4.5)
        if _VERSION_BEFORE.search(text, max(0, start - 9), start):
            continue
        if checks.ipv4(match.group()):
            yield Finding(IP_ADDRESS, start, end)


def _ipv6s(text: str, lo: int, hi: int) -> Iterable[Finding]:
    for match in _IPV6.finditer(text, lo, hi):
        start, end = match.span()
        value = match.group()
        groups = [g for g in value.split(":") if g]
        # A slice such as x[1::2] is a valid IPv6 address too: ask for three groups, or
        # all eight, and a letter or a 3+ digit group somewhere.
        if len(groups) < 3 or not _boundary(text, start, end, ":."):
            continue
        if not any(len(g) >= 3 or not g.isdigit() for g in groups):
            continue
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            continue
        yield Finding(IP_ADDRESS, start, end)


def _spots(text: str, finder: str | re.Pattern[str]) -> Iterable[int]:
    if isinstance(finder, str):
        at = text.find(finder)
        while at != -1:
            yield at
            at = text.find(finder, at + 1)
    else:
        for match in finder.finditer(text):
            yield match.start()


def _secrets(text: str, view: bytes) -> Iterable[Finding]:
    """Known formats where their literal starts (after a match, a format looks again past
    its end), then values after key-ish words, found in ``view`` (``windows.narrow``) lowered:
    ``bytes.lower`` costs a tenth of ``str.lower`` on non-ASCII text."""
    gates = {gate for gate in _SECRET_GATES if gate in text}
    for finder, needed, group in _SECRET_FINDERS if gates else ():
        if gates.isdisjoint(needed):
            continue
        formats = [secret for secret in group if secret[0] in gates]
        resume = [0] * len(formats)
        for at in _spots(text, finder):
            for k, (_, prefix, pattern) in enumerate(formats):
                if at < resume[k] or not text.startswith(prefix, at):
                    continue
                match = pattern.match(text, at)
                if match is not None and _boundary(text, at, match.end(), "-"):
                    yield Finding(SECRET, at, match.end())
                    resume[k] = match.end()
    if ":" not in text and "=" not in text and ">" not in text:
        return
    lowered = view.lower()
    for word in _KEYISH_WORDS:
        at = lowered.find(word)
        while at != -1:
            match = _KEYISH.match(text, at)
            found = None if match is None else _secret_value(text, match)
            if found is not None:
                yield found
            at = lowered.find(word, at + 1)


def _secret_value(text: str, match: re.Match[str]) -> Finding | None:
    """The secret ``match`` (of ``_KEYISH`` or ``_KEYED_VALUE``) holds in its group 1, when
    the value is random enough to be one."""
    value = match.group(1).rstrip(".,;\"'")
    if not checks.random_token(value, min_bits=_SECRET_MIN_BITS):
        return None
    start = match.start(1)
    return Finding(SECRET, start, start + len(value))


def keyed_secret(key: str, value: str) -> Finding | None:
    """The secret at the start of ``value`` when it is held under ``key`` in a JSON object
    (``{"api_key": "Zq8v..."}``, ``{"password": ...}``): what ``_secrets`` finds in
    ``key: value`` written as text, which the walk yields as two texts
    (``app.privacy.walk.texts``' ``pairs``)."""
    if _SECRET_KEY.search(key) is None:
        return None
    match = _KEYED_VALUE.match(value)
    return None if match is None else _secret_value(value, match)


def _phone_shaped(candidate: str, groups: list[str]) -> bool:
    """Whether a candidate's digit ``groups`` look like a phone number's rather than a
    version's, a decimal's or an id's: with dots, at least 9 digits in groups of 2-4; a group of
    8 or more digits only last (``+34 982321225``, not ``93121290-75``)."""
    if len(groups) > 1 and max(map(len, groups[:-1])) >= 8:
        return False
    if "." in candidate:
        sizes = list(map(len, groups))
        return sum(sizes) >= 9 and min(sizes) >= 2 and max(sizes) <= 4
    return True


_START, _END = operator.itemgetter(1), operator.itemgetter(2)


def _digits_in(classed: bytes, findings: list[Finding], lo: int, hi: int) -> int:
    """Digits of ``classed[lo:hi]`` inside ``findings`` (each counted once where they
    overlap): a phone number must have seven digits outside them."""
    total, reached = 0, lo
    for _, start, end in sorted(findings, key=_START):
        start, end = max(start, reached), min(end, hi)
        if start < end:
            total += classed.count(b"0", start, end)
            reached = end
    return total


def _resolve(findings: list[Finding], rank: dict[str, int]) -> list[Finding]:
    """Non-overlapping findings, longest (then highest ranked) first, sorted by position.
    Findings that overlap nothing are kept as they are; the choice is made within each group of
    findings that overlap one another (directly or through others), which no other group can
    touch."""
    if len(findings) < 2:
        return findings
    by_position = sorted(dict.fromkeys(findings), key=_START)  # an exact repeat adds nothing
    if not any(map(operator.lt, map(_START, by_position[1:]), map(_END, by_position))):
        return by_position  # none overlaps the next, so none overlaps any
    kept: list[Finding] = []
    group, reach = [by_position[0]], by_position[0].end
    for finding in by_position[1:]:
        if finding.start < reach:
            group.append(finding)
            reach = max(reach, finding.end)
            continue
        kept.extend(_choose(group, rank) if len(group) > 1 else group)
        group, reach = [finding], finding.end
    kept.extend(_choose(group, rank) if len(group) > 1 else group)
    return kept


def _choose(findings: list[Finding], rank: dict[str, int]) -> list[Finding]:
    """Longest (then highest ranked, then first) first, each kept unless it overlaps one kept
    already; sorted by position."""
    ordered = sorted(findings, key=lambda f: (f.start - f.end, -rank.get(f.entity, 99),
                                              f.start))
    kept: list[Finding] = []  # disjoint, by position: a neighbour on each side to check
    starts: list[int] = []
    for finding in ordered:
        at = bisect.bisect_right(starts, finding.start)
        if (at and kept[at - 1].end > finding.start) or (at < len(kept)
                                                         and kept[at].start < finding.end):
            continue
        kept.insert(at, finding)
        starts.insert(at, finding.start)
    return kept


PHONE_BUDGET = 32_768
"""The phone-number checks one scan may make (``ScanBudget``), in units of one check on the
fast path (``phones.phone_number`` in one region, ~5-15 us): a few hundred KB of text dense
with phone numbers, or ~0.3 s of CPU."""
_SLOW_CHECK, _MATCHER_CHECK = 8, 30
"""What a check costs in those units where the candidate is not one the fast path reads (an
extension, Unicode digits: ``phonenumbers.parse`` itself), and ``phonenumbers``' matcher in
one region."""


class ScanBudget:
    """What the phone detector may spend on one request (``PHONE_BUDGET`` units, shared by
    its text parts): each try of a candidate 1 unit a region (``_SLOW_CHECK`` off the fast
    path), paid for all the regions at once; the matcher ``_MATCHER_CHECK`` a region; a
    candidate already checked in the request (the same number again, a conversation's
    history) nothing. Once it is spent (text made of digit groups, sent to make the gateway
    work), each further phone candidate is taken as a phone number unchecked (fail closed:
    redacted, blocked or counted as one, never sent as if it had been checked), at the cost of
    a regex match, and ``exhausted`` is set: the privacy stage then refuses the request under
    ``block``, and under ``redact`` with a third-party target (``app.stages.privacy``). Every
    other detector is linear in the text and runs over all of it."""

    __slots__ = ("exhausted", "left", "seen")

    def __init__(self, units: int = PHONE_BUDGET) -> None:
        self.left = units
        self.exhausted = False
        self.seen: dict[str, tuple[tuple[int, int], ...]] = {}
        """The phone numbers found in each candidate checked (spans in the candidate)."""

    def spend(self, units: int) -> bool:
        """Whether ``units`` were left (then spent); if not, the budget is exhausted."""
        if units > self.left:
            self.left, self.exhausted = 0, True
            return False
        self.left -= units
        return True


class Detector:
    """The detectors a policy asks for, compiled once per config (immutable, shared)."""

    def __init__(self, *, entities: Iterable[str] = BUILTIN,
                 phone_regions: Sequence[str] = ("US",),
                 custom: Sequence[Custom] = (), model: ModelScanner | None = None) -> None:
        self.entities = frozenset(entities)
        self.phone_regions = tuple(phone_regions)
        self.custom = tuple(custom)
        self._numbers = bool(self.entities & {PHONE, CREDIT_CARD, IBAN, US_SSN, IP_ADDRESS})
        self._model_entities = frozenset() if model is None else self.entities & model.entities
        self.model = model if self._model_entities else None
        """The model scanner, when this detector looks for any of its types."""
        self._rank = PRIORITY if self.model is None else \
            {**{e: 0 for e in self._model_entities}, **PRIORITY}

    def scan(self, text: str, *, model: bool = True, budget: ScanBudget | None = None
             ) -> list[Finding]:
        """The sensitive values in ``text``: sorted by position, never overlapping. ``model``:
        the model scanner's too (blocking for milliseconds: see the module docstring).
        ``budget``: what phone checks may cost, shared with the request's other texts (by
        default this text's own ``ScanBudget``)."""
        entities = self.entities
        found: list[Finding] = []
        if EMAIL in entities:
            if "@" in text:
                found.extend(_emails(text))
            if "%" in text and (emails.ENCODED_AT[0] in text or emails.ENCODED_AT[1] in text):
                found.extend(Finding(EMAIL, start, end)
                             for start, end in emails.encoded_spans(text))
        view, wide = windows.narrow(text) if self._numbers or SECRET in entities \
            else (b"", False)
        if self._numbers:
            # Unicode separators read as their ASCII forms (``_SEPARATORS``): a text that
            # holds none (all of an ASCII one) costs nothing, a Latin-1 one a ``memchr``.
            if text.isascii() or not (_WIDE_SEPARATOR.search(text) if wide
                                      else b"\xa0" in view):
                found.extend(self._number_values(text, view, wide, budget))
            else:
                plain = text.translate(_SEPARATORS)
                found.extend(self._number_values(plain, *windows.narrow(plain), budget))
        if SECRET in entities:
            found.extend(_secrets(text, view))
        for custom in self.custom:
            found.extend(Finding(custom.name, m.start(), m.end())
                         for m in custom.pattern.finditer(text) if m.end() > m.start())
        if model and self.model is not None:
            found.extend(self.model.scan(text, self._model_entities))
        return _resolve(found, self._rank)

    def keyed(self, key: str, value: str, budget: ScanBudget | None = None
              ) -> Finding | None:
        """The secret ``value`` holds as the value of a JSON object's ``key``
        (``keyed_secret``), when this detector looks for secrets; or the phone number it is,
        when it is a bare run of digits under a key that names a phone (``{"phone":
        14155552671}``, ``{"mobile": "4155552671"}``: what ``scan`` finds after the word in
        text, where bare digits need one), checked against ``budget`` as ``scan``'s are."""
        if SECRET in self.entities:
            secret = keyed_secret(key, value)
            if secret is not None:
                return secret
        if PHONE in self.entities and MIN_PHONE_DIGITS <= len(value) <= 21 \
                and value.isascii() and value.isdigit() and _PHONE_WORDS.search(key):
            budget = ScanBudget() if budget is None else budget
            spans = budget.seen.get(value)
            if spans is None:
                spans = budget.seen[value] = self._match_phone(value, budget)
            if spans == ((0, len(value)),):
                return Finding(PHONE, 0, len(value))
        return None

    def merge(self, found: list[Finding], more: Iterable[Finding]) -> list[Finding]:
        """``found`` (a ``scan``'s) and ``more`` resolved as ``scan`` resolves its own."""
        return _resolve([*found, *more], self._rank)

    def _number_values(self, text: str, view: bytes, wide: bool, budget: ScanBudget | None
                       ) -> list[Finding]:
        """Cards, SSNs, IBANs, IP addresses and phone numbers, each detector run only in the
        windows where a value of its kind can be (``app.privacy.windows``); a phone candidate
        another of them has claimed is not one."""
        entities = self.entities
        classed = windows.classes(view)
        if classed.find(b"0") == -1:
            return []  # every number value has a digit
        budget = ScanBudget() if budget is None else budget
        claimed: list[Finding] = []  # by position: what phone candidates must not overlap
        if IBAN in entities:
            claimed.extend(_ibans(text, windows.iban_starts(classed)))
        if IP_ADDRESS in entities and ":" in text:
            for lo, hi in windows.colon_windows(view, classed):
                claimed.extend(_ipv6s(text, lo, hi))
            claimed.sort(key=lambda f: f.start)
        starts = [f.start for f in claimed]
        found = list(claimed)
        for lo, hi, digits in windows.number_windows(classed):
            numbers: list[Finding] = []
            if digits >= 13 and CREDIT_CARD in entities and _CARD_SHAPE.search(view, lo, hi):
                numbers.extend(_cards(text, lo, hi))
            if digits >= 9 and US_SSN in entities:
                if _SSN_SHAPE.search(classed, lo, hi):
                    numbers.extend(_ssns(text, lo, hi))
                if classed.find(b"000000000", lo, hi) != -1 \
                        and (wide or _ssn_word(view, lo, hi)):
                    numbers.extend(_bare_ssns(text, lo, hi))
            if IP_ADDRESS in entities and view.count(b".", lo, hi) >= 3:
                numbers.extend(_ipv4s(text, lo, hi))
            if digits >= 7 and PHONE in entities:
                near = bisect.bisect_left(starts, lo - _LONGEST)
                taken = numbers + [f for f in claimed[near:bisect.bisect_left(starts, hi)]
                                   if f.end > lo]
                if digits - _digits_in(classed, taken, lo, hi) >= 7:
                    numbers.extend(self._phones(text, lo, hi, taken, budget))
            found.extend(numbers)
        return found

    def _phones(self, text: str, lo: int, hi: int, taken: list[Finding], budget: ScanBudget
                ) -> Iterable[Finding]:
        """``phonenumbers``' matcher on each candidate run only (see the module docstring),
        except runs another number detector has claimed (a card, an IBAN, an IP address)."""
        if taken:
            taken = sorted(taken, key=_START)
            starts = [f.start for f in taken]
            # The furthest end of the findings up to each: whether one overlaps a candidate is
            # a bisection, not a pass over all of them.
            reach = list(itertools.accumulate((f.end for f in taken), max))
        for match in _PHONE_CANDIDATE.finditer(text, lo, hi):
            offset, end = match.span()
            if taken and (before := bisect.bisect_left(starts, end)) \
                    and reach[before - 1] > offset:
                continue
            candidate = match.group()
            groups = _GROUP.findall(candidate)
            if not 7 <= sum(map(len, groups)) <= 21 or _DATE_LIKE.search(candidate) \
                    or _IPV4.fullmatch(candidate.strip()):
                continue
            if offset and (text[offset - 1].isalnum() or text[offset - 1] in "_.-/"):
                continue
            extension = match.start(1)
            if not (_phone_shaped(candidate, groups) if extension == -1 else _phone_shaped(
                    number := text[offset:extension], _GROUP.findall(number))):
                continue  # the number without its extension (an "ext." is not a dot in it)
            if _BARE_NUMBER.fullmatch(candidate) and (
                    "." in candidate
                    or not _PHONE_WORDS.search(text, max(0, offset - 30), offset)):
                continue
            if "\t" in candidate:  # a separator like a space, which phonenumbers refuses
                candidate = candidate.replace("\t", " ")
            spans = budget.seen.get(candidate)
            if spans is None:
                spans = budget.seen[candidate] = self._match_phone(candidate, budget)
            for start, stop in spans:
                yield Finding(PHONE, offset + start, offset + stop)

    def _match_phone(self, candidate: str, budget: ScanBudget) -> tuple[tuple[int, int], ...]:
        """Where the phone numbers in ``candidate`` are: the number it is, read in each
        default region in turn (once for a ``+`` number); failing that, once more without a
        whitespace-separated group at either end (``(415) 555-2671 8f3a``: the trailing digit is
        not part of the number). A candidate with room for two numbers that is none as a whole
        goes to ``phonenumbers``' matcher, which finds numbers inside it. Each check is paid
        from ``budget``; one it cannot pay for makes all of the candidate a phone number."""
        whole = ((0, len(candidate)),)
        if budget.exhausted:
            return whole
        tries = [(candidate, 0)]
        head, _, rest = candidate.partition(" ")
        body = candidate.rpartition(" ")[0]
        if body:
            tries.append((body.rstrip(), 0))
        if rest and len(head) <= 4 and head.isdigit():
            tries.append((rest.lstrip(), len(candidate) - len(rest.lstrip())))
        # Off the fast path: an extension (``x``, ``ext``), or digits that are not ASCII.
        cost = 1 if candidate.isascii() and "x" not in candidate else _SLOW_CHECK
        for text, at in tries:
            regions = self.phone_regions[:1] if text[0] == "+" else self.phone_regions
            if not budget.spend(cost * len(regions)):  # paid for all (one call, not one each)
                return whole
            if any(phone_number(text, region) for region in regions):
                return ((at, at + len(text)),)
        if sum(c.isdigit() for c in candidate) < 2 * MIN_PHONE_DIGITS:
            return ()
        for region in self.phone_regions:
            if not budget.spend(_MATCHER_CHECK):
                return whole
            hits = tuple((m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(
                candidate, region, leniency=phonenumbers.Leniency.VALID)
                if sum(c.isdigit() for c in m.raw_string) >= MIN_PHONE_DIGITS)
            if hits:
                return hits
        return ()


MIN_PHONE_DIGITS = 7
