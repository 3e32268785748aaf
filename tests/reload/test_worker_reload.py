"""``POST /admin/config/reload`` to ``switchboard serve --workers N`` with polling off
(``SWITCHBOARD_CONFIG_POLL_S=0``): the worker that takes the request tells its siblings, and
every worker serves the new version; no child of the supervisor ends (the resource tracker is
not signalled). Before, only the worker that took the request reloaded, and the others served
the old version for good."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.reload.test_live_config import (
    ADMIN,
    Gateways,
    _children,
    answer_version,
    config,
    gateways,  # noqa: F401 - the fixture
    postgres,  # noqa: F401 - the fixture
    version_of,
    write,
)


def test_the_endpoint_reloads_every_worker_when_polling_is_off(gateways: Gateways,  # noqa: F811
                                                               tmp_path: Path) -> None:
    url = gateways.start("--workers", "2", poll_s=0)
    supervisor = gateways.procs[0].pid
    deadline = time.monotonic() + 30  # both workers started (their handlers installed)
    while gateways.logs().count("Application startup complete") < 2:
        assert time.monotonic() < deadline, gateways.logs()
        time.sleep(0.1)
    before = _children(supervisor)
    assert sum("spawn_main" in c for c in before.values()) == 2, before
    alpha = version_of(config("alpha"), tmp_path)
    assert {answer_version(url) for _ in range(10)} == {alpha}

    beta = version_of(config("beta"), tmp_path)
    write(gateways.file, config("beta"))
    reloaded = httpx.post(f"{url}/admin/config/reload", headers=ADMIN, timeout=30)
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["changed"] is True and reloaded.json()["version"] == beta

    deadline = time.monotonic() + 15
    while (seen := {answer_version(url) for _ in range(20)}) != {beta}:
        assert time.monotonic() < deadline, f"still serving {seen}: {gateways.logs()}"
        time.sleep(0.2)
    logs = gateways.logs()
    assert "told 1 other worker(s) to reload" in logs, logs
    assert f" -> {beta} (another worker's reload)" in logs, logs
    assert _children(supervisor) == before
