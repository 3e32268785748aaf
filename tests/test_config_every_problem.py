"""check-config lists every problem in one pass: field problems, upstream URLs, references
between sections and unset ``${VAR}``s together; and token defaults stay within their caps."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import ConfigError, parse_config
from app.pricing import MAX_PRICE


def problems(raw: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env or {})
    return str(caught.value).splitlines()


def paths(lines: list[str]) -> list[str]:
    return [line.split(": ", 1)[0] for line in lines]


def test_bad_urls_are_listed_beside_field_problems() -> None:
    """Upstream URLs that cannot work are listed with another provider's bad field and a
    model's bad cap, not only once those are fixed."""
    raw = {"providers": {"b": {"type": "vllm", "base_url": "http://h:99999/v1"},
                         "c": {"type": "vllm", "base_url": "http://u:p@h:80/v1"},
                         "d": {"type": "vllm", "base_url": "http://h:80/v1", "timeout_s": -1}},
           "models": {"m": {"targets": [{"provider": "b", "model": "x"}],
                            "max_tokens_cap": 0}}}
    lines = problems(raw)
    assert paths(lines) == ["providers.b.base_url", "providers.c.base_url",
                            "providers.d.timeout_s", "models.m.max_tokens_cap"]
    assert "its port is not a number" in lines[0] and "user:password@" in lines[1]
    assert "u:p" not in "\n".join(lines)


def test_an_unknown_provider_is_listed_beside_field_problems() -> None:
    """A target naming no provider, and an experiment naming no model, are listed even when a
    field elsewhere is invalid."""
    raw = {"providers": {"p": {"type": "mock", "timeout_s": 0}},
           "models": {"m": {"targets": [{"provider": "ghost", "model": "x"}]}},
           "experiments": {"e": {"model": "nope", "variants": {
               "a": {"targets": [{"provider": "p", "model": "x"}]},
               "b": {"targets": [{"provider": "gone", "model": "x"}]}}}}}
    assert problems(raw) == [
        "providers.p.timeout_s: Input should be greater than 0",
        "models.m.targets.0.provider: no provider named 'ghost' (known: p)",
        "experiments.e.variants.b.targets.0.provider: no provider named 'gone' (known: p)",
        "experiments.e.model: no public model named 'nope'"]


def test_an_empty_setting_is_listed_beside_its_providers_other_problems() -> None:
    """An empty key is listed with a bad field of the same provider and a nested empty one."""
    raw = {"providers": {
        "p": {"type": "openai", "api_key": "", "timeout_s": -1},
        "az": {"type": "azure_openai", "endpoint": "https://r.openai.azure.com:0",
               "api_version": "2024-10-21", "auth": {
                   "type": "client_secret", "tenant_id": "", "client_id": "c",
                   "client_secret": "s", "authority": "http://login"}}},
        "models": {"m": {"targets": [{"provider": "p", "model": "x"}]}}}
    assert paths(problems(raw)) == [
        "providers.p.timeout_s", "providers.p.api_key", "providers.az.auth.tenant_id",
        "providers.az.auth.authority", "providers.az.endpoint"]


def test_an_unset_variable_does_not_hide_the_rest() -> None:
    """An unset ``${VAR}`` is listed with a bad URL and an unknown provider elsewhere, and
    nothing that only follows from its value being missing (an empty key, an empty type)."""
    raw = {"providers": {"b": {"type": "vllm", "base_url": "http://h:99999/v1"},
                         "c": {"type": "openai", "api_key": "${TB_UNSET_X}"},
                         "t": {"type": "${TB_UNSET_TYPE}"},
                         "u": {"type": "vllm", "base_url": "http://${TB_UNSET_HOST}:8000/v1"}},
           "models": {"m": {"targets": [{"provider": "zz", "model": "x"}]},
                      "n": {"targets": [{"provider": "${TB_UNSET_P}", "model": "x"}]}}}
    assert problems(raw) == [
        "providers.c.api_key: environment variable TB_UNSET_X is not set",
        "providers.t.type: environment variable TB_UNSET_TYPE is not set",
        "providers.u.base_url: environment variable TB_UNSET_HOST is not set",
        "models.n.targets.0.provider: environment variable TB_UNSET_P is not set",
        "providers.b.base_url: not a valid URL (its port is not a number from 1 to 65535)",
        "models.m.targets.0.provider: no provider named 'zz' (known: b, c, t, u)"]


def test_only_unset_variables_is_still_refused() -> None:
    """A file whose only problem is an unset variable in a setting that may be empty (a
    header) is still refused, naming it."""
    raw = {"providers": {"p": {"type": "mock", "headers": {"x-a": "${TB_UNSET_H}"}}},
           "models": {"m": {"targets": [{"provider": "p", "model": "x"}]}}}
    assert problems(raw) == ["providers.p.headers.x-a: environment variable TB_UNSET_H is not "
                             "set"]


def model(**settings: Any) -> dict[str, Any]:
    return {"providers": {"p": {"type": "mock"}},
            "models": {"m": {"targets": [{"provider": "p", "model": "x"}], **settings}}}


def test_a_default_above_the_models_cap_is_refused() -> None:
    """``max_tokens_default`` above the model's ``max_tokens_cap`` is refused (a call giving
    no max_tokens would be sent more than the cap lets any call ask for); equal is fine."""
    assert problems(model(max_tokens_default=9000, max_tokens_cap=100)) == [
        "models.m.max_tokens_default: 9000 is above max_tokens_cap (100): a call that gives "
        "no max_tokens would be sent more than the cap lets a call ask for"]
    assert parse_config(model(max_tokens_default=100, max_tokens_cap=100), {})


def test_a_default_above_the_global_cap_is_refused() -> None:
    """``max_tokens_default`` above ``limits.max_tokens`` (every model's cap) is refused."""
    raw = {**model(max_tokens_default=9000), "limits": {"max_tokens": 4096}}
    assert problems(raw) == [
        "models.m.max_tokens_default: 9000 is above limits.max_tokens (4096), the most tokens "
        "any call may ask for"]


def test_a_breakers_longest_cooldown_below_its_first_is_refused() -> None:
    """``breaker.max_cooldown_s`` below ``cooldown_s`` (given or the default 300) is
    refused: the first opening would outlast the longest."""
    assert paths(problems({**model(), "breaker": {"cooldown_s": 600}})) == [
        "breaker.max_cooldown_s"]
    assert paths(problems({**model(), "breaker": {"max_cooldown_s": 1}})) == [
        "breaker.max_cooldown_s"]
    assert parse_config({**model(), "breaker": {"cooldown_s": 600, "max_cooldown_s": 600}}, {})


def test_an_infinite_or_absurd_price_is_refused() -> None:
    """A price must be finite and at most MAX_PRICE (USD 10,000 per million tokens, or per
    1,000 searches): ``.inf`` made a call's cost nan, 1e20 overflowed the call log; each is
    named by its path. MAX_PRICE itself is a price."""
    raw = {"providers": {"p": {"type": "mock"}},
           "models": {"m": {"targets": [{"provider": "p", "model": "x"}]}},
           "pricing": {"inf": {"input": float("inf"), "output": 1},
                       "nan": {"input": 1, "cached_input": float("nan")},
                       "huge": {"input": 1e20},
                       "searches": {"input": 1, "web_search": MAX_PRICE + 1},
                       "top": {"input": MAX_PRICE, "output": MAX_PRICE}}}
    lines = problems(raw)
    assert paths(lines) == ["pricing.inf.input", "pricing.nan.cached_input",
                            "pricing.huge.input", "pricing.searches.web_search"]
    assert "finite" in lines[0] and "finite" in lines[1]
    assert "10000" in lines[2] and "10000" in lines[3]


def test_every_check_between_sections_is_listed_at_once() -> None:
    """A default above the global cap, a privacy entity no one knows and targets sharing no
    endpoint are listed together, not one per rerun (the checks between sections all run)."""
    raw = {"providers": {"minilm": {"type": "local"},
                         "claude": {"type": "anthropic", "api_key": "x"}},
           "models": {"mixed": {"targets": [{"provider": "minilm", "model": "m"},
                                            {"provider": "claude", "model": "c"}]},
                      "chat": {"targets": [{"provider": "claude", "model": "c"}],
                               "max_tokens_default": 500,
                               "privacy": {"action": "redact", "entities": ["NOPE"]}}},
           "limits": {"max_tokens": 100}}
    lines = problems(raw)
    assert paths(lines) == ["models.chat.max_tokens_default", "models.chat.privacy",
                            "models.mixed.targets"]
    assert "unknown entity types ['NOPE']" in lines[1]
    assert "no endpoint is served by every target" in lines[2]


def test_an_experiment_with_one_variant_says_it_needs_two() -> None:
    """One variant has nothing to compare with: the refusal says so in words (it was
    pydantic's "Dictionary should have at least 2 items after validation")."""
    raw = {"providers": {"m": {"type": "mock"}},
           "models": {"chat": {"targets": [{"provider": "m", "model": "x"}]}},
           "experiments": {"e1": {"model": "chat", "variants": {
               "a": {"targets": [{"provider": "m", "model": "y"}]}}}}}
    assert problems(raw) == [
        "experiments.e1.variants: an experiment needs at least two variants to compare (this "
        "one has 1): add another, or remove the experiment"]
