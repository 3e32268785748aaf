"""Whether a candidate is a phone number, decided by Google's ``phonenumbers`` and its metadata.

``phone_number(text, region)`` answers what ``phonenumbers.parse`` and ``is_valid_number`` answer
for the candidate alone, plus the matcher's ``VALID`` rules (brackets paired, the national prefix
written where the region writes one). Most candidates take the fast path: a candidate made of
ASCII digits and ``( ) . - /`` and spaces, with at most a leading ``+``, is read the way
``parse`` reads it (international prefix or ``+`` and the country code, the region's own
country code, the national prefix for parsing and its transform rule, the possible lengths),
then checked against the number types' possible lengths and national number patterns, and
formatted with the country's national format rules to find the national prefix, each a regex
of the library's metadata compiled once per country (``_Plan``). That costs a few microseconds
where ``parse`` + ``is_valid_number`` + ``format_number`` cost ~25 us a region, the library's
generic path (Unicode digits, letters, extensions, RFC 3966, and the lookups by name) being
most of it. Every other candidate (an extension, Unicode digits, a tab, a ``+`` with no known
country code) goes to ``phonenumbers`` itself; tests/privacy/test_phones.py checks that both
paths agree on thousands of numbers, valid and not, in many regions.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

_MIN_NSN, _MAX_NSN, _MAX_COUNTRY_CODE = 2, 17, 3
"""``phonenumbers``' bounds on a national significant number and a country code's digits."""
_FAST = re.compile(r"\+?[0-9 ().\-/]+")
"""What the fast path reads: everything ``parse`` would do with such a text is in ``_Plan``
(no letters, so no extension and no vanity number; ASCII only, so no Unicode digits)."""
_GROUP = re.compile(r"\d+")
_FIRST_GROUP = re.compile(r"(\\\d)")
"""A format's first group (``\\1``), which ``phonenumbers`` replaces with the national prefix
formatting rule (``0\\1``) to format a number nationally."""
_REFERENCE = re.compile(r"\\(\d)")
"""A group reference in a replacement (``\\1``), to split it into literals and groups."""
_TOO_SHORT, _POSSIBLE, _LOCAL_ONLY, _TOO_LONG, _INVALID_LENGTH = range(5)


def _valid_by_length(metadata: Any, names: list[str]) -> dict[int, re.Pattern[str]]:
    """``_number_type_helper(nsn) != UNKNOWN`` as one regex per length of ``nsn``: the general
    description's pattern (a lookahead) and any of the types that allow that length. A
    description matches where the length is one of its possible lengths (or it lists none) and
    its national number pattern matches all of the number."""
    general = metadata.general_desc
    if not general.national_number_pattern:
        return {}
    descs = [d for d in (getattr(metadata, name) for name in names)
             if d is not None and d.national_number_pattern]
    lengths = set(general.possible_length or range(_MIN_NSN, _MAX_NSN + 1))
    by_length = {}
    for size in sorted(lengths):
        types = [d.national_number_pattern for d in descs
                 if not d.possible_length or size in d.possible_length]
        if types:
            alternatives = "|".join(f"(?:{t})\\Z" for t in types)
            by_length[size] = re.compile(
                f"(?=(?:{general.national_number_pattern})\\Z)(?:{alternatives})")
    return by_length


@dataclass(frozen=True, slots=True)
class _Format:
    """A national format: the leading digits it is for (the last, most precise pattern given),
    the pattern it formats and its replacement (with the national prefix formatting rule in
    place of the first group), split into literal text and group numbers."""

    leading: re.Pattern[str] | None
    pattern: re.Pattern[str]
    replacement: str
    parts: tuple[str | int, ...] | None
    """``None`` where the replacement is more than literals and ``\\N``."""

    def apply(self, nsn: str) -> str:
        """``pattern.sub(replacement, nsn)``: where ``sub``'s first match is all of ``nsn``,
        the parts joined directly (``sub``'s template expansion runs in Python, ~4 us)."""
        match = self.pattern.match(nsn)
        if self.parts is None or match is None or match.end() != len(nsn):
            return self.pattern.sub(self.replacement, nsn)
        return "".join(part if isinstance(part, str) else match.group(part) or ""
                       for part in self.parts)


def _format(fmt: Any) -> _Format:
    rule = fmt.national_prefix_formatting_rule
    replacement = _FIRST_GROUP.sub(rule, fmt.format, count=1) if rule else fmt.format
    pieces = _REFERENCE.split(replacement)
    parts = tuple(int(piece) if i % 2 else piece for i, piece in enumerate(pieces) if piece)
    plain = not any("\\" in part for part in parts if isinstance(part, str))
    leading = fmt.leading_digits_pattern
    return _Format(re.compile(leading[-1]) if leading else None, re.compile(fmt.pattern),
                   replacement, parts if plain else None)


@dataclass(frozen=True, slots=True)
class _Plan:
    """One region's (or non-geographic country code's) metadata, compiled once."""

    country_code: int
    general: re.Pattern[str] | None
    by_length: dict[int, re.Pattern[str]]
    """Validity by the national significant number's length (``_valid_by_length``)."""
    lengths: tuple[int, ...]
    local_lengths: tuple[int, ...]
    idd: re.Pattern[str] | None
    national_prefix: re.Pattern[str] | None
    transform: str | None
    leading_digits: re.Pattern[str] | None
    formats: tuple[_Format, ...]
    chooser: re.Pattern[str] | None

    def general_match(self, number: str) -> bool:
        """``_match_national_number`` against the general description (no length check)."""
        return self.general is not None and self.general.fullmatch(number) is not None

    def valid(self, nsn: str) -> bool:
        """``_number_type_helper(nsn) != UNKNOWN``: the general description and some type."""
        pattern = self.by_length.get(len(nsn))
        return pattern is not None and pattern.match(nsn) is not None

    def length(self, number: str) -> int:
        """``_test_number_length`` for an unknown type."""
        size = len(number)
        if size in self.local_lengths:
            return _LOCAL_ONLY
        lengths = self.lengths
        if lengths[0] == size:
            return _POSSIBLE
        if lengths[0] > size:
            return _TOO_SHORT
        if lengths[-1] < size:
            return _TOO_LONG
        return _POSSIBLE if size in lengths[1:] else _INVALID_LENGTH

    def strip_national_prefix(self, number: str) -> str:
        """``_maybe_strip_national_prefix_carrier_code``'s number (its carrier code unused)."""
        if not number or self.national_prefix is None:
            return number
        match = self.national_prefix.match(number)
        if match is None:
            return number
        viable = self.general_match(number)
        groups = match.groups()
        if not self.transform or not groups or groups[-1] is None:
            if viable and not self.general_match(number[match.end():]):
                return number
            return number[match.end():]
        transformed = self.national_prefix.sub(self.transform, number, count=1)
        if viable and not self.general_match(transformed):
            return number
        return transformed

    def national_format(self, nsn: str) -> str:
        """``format_number(..., NATIONAL)`` of a number without an extension: the first format
        whose leading digits start ``nsn`` and whose pattern matches all of it, picked by one
        regex (``_chooser``) rather than two a format (Germany has 19)."""
        if self.chooser is None:
            return nsn
        chosen = self.chooser.match(nsn)
        if chosen is None or chosen.lastgroup is None:
            return nsn
        return self.formats[int(chosen.lastgroup[1:])].apply(nsn)


def _chooser(formats: Any) -> re.Pattern[str] | None:
    """One alternative a format, in order, each a named group (``f0``, ``f1``...) holding a
    lookahead for its leading digits and its pattern up to the end: the group that closes last
    (``lastgroup``) names the first format that fits, as ``_choose_formatting_pattern_for_number``
    picks it."""
    alternatives = []
    for i, fmt in enumerate(formats):
        leading = fmt.leading_digits_pattern
        ahead = f"(?=(?:{leading[-1]}))" if leading else ""
        alternatives.append(f"(?P<f{i}>{ahead}(?:{fmt.pattern})\\Z)")
    return re.compile("|".join(alternatives)) if alternatives else None


def _compile(metadata: Any) -> _Plan:
    names = ["premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager",
             "uan", "voicemail", "fixed_line"]
    if not metadata.same_mobile_and_fixed_line_pattern:  # as _number_type_helper asks
        names.append("mobile")
    parsing = metadata.national_prefix_for_parsing
    return _Plan(
        country_code=metadata.country_code,
        general=re.compile(general) if (general := metadata.general_desc.national_number_pattern)
        else None,
        by_length=_valid_by_length(metadata, names),
        lengths=tuple(metadata.general_desc.possible_length),
        local_lengths=tuple(metadata.general_desc.possible_length_local_only),
        idd=re.compile(metadata.international_prefix) if metadata.international_prefix
        else None,
        national_prefix=re.compile(parsing) if parsing else None,
        transform=metadata.national_prefix_transform_rule or None,
        leading_digits=re.compile(metadata.leading_digits) if metadata.leading_digits
        else None,
        formats=tuple(_format(fmt) for fmt in metadata.number_format),
        chooser=_chooser(metadata.number_format))


@functools.cache
def _plan(country_code: int, region: str) -> _Plan | None:
    """The compiled metadata of ``region`` (``"001"``: of the non-geographic ``country_code``)."""
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    return None if metadata is None else _compile(metadata)


@functools.cache
def _home(region: str) -> _Plan | None:
    """The plan of the region numbers without a country code are read in."""
    code = phonenumbers.country_code_for_region(region)
    return _plan(code, region) if code else None


def _main(country_code: int) -> _Plan | None:
    """The plan of the country code's main region, which ``parse`` and ``format_number`` use."""
    return _plan(country_code, COUNTRY_CODE_TO_REGION_CODE[country_code][0])


def _country_code(digits: str) -> tuple[int, str] | None:
    """``_extract_country_code``: the shortest known country code that starts ``digits``."""
    if digits[0] == "0":
        return None
    for size in range(1, min(len(digits), _MAX_COUNTRY_CODE) + 1):
        code = int(digits[:size])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            return code, digits[size:]
    return None


def _valid(country_code: int, nsn: str) -> bool:
    """``is_valid_number``: valid in the region the number belongs to (``region_code_for_number``
    picks it among the regions sharing the country code)."""
    for leading, regions in _segments(country_code):
        if leading is None:
            plan = _plan(country_code, regions[0])
            if plan is not None and plan.valid(nsn):
                return True
            continue
        chosen = leading.match(nsn)
        if chosen is not None and chosen.lastgroup is not None:
            plan = _plan(country_code, regions[int(chosen.lastgroup[1:])])
            return plan is not None and plan.valid(nsn)
    return False


@functools.cache
def _segments(country_code: int) -> tuple[tuple[re.Pattern[str] | None, tuple[str, ...]], ...]:
    """The country code's regions as ``region_code_for_number`` tries them, in order: a region
    without leading digits on its own (``None``: is the number valid there?), consecutive
    regions with leading digits as one regex (the first whose leading digits start the number,
    named ``r0``, ``r1``...: the number is its region's). The 25 regions of +1 cost one regex
    instead of 24, and only the region a number falls in is compiled."""
    segments: list[tuple[re.Pattern[str] | None, tuple[str, ...]]] = []
    run: list[tuple[str, str]] = []
    for region in COUNTRY_CODE_TO_REGION_CODE[country_code]:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
        if metadata is None:
            continue
        if metadata.leading_digits is None:
            segments.extend(_leading(run))
            run = []
            segments.append((None, (region,)))
        else:
            run.append((region, metadata.leading_digits))
    segments.extend(_leading(run))
    return tuple(segments)


def _leading(run: list[tuple[str, str]]) -> list[tuple[re.Pattern[str] | None, tuple[str, ...]]]:
    if not run:
        return []
    pattern = "|".join(f"(?P<r{i}>{leading})" for i, (_, leading) in enumerate(run))
    return [(re.compile(pattern), tuple(region for region, _ in run))]


def _read(text: str, digits: str, home: _Plan) -> tuple[int, str] | bool | None:
    """``parse(text, region)``'s country code and national significant number; ``False`` where
    it raises; ``None`` where the fast path stops short (``parse`` itself decides)."""
    if text[0] == "+":
        found = _country_code(digits)
        if found is None:
            return None  # parse tries again without the plus
        code, rest = found
    else:
        idd = home.idd.match(digits) if home.idd is not None else None
        if idd is not None and digits[idd.end():idd.end() + 1] != "0":
            rest = digits[idd.end():]
            if len(rest) <= _MIN_NSN:
                return False
            found = _country_code(rest)
            if found is None:
                return False
            code, rest = found
        else:
            code, rest = 0, digits
            prefix = str(home.country_code)
            if digits.startswith(prefix):
                potential = home.strip_national_prefix(digits[len(prefix):])
                if (not home.general_match(digits) and home.general_match(potential)) \
                        or home.length(digits) == _TOO_LONG:
                    code, rest = home.country_code, potential
    plan = home if code == 0 else _main(code)
    if plan is None:
        return None
    code = code or home.country_code
    if len(rest) < _MIN_NSN:
        return False
    potential = plan.strip_national_prefix(rest)
    if plan.length(potential) not in (_TOO_SHORT, _LOCAL_ONLY, _INVALID_LENGTH):
        rest = potential
    if len(rest) > _MAX_NSN:
        return False
    return code, rest


def _fast(text: str, region: str) -> bool | None:
    """The fast path's answer, or ``None`` where ``phonenumbers`` itself must answer."""
    if _FAST.fullmatch(text) is None:
        return None
    digits = text.replace(" ", "").replace("-", "").replace("(", "").replace(")", "") \
        .replace(".", "").replace("/", "").replace("+", "")  # 0.3 us; a regex sub: 1 us
    home = _home(region)
    if len(digits) < 3 or home is None:
        return None
    read = _read(text, digits, home)
    if read is None or read is False:
        return read
    assert read is not True
    code, nsn = read
    if not _valid(code, nsn):
        return False
    if text[0] == "+":
        return True
    main = _main(code)
    assert main is not None
    return _prefix_written(main.national_format(nsn), nsn, digits)


def _prefix_written(national: str, nsn: str, typed: str) -> bool:
    """Whether the digits typed carry the national prefix the national format writes before the
    national significant number (none: always)."""
    prefix = "".join(_GROUP.findall(national.split(" ext.")[0]))[:-len(nsn)]
    return not prefix or (typed.startswith(prefix) and len(typed) > len(nsn))


def _slow(text: str, region: str) -> bool:
    """The same question asked of ``phonenumbers`` itself."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return False
    if not phonenumbers.is_valid_number(number):
        return False
    if text[0] == "+":
        return True
    significant = phonenumbers.national_significant_number(number)
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    typed = "".join(_GROUP.findall(text.split("x")[0].split("ext")[0]))
    return _prefix_written(national, significant, typed)


@functools.lru_cache(maxsize=8192)
def phone_number(text: str, region: str) -> bool:
    """Whether ``text``, all of it, is a valid phone number read in ``region`` (``+`` numbers:
    in their own country): ``phonenumbers.parse`` and ``is_valid_number`` on the candidate
    alone, rather than the matcher, which looks for numbers at every offset of the text it is
    given and costs several times as much. As the matcher's ``VALID`` leniency does, brackets
    must pair up, and a number read in ``region`` must carry the national prefix when the
    region writes one (``0``: ``030 901820`` in Germany, not ``30 901820``), which keeps bare
    digit groups (``854-1987``, ``1 2 3 13 14 15``) from reading as some region's number.
    Cached by candidate: a conversation sends the same numbers again every turn."""
    if text.count("(") != text.count(")") or text.count("/") > 1:
        return False
    fast = _fast(text, region)
    return _slow(text, region) if fast is None else fast
