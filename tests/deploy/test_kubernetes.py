"""The Kubernetes manifests (deploy/kubernetes, issue 14): each overlay rendered with
``kubectl kustomize``, every object validated offline against the Kubernetes OpenAPI schemas
(``kubernetes-validate``; the ServiceMonitor CRD checked field by field here), and the
cross-references checked: selectors against pod labels, every Secret and ConfigMap key a pod reads
against the rendered objects or the README's list of keys the operator provides, probe paths and
the port against the app, ``SWITCHBOARD_*`` names against ``Settings``, the mounted config against
``parse_config``, and the dashboard ConfigMaps against docker/grafana/dashboards."""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

from app.api.health import router as health_router
from app.config import ConfigError, parse_config
from app.settings import Settings
from tests.deploy.support import (
    CRDS,
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    REPO,
    WORKLOADS,
    Obj,
    containers,
    env_of,
    gateway,
    kustomize,
    matches,
    one,
    pod_spec,
    render,
    secret_keys_documented,
    secret_refs,
)

# --- rendering and schemas -------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    """Each rendered object is valid for its kind in Kubernetes 1.30, unknown fields refused."""
    objects = render(overlay)
    assert objects
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")


def test_the_in_flight_component_adds_a_pods_metric(tmp_path: Path) -> None:
    """components/hpa-in-flight renders onto prod and keeps the HPA valid, CPU included."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        # kustomize takes relative paths only
        "resources": [os.path.relpath(K8S / "overlays" / "prod", tmp_path)],
        "components": [os.path.relpath(K8S / "components" / "hpa-in-flight", tmp_path)]}),
        encoding="utf-8")
    objects = kustomize(tmp_path)
    hpa = one(objects, "HorizontalPodAutoscaler", "switchboard")
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "switchboard_requests_in_flight"
    families = (REPO / "app" / "metrics" / "families.py").read_text(encoding="utf-8")
    assert '"switchboard_requests_in_flight"' in families


def check_service_monitor(sm: Obj, objects: list[Obj]) -> None:
    """A ServiceMonitor's fields, by the Prometheus Operator's CRD: it selects a rendered
    Service, scrapes a named port of it, and reads its bearer token from a Secret."""
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    spec = sm["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, set(spec)
    services = [s for s in objects if s["kind"] == "Service"
                and matches(spec["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
    assert len(services) == 1, [s["metadata"]["name"] for s in services]
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    allowed = {"port", "path", "scheme", "interval", "scrapeTimeout", "authorization"}
    for ep in spec["endpoints"]:
        assert set(ep) <= allowed, set(ep) - allowed
        assert ep["port"] in port_names
        assert ep["path"] == "/metrics" and ep["scheme"] in ("http", "https")
        assert re.fullmatch(r"\d+s", ep["interval"]) and re.fullmatch(r"\d+s", ep["scrapeTimeout"])
        assert int(ep["scrapeTimeout"][:-1]) <= int(ep["interval"][:-1])
        assert ep["authorization"]["type"] == "Bearer"
        assert set(ep["authorization"]["credentials"]) == {"name", "key"}


def test_the_service_monitor_is_well_formed_and_scrapes_the_gateway() -> None:
    """prod's ServiceMonitor selects the gateway Service's http port and authenticates with the
    metrics key the gateway itself reads."""
    objects = render("prod")
    sm = one(objects, "ServiceMonitor", "switchboard")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    check_service_monitor(sm, objects)
    creds = sm["spec"]["endpoints"][0]["authorization"]["credentials"]
    key = env_of(containers(gateway(objects))[0])["SWITCHBOARD_METRICS_KEY"]
    assert key["valueFrom"]["secretKeyRef"] == creds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_known_kinds_are_rendered(overlay: str) -> None:
    """Every rendered kind is either in the Kubernetes schemas or a CRD checked here."""
    for obj in render(overlay):
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION)  # SchemaNotFoundError otherwise


# --- cross-references --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_the_pods_they_mean(overlay: str) -> None:
    """Every Service selects the pods of one workload and targets a port they name; the PDB,
    NetworkPolicy and topology spread select the gateway's pods; the HPA targets the gateway."""
    objects = render(overlay)
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    for svc in (o for o in objects if o["kind"] == "Service"):
        chosen = [w for w in workloads
                  if matches(svc["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
        assert len(chosen) == 1, f"Service/{svc['metadata']['name']}: {len(chosen)} workloads"
        ports = {p["name"]: p["containerPort"] for c in containers(chosen[0])
                 for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{svc['metadata']['name']}: {port}"
    for w in workloads:
        assert matches(w["spec"]["selector"]["matchLabels"],
                       w["spec"]["template"]["metadata"]["labels"])
        if w["kind"] == "StatefulSet":
            svc = one(objects, "Service", w["spec"]["serviceName"])
            assert matches(svc["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
    gw = gateway(objects)
    labels = gw["spec"]["template"]["metadata"]["labels"]
    pdb = one(objects, "PodDisruptionBudget", "switchboard")
    assert matches(pdb["spec"]["selector"]["matchLabels"], labels)
    policy = one(objects, "NetworkPolicy", "switchboard")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], labels)
    for spread in pod_spec(gw)["topologySpreadConstraints"]:
        assert matches(spread["labelSelector"]["matchLabels"], labels)
    migration = one(objects, "Job", "switchboard-migrate")
    assert not matches(policy["spec"]["podSelector"]["matchLabels"],
                       migration["spec"]["template"]["metadata"]["labels"])
    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"], ref["name"]) == \
            ("apps/v1", "Deployment", gw["metadata"]["name"])


def test_the_network_policy_lets_the_gateway_reach_what_it_needs() -> None:
    """Ingress on the gateway's named port; egress to DNS, Postgres, Redis, HTTPS and vLLM."""
    objects = render("prod")
    policy = one(objects, "NetworkPolicy", "switchboard")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == ["http"]
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (6379, "TCP"), (443, "TCP"),
            (8000, "TCP")} <= egress
    vllm = one(objects, "StatefulSet", "vllm")
    to_vllm = next(r for r in policy["egress"] if any(p["port"] == 8000 for p in r["ports"]))
    assert matches(to_vllm["to"][0]["podSelector"]["matchLabels"],
                   vllm["spec"]["template"]["metadata"]["labels"])


METADATA_ENDPOINTS = {("169.254.169.254/32", 80), ("169.254.170.2/32", 80),
                      ("169.254.170.23/32", 80), ("169.254.169.252/32", 988)}
"""Where the cloud SDKs get credentials without a key: EC2 IMDS and the GCE/GKE metadata server,
ECS container credentials, EKS Pod Identity, GKE Workload Identity (Dataplane V2)."""


def _ip_egress(rules: list[Obj]) -> set[tuple[str, int]]:
    return {(peer["ipBlock"]["cidr"], port["port"]) for rule in rules
            for peer in rule.get("to", []) if "ipBlock" in peer for port in rule["ports"]}


def test_the_metadata_endpoints_are_an_opt_in_egress_rule() -> None:
    """The policy blocks the cloud metadata endpoints by default, and carries commented rules
    that, uncommented, allow each of them (and still validate)."""
    path = K8S / "base" / "networkpolicy.yaml"
    text = path.read_text(encoding="utf-8")
    policy = one(render("prod"), "NetworkPolicy", "switchboard")
    assert not _ip_egress(policy["spec"]["egress"])
    block = text[text.index("    # --- cloud credentials"):].splitlines()[1:]
    assert all(line.startswith("    # ") for line in block)
    uncommented = [line.replace("    # ", "    ", 1) for line in block]
    rules = yaml.safe_load("\n".join(line for line in uncommented
                                     if not line.lstrip().startswith("#")))
    assert _ip_egress(rules) == METADATA_ENDPOINTS
    opened = {**policy, "spec": {**policy["spec"], "egress": policy["spec"]["egress"] + rules}}
    kubernetes_validate.validate(opened, KUBERNETES_VERSION, strict=True)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### What each object does"):readme.index("### The spool volume")]
    assert all(cidr.split("/")[0] in section for cidr, _ in METADATA_ENDPOINTS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_key_read_is_documented_and_no_secret_is_rendered(overlay: str) -> None:
    """Each Secret key an overlay reads is in the README's table of keys the operator
    provides; no Secret object is rendered, and no secret-looking variable has a literal value."""
    objects = render(overlay)
    documented = secret_keys_documented()
    refs = list(secret_refs(objects))
    assert refs
    for where, name, key in refs:
        assert (name, key) in documented, f"{where}: {name}/{key} not in the README's table"
    assert not [o for o in objects if o["kind"] == "Secret"]
    secretish = re.compile(r"KEY|TOKEN|PASSWORD|SECRET|DATABASE_URL|REDIS_URL")
    for w in (o for o in objects if o["kind"] in WORKLOADS):
        for c in containers(w):
            for e in c.get("env", []):
                if secretish.search(e["name"]):
                    assert "value" not in e, f"{w['metadata']['name']}: {e['name']} literal"


def test_every_documented_secret_key_is_read_somewhere() -> None:
    """The README's Secret keys table lists no key that no overlay reads (it stays true)."""
    read = {(name, key) for overlay in OVERLAYS for _, name, key in secret_refs(render(overlay))}
    assert secret_keys_documented() <= read


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_config_map_a_pod_mounts_is_rendered(overlay: str) -> None:
    """ConfigMap volumes and configMapKeyRefs name rendered ConfigMaps and keys in them."""
    objects = render(overlay)
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    for w in (o for o in objects if o["kind"] in WORKLOADS):
        for v in pod_spec(w).get("volumes", []):
            if "configMap" in v:
                name = v["configMap"]["name"]
                assert name in maps, f"{w['metadata']['name']}: ConfigMap {name}"
                for item in v["configMap"].get("items", []):
                    assert item["key"] in maps[name]
        for c in containers(w):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in maps.get(ref["name"], {}), e


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_port_exist_in_the_app(overlay: str) -> None:
    """Liveness and startup probe /healthz, readiness /readyz (routes of app/api/health.py), on
    the named port that is SWITCHBOARD_PORT; every SWITCHBOARD_* name is a Settings field."""
    container = containers(gateway(render(overlay)))[0]
    routes = {getattr(r, "path", None) for r in health_router.routes}
    assert {"/healthz", "/readyz"} <= routes
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    env = env_of(container)
    assert ports["http"] == int(env["SWITCHBOARD_PORT"]["value"])
    assert env["SWITCHBOARD_HOST"]["value"] == "0.0.0.0"
    settings = {f"SWITCHBOARD_{name.upper()}" for name in Settings.model_fields}
    used = {name for name in env if name.startswith("SWITCHBOARD_")}
    assert used and used <= settings, used - settings


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_mounted_config_parses_and_is_reloadable(overlay: str) -> None:
    """SWITCHBOARD_CONFIG names the ConfigMap's file, mounted as a directory (no subPath, so the
    kubelet updates it and the gateway reloads it), and it parses with only the variables the
    container sets."""
    objects = render(overlay)
    gw = gateway(objects)
    container = containers(gw)[0]
    env = env_of(container)
    path = Path(env["SWITCHBOARD_CONFIG"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent))
    assert "subPath" not in mount and mount.get("readOnly") is True
    volume = next(v for v in pod_spec(gw)["volumes"] if v["name"] == mount["name"])
    data = one(objects, "ConfigMap", volume["configMap"]["name"])["data"]
    assert path.name in data
    assert float(env["SWITCHBOARD_CONFIG_POLL_S"]["value"]) > 0  # live reload is on
    dummy = {name: "dummy-value-0123456789" for name in env}
    config = parse_config(yaml.safe_load(data[path.name]), dummy)
    assert "chat" in config.models
    if "${OPENAI_API_KEY}" in data[path.name]:  # the variable really is the container's
        assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "openai-api-key"
        with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
            parse_config(yaml.safe_load(data[path.name]), {})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_vllm_targets_are_one_per_pod(overlay: str) -> None:
    """The config's vllm providers are exactly the pods of the vllm StatefulSet, each by its
    stable DNS name under the headless Service, and `chat` balances across them itself."""
    objects = render(overlay)
    sts = one(objects, "StatefulSet", "vllm")
    svc = one(objects, "Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None"
    port = svc["spec"]["ports"][0]["port"]
    pods = {f"{sts['metadata']['name']}-{i}.{svc['metadata']['name']}:{port}"
            for i in range(sts["spec"]["replicas"])}
    data = one(objects, "ConfigMap", "switchboard-config")["data"]["switchboard.yaml"]
    raw = yaml.safe_load(data)
    vllm = {name: p for name, p in raw["providers"].items() if p["type"] == "vllm"}
    assert {urllib.parse.urlsplit(p["base_url"]).netloc for p in vllm.values()} == pods
    chat = raw["models"]["chat"]
    assert chat["strategy"] == "vllm_load"
    assert {t["provider"] for t in chat["targets"]} == set(vllm)
    readiness = containers(sts)[0]["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/health"


def test_the_vllm_pool_asks_for_gpus_and_caches_models() -> None:
    """prod's vLLM pods request and limit one nvidia.com/gpu and keep the model cache on a
    volume claim of their own."""
    sts = one(render("prod"), "StatefulSet", "vllm")
    c = containers(sts)[0]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"][
        "nvidia.com/gpu"] == "1"
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    cache = env_of(c)["HF_HOME"]["value"]
    assert any(m["name"] in claims and cache.startswith(m["mountPath"])
               for m in c["volumeMounts"])


# --- the gateway pod ----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_and_migration_run_locked_down(overlay: str) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, capabilities dropped,
    requests and limits; what the gateway writes (spool dir, /tmp) is an emptyDir."""
    objects = render(overlay)
    for w in (gateway(objects), one(objects, "Job", "switchboard-migrate")):
        spec = pod_spec(w)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["automountServiceAccountToken"] is False
        for c in containers(w):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])
            assert {"cpu", "memory"} <= set(c["resources"]["limits"])
    gw = gateway(objects)
    container = containers(gw)[0]
    empty = {v["name"] for v in pod_spec(gw)["volumes"] if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    spool = env_of(container)["SWITCHBOARD_SPOOL_DIR"]["value"]
    assert mounts[spool] in empty and mounts["/tmp"] in empty


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_covers_the_drain(overlay: str) -> None:
    """The gateway drains on SIGTERM long enough for its endpoint removal to spread (no preStop
    sleep: the drain closes keep-alive connections, which a sleep before the signal cannot),
    and terminationGracePeriodSeconds exceeds that drain plus the graceful shutdown
    (``shutdown_drain_s`` + ``shutdown_grace_s``, as the container's environment sets them or
    their defaults), so in-flight requests and streams finish and the call log flushes."""
    gw = gateway(render(overlay))
    container = containers(gw)[0]
    assert "preStop" not in container.get("lifecycle", {})
    env = env_of(container)
    fields = Settings.model_fields
    drain = float(env["SWITCHBOARD_SHUTDOWN_DRAIN_S"]["value"])
    assert drain >= 5
    grace_s = float(env["SWITCHBOARD_SHUTDOWN_GRACE_S"]["value"]
                    if "SWITCHBOARD_SHUTDOWN_GRACE_S" in env
                    else fields["shutdown_grace_s"].default)
    grace = pod_spec(gw)["terminationGracePeriodSeconds"]
    assert grace >= drain + grace_s + 10
    assert gw["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migration_job_upgrades_the_schema_first(overlay: str) -> None:
    """The Job runs `switchboard db upgrade` on the gateway's image and database URL, as an Argo
    CD PreSync hook; the gateway itself only serves."""
    objects = render(overlay)
    job = one(objects, "Job", "switchboard-migrate")
    c = containers(job)[0]
    assert c["command"] == ["switchboard", "db", "upgrade"]
    gw = containers(gateway(objects))[0]
    assert c["image"] == gw["image"]
    assert env_of(c)["SWITCHBOARD_DATABASE_URL"] == env_of(gw)["SWITCHBOARD_DATABASE_URL"]
    hook = "Sync" if overlay == "dev" else "PreSync"  # test_dev_migrates_after_its_postgres
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == hook
    assert gw["command"] == ["switchboard", "serve"]


def _wave(obj: Obj) -> int:
    return int(obj["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_dev_migrates_after_its_postgres() -> None:
    """Argo CD: dev's Job is no PreSync hook (that runs before the sync creates dev's Postgres,
    and fails the sync for good); it is a Sync hook in a wave after Postgres and Redis, and the
    gateway's wave comes after it."""
    objects = render("dev")
    job = one(objects, "Job", "switchboard-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    stores = [o for o in objects if o["metadata"]["name"] in {"postgres", "redis"}]
    assert {o["kind"] for o in stores} >= {"StatefulSet", "Service"}
    assert max(_wave(o) for o in stores) < _wave(job) < _wave(gateway(objects))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migration_job_needs_nothing_applied_after_it(overlay: str) -> None:
    """README's step 2 applies only what is labelled ``component: migration``, and Argo CD runs
    the Job as a PreSync hook before the sync creates anything: that is the Job alone, and its
    pod needs no other rendered object (the namespace's ``default`` ServiceAccount, no
    ConfigMap; the Secret is the operator's, from step 1)."""
    objects = render(overlay)
    selected = [o for o in objects if o["metadata"].get("labels", {})
                .get("app.kubernetes.io/component") == "migration"]
    assert [(o["kind"], o["metadata"]["name"]) for o in selected] == [
        ("Job", "switchboard-migrate")]
    spec = pod_spec(selected[0])
    assert spec.get("serviceAccountName", "default") == "default"
    assert all(set(v) == {"name", "emptyDir"} for v in spec.get("volumes", []))


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_stores_and_vllm_take_connections_from_switchboard_pods_only(overlay: str) -> None:
    """dev's Redis (no password) takes connections from the gateway's pods only, and its
    Postgres from the gateway's and the migration Job's, by NetworkPolicy; the vLLM pods (no
    API key), dev's simulated pool and prod's, from the gateway's pods only."""
    objects = render(overlay)
    workloads = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
                 for o in objects if o["kind"] in WORKLOADS}
    allowed = {"redis": {"switchboard"}, "postgres": {"switchboard", "switchboard-migrate"},
               "vllm": {"switchboard"}}
    for store, clients in allowed.items():
        if store not in workloads:  # prod's Postgres and Redis are managed services
            continue
        policies = [p["spec"] for p in objects if p["kind"] == "NetworkPolicy"
                    and matches(p["spec"]["podSelector"]["matchLabels"], workloads[store])]
        assert policies and all("Ingress" in p["policyTypes"] for p in policies), store
        peers = [peer for p in policies for rule in p.get("ingress", [])
                 for peer in rule.get("from", [{}])]
        assert all(set(peer) == {"podSelector"} for peer in peers), (store, peers)
        reaching = {name for name, labels in workloads.items()
                    if any(matches(peer["podSelector"]["matchLabels"], labels)
                           for peer in peers)}
        assert reaching == clients, store


def test_every_readme_section_the_manifests_cite_exists() -> None:
    """A comment citing ``README.md, "Section"`` in deploy/ names a file and a heading that
    exist."""
    cited = 0
    for path in sorted((REPO / "deploy").rglob("*")):
        if not path.is_file() or path.suffix not in (".yaml", ".yml", ".md", ""):
            continue
        for file, section in re.findall(r'(README[\w.-]*\.md), "([^"]+)"',
                                        path.read_text(encoding="utf-8")):
            cited += 1
            assert (REPO / file).is_file(), f"{path}: cites {file}, which does not exist"
            headings = (REPO / file).read_text(encoding="utf-8")
            assert re.search(rf"^#+ {re.escape(section)}$", headings, re.MULTILINE), \
                f"{path}: cites {file}, \"{section}\", which has no such heading"
    assert cited


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_dashboards_are_dockers_labelled_for_the_sidecar(overlay: str) -> None:
    """One ConfigMap per docker/grafana/dashboards/*.json, labelled grafana_dashboard, holding
    that file byte for byte (copy it to deploy/kubernetes/base/grafana-dashboards after editing)."""
    objects = render(overlay)
    rendered = {k: v for o in objects if o["kind"] == "ConfigMap"
                and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
                for k, v in o["data"].items()}
    shipped = {p.name: p.read_text(encoding="utf-8")
               for p in sorted((REPO / "docker" / "grafana" / "dashboards").glob("*.json"))}
    assert shipped and set(rendered) == set(shipped)
    for name, text in shipped.items():
        assert rendered[name] == text, f"{name}: cp docker/grafana/dashboards/{name} " \
            "deploy/kubernetes/base/grafana-dashboards/"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned(overlay: str) -> None:
    """Every container image names a tag, never latest."""
    for w in (o for o in render(overlay) if o["kind"] in WORKLOADS):
        for c in containers(w):
            image = c["image"]
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), \
                image


# --- the overlays -------------------------------------------------------------------------------


def test_dev_runs_one_gateway_with_postgres_and_redis_in_the_cluster() -> None:
    """dev: one replica, no autoscaler, Postgres and Redis StatefulSets with volumes, the
    simulator standing in for vLLM (no GPU)."""
    objects = render("dev")
    assert gateway(objects)["spec"]["replicas"] == 1
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    for name in ("postgres", "redis"):
        sts = one(objects, "StatefulSet", name)
        assert sts["spec"]["volumeClaimTemplates"]
        one(objects, "Service", name)
    sim = containers(one(objects, "StatefulSet", "vllm"))[0]
    assert sim["command"][:2] == ["switchboard", "simulate"]
    assert "nvidia.com/gpu" not in sim["resources"]["limits"]
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == \
        {"switchboard-dev"}


def test_prod_runs_three_or_more_replicas_against_managed_stores() -> None:
    """prod: the HPA keeps at least 3 replicas, the Deployment leaves the count to it, requests
    equal limits, and no Postgres or Redis runs in the cluster."""
    objects = render("prod")
    hpa = one(objects, "HorizontalPodAutoscaler", "switchboard")
    assert hpa["spec"]["minReplicas"] >= 3 and hpa["spec"]["maxReplicas"] > 3
    gw = gateway(objects)
    assert "replicas" not in gw["spec"]
    resources = containers(gw)[0]["resources"]
    assert resources["requests"] == resources["limits"]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert not {("StatefulSet", "postgres"), ("StatefulSet", "redis")} & kinds
    assert ("ServiceMonitor", "switchboard") in kinds


def test_make_test_tools_installs_kubectl() -> None:
    """The Makefile's test-tools target installs Debian's kubectl when it is missing."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    target = makefile.split("\ntest-tools:", 1)[1].split("\n\n", 1)[0]
    assert "command -v kubectl" in target and "install -y --no-install-recommends kubectl" in target
