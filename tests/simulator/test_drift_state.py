"""Process-wide drift set through POST /_sim/state: length, spread, refusals, fingerprint, model.

Every test here changes the shared simulator's state, so each goes through the ``drift`` fixture,
which resets the simulator before and after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from app.simulator.command import simulate
from app.simulator.content import REFUSAL

USER = [{"role": "user", "content": "Describe the harbour at dawn"}]
CHAT: dict[str, Any] = {"model": "m", "messages": USER}
COMPLETION: dict[str, Any] = {"model": "m", "prompt": "Describe the harbour at dawn"}
MESSAGE: dict[str, Any] = {"model": "c", "max_tokens": 200, "messages": USER}
ANTHROPIC = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
DEFAULTS = {"completion_tokens": None, "length_spread": 0.0, "refusal_rate": 0.0,
            "fingerprint": None, "model": None}


@pytest.fixture
def drift(http: httpx.Client) -> Iterator[httpx.Client]:
    """The shared simulator's client, reset before and after the test so no drift leaks."""
    assert http.post("/_sim/reset").status_code == 200
    try:
        yield http
    finally:
        http.post("/_sim/reset")


def set_state(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = client.post("/_sim/state", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def events(text: str) -> list[dict[str, Any]]:
    """The JSON payloads of an event stream's ``data:`` lines (``[DONE]`` left out)."""
    return [orjson.loads(line[6:]) for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def chat(client: httpx.Client, headers: dict[str, str] | None = None,
         **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/chat/completions", json={**CHAT, **extra}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def chat_stream(client: httpx.Client, headers: dict[str, str] | None = None,
                **extra: Any) -> list[dict[str, Any]]:
    response = client.post("/v1/chat/completions", headers=headers, json={
        **CHAT, **extra, "stream": True, "stream_options": {"include_usage": True}})
    assert response.status_code == 200, response.text
    return events(response.text)


def chat_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def completion(client: httpx.Client, headers: dict[str, str] | None = None,
               **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/completions", json={**COMPLETION, **extra}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def completion_stream(client: httpx.Client, **extra: Any) -> list[dict[str, Any]]:
    response = client.post("/v1/completions", json={
        **COMPLETION, **extra, "stream": True, "stream_options": {"include_usage": True}})
    assert response.status_code == 200, response.text
    return events(response.text)


def message(client: httpx.Client, headers: dict[str, str] | None = None,
            **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/messages", json={**MESSAGE, **extra},
                           headers={**ANTHROPIC, **(headers or {})})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def message_stream(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.post("/v1/messages", json={**MESSAGE, "stream": True}, headers=ANTHROPIC)
    assert response.status_code == 200, response.text
    return events(response.text)


def streamed_message(payloads: list[dict[str, Any]]) -> tuple[str, str, int]:
    """(model, text, output_tokens) of an Anthropic event stream."""
    start = next(p for p in payloads if p["type"] == "message_start")
    text = "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
    end = next(p for p in payloads if p["type"] == "message_delta")
    return start["message"]["model"], text, end["usage"]["output_tokens"]


def test_state_answer_shows_drift_defaults(drift: httpx.Client) -> None:
    """POST /_sim/state answers the gauges and every drift field, at their defaults."""
    state = set_state(drift)
    assert {key: state[key] for key in DEFAULTS} == DEFAULTS
    assert state["num_requests_waiting"] == 0 and state["healthy"] is True
    updated = set_state(drift, refusal_rate=0.25, num_requests_waiting=2)
    assert updated["refusal_rate"] == 0.25 and updated["num_requests_waiting"] == 2
    assert set_state(drift, model="x")["refusal_rate"] == 0.25  # updates are partial


def test_completion_tokens_sets_length_on_every_dialect(drift: httpx.Client) -> None:
    """completion_tokens sets the natural length of chat, completions and Anthropic answers."""
    assert chat(drift)["usage"]["completion_tokens"] == 16
    set_state(drift, completion_tokens=5)
    assert chat(drift)["usage"]["completion_tokens"] == 5
    chunks = chat_stream(drift)
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) == 5
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert completion(drift)["usage"]["completion_tokens"] == 5
    assert completion_stream(drift)[-1]["usage"]["completion_tokens"] == 5
    assert message(drift)["usage"]["output_tokens"] == 5
    assert streamed_message(message_stream(drift))[2] == 5


def test_max_tokens_and_stop_still_cut_the_drifted_length(drift: httpx.Client) -> None:
    """max_tokens and stop sequences cut a drifted length as they cut the default one."""
    set_state(drift, completion_tokens=40)
    cut = chat(drift, max_tokens=3)
    assert cut["usage"]["completion_tokens"] == 3 and cut["choices"][0]["finish_reason"] == "length"
    stopped = completion(drift, stop=" the harbour")
    assert stopped["choices"][0]["text"] == "Simulated reply to: Describe"
    assert message(drift, max_tokens=4)["stop_reason"] == "max_tokens"


def test_length_header_overrides_and_is_exact(drift: httpx.Client) -> None:
    """X-Sim-Completion-Tokens wins over completion_tokens and is not spread."""
    set_state(drift, completion_tokens=40, length_spread=0.5)
    header = {"X-Sim-Completion-Tokens": "7"}
    assert {chat(drift, header)["usage"]["completion_tokens"] for _ in range(20)} == {7}
    assert completion(drift, header)["usage"]["completion_tokens"] == 7
    assert message(drift, header)["usage"]["output_tokens"] == 7


def test_refusal_rate_one_refuses_on_every_dialect(drift: httpx.Client) -> None:
    """refusal_rate 1 makes every chat, completion and Anthropic answer the refusal sentence."""
    set_state(drift, refusal_rate=1)
    assert chat(drift)["choices"][0]["message"]["content"] == REFUSAL
    assert chat_text(chat_stream(drift)) == REFUSAL
    assert completion(drift)["choices"][0]["text"] == REFUSAL
    pieces = completion_stream(drift)
    assert "".join(c["choices"][0]["text"] for c in pieces if c["choices"]) == REFUSAL
    assert message(drift)["content"][0]["text"] == REFUSAL
    assert streamed_message(message_stream(drift))[1] == REFUSAL


def test_refusal_header_still_forces_a_refusal(drift: httpx.Client) -> None:
    """X-Sim-Refusal: 1 refuses even while drift is set with refusal_rate 0."""
    set_state(drift, completion_tokens=8)
    assert chat(drift)["choices"][0]["message"]["content"] != REFUSAL
    forced = chat(drift, {"X-Sim-Refusal": "1"})
    assert forced["choices"][0]["message"]["content"] == REFUSAL


def test_fingerprint_is_reported_and_header_overrides(drift: httpx.Client) -> None:
    """fingerprint becomes system_fingerprint (chat, stream, completions); the header wins."""
    assert chat(drift)["system_fingerprint"] is None
    set_state(drift, fingerprint="fp_drift")
    assert chat(drift)["system_fingerprint"] == "fp_drift"
    assert {c["system_fingerprint"] for c in chat_stream(drift)} == {"fp_drift"}
    assert completion(drift)["system_fingerprint"] == "fp_drift"
    assert {c["system_fingerprint"] for c in completion_stream(drift)} == {"fp_drift"}
    assert chat(drift, {"X-Sim-Fingerprint": "fp_hdr"})["system_fingerprint"] == "fp_hdr"
    assert "system_fingerprint" not in message(drift)


def test_model_is_reported_and_header_overrides(drift: httpx.Client) -> None:
    """model is reported by chat, completions and Anthropic answers; X-Sim-Model wins."""
    set_state(drift, model="drifted-model")
    assert chat(drift)["model"] == "drifted-model"
    assert {c["model"] for c in chat_stream(drift)} == {"drifted-model"}
    assert completion(drift)["model"] == "drifted-model"
    assert {c["model"] for c in completion_stream(drift)} == {"drifted-model"}
    assert message(drift)["model"] == "drifted-model"
    assert streamed_message(message_stream(drift))[0] == "drifted-model"
    assert chat(drift, {"X-Sim-Model": "hdr-model"})["model"] == "hdr-model"
    assert message(drift, {"X-Sim-Model": "hdr-model"})["model"] == "hdr-model"


def test_embeddings_ignore_drift(drift: httpx.Client) -> None:
    """Embeddings report the requested model whatever the drift says."""
    set_state(drift, model="drifted-model", refusal_rate=1, completion_tokens=3)
    body = drift.post("/v1/embeddings", json={"model": "e", "input": "hello"}).json()
    assert body["model"] == "e" and body["data"][0]["object"] == "embedding"


def test_replayed_answers_do_not_hide_drift(drift: httpx.Client) -> None:
    """An answer memoized before drift was set is not replayed while drift is on."""
    before = [chat(drift, max_tokens=9) for _ in range(2)]
    assert {b["model"] for b in before} == {"m"}
    set_state(drift, model="drifted-model", completion_tokens=4)
    after = chat(drift, max_tokens=9)
    assert after["model"] == "drifted-model" and after["usage"]["completion_tokens"] == 4
    drift.post("/_sim/reset")
    assert chat(drift, max_tokens=9)["choices"] == before[0]["choices"]


@pytest.mark.parametrize(("field", "value"), [
    ("completion_tokens", 0), ("completion_tokens", True), ("completion_tokens", 1.5),
    ("completion_tokens", "5"), ("length_spread", -0.1), ("length_spread", 1.5),
    ("length_spread", True), ("length_spread", "0.1"), ("length_spread", None),
    ("refusal_rate", 2), ("refusal_rate", False), ("refusal_rate", None),
    ("fingerprint", 5), ("fingerprint", True), ("model", ""), ("model", 3), ("model", ["m"]),
    ("bogus", 1),
])
def test_invalid_values_are_400_naming_the_field(drift: httpx.Client, field: str,
                                                 value: Any) -> None:
    """A bad drift value is a 400 naming the field, and nothing of the update is applied."""
    response = drift.post("/_sim/state", json={"completion_tokens": 9, "num_requests_waiting": 3,
                                               field: value})
    assert response.status_code == 400
    assert field in response.json()["error"]["message"]
    state = set_state(drift)
    assert state["completion_tokens"] is None and state["num_requests_waiting"] == 0


def test_reset_restores_defaults(drift: httpx.Client) -> None:
    """POST /_sim/reset turns every drift field back to its default."""
    set_state(drift, completion_tokens=3, length_spread=0.5, refusal_rate=1,
              fingerprint="fp", model="x")
    assert drift.post("/_sim/reset").status_code == 200
    state = set_state(drift)
    assert {key: state[key] for key in DEFAULTS} == DEFAULTS
    answer = chat(drift)
    assert answer["model"] == "m" and answer["system_fingerprint"] is None
    assert answer["usage"]["completion_tokens"] == 16
    assert answer["choices"][0]["message"]["content"] != REFUSAL


def lengths(client: httpx.Client, count: int) -> list[int]:
    return [chat(client)["usage"]["completion_tokens"] for _ in range(count)]


def test_length_spread_is_deterministic_after_reset(drift: httpx.Client) -> None:
    """The same request order after a reset draws the same lengths."""
    set_state(drift, completion_tokens=20, length_spread=0.5)
    first = lengths(drift, 30)
    drift.post("/_sim/reset")
    set_state(drift, completion_tokens=20, length_spread=0.5)
    assert lengths(drift, 30) == first
    assert len(set(first)) > 1


def test_length_spread_covers_its_range(drift: httpx.Client) -> None:
    """Lengths stay in [round(L*(1-s)), round(L*(1+s))] and spread over it around L."""
    set_state(drift, completion_tokens=20, length_spread=0.5)
    drawn = lengths(drift, 200)
    assert min(drawn) >= 10 and max(drawn) <= 30
    assert min(drawn) <= 12 and max(drawn) >= 28
    assert 18 <= sum(drawn) / len(drawn) <= 22
    streamed = [chat_stream(drift)[-1]["usage"]["completion_tokens"] for _ in range(20)]
    assert all(10 <= n <= 30 for n in streamed)
    assert all(10 <= completion(drift)["usage"]["completion_tokens"] <= 30 for _ in range(10))
    assert all(10 <= message(drift)["usage"]["output_tokens"] <= 30 for _ in range(10))


def test_length_spread_applies_to_the_default_length_and_keeps_one(drift: httpx.Client) -> None:
    """Without completion_tokens the default length spreads; a length never drops below 1."""
    set_state(drift, length_spread=0.5)
    assert all(8 <= n <= 24 for n in lengths(drift, 40))
    set_state(drift, completion_tokens=1, length_spread=1)
    assert set(lengths(drift, 40)) == {1, 2}


def refusals(client: httpx.Client, count: int) -> list[bool]:
    return [chat(client)["choices"][0]["message"]["content"] == REFUSAL for _ in range(count)]


def test_refusal_rate_hits_its_share_deterministically(drift: httpx.Client) -> None:
    """About refusal_rate of 200 answers refuse, in the same order again after a reset."""
    set_state(drift, refusal_rate=0.3)
    first = refusals(drift, 200)
    assert 0.2 <= sum(first) / len(first) <= 0.4
    drift.post("/_sim/reset")
    set_state(drift, refusal_rate=0.3)
    assert refusals(drift, 200) == first
    assert 0 < sum(completion(drift)["choices"][0]["text"] == REFUSAL
                   for _ in range(100)) < 100


def test_help_documents_the_drift_fields() -> None:
    """switchboard simulate --help names every drift field and where to set it."""
    output = CliRunner().invoke(simulate, ["--help"]).output
    for name in ("/_sim/state", *DEFAULTS):
        assert name in output
