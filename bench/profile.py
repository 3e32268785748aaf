"""Where the gateway's time goes: py-spy samples of its worker under load, summarised.

py-spy reads the target's memory from outside (``--nonblocking``: without stopping it), so the
profile costs the profiled core little; it runs on the load core. The raw collapsed stacks are kept
for flame-graph tools; the summary ranks functions by self time and by inclusive time, and
packages by self time.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import ROOT, VENV_BIN, pinned

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")
_SITE = re.compile(r"(?:site|dist)-packages/([^/]+)")
_STDLIB = re.compile(r"python3\.\d+/([^/]+?)(?:\.py)?(?:/|$)")


@dataclass
class Profile:
    """A summarised profile of one server: percentages of samples by function and by package
    (every package; the top functions)."""

    name: str
    samples: int
    rps_while_profiled: float
    self_by_function: list[tuple[str, float]] = field(default_factory=list)
    inclusive_by_function: list[tuple[str, float]] = field(default_factory=list)
    self_by_package: list[tuple[str, float]] = field(default_factory=list)
    raw_path: str = ""
    summary_path: str = ""


def find_pyspy(*, install: bool) -> str | None:
    """The py-spy executable; pip-installed into the venv first when missing and ``install``."""
    found = shutil.which("py-spy") or (str(VENV_BIN / "py-spy")
                                       if (VENV_BIN / "py-spy").exists() else None)
    if found or not install:
        return found
    print("bench: installing py-spy into the venv", file=sys.stderr, flush=True)
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        subprocess.run([str(VENV_BIN / "python"), "-m", "pip", "install", "-q", "py-spy"],
                       check=True, timeout=300)
    return str(VENV_BIN / "py-spy") if (VENV_BIN / "py-spy").exists() else None


@contextlib.contextmanager
def record(spy: str, *, pid: int, seconds: int, output: Path, core: int | None) -> Iterator[None]:
    """Sample ``pid`` for ``seconds`` while the body runs (the body should outlast it)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = pinned(core, [spy, "record", "--pid", str(pid), "--duration", str(seconds),
                         "--rate", "200", "--nonblocking", "--format", "raw",
                         "--output", str(output)])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
        proc.wait(timeout=seconds + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def package_of(path: str) -> str:
    """A coarse owner for a source path: ``app.gateway``, ``starlette``, ``asyncio``..."""
    path = path.removeprefix(f"{ROOT}/")
    if path.startswith("app/"):
        tail = path.removeprefix("app/")
        return "app." + tail.removesuffix(".py").replace("/", ".")
    site = _SITE.search(path) or _STDLIB.search(path)
    if site:  # an absolute path
        return site.group(1).removesuffix(".py")
    # py-spy shortens paths on sys.path: "uvicorn/protocols/http/httptools_impl.py", "uuid.py"
    return path.split("/", 1)[0].removesuffix(".py") or path


def _frame(text: str) -> tuple[str, str]:
    match = _FRAME.match(text.strip())
    if match is None:
        return text.strip(), ""
    return match.group("func"), match.group("file")


def _shorten(path: str) -> str:
    for marker in ("site-packages/", "dist-packages/", f"{ROOT}/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def summarize(raw: Path, *, name: str, rps: float, summary_path: Path, top: int = 25) -> Profile:
    """Rank functions and packages in py-spy's raw output; write a readable summary too."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";") if f.strip()]
        labels = [f"{func} ({_shorten(path)})" for func, path in frames]
        own[labels[-1]] += count
        packages[package_of(frames[-1][1])] += count
        for label in set(labels):
            inclusive[label] += count

    def ranked(counter: Counter[str], n: int | None = top) -> list[tuple[str, float]]:
        """The ``n`` largest counts as percentages of all samples."""
        return [(key, round(100.0 * c / max(total, 1), 1)) for key, c in counter.most_common(n)]

    result = Profile(name=name, samples=total, rps_while_profiled=round(rps, 1),
                     self_by_function=ranked(own), inclusive_by_function=ranked(inclusive),
                     self_by_package=ranked(packages, None), raw_path=str(raw),
                     summary_path=str(summary_path))
    summary_path.write_text(render(result))
    return result


def render(result: Profile) -> str:
    """The profile as text: three ranked lists in percent of samples."""
    out = [f"py-spy profile of the {result.name} under load: {result.samples} samples at "
           f"{result.rps_while_profiled:.0f} req/s (raw stacks: {result.raw_path})"]
    for title, rows in (("self time by package", result.self_by_package),
                        ("self time by function", result.self_by_function),
                        ("inclusive time by function", result.inclusive_by_function)):
        out += ["", f"{title}:"] + [f"  {pct:5.1f}%  {name}" for name, pct in rows]
    return "\n".join(out) + "\n"


def compare(profiles: list[Profile], *, limit_pct: float = 0.5) -> str:
    """CPU per request by package, side by side: share of samples times 1/throughput (the
    server's core is saturated while profiled, so that is its CPU time per request)."""
    names = [p.name for p in profiles]
    cost = [{pkg: pct / 100.0 * 1e6 / max(p.rps_while_profiled, 1e-9)
             for pkg, pct in p.self_by_package} for p in profiles]
    packages = sorted({k for c in cost for k in c}, key=lambda k: -max(c.get(k, 0) for c in cost))
    lines = ["CPU per request by package (us, self time; a saturated core assumed)",
             f"  {'package':<34}" + "".join(f"{n:>12}" for n in names)]
    for pkg in packages:
        if max(c.get(pkg, 0.0) for c in cost) * 100 / max(sum(cost[0].values()), 1) >= limit_pct:
            lines.append(f"  {pkg:<34}" + "".join(f"{c.get(pkg, 0.0):>12.0f}" for c in cost))
    lines.append(f"  {'total':<34}" + "".join(f"{sum(c.values()):>12.0f}" for c in cost))
    return "\n".join(lines) + "\n"
