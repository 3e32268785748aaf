"""A defect that raises in the middle of a streamed call (here a stage that crashes on its first
chunk) is answered as the last-resort 500, and the call's record says so: status ``error``, 500,
its committed attempt too (it was recorded ``ok``/200 while the client got a 500)."""

from __future__ import annotations

from pathlib import Path

from app.config import parse_config
from app.main import create_app
from app.pipeline import ModelCall, Slot, Stage
from app.providers.base import Json
from tests.api.conftest import ListSink, RunningGateway, settings_in, sim_config
from tests.servers import serve


class Crash(Stage):
    slot = Slot.PRIVACY

    def on_chunk(self, call: ModelCall, chunk: Json) -> Json | None:
        raise RuntimeError("a defect in a stage")


def test_a_crash_inside_a_stream_is_recorded_as_the_500_the_client_got(
        tmp_path: Path, simulator: str) -> None:
    sink = ListSink()
    app = create_app(settings_in(tmp_path), config=parse_config(sim_config(simulator), {}),
                     sink=sink, strict_telemetry=True, stages=[Crash()])
    with serve(app) as url:
        running = RunningGateway(url=url, sink=sink)
        try:
            answer = running.http().post("/v1/chat/completions", json={
                "model": "chat", "stream": True,
                "messages": [{"role": "user", "content": "hi"}]},
                headers={"x-request-id": "crash-1"})
        finally:
            running.close_clients()
        assert answer.status_code == 500
        assert answer.json()["error"]["message"] == "The gateway had an internal error."
    record = sink.by_id("crash-1")
    assert (record.status, record.http_status, record.error_type) == \
        ("error", 500, "api_error")
    assert [(a.provider, a.status) for a in record.attempts] == [("sim", 500)]
