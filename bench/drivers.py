"""Load drivers, run as child processes on the load core: ``wrk`` (closed loop, C, so the load
costs the shared core little) and ``bench.loadgen`` (open loop, first-byte timing, and the
closed-loop fallback when wrk is missing). Each returns a ``LoadReport``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import MARKER
from bench.procs import ROOT, pinned
from bench.stats import LoadReport

# wrk's Lua hooks: POST the body, count non-2xx answers per thread, print the summary as JSON.
_LUA = """\
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
%(headers)s
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then bad = bad + 1 end
end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"bad_status":%%d,"connect":%%d,"read":%%d,' ..
    '"write":%%d,"timeout":%%d,"p50":%%d,"p90":%%d,"p99":%%d,"p999":%%d,"max":%%d,' ..
    '"mean":%%f}\\n', summary.requests, summary.duration, b, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


class DriverFailed(RuntimeError):
    """A load driver exited badly or printed no result."""


@dataclass(frozen=True)
class Request:
    """One kind of request to send: URL, JSON body and extra headers."""

    url: str
    body: str
    headers: dict[str, str]


def find_wrk(*, install: bool) -> str | None:
    """The path of ``wrk``; when missing and ``install`` (and we are root), apt-get it first."""
    found = shutil.which("wrk")
    if found or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("bench: wrk not found; installing it with apt-get", file=sys.stderr)
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        try:
            subprocess.run(argv, check=True, timeout=300, stdout=subprocess.DEVNULL,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"bench: could not install wrk ({exc}); using the Python generator",
                  file=sys.stderr)
            return None
    return shutil.which("wrk")


def _lua_script(request: Request, directory: Path) -> Path:
    lines = [f'wrk.headers["{name}"] = "{value}"' for name, value in request.headers.items()]
    path = directory / "bench.lua"
    path.write_text(_LUA % {"body": request.body, "headers": "\n".join(lines)})
    return path


def _run(argv: list[str], *, timeout_s: float, marker: str) -> dict[str, Any]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        raise DriverFailed(f"{argv[0:4]} ran past {timeout_s:.0f} s") from exc
    for line in done.stdout.splitlines():
        if line.startswith(marker):
            data: dict[str, Any] = json.loads(line[len(marker):])
            return data
    raise DriverFailed(f"{' '.join(argv[:6])}... exited {done.returncode} without a result:\n"
                       f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def wrk(wrk_path: str, request: Request, *, connections: int, duration_s: float, core: int | None,
        scratch: Path) -> LoadReport:
    """A closed-loop wrk run: one thread, ``duration_s`` rounded to whole seconds (wrk's unit)."""
    script = _lua_script(request, scratch)
    argv = pinned(core, [wrk_path, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
                         "--timeout", "10s", "-s", str(script), request.url])
    raw = _run(argv, timeout_s=duration_s + 60, marker="WRKJSON ")
    detail = {k: int(raw[k]) for k in ("bad_status", "connect", "read", "write", "timeout")}
    latency = {k: round(float(raw[k]) / 1000.0, 3)
               for k in ("p50", "p90", "p99", "p999", "max", "mean")}
    errors = sum(detail.values())
    return LoadReport(tool="wrk", mode="closed", requests=int(raw["requests"]),
                      errors=errors, duration_s=int(raw["duration_us"]) / 1e6,
                      latency_ms=latency, errors_detail={k: v for k, v in detail.items() if v})


def loadgen(request: Request, *, mode: str, core: int | None, duration_s: float,
            rate: float = 0.0, connections: int = 1, requests: int = 0,
            keys_file: Path | None = None) -> LoadReport:
    """A ``bench.loadgen`` run (see that module for the modes; ``keys_file``: bearer keys
    used in turn)."""
    argv = [sys.executable, "-m", "bench.loadgen", "--mode", mode, "--url", request.url,
            "--body", request.body, "--duration", str(duration_s), "--rate", str(rate),
            "--connections", str(connections), "--requests", str(requests)]
    if keys_file is not None:
        argv += ["--keys-file", str(keys_file)]
    for name, value in request.headers.items():
        argv += ["--header", f"{name}: {value}"]
    raw = _run(pinned(core, argv), timeout_s=duration_s + 90, marker=MARKER)
    return LoadReport.from_dict(raw)
