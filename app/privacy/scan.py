"""A request's text parts scanned: what the privacy stage (``app.stages.privacy``) acts on.

``scan_request`` walks the body and, for ``/v1/messages``, the native body (``app.privacy.walk``)
and scans each distinct text part once; a string value under a client's own key that names a
secret (``{"api_key": ...}``) is also read as it would be after that key in text
(``Detector.keyed``). A value found anywhere is then looked for in every text
part, those that had findings and those that had none (``Known``: bounded as a detector's match
is, never inside a longer word): a detector that needs a context word (a secret after
``password=``, a bare phone number after "call", a bare SSN after "SSN") or the model's
judgement (a name) finds only the copy it saw, and every copy must get the placeholder. A
request with nothing found pays nothing for it; one with findings one pass over all its text
parts joined, for all the values at once (``Known.across``: linear in the text whatever the
number of values).
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterable

from app.privacy.detect import Detector, Finding, ScanBudget
from app.privacy.placeholders import Known, reserved_in
from app.privacy.walk import texts
from app.providers.base import Json

_START, _END = operator.attrgetter("start"), operator.attrgetter("end")
NOTHING_KNOWN = Known(())
"""The values of a request where nothing was found."""


Scan = tuple[dict[str, list[Finding]], dict[str, int], set[str], Known]
"""What a request's scan found (a plain tuple: a named one costs a call where nothing was
found): the findings of each distinct text part that has any (every copy of a found value);
the values found counted by entity type (``_counted``); the placeholder-shaped strings the
client's own text holds (never issued); the values found, to look for in what is stored."""


Texts = tuple[list[str], list[tuple[str, str]]]
"""A request's text parts (``request_texts``), and the client's own keys with their string
values."""


def request_texts(body: Json, native: Json | None) -> Texts:
    """The text parts of ``body`` and ``native`` (what ``scan_request`` scans)."""
    pairs: list[tuple[str, str]] = []  # the client's own keys and their string values
    parts = [*texts(body, pairs=pairs)]
    if native is not None:
        parts += texts(native, pairs=pairs)
    return parts, pairs


def scan_request(detector: Detector, body: Json, native: Json | None, *,
                 budget: ScanBudget | None = None, walked: Texts | None = None) -> Scan:
    """What ``detector`` finds in ``body`` and ``native`` (see the module docstring), with
    one ``budget`` for the phone checks of all of their text (``ScanBudget``: exhausted, the
    rest of the phone candidates count as phone numbers unchecked). ``walked``: their
    ``request_texts``, when the caller has them."""
    parts, pairs = request_texts(body, native) if walked is None else walked
    found, known = _scanned(detector, parts, model=True, pairs=pairs,
                            budget=ScanBudget() if budget is None else budget)
    reserved = reserved_in(parts)
    if not found:
        return found, {}, reserved, NOTHING_KNOWN
    return found, _counted(found, body, native), reserved, known


def _spread(detector: Detector, known: Known, found: dict[str, list[Finding]],
            clean: set[str]) -> None:
    """``found`` (the findings of each text part that has any) with every occurrence of the
    ``known`` values added, in the texts that had findings and in the ``clean`` ones: a value
    its detector finds only in context (a secret after ``password=``, a bare phone number
    after "call", a name the model recognised) is the same value without it."""
    every = [*found, *clean]
    taken = [set(zip(map(_START, hits), map(_END, hits), strict=True))
             for hits in found.values()]
    added = known.across(every, skip=taken)
    for index, more in added.items():
        text = every[index]
        found[text] = detector.merge(found.get(text, []), more)


def scan_texts(detector: Detector, strings: Iterable[str], *, model: bool = True
               ) -> dict[str, list[Finding]]:
    """The findings of each distinct one of ``strings`` that has any, every copy of a value
    found in one of them included wherever it appears in the others (as ``scan_request`` does
    for a body): for strings stored apart from a body (a refused call's end user, tags and
    error message, ``app.pipeline``). ``model``: whether the detector's model runs too. One
    ``ScanBudget`` for all of them."""
    return _scanned(detector, strings, model=model, budget=ScanBudget())[0]


def _scanned(detector: Detector, strings: Iterable[str], *, model: bool, budget: ScanBudget,
             pairs: Iterable[tuple[str, str]] = ()
             ) -> tuple[dict[str, list[Finding]], Known]:
    """Each distinct one of ``strings`` scanned once, and each value of ``pairs`` (JSON
    objects' keys and their string values, among ``strings``) read in its key's context too
    (``Detector.keyed``: a secret under ``api_key``), then the values found spread to the
    others (``_spread``): the findings of those that have any, and the values found."""
    found: dict[str, list[Finding]] = {}
    clean: set[str] = set()
    for text in strings:
        if text in found or text in clean:
            continue
        hits = detector.scan(text, model=model, budget=budget)
        if hits:
            found[text] = hits
        else:
            clean.add(text)
    for key, value in pairs:
        secret = detector.keyed(key, value, budget)
        if secret is not None:
            found[value] = detector.merge(found.get(value, []), (secret,))
            clean.discard(value)
    if not found:
        return found, NOTHING_KNOWN
    known = Known(found.items())
    _spread(detector, known, found, clean)
    return found, known


def _counted(found: dict[str, list[Finding]], body: Json, native: Json | None
             ) -> dict[str, int]:
    """The values ``found`` counted by entity type: in ``body`` (a text part as often as it
    appears), and in the texts of ``native`` that ``body`` does not hold (a document's
    title, a citation, which only the native body carries)."""
    counts: Counter[str] = Counter()
    in_body: set[str] = set()
    for part in (body, native):
        if part is None:
            continue
        for text in texts(part):
            hits = found.get(text)
            if hits and (part is body or text not in in_body):
                in_body.add(text)
                counts.update(f.entity for f in hits)
    return dict(counts)
