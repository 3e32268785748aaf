"""The provider seam: the registry of provider types, what each can serve, the check of targets
against it when the config loads, and how a call is routed by it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import openai
import pytest
from pydantic import SecretStr

from app import errors
from app.config import ConfigError, GatewayConfig, parse_config
from app.main import create_app
from app.providers import PROVIDER_TYPES, ProviderType
from app.providers.base import ENDPOINTS, Capability, ChatCall, ProviderBase, Result, Target
from app.routing import RoutingTable
from app.settings import Settings
from tests.servers import serve

ALL = {"chat", "stream_chat", "complete", "stream_complete", "embed"}
PROVIDERS: dict[str, Any] = {
    "claude": {"type": "anthropic", "base_url": "http://127.0.0.1:9"},
    "minilm": {"type": "local", "device": "cpu"},
    "offline": {"type": "mock"},
}


def config(models: dict[str, list[str]], **sections: Any) -> GatewayConfig:
    """A config with ``PROVIDERS`` and each model's targets on the providers named."""
    return parse_config({"providers": PROVIDERS, "models": {
        name: {"targets": [{"provider": p, "model": f"{p}-model"} for p in providers]}
        for name, providers in models.items()}, **sections}, {})


def test_each_type_is_keyed_by_its_config_models_type() -> None:
    """The registry's key is the ``type`` literal of the config model registered with it, and
    a config entry of that type validates to that model."""
    assert set(PROVIDER_TYPES) == {"openai", "azure_openai", "anthropic", "vllm", "mock",
                                   "local", "replicate",
                                   "cohere", "ai21", "huggingface",
                                   "bedrock", "sagemaker",
                                   "gemini", "vertex", "vertex_anthropic"}
    extra = {"bedrock": {"region": "us-east-1"}, "sagemaker": {"region": "us-east-1"},
             "azure_openai": {"api_key": "k", "endpoint": "https://r.example"},
             "vllm": {"base_url": "http://v:8000/v1"},
             "ai21": {"api_key": "k"},
             "gemini": {"api_key": "k"},
             "vertex": {"project": "p"}, "vertex_anthropic": {"project": "p"}}
    for name, kind in PROVIDER_TYPES.items():
        parsed = parse_config({"providers": {"p": {"type": name, **extra.get(name, {})}},
                               "models": {}}, {})
        assert type(parsed.providers["p"]) is kind.config


@pytest.mark.parametrize(("name", "serves"), [
    ("openai", ALL), ("azure_openai", ALL), ("vllm", ALL), ("mock", ALL),
    ("anthropic", {"chat", "stream_chat", "messages", "stream_messages"}), ("local", {"embed"}),
    ("huggingface", ALL),
    ("bedrock", {"chat", "stream_chat", "embed", "messages", "stream_messages"}),
    ("sagemaker", {"chat", "stream_chat", "complete", "stream_complete"}),
    ("vertex_anthropic", {"chat", "stream_chat", "messages", "stream_messages"})])
def test_capabilities_are_read_from_the_provider_class(name: str, serves: set[str]) -> None:
    """What a type serves is what its builder's class implements, known without building it."""
    assert PROVIDER_TYPES[name].serves == serves


class _ChatOnlyConfig(ProviderBase):
    type: Literal["chat-only"]


class _ChatOnly:
    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        return Result(body={}, usage=None)

    async def aclose(self) -> None:
        """Nothing to close."""


def _build_chat_only(config: _ChatOnlyConfig, session: aiohttp.ClientSession) -> _ChatOnly:
    return _ChatOnly()


# no return annotation: the mistake under test
def _build_unannotated(config: _ChatOnlyConfig, session: aiohttp.ClientSession):  # type: ignore[no-untyped-def]
    return _ChatOnly()


def test_a_new_type_is_one_registration() -> None:
    """A config model and a builder make a type: its name from the model, its capabilities
    from the class the builder returns."""
    kind = ProviderType(_ChatOnlyConfig, _build_chat_only)
    assert kind.name == "chat-only"
    assert kind.serves == {"chat"}


class _NarrowedConfig(ProviderBase):
    type: Literal["narrowed"]
    chat: bool = True

    def offers(self) -> frozenset[Capability] | None:
        return None if self.chat else frozenset({"embed"})


def test_a_configuration_may_offer_less_than_its_class() -> None:
    """A type with several upstream APIs serves what the configured one offers: never more
    than its class implements."""
    kind = ProviderType(_NarrowedConfig, _build_chat_only)
    assert kind.serves_for(_NarrowedConfig(type="narrowed")) == {"chat"}
    assert kind.serves_for(_NarrowedConfig(type="narrowed", chat=False)) == frozenset()


def test_a_builder_without_a_provider_class_is_refused() -> None:
    """A builder not annotated with the class it returns cannot say what it serves: refused
    when registered, not when a call arrives."""
    with pytest.raises(TypeError, match="must be annotated to return a provider class"):
        ProviderType(_ChatOnlyConfig, _build_unannotated)


def test_targets_that_share_no_endpoint_are_a_config_error() -> None:
    """A chat-only target beside an embeddings-only one can never stand in for it: the error
    names the model, each target, its provider, its type and what it serves."""
    with pytest.raises(ConfigError) as caught:
        config({"mixed": ["claude", "minilm"]})
    message = str(caught.value)
    assert message.startswith("models.mixed.targets: no endpoint is served by every target")
    assert "targets.0 (provider 'claude', type anthropic) serves chat completions, streamed " \
           "chat completions" in message
    assert "targets.1 (provider 'minilm', type local) serves embeddings" in message


def test_an_experiment_variant_is_checked_too() -> None:
    """A variant's targets are held to the same rule as a model's."""
    experiments = {"e": {"model": "chat", "variants": {
        "a": {"targets": [{"provider": "offline", "model": "m"}]},
        "b": {"targets": [{"provider": "claude", "model": "c"},
                          {"provider": "minilm", "model": "l"}]}}}}
    with pytest.raises(ConfigError,
                       match=re.escape("experiments.e.variants.b.targets: no endpoint")):
        config({"chat": ["offline"]}, experiments=experiments)


def test_targets_that_share_an_endpoint_load() -> None:
    """Targets that can do different things load when they share one endpoint."""
    loaded = config({"chat": ["claude", "offline"], "embed": ["offline", "minilm"]})
    assert list(loaded.models) == ["chat", "embed"]


def test_a_route_skips_the_targets_that_cannot_serve_a_call() -> None:
    """Completions on a model of an Anthropic and a mock target go to the mock one alone; chat
    keeps both, as the same route."""
    route = RoutingTable(config({"chat": ["claude", "offline"]})).resolve("chat")
    assert route.serving("chat") is route
    assert [t.provider for t in route.serving("complete").targets] == ["offline"]
    assert [t.provider for t in route.serving("stream_complete").targets] == ["offline"]


@pytest.mark.parametrize("capability", ["complete", "stream_complete", "embed"])
def test_a_call_no_target_can_serve_is_a_400(capability: Literal["complete",
                                                                 "stream_complete",
                                                                 "embed"]) -> None:
    """A call for an endpoint none of the model's targets serves is a 400
    ``unsupported_endpoint`` on ``model``, naming the model and the endpoint."""
    route = RoutingTable(config({"claude": ["claude"]})).resolve("claude")
    with pytest.raises(errors.InvalidRequest) as caught:
        route.serving(capability)
    error = caught.value
    assert (error.status_code, error.code, error.param) == (400, "unsupported_endpoint", "model")
    assert error.message == (f"The model 'claude' does not serve {ENDPOINTS[capability]}: none "
                             "of its targets can.")


KEY = "sk-test-master-key-0123456789"


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    """The openai SDK on a gateway with a chat-only (unreachable) Anthropic target."""
    directory: Path = tmp_path_factory.mktemp("registry")
    loaded = parse_config({
        "providers": {"claude": PROVIDERS["claude"], "offline": PROVIDERS["offline"]},
        "models": {"claude": {"targets": [{"provider": "claude", "model": "c"}]},
                   "either": {"targets": [{"provider": "claude", "model": "c"},
                                          {"provider": "offline", "model": "m"}]}},
        "drift": {"embedding": {"sample_rate": 0.0}}}, {})
    settings = Settings(master_key=SecretStr(KEY), config=None,
                        database_url=f"sqlite+aiosqlite:///{directory / 'calls.db'}",
                        spool_dir=directory / "spool")
    app = create_app(settings, config=loaded, strict_telemetry=True)
    with serve(app) as url, openai.OpenAI(base_url=url + "/v1", api_key=KEY,
                                          max_retries=0) as client:
        yield client


def test_the_gateway_answers_unsupported_endpoints_in_openais_shape(sdk: openai.OpenAI) -> None:
    """Through the gateway, completions and embeddings on an Anthropic-only model are a
    ``BadRequestError`` with code ``unsupported_endpoint``, never sent upstream."""
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model="claude", prompt="hi")
    assert caught.value.code == "unsupported_endpoint"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="claude", input="hi")
    assert caught.value.code == "unsupported_endpoint"


def test_the_gateway_sends_a_call_to_the_target_that_can_serve_it(sdk: openai.OpenAI) -> None:
    """Completions on a model whose first target cannot do them go to the next one, with no
    failed attempt on the first."""
    answer = sdk.completions.with_raw_response.create(model="either", prompt="hi")
    assert answer.headers["x-switchboard-provider"] == "offline"
    assert answer.parse().choices[0].text.startswith("Mock reply to: hi")
