"""A shadow copy holds its original's snapshot as a call does: a reload that replaces the
copy's provider while the original runs closes that provider only after the copy has ended
(``Gateway.finish``, ``Gateway._shadow``). The provider is the real ``local`` one, whose
``aclose`` makes every later call a 503 ("shut down")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import errors
from app.api.incoming import Incoming
from app.config import load_config
from app.gateway import Gateway
from app.pricing import PriceBook
from app.providers import build_provider
from app.providers.base import EmbeddingCall, Target
from app.providers.http import new_session
from app.providers.local import LocalEmbeddings
from app.reload import ConfigReloader
from app.schemas import EmbeddingRequest
from tests.api.conftest import ListSink

BODY = {"model": "emb", "input": "hello world"}


def raw(batch_size: int) -> dict[str, Any]:
    """``emb`` on the mock provider, copied to a shadow variant on a ``local`` provider;
    ``batch_size`` changes that provider (a reload builds a new one and retires the old)."""
    return {
        "providers": {"fast": {"type": "mock"},
                      "minilm": {"type": "local", "device": "cpu", "batch_size": batch_size}},
        "models": {"emb": {"targets": [{"provider": "fast", "model": "mock-embed"}]}},
        "experiments": {"e1": {"model": "emb", "variants": {
            "control": {"weight": 1, "targets": [{"provider": "fast", "model": "mock-embed"}]},
            "sh": {"shadow": True,
                   "targets": [{"provider": "minilm", "model": "all-MiniLM-L6-v2"}]}}}},
    }


@pytest.fixture
async def reloader(tmp_path: Path) -> AsyncIterator[tuple[ConfigReloader, ListSink]]:
    pytest.importorskip("sentence_transformers")
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw(batch_size=32)))
    config = load_config(path, {})
    session = new_session()
    providers = {n: build_provider(c, session) for n, c in config.providers.items()}
    sink = ListSink()
    gateway = Gateway(config=config, providers=providers, prices=PriceBook({}), sink=sink,
                      strict_telemetry=True)
    yield ConfigReloader(gateway, path, session=session, metrics=None, poll_s=0), sink
    await gateway.aclose()
    await session.close()


async def _nothing() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def test_the_last_call_on_a_replaced_snapshot_keeps_its_shadows_provider_open(
        reloader: tuple[ConfigReloader, ListSink]) -> None:
    """The original is the last call on the replaced snapshot: its copy still runs there (the
    old version, the old ``local`` provider) and is answered; the old provider closes once the
    copy has ended."""
    loader, sink = reloader
    gateway = loader.gateway
    call = gateway.open(Incoming(path="/v1/embeddings", headers={}, receive=_nothing))
    old = call.snapshot
    call.request, call.body = EmbeddingRequest.model_validate(BODY), dict(BODY)
    await gateway.embed(call)  # answered; the call ends (finish) after the reload below
    loader.path.write_text(yaml.safe_dump(raw(batch_size=16)))
    assert (await loader.reload(reason="test")).changed
    retired = old.providers["minilm"]
    assert gateway.snapshot.providers["minilm"] is not retired
    gateway.finish(call)
    for _ in range(600):  # the copy loads the model: bounded, not timed
        if len(sink.records) == 2:
            break
        await asyncio.sleep(0.1)
    original, copy = sink.records
    assert (original.variant, original.status) == ("control", "ok")
    assert copy.shadow_of == original.id and copy.variant == "sh"
    assert (copy.status, copy.http_status, copy.error_message) == ("ok", 200, None)
    assert copy.config_version == original.config_version == old.version
    assert copy.provider == "minilm"
    # Nothing runs on the old snapshot any more: it is dropped and its own provider closed.
    assert gateway.draining == ()
    assert isinstance(retired, LocalEmbeddings)
    for _ in range(100):  # closed in a task of its own
        if await shut_down(retired):
            break
        await asyncio.sleep(0.05)
    assert await shut_down(retired)
    serving = gateway.snapshot.providers["minilm"]
    assert isinstance(serving, LocalEmbeddings) and not await shut_down(serving)


async def shut_down(provider: LocalEmbeddings) -> bool:
    """Whether ``provider`` answers an embedding call with its "shut down" 503."""
    body = {"model": "minilm", "input": "x"}
    call = EmbeddingCall(request=EmbeddingRequest.model_validate(body), body=body)
    try:
        await provider.embed(call, target=Target(provider="minilm", model="all-MiniLM-L6-v2"))
    except errors.UpstreamUnavailable as exc:
        return "shut down" in exc.message
    return False
