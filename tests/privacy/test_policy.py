"""The privacy config: validation, per-model policies, key and team tightening."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import ConfigError, parse_config
from app.privacy.policy import Policies


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
    chat = policies.of("chat", key_id=None, team_id=None)
    assert chat.action == "redact"
    assert [f.entity for f in chat.detector.scan("ann@x.org 8.8.8.8 bluebird")] == \
        ["EMAIL", "PROJECT"]
    assert policies.of("other", key_id=None, team_id=None).idle


def test_keys_and_teams_only_tighten() -> None:
    """A key's or team's action applies only when stricter than the model's."""
    policies = Policies(parse_config(config(keys={"k1": "block", "k2": "allow"},
                                            teams={"t1": "private_only"}), {}))
    assert policies.of("chat", key_id="k1", team_id=None).action == "block"
    assert policies.of("chat", key_id="k2", team_id=None).action == "redact"
    assert policies.of("chat", key_id="k2", team_id="t1").action == "private_only"
    assert policies.of("other", key_id=None, team_id="t1").action == "private_only"


@pytest.mark.parametrize(("patch", "message"), [
    ({"action": "hide"}, "privacy.action"),
    ({"patterns": [{"name": "X", "regex": "("}]}, "not a valid regular expression"),
    ({"patterns": [{"name": "EMAIL", "regex": "x"}]}, "built-in types"),
    ({"entities": ["NOPE"]}, "unknown entity types"),
])
def test_bad_privacy_config_named(patch: dict[str, Any], message: str) -> None:
    """Bad privacy settings are config errors naming what is wrong."""
    with pytest.raises(ConfigError, match=message):
        parse_config(config(**patch), {})
