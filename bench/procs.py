"""Child processes of a benchmark run, and what the run reads from /proc about them.

Every process is started in its own session (so its whole process group can be killed), pinned to
one core with ``taskset``, with its output in a log file (a pipe nobody reads would block it once
full), and is stopped when the ``Services`` context exits, however the run ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
_HZ = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


class ServiceFailed(RuntimeError):
    """A child process died, or never came up; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def can_pin() -> bool:
    """Whether cores 0 and 1 are both available to pin the server and the load apart."""
    return shutil.which("taskset") is not None and {0, 1} <= os.sched_getaffinity(0)


def pinned(core: int | None, argv: Sequence[str]) -> list[str]:
    """``argv`` under ``taskset -c core`` (unchanged when ``core`` is None)."""
    return list(argv) if core is None else ["taskset", "-c", str(core), *argv]


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ("" when it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Service:
    """One started child process that listens on ``port``."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        """The process id of the started command (after ``taskset`` has exec'd it)."""
        return self.proc.pid

    def check_alive(self) -> None:
        """Raise ``ServiceFailed`` with the log's tail when the process has exited."""
        code = self.proc.poll()
        if code is not None:
            raise ServiceFailed(f"{self.name} exited with status {code}; its log "
                                f"({self.log_path}) ends:\n{log_tail(self.log_path)}")

    def wait_listening(self, timeout_s: float) -> None:
        """Wait until the port accepts connections; ``ServiceFailed`` on death or timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.1)
        raise ServiceFailed(f"{self.name} did not listen on port {self.port} within "
                            f"{timeout_s:.0f} s; its log ({self.log_path}) ends:\n"
                            f"{log_tail(self.log_path)}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there after ``timeout_s``."""
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait_s)
        # The leader may be gone while others in its group live on: make sure they do not.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the bench dies, even by SIGKILL
    (the setting survives ``taskset``'s exec), so that no server outlives a killed run."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Services:
    """Starts child services and stops every one still running when the context exits."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._running: list[Service] = []

    def start(self, name: str, argv: Sequence[str], *, port: int, core: int | None,
              env: Mapping[str, str] | None = None, cwd: Path | None = None,
              ready_timeout_s: float = 30.0) -> Service:
        """Start ``argv`` pinned to ``core`` and wait until ``port`` accepts connections."""
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(pinned(core, argv), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=dict(env or os.environ),
                                    cwd=cwd or ROOT, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        service = Service(name, proc, port, log_path)
        self._running.append(service)
        service.wait_listening(ready_timeout_s)
        return service

    def stop(self, service: Service) -> None:
        """Stop one service now."""
        service.stop()
        if service in self._running:
            self._running.remove(service)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for service in reversed(self._running):
            service.stop()
        self._running.clear()


# ---- /proc -------------------------------------------------------------------------------------

def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, from /proc/PID/status."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, parents before children."""
    tree = _children()
    out, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        out.append(current)
        queue.extend(sorted(tree.get(current, [])))
    return out


def _listening_inode(port: int) -> str | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rpartition(":")[2], 16) == port:
                    return cols[9]
    return None


def _holds(pid: int, target: str) -> bool:
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == target:
                    return True
    return False


def worker_pid(root: int, port: int) -> int:
    """The process that serves requests on ``port``: the deepest process in ``root``'s tree that
    holds the listening socket (``root`` itself when uvicorn runs in-process, as with one
    worker; a spawned worker when there are several)."""
    tree = descendants(root)
    inode = _listening_inode(port)
    holders = [pid for pid in tree if inode and _holds(pid, f"socket:[{inode}]")]
    return holders[-1] if holders else tree[-1]


@dataclass(frozen=True)
class CpuSample:
    """CPU counters at one instant (jiffies): (busy, total) per CPU, all CPUs' user and system
    time together, and the part of it used by this run's processes."""

    per_cpu: dict[int, tuple[int, int]]
    user_system: int
    ours: int
    steal: dict[int, int]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user and system, all threads) used so far by ``pid`` and its live
    descendants."""
    return _tree_ticks(pid) / _HZ


def _tree_ticks(root: int) -> int:
    total = 0
    for pid in descendants(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def _own_ticks() -> int:
    """CPU time of this process, its live descendants and its reaped children, in jiffies.

    A child alive at one reading and reaped by the next moves from /proc to the rusage of
    reaped children whole, so the difference between two readings stays right.
    """
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return _tree_ticks(os.getpid()) + round((reaped.ru_utime + reaped.ru_stime) * _HZ)


def cpu_sample() -> CpuSample:
    """Read the counters (from /proc/stat and this run's processes)."""
    per_cpu: dict[int, tuple[int, int]] = {}
    steal: dict[int, int] = {}
    user_system = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(f) for f in fields[:8]]
            cpu = int(name[3:])
            per_cpu[cpu] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
            steal[cpu] = ticks[7]
            user_system += ticks[0] + ticks[1] + ticks[2]
    return CpuSample(per_cpu, user_system, _own_ticks(), steal)


def cpu_usage(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """Busy percentage per CPU between two samples ("cpu0", "cpu1"...); "others": the CPU time
    of processes outside this run, in percent of one core (a sign of a shared machine);
    "steal": the most time the hypervisor took from one virtual CPU, in percent."""
    out: dict[str, float] = {}
    wall = 1
    steal = 0.0
    for cpu, (busy, total) in sorted(after.per_cpu.items()):
        busy0, total0 = before.per_cpu.get(cpu, (0, 0))
        wall = max(total - total0, 1)
        out[f"cpu{cpu}"] = round(100.0 * (busy - busy0) / wall, 1)
        steal = max(steal, 100.0 * (after.steal[cpu] - before.steal.get(cpu, 0)) / wall)
    out["steal"] = round(steal, 1)
    others = (after.user_system - before.user_system) - (after.ours - before.ours)
    out["others"] = round(max(0.0, 100.0 * others / wall), 1)
    return out
