"""Settings that would be accepted and do nothing, or do something other than they say, are
refused with their path: a target listed twice in one list, ``weight`` on a shadow variant,
``sample`` on a serving one, ``retries.backoff_s`` above ``max_backoff_s``."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import ConfigError, parse_config


def raw(**extra: Any) -> dict[str, Any]:
    return {"providers": {"p": {"type": "mock"}, "q": {"type": "mock"}},
            "models": {"m": {"targets": [{"provider": "p", "model": "x"}]}}, **extra}


def test_a_target_listed_twice_in_one_list_is_refused() -> None:
    doubled = raw()
    doubled["models"]["m"]["targets"] += [{"provider": "q", "model": "x"},
                                          {"provider": "p", "model": "x", "weight": 3}]
    with pytest.raises(ConfigError, match=r"models\.m\.targets\.2: the same target as "
                                          r"targets\.0 \(provider 'p', model 'x'\)"):
        parse_config(doubled, {})
    in_a_variant = raw(experiments={"e": {"model": "m", "variants": {
        "a": {"targets": [{"provider": "q", "model": "y"}, {"provider": "q", "model": "y"}]},
        "b": {"targets": [{"provider": "p", "model": "x"}]}}}})
    with pytest.raises(ConfigError, match=r"experiments\.e\.variants\.a\.targets\.1: the same"):
        parse_config(in_a_variant, {})


def test_one_model_with_different_params_is_two_targets() -> None:
    """The same upstream model sent different ``params`` is a different target; the same
    model of two providers too."""
    config = raw()
    config["models"]["m"]["targets"] += [
        {"provider": "p", "model": "x", "params": {"temperature": 0}},
        {"provider": "q", "model": "x"}]
    assert len(parse_config(config, {}).models["m"].targets) == 3


@pytest.mark.parametrize(("variant", "problem"), [
    ({"shadow": True, "weight": 2}, r"variants\.b\.weight|variants\.b: .*'weight'"),
    ({"sample": 0.5}, r"variants\.b: .*'sample' is the share"),
])
def test_a_variant_setting_that_does_nothing_is_refused(variant: dict[str, Any],
                                                        problem: str) -> None:
    config = raw(experiments={"e": {"model": "m", "variants": {
        "a": {"targets": [{"provider": "p", "model": "x"}]},
        "b": {"targets": [{"provider": "q", "model": "x"}], **variant}}}})
    with pytest.raises(ConfigError, match=problem):
        parse_config(config, {})


def test_a_shadow_sample_and_a_serving_weight_pass() -> None:
    config = raw(experiments={"e": {"model": "m", "variants": {
        "a": {"targets": [{"provider": "p", "model": "x"}], "weight": 3},
        "b": {"targets": [{"provider": "q", "model": "x"}], "shadow": True, "sample": 0.1}}}})
    variants = parse_config(config, {}).experiments["e"].variants
    assert (variants["a"].weight, variants["b"].sample) == (3, 0.1)


def test_a_first_backoff_above_the_longest_is_refused() -> None:
    for retries in ({"backoff_s": 5, "max_backoff_s": 2}, {"backoff_s": 5}):  # default 2
        with pytest.raises(ConfigError,
                           match=r"retries\.max_backoff_s: .*below backoff_s \(5\)"):
            parse_config(raw(retries=retries), {})
    assert parse_config(raw(retries={"backoff_s": 2, "max_backoff_s": 2}), {}).retries \
        .max_backoff_s == 2
