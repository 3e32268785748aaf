"""The ``privacy:`` sections of the config: the global default and each public model's own.

```yaml
privacy:                        # the default for every model (and what models add to)
  action: allow                 # allow | redact | private_only | block
  embeddings: block             # what redact means for embeddings: block | private_only
  phone_regions: [US]           # where numbers without a country code are read from
  observe: false                # scan and count even where the action is allow
  patterns: [{name: EMPLOYEE_ID, regex: 'EMP-\\d{6}'}]
  words: [{name: PROJECT, words: [bluebird, nightjar]}]
  presidio:                     # names and places, with the `presidio` extra (see PresidioConfig)
    model: en_core_web_lg       # an installed spaCy pipeline (package name or directory)
    entities: [PERSON, LOCATION]
models:
  chat:
    targets: [...]
    privacy: {action: redact, entities: [EMAIL, PHONE], regions: [eu]}
```

A model's ``action``, ``entities``, ``embeddings`` and ``regions`` replace the default's; its
``patterns`` and ``words`` add to the default's. A virtual key's or team's own ``privacy``
setting (``app.keys``: a ``PrivacySetting``) only tightens a model's action
(``allow < redact < private_only < block``): one looser than the model's changes nothing.
``presidio`` is global only: one spaCy pipeline, loaded once per config, serves every model's
policy.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Annotated, Literal

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.privacy.detect import BUILTIN

_FORBID = ConfigDict(extra="forbid", frozen=True)
Action = Literal["allow", "redact", "private_only", "block"]
EmbeddingAction = Literal["block", "private_only"]
PrivacySetting = Literal["redact", "private_only", "block"]
"""What a key's or team's ``privacy`` setting may ask for: any action but ``allow`` (which could
tighten nothing)."""
STRICTNESS: dict[str, int] = {"allow": 0, "redact": 1, "private_only": 2, "block": 3}
EntityName = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,39}$")]
"""An entity type's name: upper case, as its placeholders spell it (``<EMPLOYEE_ID_1>``)."""


class CustomPattern(BaseModel):
    """A custom entity type found by a regular expression (Python ``re`` syntax)."""

    model_config = _FORBID
    name: EntityName
    regex: Annotated[str, Field(min_length=1, max_length=2000)]
    ignore_case: bool = False

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str) -> str:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return regex


class CustomWords(BaseModel):
    """A custom entity type found by a word list (whole words, case-insensitive)."""

    model_config = _FORBID
    name: EntityName
    words: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]],
                     Field(min_length=1, max_length=10_000)]


PRESIDIO_ENTITIES = ("PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME")
"""The entity types Presidio's spaCy recognizer reports (``NRP``: a nationality, religious or
political group), each the name of its placeholders (``<PERSON_1>``)."""
PresidioEntity = Literal["PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME"]
SPACY_COMPONENTS_NOT_FOR_NER = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer",
                                "senter", "morphologizer")
"""The components of spaCy's trained CPU pipelines (``en_core_web_sm/md/lg``...) that their
``ner`` does not read (it has its own token vectors): the default ``disable``."""
_NAMES_AND_PLACES: tuple[PresidioEntity, ...] = ("PERSON", "LOCATION")
_REGION_MISTAKES = {"UK": "GB", "EL": "GR"}
"""Codes often written for a region whose ISO 3166-1 code is another."""


def _phone_region(code: str) -> str:
    """``code`` when ``phonenumbers`` has a numbering plan for it (else no number written
    without its country code would ever be found there)."""
    if code not in phonenumbers.SUPPORTED_REGIONS:
        hint = _REGION_MISTAKES.get(code)
        raise ValueError(
            f"{code!r} is not a region phonenumbers knows; write its ISO 3166-1 alpha-2 code"
            + (f" ({hint}, not {code})" if hint else " (GB, DE, US...)"))
    return code


PhoneRegion = Annotated[str, Field(pattern=r"^[A-Z]{2}$"), AfterValidator(_phone_region)]
"""A region whose numbers ``phonenumbers`` reads (``phonenumbers.SUPPORTED_REGIONS``)."""
_PACKAGE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PresidioConfig(BaseModel):
    """``privacy.presidio``: names, places and organisations found by Microsoft Presidio's
    analyzer over a spaCy pipeline the deployment installed (``app.privacy.presidio``).

    Validating it imports nothing: it checks that the ``presidio`` extra's packages and the
    pipeline are installed (``importlib.util.find_spec``), so a missing one is a config error at
    load and reload, never a download or a failure mid-request."""

    model_config = _FORBID
    model: Annotated[str, Field(min_length=1, max_length=1000)]
    """An installed spaCy pipeline package (``en_core_web_lg``), or the directory of a saved
    pipeline (``nlp.to_disk``); loaded with ``spacy.load``, which never downloads."""
    entities: Annotated[list[PresidioEntity], Field(min_length=1)] = Field(
        default_factory=lambda: list(_NAMES_AND_PLACES))
    """The types looked for; they join the built-in ones that policies' ``entities`` name."""
    labels: dict[Annotated[str, Field(min_length=1, max_length=64)], PresidioEntity] = \
        Field(default_factory=dict)
    """The pipeline's own entity labels -> types, over the usual spaCy mapping (``PERSON``,
    ``PER`` -> PERSON; ``GPE``, ``LOC``, ``FAC`` -> LOCATION; ``ORG``; ``NORP`` -> NRP;
    ``DATE``, ``TIME`` -> DATE_TIME): for a pipeline of your own (``STREET: LOCATION``)."""
    disable: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=lambda: list(SPACY_COMPONENTS_NOT_FOR_NER))
    """Components of the pipeline not run (the ones it lacks are ignored): by default those of
    spaCy's trained CPU pipelines that named-entity recognition does not need. A pipeline
    that cannot run without one of them is refused when it loads."""

    @model_validator(mode="after")
    def _installed(self) -> PresidioConfig:
        missing = [name for name in ("presidio_analyzer", "spacy")
                   if importlib.util.find_spec(name) is None]
        if missing:
            raise ValueError(
                f"needs the presidio extra ({', '.join(missing)} not installed): "
                "pip install 'switchboard[presidio]'")
        if not (_PACKAGE.fullmatch(self.model) and importlib.util.find_spec(self.model)) \
                and not (Path(self.model) / "config.cfg").is_file():
            raise ValueError(
                f"model: {self.model!r} is neither an installed spaCy pipeline package nor "
                "the directory of a saved pipeline (with its config.cfg); install the "
                "pipeline's wheel (e.g. en_core_web_lg from spaCy's model releases) where the "
                "gateway runs: it is never downloaded at run time")
        return self


_EMPTY = {
    "entities": "an empty list acts on no entity type, so the policy would do nothing; leave "
                "entities out to act on every type, or name the ones wanted",
    "regions": "an empty list allows no region, so every call would be refused; leave regions "
               "out to allow any, or name the ones allowed",
}


class _Policy(BaseModel):
    model_config = _FORBID
    entities: list[EntityName] | None = None
    """The entity types acted on (default: every built-in and custom one)."""
    patterns: list[CustomPattern] = Field(default_factory=list)
    words: list[CustomWords] = Field(default_factory=list)
    regions: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None
    """Only targets whose provider's ``region`` is one of these are used (default: any)."""

    @field_validator("entities", "regions")
    @classmethod
    def _not_empty(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        """An empty list would act on nothing (``entities``) or allow no target at all
        (``regions``): refused, rather than a policy that silently does nothing or refuses
        every call."""
        if value is not None and not value:
            raise ValueError(_EMPTY[info.field_name or ""])
        return value


class ModelPrivacy(_Policy):
    """A public model's ``privacy:``; unset fields take the global default's value."""

    action: Action | None = None
    embeddings: EmbeddingAction | None = None


class PrivacyConfig(_Policy):
    """The global ``privacy:`` section."""

    action: Action = "allow"
    embeddings: EmbeddingAction = "block"
    phone_regions: Annotated[list[PhoneRegion], Field(min_length=1, max_length=16)] = Field(
        default_factory=lambda: ["US"])
    observe: bool = False
    presidio: PresidioConfig | None = None
    """Names, places and organisations with Presidio (the ``presidio`` extra); off by default:
    the built-in detectors need nothing installed or downloaded."""

    @model_validator(mode="after")
    def _known_entities(self) -> PrivacyConfig:
        check_entities(self, (), model_entities(self))
        return self


def custom_names(policy: _Policy) -> list[str]:
    return [p.name for p in policy.patterns] + [w.name for w in policy.words]


def model_entities(section: PrivacyConfig) -> tuple[str, ...]:
    """The types ``privacy.presidio`` looks for (none without it)."""
    return () if section.presidio is None else tuple(section.presidio.entities)


def check_entities(policy: _Policy, inherited: tuple[str, ...],
                   model: tuple[str, ...] = ()) -> None:
    """``ValueError`` when ``policy.entities`` names a type that is neither built in, nor
    custom (its own or ``inherited``), nor one the model looks for (``model``), or a custom
    type reuses a built-in or model type's name."""
    custom = custom_names(policy)
    clash = sorted(set(custom) & {*BUILTIN, *model})
    if clash:
        raise ValueError(f"custom entity names {clash} are built-in types"
                         + (" or ones privacy.presidio finds" if model else ""))
    known = {*BUILTIN, *model, *custom, *inherited}
    unknown = [e for e in policy.entities or () if e not in known]
    if unknown:
        raise ValueError(f"entities: unknown entity types {unknown}; known: {sorted(known)}")
