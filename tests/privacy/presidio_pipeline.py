"""A small spaCy pipeline for the Presidio tests: no trained model can be downloaded here, so
the tests make one whose ``entity_ruler`` labels a few names, places and organisations, save it
with ``nlp.to_disk`` and name its directory as ``privacy.presidio.model``. The gateway loads it
with the same code that loads an installed ``en_core_web_lg``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PERSONS = ("Ann Lee", "Ravi Patel")
PLACES = {"Springfield": "GPE", "742 Evergreen Terrace": "FAC", "Baker Street": "STREET"}
"""Place names by the label the pipeline gives them (``STREET``: a label of its own, mapped
with ``privacy.presidio.labels``)."""
ORGANISATION = "Acme Corp"
TIED_CARD = "4111 1111 1111 1111"
"""Labelled PERSON by the pipeline, and a card number by the built-ins: the same span."""
LONGER_PLACE = "Building 10.1.2.3 Annex"
"""Labelled FAC, around an IP address the built-ins find: the longer span wins."""


def save_pipeline(directory: Path) -> Path:
    """Write the pipeline to ``directory``; return it."""
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    patterns = [{"label": "PERSON", "pattern": name} for name in PERSONS]
    patterns += [{"label": label, "pattern": place} for place, label in PLACES.items()]
    patterns += [{"label": "ORG", "pattern": ORGANISATION},
                 {"label": "CARDINAL", "pattern": "seven"},
                 {"label": "PERSON", "pattern": TIED_CARD},
                 {"label": "FAC", "pattern": LONGER_PLACE}]
    ruler.add_patterns(patterns)  # type: ignore[attr-defined]
    nlp.to_disk(directory)
    return directory


def raw(presidio: dict[str, Any] | None, **privacy: Any) -> dict[str, Any]:
    """A config whose privacy section has ``presidio`` (and ``privacy``): model ``names``
    redacts people and emails, model ``all`` every type (the default)."""
    return {
        "providers": {"api": {"type": "openai", "api_key": "sk-x"}},
        "models": {"names": {"targets": [{"provider": "api", "model": "m"}],
                             "privacy": {"action": "redact", "entities": ["PERSON", "EMAIL"]}},
                   "all": {"targets": [{"provider": "api", "model": "m"}]}},
        "privacy": {"action": "redact", **({"presidio": presidio} if presidio else {}),
                    **privacy},
    }
