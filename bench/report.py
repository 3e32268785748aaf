"""The run's results: the targets checked, the side-by-side table, the JSON document."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.options import Options
from bench.phases import MemoryResult
from bench.procs import ROOT
from bench.profile import Profile
from bench.stats import LoadReport

# CPU used by processes outside the run (percent of one core) above which numbers are suspect.
QUIET_PCT = 10.0
# Time the hypervisor took from a virtual CPU (percent) above which numbers are suspect.
STEAL_PCT = 5.0
_PACKAGES = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "aiohttp", "pydantic")


@dataclass
class Measurements:
    """Everything one run measured, by phase and then by path (gateway/reference/direct)."""

    throughput: dict[str, LoadReport] = field(default_factory=dict)
    rounds: dict[str, list[LoadReport]] = field(default_factory=dict)
    open_loop: dict[str, LoadReport] = field(default_factory=dict)
    ttft: dict[str, LoadReport] = field(default_factory=dict)
    memory: MemoryResult | None = None
    profiles: list[Profile] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """One target from the brief: the measured value, the bound, and whether it is met."""

    name: str
    value: float
    bound: float
    unit: str
    at_least: bool = False

    @property
    def met(self) -> bool:
        """Whether the value is on the right side of the bound."""
        return self.value >= self.bound if self.at_least else self.value <= self.bound


def added(m: dict[str, LoadReport], key: str) -> float:
    """Gateway minus direct for one latency statistic, in ms."""
    return round(m["gateway"].latency_ms[key] - m["direct"].latency_ms[key], 3)


def cpu_ratio(m: Measurements) -> float | None:
    """Reference CPU per request over the gateway's, in percent (medians over the rounds): the
    throughput ratio the servers' own CPU time implies, steadier on a shared machine."""
    def median(path: str) -> float:
        values = sorted(r.server_cpu_us or 0.0 for r in m.rounds.get(path, []))
        return values[(len(values) - 1) // 2] if values else 0.0

    gateway, reference = median("gateway"), median("reference")
    return round(100.0 * reference / gateway, 1) if gateway and reference else None


def targets(m: Measurements) -> list[Target]:
    """The targets the measurements allow checking."""
    out: list[Target] = []
    if {"gateway", "reference"} <= m.throughput.keys():
        ratio = m.throughput["gateway"].rps / max(m.throughput["reference"].rps, 1e-9)
        out.append(Target("throughput vs reference", round(100 * ratio, 1), 70.0, "%", True))
    if {"gateway", "direct"} <= m.open_loop.keys():
        out.append(Target("added latency p99 (open loop)", added(m.open_loop, "p99"), 5.0, "ms"))
    if {"gateway", "direct"} <= m.ttft.keys():
        out.append(Target("added time to first byte p50", added(m.ttft, "p50"), 2.0, "ms"))
    if m.memory is not None:
        out.append(Target("RSS growth", round(m.memory.growth_pct, 2), 10.0, "%"))
    return out


def disturbed(m: Measurements) -> list[str]:
    """The phases during which processes outside the run used more than ``QUIET_PCT`` of a
    core, or the hypervisor stole more than ``STEAL_PCT`` of one."""
    out = []
    groups = [(f"throughput round {i + 1}", {p: r[i] for p, r in m.rounds.items() if i < len(r)})
              for i in range(max((len(r) for r in m.rounds.values()), default=0))]
    groups += [("open loop", m.open_loop), ("first byte", m.ttft)]
    for phase, group in groups:
        for path, r in group.items():
            cpu = r.cpu_busy_pct or {}
            if cpu.get("others", 0.0) > QUIET_PCT or cpu.get("steal", 0.0) > STEAL_PCT:
                out.append(f"{phase}/{path}")
    return out


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def meta(opts: Options, *, tool: str, pinned: bool) -> dict[str, Any]:
    """When, where and on what code the run happened."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "machine": {"cpu": _cpu_model(), "cpus": os.cpu_count(), "memory_gib": _mem_gib(),
                    "kernel": platform.release(), "python": platform.python_version()},
        "pinned": pinned, "closed_loop_tool": tool, "packages": versions,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
    }


def document(m: Measurements, info: dict[str, Any]) -> dict[str, Any]:
    """The JSON document written to ``--output``."""
    def reports(group: dict[str, LoadReport]) -> dict[str, Any]:
        """A group of reports as JSON-ready dicts."""
        return {path: r.to_dict() for path, r in group.items()}

    doc: dict[str, Any] = {"meta": info, "throughput": reports(m.throughput),
                           "throughput_rounds": {path: [r.to_dict() for r in rounds]
                                                 for path, rounds in m.rounds.items()},
                           "open_loop": reports(m.open_loop), "ttft": reports(m.ttft)}
    for name, group in (("open_loop", m.open_loop), ("ttft", m.ttft)):
        if {"gateway", "direct"} <= group.keys():
            doc[name]["added_ms"] = {k: added(group, k) for k in ("p50", "p99")}
        if {"gateway", "reference"} <= group.keys():
            doc[name]["added_vs_reference_ms"] = {
                k: round(group["gateway"].latency_ms[k] - group["reference"].latency_ms[k], 3)
                for k in ("p50", "p99")}
    if m.memory is not None:
        doc["memory"] = {**asdict(m.memory), "growth_pct": round(m.memory.growth_pct, 2)}
    if m.profiles:
        doc["profiles"] = [asdict(p) for p in m.profiles]
    doc["targets"] = [{**asdict(t), "met": t.met} for t in targets(m)]
    doc["disturbed_phases"] = disturbed(m)
    doc["throughput_cpu_ratio_pct"] = cpu_ratio(m)
    return doc


def write(doc: dict[str, Any], path: Path) -> None:
    """Write the JSON document (creating its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
