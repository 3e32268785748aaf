"""The Docker assets, checked statically (issue 8 items 10 and 23): pinned images, the
dependency layer before the code, healthchecks and start order, placeholder secrets refused;
and ``switchboard --version``. No image is built or pulled here."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.ops.support import DOCKER, REPO, load_yaml
from tests.test_cli import SWITCHBOARD

# A tag naming one release (major.minor.patch, or major.minor where that is a release, as
# Postgres numbers them; optionally v-prefixed and a variant such as -slim), never `latest` or
# a bare major version that moves under you.
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+(\.\d+)?(-[a-z]+)?$")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(REPO / "docker-compose.yml")
    return data


def dockerfile() -> list[str]:
    """The Dockerfile's instructions, one per item, continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n\s*", " ", text)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]


def image_of(service: dict[str, Any]) -> str:
    """The service's image, the default of a ``${VAR:-default}`` included."""
    image = str(service["image"])
    default = re.fullmatch(r"\$\{\w+:-([^}]+)\}", image)
    return default.group(1) if default else image


def test_every_image_is_pinned_to_a_release() -> None:
    """Base images and every service image name one release."""
    froms = [ln.split()[1] for ln in dockerfile() if ln.startswith("FROM ")]
    assert froms and all(PINNED.match(image) for image in froms), froms
    images = {name: image_of(s) for name, s in compose()["services"].items() if "image" in s}
    assert {"postgres", "redis", "prometheus", "grafana", "vllm"} <= set(images)
    for name, image in images.items():
        if image == "switchboard:local":  # built here from docker/Dockerfile
            continue
        assert PINNED.match(image), f"{name}: {image}"
    env_example = (REPO / ".env.example").read_text(encoding="utf-8")
    assert f"#VLLM_IMAGE={images['vllm']}" in env_example


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    """The build stage copies pyproject.toml alone, installs the dependencies, and only then
    copies app/ and installs the package without dependencies."""
    lines = dockerfile()
    build = lines[:next(i for i, ln in enumerate(lines) if ln.startswith("FROM ") and i > 0)]
    copies = [i for i, ln in enumerate(build) if ln.startswith("COPY ")]
    assert build[copies[0]].split()[1:] == ["pyproject.toml", "./"]
    deps = next(i for i, ln in enumerate(build) if "pip install -r" in ln)
    code = next(i for i, ln in enumerate(build) if re.match(r"COPY app\b", ln))
    package = next(i for i, ln in enumerate(build) if "pip install --no-deps ." in ln)
    assert copies[0] < deps < code < package
    assert all(i == copies[0] or i > deps for i in copies), "only pyproject.toml before deps"
    # setuptools builds the package and reads README.md (readme = ...): copied before install.
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert project["project"]["readme"] == "README.md"
    readme = next(i for i, ln in enumerate(build) if re.match(r"COPY README\.md\b", ln))
    assert deps < readme < package


def test_the_dependency_list_the_image_installs_is_pyprojects() -> None:
    """The command that writes the image's requirements prints [project].dependencies and the
    cloud extras (aws, google, azure): the image serves every provider type."""
    run = next(ln for ln in dockerfile() if "pip install -r" in ln)
    command = run.removeprefix("RUN ").split(" > ")[0]
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-c"]
    printed = subprocess.run([sys.executable, "-c", argv[2]], cwd=REPO, capture_output=True,
                             text=True, check=True, timeout=30).stdout.split()
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    extras = project["project"]["optional-dependencies"]
    assert printed == project["project"]["dependencies"] + [
        d for k in ("aws", "google", "azure") for d in extras[k]]


def test_prometheus_and_grafana_have_healthchecks_and_start_in_order() -> None:
    """Prometheus is healthy on /-/ready, Grafana on /api/health; Grafana waits for a healthy
    Prometheus."""
    services = compose()["services"]
    for name, path in (("prometheus", "http://127.0.0.1:9090/-/ready"),
                       ("grafana", "http://127.0.0.1:3000/api/health")):
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD" and path in check["test"], name
        assert {"interval", "timeout", "retries"} <= set(check), name
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_the_gateway_waits_for_a_healthy_real_vllm_in_the_gpu_profile() -> None:
    """With `--profile gpu` the gateway starts once vLLM answers /health; without the profile
    the dependency is optional (the service is not started)."""
    services = compose()["services"]
    vllm = services["vllm"]
    assert vllm["profiles"] == ["gpu"]
    assert "http://127.0.0.1:8000/health" in " ".join(vllm["healthcheck"]["test"])
    wait = services["gateway"]["depends_on"]["vllm"]
    assert wait == {"condition": "service_healthy", "required": False}
    for needed in ("postgres", "redis", "vllm-sim"):
        assert services["gateway"]["depends_on"][needed]["condition"] == "service_healthy"


def guard(service: str, runs: str) -> str:
    """The service's start script as the shell runs it (compose's ``$$`` is ``$``), with the
    image's own entrypoint replaced by ``echo started``."""
    entry = compose()["services"][service]
    assert entry["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = entry["command"]
    assert isinstance(script, str)
    assert script.rstrip().endswith(f"exec {runs}")
    return script.replace("$$", "$").replace(f"exec {runs}", "exec echo started")


@pytest.mark.parametrize(("service", "variable", "runs"), [
    ("postgres", "POSTGRES_PASSWORD", "docker-entrypoint.sh postgres"),
    ("grafana", "GF_SECURITY_ADMIN_PASSWORD", "/run.sh"),
])
def test_postgres_and_grafana_refuse_the_placeholder_password(service: str, variable: str,
                                                              runs: str) -> None:
    """The shipped placeholder stops the service with a message; a real password starts it."""
    script = guard(service, runs)
    env_example = {k: v for k, _, v in (ln.partition("=") for ln in
                   (REPO / ".env.example").read_text(encoding="utf-8").splitlines()
                   if ln and not ln.startswith("#"))}
    placeholder = env_example["GRAFANA_ADMIN_PASSWORD" if service == "grafana"
                              else "POSTGRES_PASSWORD"]
    for value in (placeholder, "change-me"):
        refused = subprocess.run(["sh", "-c", script], env={variable: value},
                                 capture_output=True, text=True, timeout=30)
        assert refused.returncode == 1 and "placeholder" in refused.stderr
        assert "started" not in refused.stdout and value not in refused.stderr
    started = subprocess.run(["sh", "-c", script], env={variable: "Xk29fQp7Lm4sRt8w"},
                             capture_output=True, text=True, timeout=30)
    assert (started.returncode, started.stdout.strip()) == (0, "started")


def test_switchboard_version_prints_the_package_version() -> None:
    """`switchboard --version` prints the installed package's version."""
    result = subprocess.run([SWITCHBOARD, "--version"], capture_output=True, text=True,
                            timeout=30, check=True)
    assert result.stdout.strip() == f"switchboard {importlib.metadata.version('switchboard')}"


def test_dockerfile_path_is_the_one_compose_builds() -> None:
    """compose builds switchboard:local from docker/Dockerfile (the file checked here)."""
    build = compose()["services"]["gateway"]["build"]
    assert (REPO / build["context"] / build["dockerfile"]).resolve() == \
        (DOCKER / "Dockerfile").resolve()
    assert Path(DOCKER / "Dockerfile").is_file()


def test_the_documented_build_tags_the_image_dev_and_compose_run() -> None:
    """README's and the Dockerfile's `docker build` tag the image that compose and the dev
    overlay run (`kind load docker-image switchboard:local` then finds it), not `:latest`."""
    overlay = load_yaml(REPO / "deploy" / "kubernetes" / "overlays" / "dev" / "kustomization.yaml")
    (image,) = [i for i in overlay["images"] if i["name"] == "switchboard"]
    runs = f"switchboard:{image['newTag']}"
    assert image_of(compose()["services"]["gateway"]) == runs
    for path in (REPO / "README.md", DOCKER / "Dockerfile"):
        builds = re.findall(r"docker build (.*?) \.(?:`|\s|$)", path.read_text(encoding="utf-8"))
        assert builds, path
        for args in builds:
            words = shlex.split(args)
            assert words[words.index("-t") + 1] == runs, (path.name, args)


def test_the_capacity_plan_asks_for_no_redis_cluster() -> None:
    """README says Redis Cluster is not supported: docs/scaling.md never prescribes it, and says
    so wherever it names it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "**Cluster is not supported**" in readme
    plan = (REPO / "docs" / "scaling.md").read_text(encoding="utf-8")
    for line in plan.splitlines():
        if "Cluster" in line:
            assert "does not support it" in line, line
