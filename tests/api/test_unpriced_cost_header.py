"""``x-switchboard-cost-usd`` is sent when the call had a price and not otherwise, as the README
says (an unpriced call has no cost to send)."""

from __future__ import annotations

import re

from tests.api.conftest import GatewayFactory, sim_config
from tests.test_readme import README

HI = [{"role": "user", "content": "hello"}]


def test_an_unpriced_call_sends_no_cost_header(run_gateway: GatewayFactory,
                                               simulator: str) -> None:
    """A ``mock`` target (no price) answers without the header; a priced one with it."""
    raw = sim_config(simulator, priced={"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
                     free={"targets": [{"provider": "offline", "model": "mock-chat"}]})
    raw["providers"]["offline"] = {"type": "mock"}
    with run_gateway(raw) as gw, gw.http() as http:
        priced = http.post("/v1/chat/completions", json={"model": "priced", "messages": HI})
        free = http.post("/v1/chat/completions", json={"model": "free", "messages": HI})
    assert priced.status_code == free.status_code == 200, (priced.text, free.text)
    assert float(priced.headers["x-switchboard-cost-usd"]) > 0
    assert "x-switchboard-cost-usd" not in free.headers
    assert "x-switchboard-overhead-ms" in free.headers


def test_the_readme_says_an_unpriced_call_sends_none() -> None:
    """The README's list of response headers states the exception (it promised the header on
    every non-streaming answer)."""
    text = " ".join(README.split())
    said = re.search(r"non-streaming ones `x-switchboard-cost-usd` when the call had a price "
                     r"\(an unpriced call[^)]*sends none", text)
    assert said is not None
