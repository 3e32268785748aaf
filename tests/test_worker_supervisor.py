"""The workers of `switchboard serve --workers N` stop with their supervisor: one killed with
SIGKILL (or by the OOM killer) left them serving on its port, so a restart could not listen."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.servers import free_port, wait_ready
from tests.test_cli import SWITCHBOARD, clean_env


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4: the parent's pid
                found.add(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [SWITCHBOARD, "serve", "--port", str(port), "--workers", "2"]
    env = {**clean_env(), "SWITCHBOARD_SPOOL_DIR": str(tmp_path / "spool")}
    supervisor = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        wait_ready(url, supervisor, timeout_s=60)
        deadline = time.monotonic() + 30
        while len(workers := {p for p in _children(supervisor.pid)
                              if "from multiprocessing" in
                              Path(f"/proc/{p}/cmdline").read_text(errors="replace")}) < 2:
            assert time.monotonic() < deadline, workers
            time.sleep(0.1)
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(timeout=30)
        deadline = time.monotonic() + 60
        while any(_alive(p) for p in workers):
            assert time.monotonic() < deadline, "the workers went on serving"
            time.sleep(0.1)
        again = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            wait_ready(url, again, timeout_s=60)  # the port is free again
        finally:
            again.terminate()
            again.wait(timeout=60)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
