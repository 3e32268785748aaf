"""A call that asks for no ``max_tokens`` is never sent more than its model's
``max_tokens_cap``: where its provider has a larger default of its own, or none at all (OpenAI,
Gemini: the model's own maximum), the cap is sent (``app.routing.table``)."""

from __future__ import annotations

from typing import Any

from app.config import parse_config
from app.routing import RoutingTable

PROVIDERS = {
    "claude": {"type": "anthropic", "api_key": "unused-key-0123456789"},
    "gpu": {"type": "vllm", "base_url": "http://127.0.0.1:9/v1"},
    "oai": {"type": "openai", "api_key": "unused-key-0123456789"},
    "gem": {"type": "gemini", "api_key": "unused-key-0123456789"},
    "aws": {"type": "bedrock", "region": "us-east-1", "api_key": "unused-key-0123456789"},
}


def defaults(model: dict[str, Any], **experiments: Any) -> dict[str, int | None]:
    """Each target's ``max_tokens_default`` in the route of ``chat`` and of its experiment's
    variants when given, by provider."""
    table = RoutingTable(parse_config(
        {"providers": PROVIDERS, "models": {"chat": model}, "experiments": experiments}, {}))
    routes = [table.routes()[0]]
    experiment = table.experiment_of("chat")
    if experiment is not None:
        routes += [variant.route for variant in experiment.variants]
    return {t.provider: t.max_tokens_default for route in routes for t in route.targets}


TARGETS = [{"provider": "claude", "model": "c"}, {"provider": "gpu", "model": "g"},
           {"provider": "oai", "model": "o"}, {"provider": "gem", "model": "m"},
           {"provider": "aws", "model": "b"}]


def test_a_provider_default_above_the_cap_is_cut_to_the_cap() -> None:
    """Anthropic's 4096 and vLLM's 1024 above a cap of 100 become 100."""
    assert defaults({"targets": TARGETS, "max_tokens_cap": 100})["claude"] == 100
    assert defaults({"targets": TARGETS, "max_tokens_cap": 100})["gpu"] == 100


def test_a_provider_without_a_default_is_sent_the_cap() -> None:
    """OpenAI and Gemini send no limit of their own (their model then generates up to its
    own maximum, past the cap), nor does Bedrock without a ``max_tokens_default``: each is
    sent the cap."""
    found = defaults({"targets": TARGETS, "max_tokens_cap": 100})
    assert (found["oai"], found["gem"], found["aws"]) == (100, 100, 100)


def test_a_provider_default_under_the_cap_stays_the_providers() -> None:
    """A cap of 2048 cuts Anthropic's 4096 but leaves vLLM's 1024 (sent by the provider)."""
    assert defaults({"targets": TARGETS, "max_tokens_cap": 2048}) == {
        "claude": 2048, "gpu": None, "oai": 2048, "gem": 2048, "aws": 2048}


def test_the_models_own_default_wins() -> None:
    """A model's ``max_tokens_default`` (at most its cap) is every target's."""
    assert defaults({"targets": TARGETS, "max_tokens_cap": 100, "max_tokens_default": 60}) == {
        "claude": 60, "gpu": 60, "oai": 60, "gem": 60, "aws": 60}


def test_without_a_cap_nothing_changes() -> None:
    """No cap: each provider's own default applies."""
    assert defaults({"targets": TARGETS}) == {
        "claude": None, "gpu": None, "oai": None, "gem": None, "aws": None}


def test_an_experiments_variant_is_cut_to_its_models_cap() -> None:
    """A variant's targets follow the rule too (they once took the first target's default)."""
    found = defaults({"targets": [{"provider": "oai", "model": "o"}], "max_tokens_cap": 100},
                     ab={"model": "chat", "variants": {
                         "control": {"weight": 1, "targets": [{"provider": "oai", "model": "o"}]},
                         "claude": {"weight": 1, "targets": [{"provider": "claude", "model": "c"}]},
                     }})
    assert found == {"oai": 100, "claude": 100}
