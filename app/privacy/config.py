"""The ``privacy:`` sections of the config: the global default and each public model's own.

```yaml
privacy:                        # the default for every model (and what models add to)
  action: allow                 # allow | redact | private_only | block
  embeddings: block             # what redact means for embeddings: block | private_only
  phone_regions: [US]           # where numbers without a country code are read from
  observe: false                # scan and count even where the action is allow
  patterns: [{name: EMPLOYEE_ID, regex: 'EMP-\\d{6}'}]
  words: [{name: PROJECT, words: [bluebird, nightjar]}]
models:
  chat:
    targets: [...]
    privacy: {action: redact, entities: [EMAIL, PHONE], regions: [eu]}
```

A model's ``action``, ``entities``, ``embeddings`` and ``regions`` replace the default's; its
``patterns`` and ``words`` add to the default's. A virtual key's or team's own ``privacy``
setting (``app.keys``: a ``PrivacySetting``) only tightens a model's action
(``allow < redact < private_only < block``): one looser than the model's changes nothing.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class _Policy(BaseModel):
    model_config = _FORBID
    entities: list[EntityName] | None = None
    """The entity types acted on (default: every built-in and custom one)."""
    patterns: list[CustomPattern] = Field(default_factory=list)
    words: list[CustomWords] = Field(default_factory=list)
    regions: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None
    """Only targets whose provider's ``region`` is one of these are used (default: any)."""


class ModelPrivacy(_Policy):
    """A public model's ``privacy:``; unset fields take the global default's value."""

    action: Action | None = None
    embeddings: EmbeddingAction | None = None


class PrivacyConfig(_Policy):
    """The global ``privacy:`` section."""

    action: Action = "allow"
    embeddings: EmbeddingAction = "block"
    phone_regions: Annotated[list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]],
                             Field(min_length=1, max_length=16)] = Field(
        default_factory=lambda: ["US"])
    observe: bool = False

    @model_validator(mode="after")
    def _known_entities(self) -> PrivacyConfig:
        check_entities(self, ())
        return self


def custom_names(policy: _Policy) -> list[str]:
    return [p.name for p in policy.patterns] + [w.name for w in policy.words]


def check_entities(policy: _Policy, inherited: tuple[str, ...]) -> None:
    """``ValueError`` when ``policy.entities`` names a type that is neither built in nor
    custom (its own or ``inherited``), or a custom type reuses a built-in name."""
    custom = custom_names(policy)
    clash = sorted(set(custom) & set(BUILTIN))
    if clash:
        raise ValueError(f"custom entity names {clash} are built-in types")
    known = {*BUILTIN, *custom, *inherited}
    unknown = [e for e in policy.entities or () if e not in known]
    if unknown:
        raise ValueError(f"entities: unknown entity types {unknown}; known: {sorted(known)}")
