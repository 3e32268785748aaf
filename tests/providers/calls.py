"""Helpers shared by the provider tests: canonical calls, and what the simulator received."""

from __future__ import annotations

import aiohttp

from app.providers.base import ChatCall, CompletionCall, EmbeddingCall, Json
from app.schemas import ChatRequest, CompletionRequest, EmbeddingRequest


def chat(body: Json) -> ChatCall:
    return ChatCall(request=ChatRequest.model_validate(body), body=body)


def completion(body: Json) -> CompletionCall:
    return CompletionCall(request=CompletionRequest.model_validate(body), body=body)


def embedding(body: Json) -> EmbeddingCall:
    return EmbeddingCall(request=EmbeddingRequest.model_validate(body), body=body)


async def received(session: aiohttp.ClientSession, sim: str, limit: int = 1) -> list[Json]:
    """What the simulator received, newest last."""
    async with session.get(f"{sim}/_sim/requests", params={"limit": str(limit)}) as response:
        records: list[Json] = await response.json()
    return records


def header(record: Json, name: str) -> str | None:
    """A received header, by case-insensitive name."""
    headers: dict[str, str] = record["headers"]
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)
