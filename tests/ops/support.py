"""Helpers for the deployment tests: the assets under docker/, and a running gateway.

The gateway runs in-process on loopback with a master key and a separate metrics key, as in the
compose stack: ``chat`` on a ``vllm`` provider pointed at the upstream simulator (so the backend
families are scraped too), ``embed`` on the built-in ``mock`` provider.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from app.config import parse_config
from app.main import create_app
from app.settings import Settings
from tests.servers import serve

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
PROMETHEUS_DIR = DOCKER / "prometheus"
GRAFANA_DIR = DOCKER / "grafana"
DASHBOARDS = GRAFANA_DIR / "dashboards"
DASHBOARD_NAMES = ("overview", "cost", "drift", "backends", "experiments")

MASTER_KEY = "sk-ops-test-master-key-0123456789"
METRICS_KEY = "ops-test-metrics-key-0123456789"

METRIC_NAME = re.compile(r"\bswitchboard_[a-z0-9_]+")


@dataclass(frozen=True)
class OpsGateway:
    url: str

    def http(self) -> httpx.Client:
        """A client carrying the master key (model calls)."""
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {MASTER_KEY}"})

    def exposition(self) -> str:
        """``GET /metrics`` as Prometheus would scrape it, with the metrics key."""
        response = httpx.get(self.url + "/metrics", timeout=30,
                             headers={"Authorization": f"Bearer {METRICS_KEY}"})
        assert response.status_code == 200, response.text
        return response.text

    def chat(self, client: httpx.Client, *, stream: bool = False) -> None:
        """One successful chat completion on the public model ``chat``."""
        body: dict[str, Any] = {"model": "chat", "stream": stream, "max_tokens": 16,
                                "messages": [{"role": "user", "content": "hello"}]}
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text


def ops_config(simulator: str) -> dict[str, Any]:
    return {
        "providers": {
            "gpu": {"type": "vllm", "base_url": simulator + "/v1", "metrics_interval_s": 0.5},
            "mock": {"type": "mock"},
        },
        "models": {
            "chat": {"targets": [{"provider": "gpu", "model": "Qwen/Qwen2.5-1.5B-Instruct"}]},
            "embed": {"targets": [{"provider": "mock", "model": "mock-embed"}]},
        },
        "drift": {"embedding": {"sample_rate": 0}},  # no encoder process per test gateway
    }


@contextmanager
def start_gateway(directory: Path, simulator: str) -> Iterator[OpsGateway]:
    """A gateway on loopback (master key and metrics key on, strict telemetry)."""
    settings = Settings(master_key=SecretStr(MASTER_KEY), metrics_key=SecretStr(METRICS_KEY),
                        config=None, database_url=f"sqlite+aiosqlite:///{directory / 'calls.db'}",
                        spool_dir=directory / "spool")
    app = create_app(settings, config=parse_config(ops_config(simulator), {}),
                     strict_telemetry=True)
    with serve(app) as url:
        yield OpsGateway(url=url)


def exposed_names(exposition: str) -> set[str]:
    """The sample names a Prometheus scraping this text can query.

    From the ``# TYPE`` lines (counter ``x``: ``x_total``; histogram ``x``: ``x_bucket``,
    ``x_sum``, ``x_count``; summary ``x``: ``x``, ``x_sum``, ``x_count``; anything else: ``x``),
    plus every sample name present."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            if kind == "counter":
                names.add(name if name.endswith("_total") else name + "_total")
            elif kind == "histogram":
                names.update({name + "_bucket", name + "_sum", name + "_count"})
            elif kind == "summary":
                names.update({name, name + "_sum", name + "_count"})
            else:
                names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def metric_names(expr: str) -> set[str]:
    """The ``switchboard_*`` metric names an expression mentions."""
    return set(METRIC_NAME.findall(expr))


def tool(name: str) -> str:
    """The path of a Prometheus binary; fails (never skips) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: run `make test-tools` (it installs Debian's "
                    "prometheus package, which provides prometheus and promtool)")
    return path


# ---- the assets -------------------------------------------------------------------------------

def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON file, by file stem."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(data, dict), f"{path.name}: not a JSON object"
        out[path.stem] = data
    return out


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows and the panels inside collapsed rows included."""
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, query) for every Prometheus query: panel targets, annotations, variables."""
    out: list[tuple[str, str]] = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            out.append((f"panel {panel.get('title')!r}", str(target.get("expr", ""))))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            out.append((f"annotation {annotation.get('name')!r}", str(annotation["expr"])))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if query:
            out.append((f"variable {variable.get('name')!r}", str(query)))
    return out


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for group in load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]:
        rules.extend(group["rules"])
    return rules


def alert_test_queries() -> list[tuple[str, str]]:
    """(where, text) for the series and expressions of the promtool unit tests."""
    out: list[tuple[str, str]] = []
    for i, case in enumerate(load_yaml(PROMETHEUS_DIR / "alerts_test.yml")["tests"]):
        for series in case.get("input_series", []):
            out.append((f"alerts_test.yml test {i} input series", str(series["series"])))
        for expr_test in case.get("promql_expr_test", []):
            out.append((f"alerts_test.yml test {i} expression", str(expr_test["expr"])))
    return out


_LABEL_VALUES = re.compile(r"^label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)$")
_GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
                      "$model": ".*", "$provider": ".*", "$experiment": ".*"}


def as_promql(query: str) -> str:
    """A dashboard query as Prometheus would receive it from Grafana (variables expanded)."""
    match = _LABEL_VALUES.match(query.strip())
    if match:
        return f"count by ({match.group(2)}) ({match.group(1)})"
    for variable, value in _GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    assert "$" not in query, f"unexpanded Grafana variable in {query!r}"
    return query
