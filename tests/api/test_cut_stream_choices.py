"""A stream of n choices cut before its usage is estimated choice by choice: the pieces of the
choices interleave, and joined into one text their words would run together (under-counted)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from app.usage import estimate_tokens
from tests.api.conftest import MASTER_KEY, GatewayFactory, sim_config


def test_a_cut_stream_of_three_choices_counts_each(run_gateway: GatewayFactory,
                                                   simulator: str) -> None:
    """The upstream drops the stream after 9 content chunks (``X-Sim-Cut-After``): the call's
    completion tokens are the estimates of the choices' texts the client got, added up."""
    raw = sim_config(simulator, chat={"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]})
    raw["providers"]["sim"]["headers"] = {"X-Sim-Cut-After": "9"}
    body: dict[str, Any] = {"model": "chat", "n": 3, "stream": True, "max_tokens": 50,
                            "messages": [{"role": "user", "content": "Tell me about tides"}]}
    texts: dict[int, str] = {}
    with run_gateway(raw) as gw:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10,
                          headers={"Authorization": f"Bearer {MASTER_KEY}",
                                   "x-request-id": "three-cut"}) as answer:
            for line in answer.iter_lines():
                data = line.removeprefix("data: ")
                if not line.startswith("data: ") or not data.startswith("{"):
                    continue
                for choice in orjson.loads(data).get("choices") or ():
                    content = (choice.get("delta") or {}).get("content") or ""
                    texts[choice["index"]] = texts.get(choice["index"], "") + content
        record = gw.sink.by_id("three-cut")
    assert sorted(texts) == [0, 1, 2]
    each = sum(estimate_tokens(text) for text in texts.values())
    assert record.usage is not None and record.usage.estimated
    assert record.usage.completion_tokens == each
