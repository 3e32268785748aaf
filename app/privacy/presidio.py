"""Names, places and organisations: Microsoft Presidio's analyzer over a spaCy pipeline the
deployment installed (the ``presidio`` extra; ``privacy.presidio`` in the config).

Imported only when a config has ``privacy.presidio`` (``app.stages.privacy``): importing
Presidio imports spaCy, and transformers and torch where they are installed (4-10 s here).

``load_scanner(config)`` reads the pipeline once per config, on the scanner's own thread, and
``PresidioScanner.scan`` runs Presidio's ``AnalyzerEngine.analyze`` over it. Nothing is ever
downloaded:

- the pipeline is read by ``spacy.load`` from the installed package or the directory the config
  names (``spacy.load`` raises for a name it cannot find; it never downloads);
- Presidio gets it already loaded, through ``_LoadedSpacy``: Presidio's own
  ``SpacyNlpEngine.load`` calls ``spacy.cli.download`` for a model that is not installed, and
  ``AnalyzerEngine`` calls ``load`` on an engine that is not loaded yet; ours is loaded when
  built, and its ``load`` raises rather than download;
- the only recognizer is Presidio's spaCy one: the default registry's predefined recognizers
  (its email recognizer's ``tldextract`` fetches the public suffix list from the internet on
  first use) would only repeat the built-in detectors.

The pipeline's components that named-entity recognition does not need are disabled
(``PresidioConfig.disable``); a pipeline that then cannot run is refused when it loads (one
sentence is run through it). Texts longer than ``PIECE`` characters are analysed in pieces
(spaCy's memory grows with the text: about 1 GB per 100,000 characters for its trained
pipelines, and it refuses texts past ``nlp.max_length``), which overlap: each piece owns a part
of the text cut at a line break or a space, and is analysed with ``OVERLAP`` characters of its
neighbours' parts on either side; a piece keeps only what starts in its own part. So a name
across a cut ("Ann | Lee") is seen whole by the piece it starts in, and one near a cut is seen
with its context (``pieces``).

One thread per scanner runs its analyses one at a time (spaCy pipelines are not documented to
be thread-safe), off the event loop: the stage hands a call's whole scan to it
(``ModelScanner.offload``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, TypeVar

import spacy
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import SpacyRecognizer
from spacy.language import Language

from app import errors
from app.privacy.config import PresidioConfig
from app.privacy.detect import Finding

T = TypeVar("T")

SPACY_LABELS: dict[str, str] = {
    "PERSON": "PERSON", "PER": "PERSON",
    "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION", "LOCATION": "LOCATION",
    "ORG": "ORGANIZATION", "NORP": "NRP", "DATE": "DATE_TIME", "TIME": "DATE_TIME",
}
"""spaCy's entity labels (OntoNotes' in the ``en_core_web`` pipelines, WikiNER's ``PER`` and
``LOC`` in others) -> Presidio's types; ``FAC`` (buildings, streets, airports) counts as a
place, as addresses do."""
PIECE = 100_000
"""Characters analysed at once, at most (see the module docstring)."""
OVERLAP = 500
"""Characters of its neighbours' parts a piece also reads on either side (``pieces``): longer
than any name, place or organisation."""
_SMOKE = "Ann Lee flew from Paris to Lagos on Monday."


class _LoadedSpacy(SpacyNlpEngine):
    """Presidio's spaCy engine over a pipeline loaded already (see the module docstring)."""

    def __init__(self, nlp: Language, *, language: str, labels: dict[str, str]) -> None:
        known = {label for name in nlp.pipe_names
                 if "doc.ents" in nlp.get_pipe_meta(name).assigns
                 for label in nlp.pipe_labels.get(name, ())}
        super().__init__(
            models=[{"lang_code": language, "model_name": str(nlp.meta.get("name"))}],
            ner_model_configuration=NerModelConfiguration(
                model_to_presidio_entity_mapping=labels,
                # Presidio logs a warning for every entity of a label it cannot map; the
                # pipeline's other labels (CARDINAL, MONEY...) are not wanted.
                labels_to_ignore=sorted(known - set(labels))))
        # Presidio declares the attribute None until its load() fills it.
        self.nlp = {language: nlp}  # type: ignore[assignment]

    def load(self) -> None:
        raise RuntimeError("the pipeline is loaded by app.privacy.presidio, never downloaded")


class PresidioScanner:
    """One loaded pipeline and its analyzer: ``scan`` finds the config's entity types."""

    def __init__(self, analyzer: AnalyzerEngine, *, language: str, entities: frozenset[str],
                 executor: ThreadPoolExecutor) -> None:
        self.entities = entities
        self._analyzer = analyzer
        self._language = language
        self._executor = executor

    def scan(self, text: str, entities: frozenset[str]) -> list[Finding]:
        """The values of ``entities`` in ``text``, by Presidio's analysis (blocking)."""
        wanted = sorted(entities)
        found: list[Finding] = []
        for piece in pieces(text, PIECE, OVERLAP):
            if piece.text.strip():
                offset = piece.offset
                found.extend(
                    Finding(r.entity_type, offset + r.start, offset + r.end)
                    for r in self._analyzer.analyze(piece.text, language=self._language,
                                                    entities=wanted)
                    if piece.own_start <= offset + r.start < piece.own_end)
        return found

    async def offload(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def close(self) -> None:
        """Let the thread go once the work queued on it is done."""
        self._executor.shutdown(wait=False)


class Piece(NamedTuple):
    """A piece of a text analysed at once: ``text`` starts at ``offset`` in the whole, and the
    piece owns the findings that start in ``[own_start, own_end)`` (whole-text offsets)."""

    offset: int
    text: str
    own_start: int
    own_end: int


def pieces(text: str, size: int, overlap: int = 0) -> list[Piece]:
    """``text`` in pieces of at most ``size`` characters that overlap by ``overlap`` on either
    side. Their own parts cover the text end to end, each of at most ``size - 2 * overlap``
    characters, cut after the last line break in it, else the last space, else at that size;
    each piece is its own part with up to ``overlap`` characters of the text before and after
    it. A finding that starts in a piece's own part and is shorter than ``overlap`` is seen
    whole by that piece, whatever cut it crosses."""
    if len(text) <= size:
        return [Piece(0, text, 0, len(text))]
    part = size - 2 * overlap
    if part <= 0:
        raise ValueError(f"pieces of {size} characters cannot overlap by {overlap} on each side")
    out: list[Piece] = []
    start = 0
    while start < len(text):
        end = start + part
        if end >= len(text):
            cut = len(text)
        else:
            cut = text.rfind("\n", start, end)
            if cut <= start:
                cut = text.rfind(" ", start, end)
            cut = end if cut <= start else cut + 1
        first = max(0, start - overlap)
        out.append(Piece(first, text[first:cut + overlap], start, cut))
        start = cut
    return out


def _build(config: PresidioConfig, executor: ThreadPoolExecutor) -> PresidioScanner:
    """Load the pipeline and build the analyzer over it (blocking: seconds for a trained
    pipeline)."""
    try:
        nlp = spacy.load(config.model)
    except (OSError, ValueError, ImportError) as exc:
        raise _refused(config, f"cannot load it: {exc}") from None
    for name in config.disable:
        if name in nlp.pipe_names:
            nlp.disable_pipe(name)
    if not any("doc.ents" in nlp.get_pipe_meta(name).assigns for name in nlp.pipe_names):
        raise _refused(config, f"it finds no entities (its enabled components: "
                               f"{', '.join(nlp.pipe_names) or 'none'})")
    try:
        nlp(_SMOKE)
    except ValueError as exc:  # a disabled component that another one listens to
        raise _refused(config, f"it cannot run with {', '.join(config.disable)} disabled "
                               f"(list fewer in privacy.presidio.disable): {exc}") from None
    labels = {**SPACY_LABELS, **config.labels}
    language = nlp.lang or "xx"  # spaCy's code for a multi-language pipeline
    entities = frozenset(config.entities)
    registry = RecognizerRegistry(
        [SpacyRecognizer(supported_language=language, supported_entities=sorted(entities))],
        supported_languages=[language])
    engine = _LoadedSpacy(nlp, language=language, labels=labels)
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=[language])
    return PresidioScanner(analyzer, language=language, entities=entities, executor=executor)


def _refused(config: PresidioConfig, why: str) -> errors.GatewayError:
    return errors.GatewayError(f"privacy.presidio: spaCy pipeline {config.model!r}: {why}",
                               status=503, code="privacy_model_unavailable")


async def load_scanner(config: PresidioConfig) -> PresidioScanner:
    """The scanner of ``config``, loaded on its own new thread (off the event loop). A
    pipeline that cannot be loaded or run raises a ``GatewayError`` saying why."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="presidio")
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, _build, config,
                                                                executor)
    except BaseException:
        executor.shutdown(wait=False)
        raise
