"""Proof of the pipeline seam: a stage that rewrites a stream and one that rejects, each a few
lines that touch nothing else, through a running gateway and the openai SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from app import errors
from app.config import parse_config
from app.main import create_app
from app.pipeline import ModelCall, Slot, Stage
from app.providers.base import Json
from tests.api.conftest import ListSink, RunningGateway, settings_in, sim_config
from tests.servers import serve


class Shout(Stage):
    """Upper-cases every streamed content delta on its way to the client."""

    slot = Slot.PRIVACY

    def on_chunk(self, call: ModelCall, chunk: Json) -> Json | None:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                delta["content"] = delta["content"].upper()
        return chunk


class NoBannedUser(Stage):
    """Refuses calls made on behalf of the end user ``banned``."""

    slot = Slot.ADMIT

    async def on_request(self, call: ModelCall) -> None:
        if call.request is not None and call.request.user == "banned":
            raise errors.PermissionDenied("This end user is banned.", code="user_banned")


@pytest.fixture
def staged(tmp_path: Path, simulator: str) -> Iterator[RunningGateway]:
    sink = ListSink()
    app = create_app(settings_in(tmp_path), config=parse_config(sim_config(simulator), {}),
                     sink=sink, strict_telemetry=True, stages=[Shout(), NoBannedUser()])
    with serve(app) as url:
        running = RunningGateway(url=url, sink=sink)
        try:
            yield running
        finally:
            running.close_clients()


def test_a_stage_rewrites_every_streamed_chunk(staged: RunningGateway) -> None:
    client = staged.client()
    plain = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "say something"}])
    text = plain.choices[0].message.content or ""
    assert text != text.upper(), "the simulator's answer must have lower case to rewrite"
    stream = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "say something"}], stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == text.upper()  # the simulator answers a prompt the same each time
    assert staged.sink.records[-1].status == "ok"


def test_a_stage_rejects_and_the_call_is_still_recorded(staged: RunningGateway) -> None:
    client = staged.client()
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], user="banned",
            extra_headers={"x-request-id": "banned-1"})
    assert caught.value.code == "user_banned"
    record = staged.sink.by_id("banned-1")
    assert (record.status, record.http_status, record.error_type) == \
        ("error", 403, "permission_error")
    assert record.attempts == []  # no upstream was tried
    ok = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], user="fine")
    assert ok.choices[0].message.content
