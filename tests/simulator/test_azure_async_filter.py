"""The Azure dialect's asynchronous content filter mode (``X-Sim-Azure-Filter: async``)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from app.simulator.azure import WIRE
from app.simulator.chat import ANNOTATED_EVERY

PATH = "/openai/deployments/d/chat/completions"
BODY = {"messages": [{"role": "user", "content": "Tell me about tides"}], "stream": True,
        "n": 2, "stream_options": {"include_usage": True}}
HEADERS = {"api-key": "k", "X-Sim-Azure-Filter": "async", "X-Sim-Completion-Tokens": "20"}


def frames(http: httpx.Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    answer = http.post(PATH, params={"api-version": "2024-10-21"}, json=BODY, headers=headers)
    assert answer.status_code == 200
    lines = [line[6:] for line in answer.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [orjson.loads(line) for line in lines[:-1]]


def test_async_filter_verdicts_come_in_annotation_chunks(http: httpx.Client) -> None:
    """In async mode no completion chunk carries a verdict; annotation chunks (empty envelope,
    no ``delta``) come every ``ANNOTATED_EVERY`` text chunks of a choice and once per choice
    after the finish chunks, before the usage chunk, their offsets covering the whole text."""
    chunks = frames(http, HEADERS)
    opening, *rest = chunks
    assert opening["choices"] == [] and "prompt_filter_results" in opening
    notes = [c for c in rest if c["id"] == ""]
    completions = [c for c in rest if c["id"]]
    assert all("content_filter_results" not in choice for c in completions
               for choice in c["choices"])
    for note in notes:
        assert (note["model"], note["object"], note["created"]) == ("", "", 0)
        [choice] = note["choices"]
        assert "delta" not in choice and choice["content_filter_results"] == WIRE.content_filter
    for index in (0, 1):
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in completions
                       if c["choices"] and c["choices"][0]["index"] == index)
        offsets = [n["choices"][0]["content_filter_offsets"] for n in notes
                   if n["choices"][0]["index"] == index]
        assert len(offsets) == 20 // ANNOTATED_EVERY + 1
        assert [o["start_offset"] for o in offsets] == [0] + [o["end_offset"]
                                                               for o in offsets[:-1]]
        assert offsets[-1]["end_offset"] == offsets[-1]["check_offset"] == len(text)
    finishes = [i for i, c in enumerate(rest) if c["choices"] and
                c["choices"][0].get("finish_reason") == "stop"]
    assert [c["id"] for c in rest[finishes[-1] + 1:]][:2] == ["", ""]
    assert rest[-1]["usage"]["completion_tokens"] == 40


def test_default_mode_has_no_annotation_chunks(http: httpx.Client) -> None:
    """Without the header every chunk after the opening one is a completion chunk."""
    chunks = frames(http, {"api-key": "k"})
    assert all(c["id"] for c in chunks[1:])


def test_unknown_filter_mode_is_a_400(http: httpx.Client) -> None:
    """A value other than ``async`` fails loudly instead of doing nothing."""
    answer = http.post(PATH, params={"api-version": "2024-10-21"}, json=BODY,
                       headers={"api-key": "k", "X-Sim-Azure-Filter": "asynch"})
    assert answer.status_code == 400
    assert "X-Sim-Azure-Filter" in answer.json()["error"]["message"]
