"""Rendering deploy/kubernetes with ``kubectl kustomize`` and reading the objects, for
``tests.deploy.test_kubernetes``."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.30"
"""The oldest Kubernetes the manifests are for (matchLabelKeys in topology spread: 1.27+)."""
KUBECTL = shutil.which("kubectl")
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
"""Kinds outside kubernetes-validate's schemas, checked by ``check_service_monitor``."""
WORKLOADS = ("Deployment", "StatefulSet", "Job")

Obj = dict[str, Any]


def kustomize(path: Path) -> list[Obj]:
    """The objects ``kubectl kustomize path`` renders; the test is skipped without kubectl."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (make test-tools installs the kubectl package)")
    done = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@functools.cache
def _rendered(overlay: str) -> str:
    return json.dumps(kustomize(K8S / "overlays" / overlay))


def render(overlay: str) -> list[Obj]:
    """The overlay's objects (rendered once per session; a fresh copy each call)."""
    objects: list[Obj] = json.loads(_rendered(overlay))
    return objects


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def gateway(objects: list[Obj]) -> Obj:
    return one(objects, "Deployment", "switchboard")


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def secret_keys_documented() -> set[tuple[str, str]]:
    """(Secret, key) pairs the README's "Secret keys" table says the operator provides."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    kubernetes = text.split("## Running on Kubernetes", 1)[1]
    section = kubernetes.split("### Secret keys", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| `([A-Za-z0-9_.-]+)` \|", section, re.MULTILINE)
    assert rows, "README.md (Running on Kubernetes): no rows in the Secret keys table"
    return set(rows)


def secret_refs(objects: list[Obj]) -> Iterator[tuple[str, str, str]]:
    """(where, Secret, key) for every Secret key a rendered object reads."""
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in WORKLOADS:
            for c in containers(obj):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        yield f"{where} {c['name']} {e['name']}", ref["name"], ref["key"]
                assert "envFrom" not in c, f"{where}: name every key (no envFrom)"
            for v in pod_spec(obj).get("volumes", []):
                assert "secret" not in v, f"{where}: Secret volumes are not expected"
        if obj["kind"] == "ServiceMonitor":
            for ep in obj["spec"]["endpoints"]:
                creds = ep.get("authorization", {}).get("credentials")
                if creds:
                    yield f"{where} authorization", creds["name"], creds["key"]
