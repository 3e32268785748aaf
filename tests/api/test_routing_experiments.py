"""``GET /admin/routing`` shows the targets of every experiment variant, those its public model
does not list included, with their breakers: a variant whose only target is down shows it
open there, as ``switchboard_target_state`` does."""

from __future__ import annotations

from tests.api.conftest import GatewayFactory, sim_config


def test_a_variant_only_target_and_its_open_breaker_are_listed(run_gateway: GatewayFactory,
                                                               simulator: str) -> None:
    raw = sim_config(simulator)
    raw["breaker"] = {"failures": 3, "cooldown_s": 60}
    raw["experiments"] = {"e": {"model": "chat", "sticky": "user", "variants": {
        "control": {"weight": 50, "targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
        "down": {"weight": 50, "targets": [{"provider": "broken", "model": "gpt-4o"}]},
        "shadowed": {"shadow": True, "sample": 0.001, "strategy": "least_busy",
                     "targets": [{"provider": "sim", "model": "gpt-4o"}]}}}}
    with run_gateway(raw) as gateway:
        http = gateway.http()
        failed = 0
        for user in range(40):
            answer = http.post("/v1/chat/completions", json={
                "model": "chat", "user": f"user-{user}",
                "messages": [{"role": "user", "content": "hi"}]})
            failed += answer.headers["x-switchboard-variant"] == "e/down"
        assert failed >= 3  # enough to open its breaker
        routing = http.get("/admin/routing").json()
        assert [t["provider"] for t in routing["models"]["chat"]["targets"]] == ["sim"]
        variants = routing["experiments"]["e"]["variants"]
        assert routing["experiments"]["e"]["model"] == "chat"
        assert list(variants) == ["control", "down", "shadowed"]
        assert [(t["provider"], t["model"], t["state"])
                for t in variants["down"]["targets"]] == [("broken", "gpt-4o", "open")]
        assert [(t["provider"], t["state"]) for t in variants["control"]["targets"]] == [
            ("sim", "closed")]
        assert (variants["shadowed"]["shadow"], variants["shadowed"]["strategy"]) == (
            True, "least_busy")
        assert 'switchboard_target_state{provider="broken",upstream_model="gpt-4o"} 2.0' in \
            http.get("/metrics").text
