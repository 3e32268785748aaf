"""The Azure OpenAI provider: deployment URLs, api-version, the api-key header, errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest

from app import errors
from app.providers import PROVIDER_TYPES, azure
from app.providers.azure import AzureOpenAIProvider
from app.providers.base import CompletionCall, EmbeddingCall, Json, Target
from app.schemas import CompletionRequest, EmbeddingRequest
from tests.providers.calls import chat, header, received

KEY = "azure-test-key-0123456789SECRET"
VERSION = "2024-10-21"
TARGET = Target(provider="azure", model="gpt4o-prod")
HELLO: Json = {"model": "chat", "messages": [{"role": "user", "content": "Say hello"}]}


def make(endpoint: str, session: aiohttp.ClientSession, **fields: Any) -> azure.AzureOpenAI:
    """The provider as production builds it from a config entry."""
    config = AzureOpenAIProvider.model_validate(
        {"type": "azure_openai", "endpoint": endpoint, "api_key": KEY, **fields})
    return azure.build(config, session)


def query(record: Json) -> dict[str, str]:
    """A received query string's parameters (first value of each)."""
    return {k: v[0] for k, v in parse_qs(record["query"]).items()}


async def test_chat_goes_to_the_deployment_with_api_key(simulator: str,
                                                        session: aiohttp.ClientSession) -> None:
    """Chat is POSTed to the deployment's URL with api-version and the api-key header only."""
    provider = make(simulator, session, headers={"X-Team": "search"})
    result = await provider.chat(chat(HELLO), target=TARGET)
    assert result.body["object"] == "chat.completion"
    assert result.usage is not None and result.usage.completion_tokens > 0
    [record] = await received(session, simulator)
    assert record["path"] == "/openai/deployments/gpt4o-prod/chat/completions"
    assert query(record)["api-version"] == VERSION
    assert header(record, "api-key") == KEY
    assert header(record, "authorization") is None
    assert header(record, "x-team") == "search"


async def test_configured_api_version_is_sent(simulator: str,
                                              session: aiohttp.ClientSession) -> None:
    """The config's api_version is the query parameter, and a trailing slash is harmless."""
    provider = make(simulator + "/", session, api_version="2025-01-01-preview")
    await provider.chat(chat(HELLO), target=TARGET)
    [record] = await received(session, simulator)
    assert record["path"] == "/openai/deployments/gpt4o-prod/chat/completions"
    assert query(record)["api-version"] == "2025-01-01-preview"


async def test_stream_goes_to_the_deployment(simulator: str,
                                             session: aiohttp.ClientSession) -> None:
    """A stream yields chunks and ends with usage, from the deployment's URL."""
    provider = make(simulator, session)
    chunks = [c async for c in provider.stream_chat(chat({**HELLO, "stream": True}),
                                                     target=TARGET)]
    assert chunks and chunks[-1]["usage"]["completion_tokens"] > 0
    [record] = await received(session, simulator)
    assert record["path"] == "/openai/deployments/gpt4o-prod/chat/completions"
    assert record["body"]["stream_options"] == {"include_usage": True}


async def test_completions_and_embeddings_use_their_paths(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """/completions and /embeddings hang off the deployment too."""
    provider = make(simulator, session)
    body: Json = {"model": "text", "prompt": "Hi", "max_tokens": 3}
    await provider.complete(CompletionCall(request=CompletionRequest.model_validate(body),
                                           body=body), target=TARGET)
    [record] = await received(session, simulator)
    assert record["path"] == "/openai/deployments/gpt4o-prod/completions"
    embed: Json = {"model": "embed", "input": "hello"}
    result = await provider.embed(EmbeddingCall(request=EmbeddingRequest.model_validate(embed),
                                                body=embed),
                                  target=Target(provider="azure", model="ada-002"))
    assert len(result.body["data"]) == 1
    [record] = await received(session, simulator)
    assert record["path"] == "/openai/deployments/ada-002/embeddings"
    assert query(record)["api-version"] == VERSION


async def test_one_upstream_per_deployment(session: aiohttp.ClientSession) -> None:
    """Each deployment gets its own upstream, made once and reused; names stay one segment."""
    provider = make("https://res.openai.azure.com", session)
    first = provider.upstream_for(TARGET)
    assert provider.upstream_for(Target(provider="azure", model="gpt4o-prod")) is first
    other = provider.upstream_for(Target(provider="azure", model="a/b"))
    assert other is not first
    assert first.base_url == "https://res.openai.azure.com/openai/deployments/gpt4o-prod"
    assert other.base_url == "https://res.openai.azure.com/openai/deployments/a%2Fb"


@pytest.mark.parametrize(
    ("status", "error_class", "client_status"),
    [
        (400, errors.UpstreamRejected, 400),
        (401, errors.UpstreamAuthFailed, 502),
        (404, errors.UpstreamRejected, 404),
        (429, errors.UpstreamRateLimited, 429),
        (503, errors.UpstreamUnavailable, 503),
    ],
)
async def test_errors_map_and_never_show_the_key(
    simulator: str, session: aiohttp.ClientSession, status: int,
    error_class: type[errors.GatewayError], client_status: int,
) -> None:
    """Azure's error statuses map like OpenAI's, and the api-key never reaches a message."""
    provider = make(simulator, session, headers={"X-Return-Error": str(status)})
    with pytest.raises(errors.GatewayError) as caught:
        await provider.chat(chat(HELLO), target=TARGET)
    assert type(caught.value) is error_class
    assert caught.value.status_code == client_status
    assert KEY not in str(caught.value) and KEY not in repr(caught.value.body())


def test_registry_builds_azure() -> None:
    """type: azure_openai in a config builds this provider."""
    assert PROVIDER_TYPES["azure_openai"].build is azure.build


@pytest.mark.parametrize(
    ("version", "accepted"),
    [("2024-10-21", True), ("2024-09-01-preview", True), ("2025-04-01-preview", True),
     ("2024-08-01-preview", False), ("2024-02-01", False), ("2023-05-15", False),
     ("preview", True)],
)
def test_stream_options_need_a_recent_api_version(version: str, accepted: bool) -> None:
    """stream_options is sent from api-version 2024-09-01 on; older versions 400 on it."""
    assert azure.accepts_stream_options(version) is accepted


async def test_old_api_version_streams_without_stream_options(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    """On an api-version that predates stream_options, streams go without it and still work."""
    provider = make(simulator, session, api_version="2024-02-01")
    call = chat({**HELLO, "stream": True, "stream_options": {"include_usage": True}})
    chunks = [c async for c in provider.stream_chat(call, target=TARGET)]
    assert chunks and chunks[0]["object"] == "chat.completion.chunk"
    [record] = await received(session, simulator)
    assert "stream_options" not in record["body"]
    assert query(record)["api-version"] == "2024-02-01"


@pytest.mark.parametrize(("version", "field"), [
    (VERSION, "max_completion_tokens"), ("2024-09-01-preview", "max_completion_tokens"),
    ("2024-08-01-preview", "max_tokens"), ("2024-02-01", "max_tokens")])
async def test_the_default_limit_goes_in_the_field_the_api_version_takes(
    simulator: str, session: aiohttp.ClientSession, version: str, field: str
) -> None:
    """A chat call that gives no limit is sent the target's default as
    ``max_completion_tokens`` (Azure's reasoning deployments refuse ``max_tokens``) from
    api-version 2024-09-01 on, as ``max_tokens`` before it (which knows no other), never both."""
    provider = make(simulator, session, api_version=version)
    target = Target(provider="azure", model="o3-mini", max_tokens_default=5)
    await provider.chat(chat(HELLO), target=target)
    [record] = await received(session, simulator)
    other = {"max_tokens", "max_completion_tokens"} - {field}
    assert record["body"][field] == 5 and not other & record["body"].keys()
