"""The privacy config: validation, per-model policies, tightening by the caller's setting."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import ConfigError, parse_config
from app.privacy.config import STRICTNESS, Action
from app.privacy.policy import Policies, tighter


def config(**privacy: Any) -> dict[str, Any]:
    return {
        "providers": {"gpu": {"type": "vllm", "base_url": "http://gpu:8000/v1"},
                      "api": {"type": "openai", "api_key": "sk-x", "region": "eu"}},
        "models": {"chat": {"targets": [{"provider": "api", "model": "m"}],
                            "privacy": {"action": "redact", "entities": ["EMAIL", "PROJECT"]}},
                   "other": {"targets": [{"provider": "gpu", "model": "m"}]}},
        "privacy": {"words": [{"name": "PROJECT", "words": ["bluebird"]}], **privacy},
    }


def test_trust_defaults() -> None:
    """Self-hosted provider types default to private, hosted APIs to third_party."""
    parsed = parse_config(config(), {})
    assert parsed.providers["gpu"].trust == "private"
    assert parsed.providers["api"].trust == "third_party"
    assert parsed.providers["api"].region == "eu"


def test_model_policy_over_default() -> None:
    """A model's action and entities replace the default's; custom types are inherited."""
    policies = Policies(parse_config(config(), {}))
    chat = policies.of("chat")
    assert chat.action == "redact"
    assert [f.entity for f in chat.detector.scan("ann@x.org 8.8.8.8 bluebird")] == \
        ["EMAIL", "PROJECT"]
    assert policies.of("other").idle


@pytest.mark.parametrize(("model", "tighten", "action"), [
    ("chat", None, "redact"),
    ("chat", "allow", "redact"),
    ("chat", "block", "block"),
    ("chat", "private_only", "private_only"),
    ("other", "redact", "redact"),
])
def test_the_callers_setting_only_tightens(model: str, tighten: Action | None,
                                           action: Action) -> None:
    """A caller's setting applies only when stricter than the model's action; the rest of
    the model's policy (its detector) stays."""
    policies = Policies(parse_config(config(), {}))
    policy = policies.of(model, tighten=tighten)
    assert policy.action == action
    assert policy.detector is policies.of(model).detector


@pytest.mark.parametrize("action", ["allow", "redact", "private_only", "block"])
def test_tighter_never_loosens(action: Action) -> None:
    """tighter gives the stricter of two actions, whatever their order."""
    others: tuple[Action | None, ...] = ("allow", "redact", "private_only", "block", None)
    for other in others:
        got = tighter(action, other)
        assert STRICTNESS[got] == max(STRICTNESS[action], STRICTNESS.get(other or "allow", 0))


@pytest.mark.parametrize("section", ["keys", "teams"])
def test_the_config_has_no_key_or_team_map(section: str) -> None:
    """Keys and teams carry their own privacy setting (the admin API); the config's former
    maps are unknown keys, named."""
    with pytest.raises(ConfigError, match=f"privacy.{section}"):
        parse_config(config(**{section: {"key_1": "block"}}), {})


@pytest.mark.parametrize(("patch", "message"), [
    ({"action": "hide"}, "privacy.action"),
    ({"patterns": [{"name": "X", "regex": "("}]}, "not a valid regular expression"),
    ({"patterns": [{"name": "EMAIL", "regex": "x"}]}, "built-in types"),
    ({"entities": ["NOPE"]}, "unknown entity types"),
    ({"phone_regions": ["UK"]}, r"privacy.phone_regions.0: 'UK' is not a region .*GB, not UK"),
    ({"phone_regions": ["US", "ZZ"]}, r"privacy.phone_regions.1: 'ZZ' is not a region"),
    ({"entities": []}, "privacy.entities: an empty list acts on no entity type"),
    ({"regions": []}, "privacy.regions: an empty list allows no region"),
])
def test_bad_privacy_config_named(patch: dict[str, Any], message: str) -> None:
    """Bad privacy settings are config errors naming what is wrong: a phone region
    ``phonenumbers`` has no plan for (no national number would ever be found there), an empty
    ``entities`` (a policy acting on nothing) or ``regions`` (one refusing every call)."""
    with pytest.raises(ConfigError, match=message):
        parse_config(config(**patch), {})


@pytest.mark.parametrize("field", ["entities", "regions"])
def test_a_models_empty_list_is_named(field: str) -> None:
    """A model's own empty ``entities`` or ``regions`` is refused too, at its path."""
    raw = config()
    raw["models"]["chat"]["privacy"][field] = []
    with pytest.raises(ConfigError, match=f"models.chat.privacy.{field}: an empty list"):
        parse_config(raw, {})
