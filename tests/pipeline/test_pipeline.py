"""The pipeline's pieces in milliseconds: hook lists, slot order, and the call's one finish."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from app import errors
from app.api.incoming import Incoming
from app.calllog import CallRecord
from app.config import embedded_config, parse_config
from app.gateway import Gateway
from app.pipeline import ModelCall, Pipeline, Slot, Stage
from app.pricing import PriceBook
from app.providers.azure import AzureOpenAI, AzureOpenAIProvider
from app.providers.azure_auth import BearerTokens
from app.providers.base import Json
from app.scrub import Scrubber
from tests.api.conftest import ListSink


class Quiet(Stage):
    """A stage that is switched off for every call: it overrides no hook."""

    slot = Slot.CACHE


class Early(Stage):
    slot = Slot.AUTHENTICATE

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def on_request(self, call: ModelCall) -> None:
        self.seen.append("early")

    def on_end(self, call: ModelCall) -> None:
        self.seen.append(f"end:{call.record.status}")


class Late(Stage):
    slot = Slot.ACCOUNT

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def on_request(self, call: ModelCall) -> None:
        self.seen.append("late")

    def on_chunk(self, call: ModelCall, chunk: Json) -> Json | None:
        return None


def test_a_stage_without_hooks_adds_nothing_to_any_hook_list() -> None:
    bare, quiet = Pipeline(), Pipeline([Quiet()])
    for hooks in ("header_hooks", "request_hooks", "chunk_hooks", "end_hooks"):
        assert getattr(bare, hooks) == getattr(quiet, hooks) == ()


async def test_stages_run_in_slot_order_whatever_order_they_are_given() -> None:
    seen: list[str] = []
    pipeline = Pipeline([Late(seen), Quiet(), Early(seen)])
    assert [type(s) for s in pipeline.stages] == [Early, Quiet, Late]
    assert len(pipeline.chunk_hooks) == 1 and len(pipeline.end_hooks) == 1
    call = _gateway(pipeline, ListSink()).open(_incoming())
    await pipeline.admit(call)
    assert seen == ["early", "late"]


def _gateway(pipeline: Pipeline, sink: ListSink) -> Gateway:
    return Gateway(config=embedded_config({}), providers={}, prices=PriceBook({}), sink=sink,
                   pipeline=pipeline)


def _incoming() -> Incoming:
    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    return Incoming(path="/v1/chat/completions", headers={"x-request-id": "r-1"},
                    receive=receive)


async def test_a_rejected_call_is_finished_once_with_its_error() -> None:
    seen: list[str] = []
    sink = ListSink()
    call = _gateway(Pipeline([Early(seen)]), sink).open(_incoming())
    with pytest.raises(errors.NotFound):
        async with call:
            raise errors.NotFound("no such model", code="model_not_found")
    async with call:  # a second exit (nothing happens) must not record it again
        pass
    assert [(r.status, r.http_status, r.request_id) for r in sink.records] == \
        [("error", 404, "r-1")]
    assert seen == ["end:error"]


async def test_an_unexpected_error_is_recorded_as_a_500_and_a_cancel_as_a_499() -> None:
    sink = ListSink()
    gateway = _gateway(Pipeline(), sink)
    with pytest.raises(KeyError):
        async with gateway.open(_incoming()):
            raise KeyError("bug")
    with pytest.raises(asyncio.CancelledError):
        async with gateway.open(_incoming()):
            raise asyncio.CancelledError
    assert [(r.status, r.http_status) for r in sink.records] == \
        [("error", 500), ("cancelled", 499)]
    assert sink.records[0].error_message == "The gateway had an internal error."


async def test_a_started_stream_owns_the_finish() -> None:
    sink = ListSink()
    gateway = _gateway(Pipeline(), sink)
    call = gateway.open(_incoming())
    async with call:
        call.streaming = True  # as the gateway's stream does when it starts
    assert sink.records == []
    gateway.finish(call)
    gateway.finish(call)
    assert len(sink.records) == 1 and isinstance(sink.records[0], CallRecord)


async def test_a_token_minted_after_the_snapshot_is_scrubbed_from_the_record() -> None:
    """A call failing with an error that echoes an Entra token its provider got after the
    snapshot was built is recorded, and re-raised, with ``[redacted]`` instead of the token."""
    config = parse_config({
        "providers": {"az": {"type": "azure_openai", "endpoint": "https://res.openai.azure.com",
                             "auth": {"type": "client_secret", "tenant_id": "t",
                                      "client_id": "c", "client_secret": "entra-secret-0123"}}},
        "models": {"gpt": {"targets": [{"provider": "az", "model": "gpt4o"}]}}}, {})
    entry = config.providers["az"]
    assert isinstance(entry, AzureOpenAIProvider)

    async def issue() -> tuple[str, float]:
        return "eyJ.minted-entra-token.0123", 4_000_000_000.0

    sink = ListSink()
    async with aiohttp.ClientSession() as session:
        provider = AzureOpenAI(entry, session, tokens=BearerTokens(
            issue, describe="az", scrubber=Scrubber(entry.secrets())))
        gateway = Gateway(config=config, providers={"az": provider}, prices=PriceBook({}),
                          sink=sink)
        call = gateway.open(_incoming())
        await provider.ready()  # the token is minted now, after the snapshot
        with pytest.raises(errors.UpstreamError) as raised:
            async with call:
                raise errors.UpstreamError("Received credential: Bearer "
                                           "eyJ.minted-entra-token.0123")
        await provider.aclose()
    assert raised.value.message == "Received credential: Bearer [redacted]"
    assert sink.records[0].error_message == "Received credential: Bearer [redacted]"
