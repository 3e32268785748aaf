"""The Prometheus side, with the real tools: promtool checks the rules, their unit tests, the
config and the gateway's exposition; a real Prometheus server scrapes a running gateway."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.ops.support import (
    METRICS_KEY,
    PROMETHEUS_DIR,
    OpsGateway,
    alert_rules,
    as_promql,
    dashboard_queries,
    load_dashboards,
    load_yaml,
    start_gateway,
    tool,
)
from tests.servers import free_port

CHAT_REQUESTS = 37
QUERY_DEADLINE_S = 60.0


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)


def test_alert_rules_are_valid() -> None:
    """``promtool check rules`` accepts docker/prometheus/alerts.yml."""
    result = promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass() -> None:
    """``promtool test rules`` passes alerts_test.yml (error rate, PSI, spend and more)."""
    result = promtool("test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_unit_tests_cover_error_rate_psi_and_spend() -> None:
    """The unit tests make the error-rate, PSI and spend alerts fire, and name only real alerts."""
    rules = {rule["alert"] for rule in alert_rules()}
    fired: set[str] = set()
    for case in load_yaml(PROMETHEUS_DIR / "alerts_test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            assert check["alertname"] in rules, check["alertname"]
            if check.get("exp_alerts"):
                fired.add(check["alertname"])
    assert {"SwitchboardHighErrorRate", "SwitchboardLengthDrift",
            "SwitchboardSpendRateHigh"} <= fired, fired


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    """``promtool check config`` accepts prometheus.yml and its rules, credentials file given."""
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    key_file = tmp_path / "metrics_key"
    key_file.write_text(METRICS_KEY, encoding="utf-8")
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(key_file)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    for rule_file in config["rule_files"]:
        shutil.copy(PROMETHEUS_DIR / rule_file, tmp_path / rule_file)
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_exposition_passes_promtool_lint(ops_gateway: OpsGateway) -> None:
    """``promtool check metrics`` finds no problem in the gateway's /metrics text."""
    result = promtool("check", "metrics", stdin=ops_gateway.exposition())
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


class RunningPrometheus:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def query(self, expr: str) -> dict[str, Any]:
        """``/api/v1/query``'s answer (status and data, or errorType and error)."""
        response = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        answer: dict[str, Any] = response.json()
        return answer

    def diagnostics(self) -> str:
        """The scrape targets' health and the server log's tail, for failure messages."""
        try:
            targets = httpx.get(self.url + "/api/v1/targets", timeout=5).json()
            health = [(t["scrapeUrl"], t["health"], t["lastError"])
                      for t in targets["data"]["activeTargets"]]
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            health = [("targets unavailable", str(exc), "")]
        tail = self.log.read_text(encoding="utf-8", errors="replace")[-3000:]
        return f"targets: {health}\nprometheus log:\n{tail}"


@contextmanager
def run_prometheus(directory: Path, gateway_url: str,
                   *more_urls: str) -> Iterator[RunningPrometheus]:
    """A Prometheus server on loopback scraping ``gateway_url`` (and ``more_urls``: several
    replicas, tests/replicas) every second with the metrics key, its data in ``directory``;
    stopped on exit."""
    key_file = directory / "metrics_key"
    key_file.write_text(METRICS_KEY, encoding="utf-8")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                   "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "switchboard",
            "authorization": {"type": "Bearer", "credentials_file": str(key_file)},
            "static_configs": [{"targets": [url.removeprefix("http://")
                                            for url in (gateway_url, *more_urls)]}],
        }],
    }
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("w", encoding="utf-8") as log_out:
        process = subprocess.Popen(
            [tool("prometheus"), f"--config.file={config_file}",
             f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, stdout=log_out, stderr=subprocess.STDOUT)
    server = RunningPrometheus(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited with {process.returncode}:\n"
                            + log.read_text(encoding="utf-8", errors="replace")[-3000:])
            try:
                if httpx.get(server.url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("prometheus did not become ready in 30 s\n" + server.diagnostics())
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def wait_for_value(prometheus: RunningPrometheus, expr: str,
                   done: Callable[[float | None], bool]) -> float | None:
    """Poll an instant query until ``done`` accepts its single value (None: no sample) or the
    deadline passes; return the last value seen."""
    deadline = time.monotonic() + QUERY_DEADLINE_S
    while True:
        answer = prometheus.query(expr)
        assert answer["status"] == "success", answer
        result = answer["data"]["result"]
        value = float(result[0]["value"][1]) if result else None
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_real_prometheus_counts_every_chat_request(tmp_path: Path, simulator: str) -> None:
    """A real Prometheus scraping with the metrics key counts exactly the chat requests sent."""
    with start_gateway(tmp_path, simulator) as gateway, \
            run_prometheus(tmp_path, gateway.url) as prometheus:
        with gateway.http() as client:
            for i in range(CHAT_REQUESTS):
                gateway.chat(client, stream=i % 2 == 1)
        expr = 'sum(switchboard_requests_total{endpoint="/v1/chat/completions"})'
        value = wait_for_value(prometheus, expr, lambda v: v == CHAT_REQUESTS)
        assert value == CHAT_REQUESTS, \
            f"{expr} = {value}, expected {CHAT_REQUESTS}\n{prometheus.diagnostics()}"
        up = prometheus.query('up{job="switchboard"}')["data"]["result"]
        assert [r["value"][1] for r in up] == ["1"], prometheus.diagnostics()


def test_every_dashboard_and_alert_query_evaluates(tmp_path: Path,
                                                  ops_gateway: OpsGateway) -> None:
    """A real Prometheus accepts every dashboard and alert query, and the main ones have data."""
    queries = [(f"{name}.json {where}", as_promql(q))
               for name, dashboard in load_dashboards().items()
               for where, q in dashboard_queries(dashboard)]
    queries += [(f"alert {rule['alert']}", str(rule["expr"])) for rule in alert_rules()]
    with run_prometheus(tmp_path, ops_gateway.url) as prometheus:
        # Two scrapes at least, so that rates have two samples to work with.
        scrapes = wait_for_value(prometheus, "count_over_time(switchboard_build_info[1m])",
                                 lambda v: v is not None and v >= 2)
        assert scrapes is not None and scrapes >= 2, prometheus.diagnostics()
        failures = []
        for where, expr in queries:
            answer = prometheus.query(expr)
            if answer["status"] != "success":
                failures.append(f"{where}: {answer.get('error')}\n  {expr}")
        assert not failures, "queries Prometheus rejects:\n" + "\n".join(failures)
        for expr in ("sum by (model, provider) (rate(switchboard_requests_total[1m]))",
                     "sum(switchboard_backend_up)",
                     "histogram_quantile(0.95, sum by (le) "
                     "(rate(switchboard_request_duration_seconds_bucket[1m])))"):
            assert prometheus.query(expr)["data"]["result"], expr


ERROR_SHARES = {("overview", "5xx share", 0): "", ("overview", "Error share", 0): "",
                ("overview", "Error share", 1): "",
                ("experiments", "Error ratio by variant", 0): '{experiment="exp", variant="a"}'}
"""Queries (dashboard, panel, target) that show a share of errors, and the labels their one
answer has."""


def test_error_shares_read_0_without_errors(tmp_path: Path) -> None:
    """With traffic and no error, the error-share panels read 0, not "No data" (an empty
    numerator must not empty the ratio)."""
    exprs = {key: as_promql(target["expr"])
             for name, dashboard in load_dashboards().items()
             for panel in dashboard["panels"]
             for i, target in enumerate(panel.get("targets", ()))
             if (key := (name, panel.get("title"), i)) in ERROR_SHARES}
    assert set(exprs) == set(ERROR_SHARES)
    tests = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "15s",
        "input_series": [
            {"series": 'switchboard_requests_total{model="chat",provider="vllm",'
                       'endpoint="/v1/chat/completions",status_class="2xx"}',
             "values": "0+15x80"},
            {"series": 'switchboard_experiment_calls_total{experiment="exp",variant="a",'
                       'status_class="2xx"}', "values": "0+15x80"}],
        "promql_expr_test": [
            {"expr": expr, "eval_time": "15m",
             "exp_samples": [{"labels": ERROR_SHARES[key], "value": 0}]}
            for key, expr in exprs.items()]}]}
    path = tmp_path / "shares_test.yml"
    path.write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
