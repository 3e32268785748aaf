"""``GET /metrics`` on a running gateway: what each request adds, and who may read it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr

from app.config import parse_config
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import MASTER_KEY, ListSink, sim_config
from tests.metrics.scrape import scrape, value, wait_for
from tests.servers import free_port, serve, wait_ready

METRICS_KEY = "metrics-reader-key-0123456789"
CHAT = "/v1/chat/completions"


@contextmanager
def gateway(tmp_path: Path, raw: dict[str, Any], *, sink: bool = True,
            **settings: Any) -> Iterator[str]:
    options: dict[str, Any] = {
        "master_key": SecretStr(MASTER_KEY), "config": None,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}",
        "spool_dir": tmp_path / "spool", **settings}
    app = create_app(Settings(**options), config=parse_config(raw, {}),
                     sink=ListSink() if sink else None, strict_telemetry=True)
    with serve(app) as url:
        yield url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=MASTER_KEY, max_retries=0)


def chat(url: str, model: str = "chat", **kwargs: Any) -> Any:
    """One chat completion (a stream is read to its end: the chunks)."""
    with client(url) as sdk:
        answer = sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say something."}], **kwargs)
        return list(answer) if kwargs.get("stream") else answer


def test_requests_are_counted_by_model_provider_and_status_class(tmp_path: Path,
                                                                   simulator: str) -> None:
    """Each answered request adds one to its (endpoint, model, provider, status class)."""
    with gateway(tmp_path, sim_config(simulator)) as url:
        for _ in range(3):
            chat(url)
        with pytest.raises(openai.NotFoundError):
            chat(url, model="no-such-model")
        with client(url) as sdk:
            sdk.embeddings.create(model="embed", input=["a", "b"])
        samples = scrape(url, MASTER_KEY)
    ok = {"endpoint": CHAT, "model": "chat", "provider": "sim", "status_class": "2xx"}
    assert value(samples, "switchboard_requests_total", **ok) == 3
    assert value(samples, "switchboard_requests_total", endpoint=CHAT, model="other",
                 provider="none", status_class="4xx") == 1
    assert value(samples, "switchboard_requests_total", endpoint="/v1/embeddings",
                 model="embed", status_class="2xx") == 1
    assert value(samples, "switchboard_request_duration_seconds_count", endpoint=CHAT,
                 model="chat") == 3
    assert value(samples, "switchboard_gateway_overhead_seconds_count", endpoint=CHAT) == 3
    assert value(samples, "switchboard_requests_in_flight") == 0


def test_model_names_clients_invent_share_one_label(tmp_path: Path, simulator: str) -> None:
    """Unknown model names all count as model="other": a client cannot grow the label set."""
    with gateway(tmp_path, sim_config(simulator)) as url:
        for i in range(12):
            with pytest.raises(openai.NotFoundError):
                chat(url, model=f"made-up-{i}")
        samples = scrape(url, MASTER_KEY)
    models = {dict(labels).get("model") for (name, labels) in samples
              if name == "switchboard_requests_total"}
    assert models == {"other"}
    assert value(samples, "switchboard_requests_total", model="other") == 12


def test_tokens_cost_and_time_to_first_token(tmp_path: Path, simulator: str) -> None:
    """A stream adds its billed tokens, its cost and one time-to-first-token observation."""
    with gateway(tmp_path, sim_config(simulator)) as url:
        chunks = chat(url, stream=True, stream_options={"include_usage": True})
        usage = chunks[-1].usage
        assert usage is not None
        samples = scrape(url, MASTER_KEY)
    target = {"model": "chat", "provider": "sim"}
    assert value(samples, "switchboard_tokens_total", direction="input",
                 **target) == usage.prompt_tokens
    assert value(samples, "switchboard_tokens_total", direction="output",
                 **target) == usage.completion_tokens
    expected = (usage.prompt_tokens * 0.15 + usage.completion_tokens * 0.60) / 1e6
    assert value(samples, "switchboard_cost_usd_total", **target) == pytest.approx(expected)
    assert value(samples, "switchboard_time_to_first_token_seconds_count", **target) == 1


def test_fallbacks_and_upstream_errors_name_the_failing_provider(tmp_path: Path,
                                                                 simulator: str) -> None:
    """A target that fails before the first byte counts an error and a fallback against it."""
    raw = sim_config(simulator, chat={"targets": [
        {"provider": "broken", "model": "gpt-4o-mini"},
        {"provider": "sim", "model": "gpt-4o-mini"}]})
    with gateway(tmp_path, raw) as url:
        chat(url)
        samples = scrape(url, MASTER_KEY)
    assert value(samples, "switchboard_fallbacks_total", model="chat", provider="broken") == 1
    assert value(samples, "switchboard_upstream_errors_total", model="chat",
                 provider="broken", error_type="upstream_error") == 1
    assert value(samples, "switchboard_upstream_attempts_total", provider="broken",
                 outcome="error") == 1
    assert value(samples, "switchboard_upstream_attempts_total", provider="sim",
                 outcome="ok") == 1
    assert value(samples, "switchboard_upstream_duration_seconds_count", model="chat") == 2
    assert value(samples, "switchboard_requests_total", provider="sim",
                 status_class="2xx") == 1


def test_a_call_no_target_answered_counts_under_the_provider_that_failed_it(
        tmp_path: Path, simulator: str) -> None:
    """A call whose only target answers 503 counts under that provider, as its row says and
    as a stream failing after its first chunk did already (it counted under ``none``, and its
    row had no provider, so ``/admin/calls?provider=`` did not find it)."""
    raw = sim_config(simulator, chat={"targets": [{"provider": "broken",
                                                   "model": "gpt-4o-mini"}]})
    with gateway(tmp_path, raw, sink=False) as url:  # rows to the database, to read back
        with pytest.raises(openai.APIStatusError):
            chat(url)
        samples = scrape(url, MASTER_KEY)
        deadline = time.monotonic() + 30
        while True:  # the row is stored in the background
            rows = httpx.get(url + "/admin/calls", params={"provider": "broken"},
                             headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()["data"]
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert value(samples, "switchboard_requests_total", model="chat", provider="broken",
                 status_class="5xx") == 1
    assert value(samples, "switchboard_requests_total", provider="none") == 0
    assert [(row["provider"], row["target_model"], row["status"]) for row in rows] == [
        ("broken", "gpt-4o-mini", "error")]


def test_retries_of_one_target_are_not_fallbacks(tmp_path: Path, simulator: str) -> None:
    """Retries of a failing target count no fallback; moving on to the next target counts one,
    and a single-target model (nothing to fall back to) counts none."""
    raw = sim_config(simulator, chat={"targets": [
        {"provider": "broken", "model": "gpt-4o-mini"},
        {"provider": "sim", "model": "gpt-4o-mini"}]},
        # Another target (a breaker of its own: the first call's failures do not open it).
        alone={"targets": [{"provider": "broken", "model": "gpt-4o"}]})
    raw["retries"] = {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.01}
    with gateway(tmp_path, raw) as url:
        chat(url)
        with pytest.raises(openai.InternalServerError):
            chat(url, model="alone")
        samples = scrape(url, MASTER_KEY)
    assert value(samples, "switchboard_upstream_attempts_total", model="chat",
                 provider="broken", outcome="error") == 3
    assert value(samples, "switchboard_fallbacks_total", model="chat", provider="broken") == 1
    assert value(samples, "switchboard_upstream_attempts_total", model="alone",
                 provider="broken", outcome="error") == 3
    assert value(samples, "switchboard_fallbacks_total", model="alone", provider="broken") == 0


def test_every_configured_target_has_a_breaker_series_from_start_up(tmp_path: Path,
                                                                      simulator: str) -> None:
    """switchboard_target_state has a closed (0) series for each configured target (a
    provider and the upstream model it is asked for; experiment variants' too) before any
    call, one per target however many public models list it, and 2 once its breaker opens."""
    raw = sim_config(simulator,
                     chat={"targets": [{"provider": "broken", "model": "gpt-4o-mini"},
                                       {"provider": "sim", "model": "gpt-4o-mini"}]},
                     chat2={"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]})
    raw["experiments"] = {"ab": {"model": "chat2", "variants": {
        "a": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
        "b": {"targets": [{"provider": "sim", "model": "gpt-4o"}]}}}}
    raw["breaker"] = {"failures": 1, "cooldown_s": 60}
    with gateway(tmp_path, raw) as url:
        before = scrape(url, MASTER_KEY)
        chat(url)
        after = scrape(url, MASTER_KEY)
    states = {tuple(sorted(dict(labels).items())): v for (name, labels), v in before.items()
              if name == "switchboard_target_state"}
    assert states == {
        (("provider", "broken"), ("upstream_model", "gpt-4o-mini")): 0,
        (("provider", "sim"), ("upstream_model", "gpt-4o-mini")): 0,
        (("provider", "sim"), ("upstream_model", "gpt-4o")): 0}
    assert value(after, "switchboard_target_state", provider="broken",
                 upstream_model="gpt-4o-mini") == 2
    assert value(after, "switchboard_target_state", provider="sim",
                 upstream_model="gpt-4o-mini") == 0


def test_in_flight_counts_a_request_while_it_is_served(tmp_path: Path, simulator: str) -> None:
    """The in-flight gauge is 1 while a slow call is being served and 0 once it is done."""
    raw = sim_config(simulator)
    raw["providers"]["sim"]["headers"] = {"X-Sim-TTFT-Ms": "1500"}
    with gateway(tmp_path, raw) as url:
        worker = threading.Thread(target=chat, args=(url,))
        worker.start()
        during = wait_for(url, MASTER_KEY,
                          lambda s: value(s, "switchboard_requests_in_flight") == 1)
        worker.join()
        after = scrape(url, MASTER_KEY)
    assert value(during, "switchboard_requests_in_flight", endpoint=CHAT) == 1
    assert value(after, "switchboard_requests_in_flight", endpoint=CHAT) == 0


@pytest.mark.parametrize(("header", "status"), [
    (None, 401), ("Bearer wrong-key-0123456789", 401), (f"Bearer {METRICS_KEY}", 200),
    (f"Bearer {MASTER_KEY}", 200)])
def test_metrics_need_the_metrics_key_or_the_master_key(tmp_path: Path, simulator: str,
                                                        header: str | None,
                                                        status: int) -> None:
    """/metrics answers 401 in OpenAI's error shape without a valid metrics or master key."""
    with gateway(tmp_path, sim_config(simulator), metrics_key=SecretStr(METRICS_KEY)) as url:
        response = httpx.get(url + "/metrics",
                             headers={"Authorization": header} if header else {})
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["type"] == "authentication_error"
        assert METRICS_KEY not in response.text and MASTER_KEY not in response.text
    else:
        assert "switchboard_requests_total" in response.text or \
            "# TYPE switchboard_requests counter" in response.text


def test_call_log_counters_follow_the_writer(tmp_path: Path, simulator: str) -> None:
    """With the real call-log writer, stored records show up in the metrics, nothing dropped."""
    with gateway(tmp_path, sim_config(simulator), sink=False) as url:
        for _ in range(5):
            chat(url)
        samples = wait_for(url, MASTER_KEY,
                           lambda s: value(s, "switchboard_calllog_stored_records_total") >= 5)
    assert value(samples, "switchboard_calllog_stored_records_total") == 5
    assert value(samples, "switchboard_calllog_dropped_records_total") == 0
    assert value(samples, "switchboard_calllog_queue_depth") == 0


def test_several_workers_report_one_total(tmp_path: Path) -> None:
    """With --workers 2, every scrape reports the requests of both workers (multiprocess)."""
    port = free_port()
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path),
           "SWITCHBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}",
           "SWITCHBOARD_SPOOL_DIR": str(tmp_path / "spool"),
           "SWITCHBOARD_MASTER_KEY": MASTER_KEY}
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "switchboard"), "serve", "--port", str(port),
         "--workers", "2"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server, timeout_s=60)
        with httpx.Client(headers={"Authorization": f"Bearer {MASTER_KEY}"}) as http:
            for _ in range(30):  # new connections, so both workers take some
                response = httpx.post(url + CHAT, headers=http.headers, json={
                    "model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]})
                assert response.status_code == 200
        # Each worker moves its counts to the shared files at least once a second.
        wait_for(url, MASTER_KEY,
                 lambda s: value(s, "switchboard_requests_total", model="mock-chat") == 30)
        totals = {value(scrape(url, MASTER_KEY), "switchboard_requests_total",
                        model="mock-chat") for _ in range(6)}
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert totals == {30}, (tmp_path / "serve.log").read_text()


def test_metrics_can_be_turned_off(tmp_path: Path, simulator: str) -> None:
    """With SWITCHBOARD_METRICS=false requests still work and /metrics is a clear 404."""
    with gateway(tmp_path, sim_config(simulator), metrics=False) as url:
        chat(url)
        response = httpx.get(url + "/metrics",
                             headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "metrics_disabled"


@pytest.mark.parametrize(("settings", "drift", "cause"), [
    ({"metrics": False}, True, "SWITCHBOARD_METRICS=false"),
    ({}, False, "(drift.enabled)"),
], ids=["metrics off", "drift off"])
def test_admin_drift_off_names_what_turned_it_off(tmp_path: Path, simulator: str,
                                                  settings: dict[str, Any], drift: bool,
                                                  cause: str) -> None:
    """``GET /admin/drift`` is a 503 ``drift_disabled`` naming the setting that turned drift
    off: ``drift.enabled`` in the config, or the metrics, with which drift is measured."""
    raw = {**sim_config(simulator), "drift": {"enabled": drift}}
    with gateway(tmp_path, raw, **settings) as url:
        answer = httpx.get(url + "/admin/drift", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "drift_disabled" and cause in error["message"]
    assert ("drift.enabled" in error["message"]) is (not drift)
