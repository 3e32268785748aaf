"""Which answered calls the gateway copies to a shadow variant (``Gateway._shadow``)."""

from __future__ import annotations

import asyncio

from app.api.incoming import Incoming
from app.config import parse_config
from app.gateway import Gateway
from app.pipeline import Pipeline
from app.pricing import PriceBook
from app.schemas import ChatRequest
from tests.api.conftest import ListSink

CONFIG = parse_config({
    "providers": {"a": {"type": "mock"}, "b": {"type": "mock"}},
    "models": {"chat": {"targets": [{"provider": "a", "model": "m"}]}},
    "experiments": {"ab": {"model": "chat", "variants": {
        "control": {"targets": [{"provider": "a", "model": "m"}]},
        "copy": {"shadow": True, "targets": [{"provider": "b", "model": "m"}]}}}},
}, {})


async def test_a_messages_call_gets_no_copy_and_leaves_nothing_in_flight() -> None:
    """An answered /v1/messages call of a shadowed model is not copied: no copy is opened, so
    the snapshot's in-flight count (what lets a reload close old providers) goes back to 0."""
    sink = ListSink()
    gateway = Gateway(config=CONFIG, providers={}, prices=PriceBook({}), sink=sink,
                      pipeline=Pipeline())

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    call = gateway.open(Incoming(path="/v1/messages", headers={}, receive=receive))
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    call.request, call.body = ChatRequest.model_validate(body), body
    call.record.public_model, call.record.variant, call.record.status = "chat", "control", "ok"
    gateway.finish(call)
    await asyncio.sleep(0)
    assert gateway.snapshot.in_flight.calls == 0
    assert [r.shadow_of for r in sink.records] == [None]
