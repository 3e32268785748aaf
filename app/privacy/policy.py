"""The ``privacy:`` config compiled once per config: each public model's effective policy.

``Policies.of(model, tighten=...)`` is the policy a call runs under: the model's own settings
over the global default's, its action tightened (never loosened, ``STRICTNESS``) by the caller's
own setting (``Caller.privacy``: the stricter of its virtual key's and its team's ``privacy``).
Compiled policies are immutable and shared by every call on the config they came from. With
``privacy.presidio``, every policy whose entity types include the model's shares the one scanner
loaded for the config (``app.privacy.presidio``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from app.privacy.config import STRICTNESS, Action, EmbeddingAction, ModelPrivacy, PrivacyConfig
from app.privacy.detect import BUILTIN, Custom, Detector, ModelScanner, words_pattern

if TYPE_CHECKING:
    from app.config import GatewayConfig


@dataclass(frozen=True, slots=True)
class Policy:
    """What a call's privacy policy does: ``action`` on what ``detector`` finds; for embeddings
    ``embeddings`` stands in for ``redact``; ``regions``: where its targets may run (``None``:
    anywhere)."""

    action: Action
    detector: Detector
    embeddings: EmbeddingAction
    regions: frozenset[str] | None
    observe: bool = False

    @property
    def idle(self) -> bool:
        """Nothing to do for a call: allowed, not observed, no region rule."""
        return self.action == "allow" and not self.observe and self.regions is None


def tighter(a: Action, b: Action | None) -> Action:
    """The stricter of two actions (``b`` may be absent)."""
    if b is None or STRICTNESS[a] >= STRICTNESS[b]:
        return a
    return b


def _custom(sections: list[PrivacyConfig | ModelPrivacy]) -> list[Custom]:
    found: list[Custom] = []
    for section in sections:
        found += [Custom(p.name, re.compile(p.regex, re.IGNORECASE if p.ignore_case else 0))
                  for p in section.patterns]
        found += [Custom(w.name, words_pattern(w.words)) for w in section.words]
    return found


def compile_policy(default: PrivacyConfig, own: ModelPrivacy | None,
                   model: ModelScanner | None = None) -> Policy:
    """One model's policy: ``own`` over ``default`` (see ``app.privacy.config``); ``model``:
    the scanner loaded for ``default.presidio``."""
    sections: list[PrivacyConfig | ModelPrivacy] = [default] if own is None else [default, own]
    custom = _custom(sections)
    entities = (own.entities if own is not None and own.entities is not None
                else default.entities)
    found_by_model = frozenset() if model is None else model.entities
    if entities is None:
        entities = [*BUILTIN, *found_by_model, *(c.name for c in custom)]
    wanted = set(entities)
    detector = Detector(entities=wanted & {*BUILTIN, *found_by_model},
                        phone_regions=default.phone_regions,
                        custom=[c for c in custom if c.name in wanted], model=model)
    regions = own.regions if own is not None and own.regions is not None else default.regions
    return Policy(
        action=own.action if own is not None and own.action is not None else default.action,
        detector=detector,
        embeddings=own.embeddings if own is not None and own.embeddings is not None
        else default.embeddings,
        regions=None if regions is None else frozenset(regions),
        observe=default.observe)


class Policies:
    """Every public model's policy under one config."""

    def __init__(self, config: GatewayConfig, *, model: ModelScanner | None = None) -> None:
        """``model``: the scanner loaded for ``config.privacy.presidio`` (required with it)."""
        section = config.privacy
        if (section.presidio is None) != (model is None):
            raise ValueError("a model scanner goes with privacy.presidio, and only with it")
        self._default = compile_policy(section, None, model)
        self._models = {name: compile_policy(section, own.privacy, model)
                        for name, own in config.models.items()}

    def of(self, model: str, *, tighten: Action | None = None) -> Policy:
        """The policy of a call to ``model`` by a caller whose own setting is ``tighten``
        (``None``: the model's policy as it is)."""
        policy = self._models.get(model, self._default)
        action = tighter(policy.action, tighten)
        return policy if action == policy.action else replace(policy, action=action)
