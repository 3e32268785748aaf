"""Exposure (issue 8 items 9 and 10): no API reference and no redirects for strangers, and no
gateway started with a placeholder or guessable key."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.config import parse_config
from app.main import create_app
from app.settings import Settings, UnsafeSettings, weak_secret
from tests.api.conftest import MASTER_KEY, ListSink, settings_in, sim_config
from tests.servers import free_port, serve
from tests.test_cli import SWITCHBOARD, clean_env

REPO = Path(__file__).resolve().parents[2]
REFERENCE = ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")
KEYS: list[dict[str, str]] = [{}, {"Authorization": f"Bearer {MASTER_KEY}"},
                              {"Authorization": "Bearer sk-wrong-key-000000000000"}]


def assert_openai_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]


@pytest.fixture
def docs_gateway(tmp_path: Path, simulator: str) -> Iterator[str]:
    """A gateway started with SWITCHBOARD_DOCS on."""
    settings = settings_in(tmp_path).model_copy(update={"docs": True})
    app = create_app(settings, config=parse_config(sim_config(simulator), {}), sink=ListSink(),
                     strict_telemetry=True)
    with serve(app) as url:
        yield url


# ---- item 9: the API reference and redirects


@pytest.mark.parametrize("path", REFERENCE)
@pytest.mark.parametrize("headers", KEYS, ids=["no-key", "master-key", "wrong-key"])
def test_api_reference_is_off_by_default(gateway: Any, path: str,
                                         headers: dict[str, str]) -> None:
    """/docs, /redoc and /openapi.json answer 404 in OpenAI's shape, with or without a key."""
    response = httpx.get(gateway.url + path, headers=headers)
    assert_openai_error(response, 404)
    assert "swagger" not in response.text.lower() and "openapi" not in response.text.lower()


def test_api_reference_is_served_when_turned_on(docs_gateway: str) -> None:
    """With SWITCHBOARD_DOCS the reference lists the routes, the admin ones included."""
    spec = httpx.get(docs_gateway + "/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"] and "/admin/calls" in spec["paths"]
    assert spec["info"]["version"] == importlib.metadata.version("switchboard")
    for path in ("/docs", "/redoc"):
        page = httpx.get(docs_gateway + path)
        assert page.status_code == 200 and "/openapi.json" in page.text


SLASHED = ["/v1/chat/completions/", "/v1/completions/", "/v1/embeddings/", "/v1/models/",
           "/admin/calls/", "/healthz/", "/readyz/", "/metrics/", "/v1/models/chat/"]


@pytest.mark.parametrize("path", SLASHED)
@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1:1", "attacker.test:8443"])
def test_no_trailing_slash_redirects(gateway: Any, path: str, host: str) -> None:
    """A path with a trailing slash is a 404 in OpenAI's shape, never a redirect to a Location
    built from the request's Host, whatever the method and key."""
    with httpx.Client(base_url=gateway.url, follow_redirects=False) as client:
        for method in ("GET", "POST"):
            for headers in KEYS:
                response = client.request(method, path, json={"model": "chat"},
                                          headers={**headers, "Host": host})
                assert "location" not in response.headers, (method, path)
                # 401 where a route takes the rest of the path (/v1/models/{id}) and no key
                assert response.status_code in (401, 404, 405), (method, path,
                                                                  response.status_code)
                assert_openai_error(response, response.status_code)


def test_slashed_model_list_is_not_a_model(gateway: Any) -> None:
    """``/v1/models/`` is no route's path, as the README says of slashed paths: not a lookup of
    a model named '', and the same 404 whatever the method (not a 405 naming GET)."""
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        for headers in KEYS:
            response = gateway.http().request(method, "/v1/models/", headers=headers)
            assert_openai_error(response, 404)
            assert response.json()["error"]["code"] == "unsupported_endpoint", method
            assert "allow" not in response.headers


def test_slashed_model_call_is_not_served(gateway: Any) -> None:
    """The fast lane matches model-call paths exactly: a slashed one is not a call at all."""
    before = len(gateway.sink.records)
    response = gateway.http().post("/v1/chat/completions/", json={
        "model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert_openai_error(response, 404)
    assert len(gateway.sink.records) == before


# ---- item 10: placeholder and weak keys


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        line = line.lstrip("#").strip()
        if re.match(r"^[A-Z_]+=", line):
            key, _, value = line.partition("=")
            values[key] = value
    return values


SECRET_NAMES = re.compile(r"KEY|PASSWORD|TOKEN|SECRET")


def test_every_secret_placeholder_in_env_example_is_refused_as_a_key() -> None:
    """Each secret-looking value shipped in .env.example (commented ones too) is refused."""
    placeholders = {k: v for k, v in env_example().items() if SECRET_NAMES.search(k)}
    assert {"SWITCHBOARD_MASTER_KEY", "SWITCHBOARD_METRICS_KEY", "POSTGRES_PASSWORD",
            "GRAFANA_ADMIN_PASSWORD"} <= set(placeholders)
    for name, value in placeholders.items():
        assert weak_secret(value) is not None, name


@pytest.mark.parametrize("key", [
    "aaaaaaaaaaaaaaaaaaaaaaaa", "abababababababababab", "0123456789abcdefghij",
    "9876543210zyxwvutsrq", "passwordpassword", "P@ssw0rd-P@ssw0rd", "changeme-changeme-1",
    "CHANGE_ME_0123456789xyz", "my-example-key-x7Qz9", "replace-me-with-a-real-key",
    "sk-1111111111111111", "short-key"])
def test_weak_keys_are_refused(key: str) -> None:
    """All one character, runs, well-known words, placeholders and short keys are refused."""
    assert weak_secret(key) is not None
    with pytest.raises(UnsafeSettings) as refused:
        Settings(master_key=SecretStr(key)).check_exposure()
    assert key not in str(refused.value)
    assert "secrets.token_urlsafe" in str(refused.value)


@pytest.mark.parametrize("key", [MASTER_KEY, "sk-Yq2c8Zr0_u4Wm1pXv7Lb3nHs", "3f9a1c7e52b04d86",
                                 "sk-bench-calllog-master-key"])
def test_ordinary_keys_pass(key: str) -> None:
    """Generated keys and the tests' own keys are accepted."""
    assert weak_secret(key) is None
    Settings(master_key=SecretStr(key), metrics_key=SecretStr(key[::-1])).check_exposure()


def test_metrics_key_and_database_password_are_checked_too() -> None:
    """The metrics key, and a placeholder password in the database URL, are refused."""
    with pytest.raises(UnsafeSettings, match="SWITCHBOARD_METRICS_KEY"):
        Settings(master_key=SecretStr(MASTER_KEY),
                 metrics_key=SecretStr(env_example()["SWITCHBOARD_METRICS_KEY"])
                 ).check_exposure()
    password = env_example()["POSTGRES_PASSWORD"]
    for url in (f"postgresql+asyncpg://switchboard:{password}@postgres:5432/switchboard",
                f"postgresql://u:{password}@db/x"):
        with pytest.raises(UnsafeSettings, match="POSTGRES_PASSWORD") as refused:
            Settings(master_key=SecretStr(MASTER_KEY), database_url=url).check_exposure()
        assert password not in str(refused.value)
    Settings(master_key=SecretStr(MASTER_KEY),
             database_url="postgresql://u:Xk29fQp7Lm4s@db/x").check_exposure()


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """``VAR=`` (empty) is the default, not an empty URL or the working directory as the
    spool; an empty master key is no master key, so off loopback the gateway still refuses."""
    for name in ("DATABASE_URL", "REDIS_URL", "MASTER_KEY", "CONFIG", "SPOOL_DIR", "PORT"):
        monkeypatch.setenv(f"SWITCHBOARD_{name}", "")
    settings = Settings()
    assert (settings.database_url, settings.redis_url, settings.master_key, settings.config,
            settings.spool_dir, settings.port) == (
        "sqlite+aiosqlite:///switchboard.db", None, None, None, Path("switchboard-spool"), 8080)
    monkeypatch.setenv("SWITCHBOARD_HOST", "0.0.0.0")
    with pytest.raises(UnsafeSettings, match="without SWITCHBOARD_MASTER_KEY"):
        Settings().check_exposure()


def test_create_app_refuses_a_placeholder_key() -> None:
    """An app is never built with a placeholder key, whoever builds it."""
    settings = Settings(master_key=SecretStr(env_example()["SWITCHBOARD_MASTER_KEY"]))
    with pytest.raises(UnsafeSettings, match="placeholder"):
        create_app(settings, config=parse_config(sim_config("http://127.0.0.1:1"), {}))


@pytest.mark.parametrize("variable", ["SWITCHBOARD_MASTER_KEY", "SWITCHBOARD_METRICS_KEY"])
def test_serve_with_the_env_example_placeholder_exits_with_what_to_do(
        tmp_path: Path, variable: str) -> None:
    """`switchboard serve` with a key copied from .env.example exits 2, says which variable
    and how to generate a key, and never prints the key."""
    values = env_example()
    env = {**clean_env(), "SWITCHBOARD_MASTER_KEY": MASTER_KEY, variable: values[variable]}
    result = subprocess.run([SWITCHBOARD, "serve", "--host", "0.0.0.0", "--port",
                             str(free_port())], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert variable in result.stderr and "placeholder" in result.stderr
    assert "secrets.token_urlsafe(32)" in result.stderr
    assert values[variable] not in result.stdout + result.stderr
