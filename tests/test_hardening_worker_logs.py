"""Every process of `switchboard serve --workers N` logs `time level logger: message` (issue 8
item 20): the logging config reaches uvicorn's worker processes, not only the parent."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx

from tests.servers import free_port, wait_ready
from tests.test_cli import SWITCHBOARD, clean_env

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                  r"[a-z_][\w.]*: \S")
STARTED = re.compile(r" uvicorn\.error: Started server process \[(\d+)\]$")


def test_workers_log_time_level_and_logger(tmp_path: Path) -> None:
    """With --workers 2, each worker's lines (uvicorn's and the gateway's) carry time, level
    and logger name, as the parent's do."""
    port = free_port()
    log_file = tmp_path / "stderr.log"
    with log_file.open("wb") as stderr:
        proc = subprocess.Popen([SWITCHBOARD, "serve", "--port", str(port), "--workers", "2"],
                                cwd=tmp_path, env={**clean_env(), "PYTHONUNBUFFERED": "1"},
                                stdout=subprocess.DEVNULL, stderr=stderr)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc, timeout_s=60)
            assert httpx.get(url + "/healthz").status_code == 200
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    lines = [ln for ln in log_file.read_text().splitlines() if ln.strip()]
    # The one line that is not a log record: the command's own banner, printed before logging.
    banner = [ln for ln in lines if ln.startswith("switchboard: serving ")]
    assert len(banner) == 1
    records = [ln for ln in lines if ln not in banner]
    assert records and all(LINE.match(ln) for ln in records), "\n".join(records)
    workers = {m.group(1) for ln in records if (m := STARTED.search(ln))}
    assert len(workers) == 2, records
    # The gateway's own logger, from inside each worker (no master key: a warning each).
    unauthenticated = [ln for ln in records if " WARNING switchboard: no SWITCHBOARD_MASTER_KEY"
                       in ln]
    assert len(unauthenticated) == 2, records
