"""The deployment assets agree with the gateway and with each other: dashboards, alert rules,
Grafana provisioning, the compose file, the Dockerfile and the gateway config it mounts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import load_config
from app.providers.vllm import VllmProvider
from tests.ops.support import (
    DASHBOARD_NAMES,
    DOCKER,
    GRAFANA_DIR,
    PROMETHEUS_DIR,
    REPO,
    OpsGateway,
    alert_rules,
    alert_test_queries,
    dashboard_queries,
    exposed_names,
    load_dashboards,
    load_yaml,
    metric_names,
    ops_config,
    panels,
    start_gateway,
)

REQUIRED_SECRETS = ("SWITCHBOARD_MASTER_KEY", "SWITCHBOARD_METRICS_KEY", "POSTGRES_PASSWORD",
                    "GRAFANA_ADMIN_PASSWORD")
SECRET_NAME = re.compile(r"KEY|PASSWORD|SECRET|TOKEN", re.IGNORECASE)
REQUIRED_REF = re.compile(r"^\$\{(\w+):\?[^}]+\}$")
OPTIONAL_EMPTY_REF = re.compile(r"^\$\{(\w+):-\}$")


def used_metric_names() -> dict[str, set[str]]:
    """Every ``switchboard_*`` name used by a dashboard, an alert rule or an alert test, with
    where it is used."""
    used: dict[str, set[str]] = {}
    queries: list[tuple[str, str]] = []
    for name, dashboard in load_dashboards().items():
        queries += [(f"{name}.json {where}", q) for where, q in dashboard_queries(dashboard)]
    queries += [(f"alert {rule['alert']}", str(rule["expr"])) for rule in alert_rules()]
    queries += alert_test_queries()
    for where, query in queries:
        for metric in metric_names(query):
            used.setdefault(metric, set()).add(where)
    return used


def test_dashboards_and_alerts_use_only_exposed_metrics(ops_gateway: OpsGateway) -> None:
    """Every metric a dashboard, alert rule or alert test queries is one the gateway exports."""
    exposed = exposed_names(ops_gateway.exposition())
    used = used_metric_names()
    assert len(used) >= 30, f"suspiciously few metric names found: {sorted(used)}"
    unknown = {name: sorted(where) for name, where in used.items() if name not in exposed}
    assert not unknown, "metrics queried but not exported by the gateway:\n" + "\n".join(
        f"  {name} (in {', '.join(where)})" for name, where in sorted(unknown.items()))


def test_metrics_need_the_metrics_key_or_the_master_key(ops_gateway: OpsGateway) -> None:
    """/metrics answers 401 without a key and 200 with the master key."""
    assert httpx.get(ops_gateway.url + "/metrics", timeout=10).status_code == 401
    with ops_gateway.http() as client:
        assert client.get("/metrics").status_code == 200


def test_the_dashboards_exist_and_are_editable() -> None:
    """Overview, Cost, Drift and Backends are there, editable, each with its own uid."""
    dashboards = load_dashboards()
    assert set(DASHBOARD_NAMES) <= set(dashboards), sorted(dashboards)
    uids = [d["uid"] for d in dashboards.values()]
    assert len(uids) == len(set(uids)), uids
    for name, dashboard in dashboards.items():
        assert dashboard["editable"] is True, name
        assert dashboard["title"], name
        assert dashboard.get("schemaVersion", 0) >= 36, name


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_dashboard_panels_have_unique_ids_and_titles(name: str) -> None:
    """Within a dashboard no two panels share an id or a title, and every graph has a query."""
    dashboard = load_dashboards()[name]
    every = panels(dashboard)
    ids = [p["id"] for p in every]
    titles = [p["title"] for p in every]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    duplicates = sorted({t for t in titles if titles.count(t) > 1})
    assert not duplicates, f"duplicate panel titles: {duplicates}"
    for panel in every:
        assert panel.get("gridPos"), f"{panel['title']}: no gridPos"
        if panel["type"] != "row":
            assert panel.get("targets") and all(t.get("expr") for t in panel["targets"]), \
                f"{panel['title']}: no query"


@pytest.mark.parametrize("name", ["overview", "cost", "drift"])
def test_model_dashboards_filter_by_model_and_provider(name: str) -> None:
    """The traffic dashboards have ``model`` and ``provider`` variables, used by the queries."""
    dashboard = load_dashboards()[name]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"model", "provider"} <= set(variables)
    for var in ("model", "provider"):
        assert "label_values(" in str(variables[var]["query"])
    exprs = " ".join(q for _, q in dashboard_queries(dashboard))
    assert '=~"$model"' in exprs and '=~"$provider"' in exprs


def test_the_provider_variable_lists_every_configured_provider(tmp_path: Path,
                                                               simulator: str) -> None:
    """The traffic dashboards' ``provider`` variable takes its values from a series that every
    configured target's provider has from start-up, so a provider none of whose calls was
    answered by it (all failed over elsewhere) is in the drop-down too."""
    with start_gateway(tmp_path, simulator) as gateway:
        exposition = gateway.exposition()  # before any call
    configured = {t["provider"] for model in ops_config(simulator)["models"].values()
                  for t in model["targets"]}
    for name in ("overview", "cost", "drift"):  # backends lists the vLLM servers only
        variables = {v["name"]: v for v in load_dashboards()[name]["templating"]["list"]}
        query = variables["provider"]["query"]
        query = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((\w+), provider\)", query)
        assert match is not None, f"{name}: {query}"
        listed = set(re.findall(rf'^{match[1]}\{{[^}}]*provider="([^"]+)"', exposition,
                                re.MULTILINE))
        assert listed == configured, f"{name}: {query} lists {sorted(listed)}"


def test_drift_dashboard_annotates_model_version_changes() -> None:
    """Drift annotates model version changes and tables the current upstream model versions."""
    dashboard = load_dashboards()["drift"]
    annotations = [a for a in dashboard["annotations"]["list"] if "expr" in a]
    assert any("switchboard_upstream_version_changes_total" in a["expr"] and a["enable"]
               for a in annotations), annotations
    exprs = [q for _, q in dashboard_queries(dashboard)]
    assert any(re.search(r"switchboard_upstream_model_info\{[^}]*\}\s*==\s*1", e) for e in exprs)


def datasource_refs(node: Any) -> list[dict[str, Any]]:
    """Every ``datasource`` object in a dashboard, however deep."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                found.append(value)
            else:
                found.extend(datasource_refs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(datasource_refs(item))
    return found


def test_dashboards_use_the_provisioned_datasource() -> None:
    """Every query names the provisioned Prometheus datasource by its fixed uid."""
    provisioned = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for name, dashboard in load_dashboards().items():
        refs = datasource_refs(dashboard)
        assert refs, name
        for ref in refs:
            if ref.get("type") == "grafana":  # the built-in annotations
                continue
            assert ref == {"type": "prometheus", "uid": source["uid"]}, (name, ref)


def compose() -> dict[str, Any]:
    data = load_yaml(REPO / "docker-compose.yml")
    assert isinstance(data, dict)
    return data


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_grafana_loads_the_dashboards_folder_compose_mounts() -> None:
    """The dashboard provider reads the folder where compose mounts docker/grafana/dashboards."""
    provider = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "switchboard.yml")
    (entry,) = provider["providers"]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./docker/grafana/dashboards:{entry['options']['path']}:ro" in mounts
    assert "./docker/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_compose_has_the_services() -> None:
    """The stack: gateway, postgres, redis, prometheus, grafana, vllm-sim and the gpu vllm."""
    services = compose()["services"]
    assert {"gateway", "postgres", "redis", "prometheus", "grafana", "vllm-sim", "vllm"} \
        <= set(services)
    assert services["gateway"]["build"]["dockerfile"] == "docker/Dockerfile"
    sim = services["vllm-sim"]
    assert sim["command"][:2] == ["switchboard", "simulate"]
    assert "0.0.0.0" in sim["command"] and "8000" in sim["command"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["postgres"]["healthcheck"]["test"]
    assert services["redis"]["image"].startswith("redis:7")
    for dependency in ("postgres", "redis"):
        assert services["gateway"]["depends_on"][dependency]["condition"] == "service_healthy"


def test_compose_vllm_needs_the_gpu_profile_and_an_nvidia_gpu() -> None:
    """The real vLLM only starts with ``--profile gpu`` and reserves an NVIDIA GPU."""
    vllm = compose()["services"]["vllm"]
    assert vllm["profiles"] == ["gpu"]
    assert "vllm/vllm-openai" in vllm["image"]
    assert "--model" in vllm["command"]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices), devices
    assert any(v.endswith(":/root/.cache/huggingface") for v in vllm["volumes"])


def test_compose_gateway_points_at_postgres_redis_and_the_mounted_config() -> None:
    """The gateway gets Postgres, Redis, the mounted config and the simulator as vLLM."""
    gateway = compose()["services"]["gateway"]
    env = service_env(gateway)
    assert env["SWITCHBOARD_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in env["SWITCHBOARD_DATABASE_URL"]
    assert env["SWITCHBOARD_REDIS_URL"].startswith("redis://redis:6379")
    assert f"./docker/switchboard.yaml:{env['SWITCHBOARD_CONFIG']}:ro" in gateway["volumes"]
    assert env["VLLM_BASE_URL"] == "${VLLM_BASE_URL:-http://vllm-sim:8000/v1}"


def test_compose_holds_no_secret_values() -> None:
    """Every secret is a required ``${VAR:?...}`` from .env; none is written in the file."""
    data = compose()
    required: set[str] = set()
    for name, service in data["services"].items():
        for key, value in service_env(service).items():
            if not SECRET_NAME.search(key):
                continue
            ref = REQUIRED_REF.match(value)
            assert ref or OPTIONAL_EMPTY_REF.match(value), \
                f"{name}.environment.{key} must be a ${{VAR:?...}} reference, not {value!r}"
            if ref:
                required.add(ref.group(1))
    assert set(REQUIRED_SECRETS) <= required, required
    url = service_env(data["services"]["gateway"])["SWITCHBOARD_DATABASE_URL"]
    assert re.match(r"^postgresql\+asyncpg://switchboard:\$\{POSTGRES_PASSWORD:\?[^}]+\}@", url)
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    assert not re.search(r"\bsk-[A-Za-z0-9]", text)


def test_env_example_has_every_required_variable_with_a_fake_value() -> None:
    """.env.example sets each variable compose requires, to an obviously fake placeholder."""
    values: dict[str, str] = {}
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    for name in set(re.findall(r"\$\{(\w+):\?", text)):
        assert values.get(name, "").startswith("change-me"), name
    for key, value in values.items():
        if SECRET_NAME.search(key):
            assert value.startswith("change-me"), key
    assert len(values["SWITCHBOARD_MASTER_KEY"]) >= 16
    assert len(values["SWITCHBOARD_METRICS_KEY"]) >= 16


def test_prometheus_scrapes_the_gateway_with_the_key_compose_writes() -> None:
    """Prometheus scrapes gateway:8080 with the credentials file compose writes the key to."""
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "switchboard"]
    assert job["static_configs"][0]["targets"] == ["gateway:8080"]
    assert job["authorization"]["type"] == "Bearer"
    credentials = job["authorization"]["credentials_file"]
    interval = job.get("scrape_interval", config["global"]["scrape_interval"])
    assert interval in {"5s", "10s", "15s"}
    assert config["rule_files"] == ["alerts.yml"]
    service = compose()["services"]["prometheus"]
    script = " ".join(service["command"])
    assert f'"$$SWITCHBOARD_METRICS_KEY" > {credentials}' in script
    assert "./docker/prometheus:/etc/prometheus:ro" in service["volumes"]
    assert service_env(service)["SWITCHBOARD_METRICS_KEY"].startswith(
        "${SWITCHBOARD_METRICS_KEY:?")


@pytest.mark.parametrize("env", [{}, {"VLLM_BASE_URL": "http://vllm:8000/v1",
                                      "VLLM_MODEL": "meta-llama/Llama-3.1-8B-Instruct"}])
def test_compose_gateway_config_is_valid(env: dict[str, str]) -> None:
    """docker/switchboard.yaml validates, with ``chat`` on vLLM at $VLLM_BASE_URL."""
    config = load_config(DOCKER / "switchboard.yaml", env)
    provider = config.providers["vllm"]
    assert isinstance(provider, VllmProvider)
    assert provider.base_url == env.get("VLLM_BASE_URL", "http://vllm-sim:8000/v1")
    assert config.models["chat"].targets[0].provider == "vllm"
    assert config.providers[config.models["embed"].targets[0].provider].type == "mock"


def test_dockerfile_installs_the_gateway_alone_and_runs_unprivileged() -> None:
    """The image installs the gateway alone, runs unprivileged, and migrates before serving."""
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert all(re.fullmatch(r"python:3\.11\.\d+-slim", ln.split()[1])
               for ln in lines if ln.startswith("FROM "))
    body = "\n".join(lines)
    assert re.search(r"pip install --no-deps \.(\s|$)", body), "the image must install ."
    assert "[local]" not in body and "[dev]" not in body and "torch" not in body
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert "EXPOSE 8080" in lines
    health = text[text.index("HEALTHCHECK"):]
    assert "urllib.request" in health and "/healthz" in health
    cmd = next(ln for ln in reversed(lines) if ln.startswith("CMD "))
    assert cmd.index("switchboard db upgrade") < cmd.index("switchboard serve --host 0.0.0.0")


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    """The build context is pyproject.toml, README.md and app/: never .venv, .git or .env."""
    entries = [ln.strip() for ln in (REPO / ".dockerignore").read_text(encoding="utf-8")
               .splitlines() if ln.strip() and not ln.startswith("#")]
    assert entries[0] == "*"
    assert {e[1:] for e in entries if e.startswith("!")} == {"pyproject.toml", "README.md", "app"}


def test_the_docs_name_only_exposed_metrics(ops_gateway: OpsGateway) -> None:
    """Every ``switchboard_*`` series README.md and docs/ name is one the gateway exports (a
    PromQL query copied from them finds something; a counter is ``..._total``), or a
    histogram's family name."""
    exposed = exposed_names(ops_gateway.exposition())
    exposed |= {name.removesuffix("_bucket") for name in exposed if name.endswith("_bucket")}
    unknown = {}
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        named = metric_names(path.read_text(encoding="utf-8"))
        unknown.update({name: path.name for name in named - exposed})
    assert not unknown, "\n".join(f"{k} ({v})" for k, v in sorted(unknown.items()))


def _named(text: str, start: str, end: str) -> set[str]:
    """The ``switchboard_*`` names in backquotes between ``start`` and ``end`` of ``text``."""
    part = text[text.index(start):text.index(end, text.index(start))]
    return set(re.findall(r"`(switchboard_[a-z_]+)", part))


def test_what_the_docs_say_the_dashboards_chart_has_a_panel() -> None:
    """docs/scaling.md says the dashboards chart each metric of "What breaks first", and README's
    spool volume section points at the Overview's call-log panels: each of those metrics is in
    a panel's query (a variable that lists its labels charts nothing)."""
    charted: dict[str, set[str]] = {}
    for name, dashboard in load_dashboards().items():
        for where, query in dashboard_queries(dashboard):
            if where.startswith("panel "):
                for metric in metric_names(query):
                    charted.setdefault(re.sub(r"_(total|bucket|count|sum)$", "", metric),
                                       set()).add(name)
    scaling = (REPO / "docs" / "scaling.md").read_text(encoding="utf-8")
    promised = _named(scaling, "## What breaks first", "chart each of these")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    overview = _named(readme, "### The spool volume", "(the Overview dashboard's call-log panels)")
    assert {"switchboard_calllog_store_up", "switchboard_target_state"} <= promised
    assert "switchboard_calllog_spool_up" in overview
    missing = {re.sub(r"_total$", "", m) for m in promised} - set(charted)
    assert not missing, missing
    assert all("overview" in charted.get(re.sub(r"_total$", "", m), set()) for m in overview), \
        {m: charted.get(re.sub(r"_total$", "", m)) for m in overview}
