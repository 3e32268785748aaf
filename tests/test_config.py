"""Config validation: strict keys with paths, ${ENV} interpolation, the embedded default."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import ConfigError, embedded_config, parse_config
from app.providers.openai import OpenAIProvider


def base(**provider: Any) -> dict[str, Any]:
    return {"providers": {"p": {"type": "openai", **provider}},
            "models": {"m": {"targets": [{"provider": "p", "model": "x"}]}}}


def test_env_references_are_interpolated_with_defaults() -> None:
    """${VAR} and ${VAR:-default} are replaced before validation."""
    config = parse_config(base(api_key="${KEY}", base_url="${URL:-http://h:1/v1}"),
                          {"KEY": "sk-1"})
    provider = config.providers["p"]
    assert isinstance(provider, OpenAIProvider)
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "sk-1"
    assert provider.base_url == "http://h:1/v1"


def test_secrets_do_not_print() -> None:
    """A provider key never shows in the config's repr."""
    config = parse_config(base(api_key="sk-hidden"), {})
    assert "sk-hidden" not in repr(config)


def test_unknown_provider_in_target_is_named() -> None:
    """A target naming a missing provider is an error with its path."""
    raw = base()
    raw["models"]["m"]["targets"].append({"provider": "ghost", "model": "y"})
    with pytest.raises(ConfigError, match=r"models\.m\.targets\.1\.provider: no provider named"):
        parse_config(raw, {})


def test_unknown_type_and_bad_values_are_errors() -> None:
    """An unknown provider type or an out-of-range value is rejected with its path."""
    with pytest.raises(ConfigError, match=r"providers\.p"):
        parse_config({"providers": {"p": {"type": "nope"}}, "models": {}}, {})
    with pytest.raises(ConfigError, match=r"limits\.max_n"):
        parse_config({**base(), "limits": {"max_n": 0}}, {})
    with pytest.raises(ConfigError, match="targets"):
        parse_config({"providers": {"p": {"type": "mock"}}, "models": {"m": {"targets": []}}}, {})
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(["not", "a", "mapping"], {})


def test_embedded_default_adds_keyed_providers() -> None:
    """The embedded config serves mock models, plus OpenAI's when its key is set."""
    assert set(embedded_config({}).models) == {"mock-chat", "mock-embed"}
    keyed = embedded_config({"OPENAI_API_KEY": "sk-x"})
    assert "gpt-4o-mini" in keyed.models and keyed.providers["openai"].type == "openai"
