"""The results as a plain-text table, the side-by-side view a developer reads after a run."""

from __future__ import annotations

from typing import Any

from bench.report import (
    QUIET_PCT,
    STEAL_PCT,
    Measurements,
    added,
    cpu_ratio,
    disturbed,
    targets,
)
from bench.stats import LoadReport

_LABEL = 44
_CELL = 12


def _row(label: str, *cells: str) -> str:
    return f"  {label:<{_LABEL - 2}}" + "".join(f"{c:>{_CELL}}" for c in cells)


def _head(title: str, *columns: str) -> str:
    return f"{title:<{_LABEL}}" + "".join(f"{c:>{_CELL}}" for c in columns)


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _throughput(m: Measurements, opts: dict[str, Any]) -> list[str]:
    gw, ref = m.throughput.get("gateway"), m.throughput.get("reference")
    if gw is None or ref is None:
        return []
    title = (f"Max throughput: {opts['connections']} conns, {opts['duration_s']:g} s, median of "
             f"{opts['rounds']}")
    return [
        _head(title, "gateway", "reference", "ratio"),
        _row("requests/s", f"{gw.rps:,.0f}", f"{ref.rps:,.0f}", f"{100 * gw.rps / ref.rps:.1f}%"),
        _row("p50 latency (ms)", _ms(gw.latency_ms["p50"]), _ms(ref.latency_ms["p50"])),
        _row("p99 latency (ms)", _ms(gw.latency_ms["p99"]), _ms(ref.latency_ms["p99"])),
        _row("errors (non-2xx or failed)", str(gw.errors), str(ref.errors)),
        _row("server CPU per request (us)", _us(gw), _us(ref), _cpu_ratio(m)),
        f"  requests/s of each round: gateway {_each(m, 'gateway')}; "
        f"reference {_each(m, 'reference')}",
        _row("CPU busy: server core / load core", _cores(gw), _cores(ref)),
        _row("CPU used by other processes (of one core)", _others(gw), _others(ref)),
        _row("CPU stolen by the hypervisor (worst core)", _steal(gw), _steal(ref)),
    ]


def _us(report: LoadReport) -> str:
    return f"{report.server_cpu_us:.0f}" if report.server_cpu_us else "-"


def _cpu_ratio(m: Measurements) -> str:
    ratio = cpu_ratio(m)
    return f"{ratio:.1f}%" if ratio is not None else ""


def _each(m: Measurements, path: str) -> str:
    return " ".join(f"{r.rps:.0f}" for r in m.rounds.get(path, []))


def _cores(report: LoadReport) -> str:
    busy = report.cpu_busy_pct or {}
    return "/".join(f"{busy[c]:.0f}%" for c in ("cpu0", "cpu1") if c in busy)


def _steal(report: LoadReport) -> str:
    return f"{(report.cpu_busy_pct or {}).get('steal', 0.0):.0f}%"


def _others(report: LoadReport) -> str:
    return f"{(report.cpu_busy_pct or {}).get('others', 0.0):.0f}%"


def _latency_table(title: str, group: dict[str, LoadReport]) -> list[str]:
    """Rows of p50/p90/p99 by path, then gateway minus direct and gateway minus reference."""
    paths = tuple(p for p in ("gateway", "reference", "direct") if p in group)
    extra = ("gw-ref",) if "reference" in group else ()
    lines = [_head(title, *paths, "gw-direct", *extra)]
    for key in ("p50", "p90", "p99"):
        cells = [_ms(group[p].latency_ms[key]) for p in paths]
        if extra:
            cells.append(_ms(group["gateway"].latency_ms[key] - group["reference"].latency_ms[key]))
        lines.append(_row(f"{key} (ms)", *cells[:len(paths)], _ms(added(group, key)),
                          *cells[len(paths):]))
    return lines


def _open_loop(m: Measurements, opts: dict[str, Any]) -> list[str]:
    if not {"gateway", "direct"} <= m.open_loop.keys():
        return []
    title = f"Latency at {opts['rate']:g} req/s: open loop, {opts['duration_s']:g} s"
    lines = _latency_table(title, m.open_loop)
    overhead = m.open_loop["gateway"].overhead_ms
    if overhead:
        lines.append(_row("gateway's x-switchboard-overhead-ms p50/p99",
                          f"{overhead['p50']:.2f}/{overhead['p99']:.2f}"))
    lag = m.open_loop["gateway"].lag_ms
    if lag:
        lines.append(_row("generator send lag p99 (ms, a fidelity check)", _ms(lag["p99"])))
    return lines


def _ttft(m: Measurements, opts: dict[str, Any]) -> list[str]:
    if not {"gateway", "direct"} <= m.ttft.keys():
        return []
    title = (f"First streamed byte: sim TTFT {opts['ttft_ms']:g} ms, "
             f"{opts['ttft_concurrency']} in flight, {m.ttft['gateway'].requests} req")
    return _latency_table(title, m.ttft)


def _memory(m: Measurements) -> list[str]:
    mem = m.memory
    if mem is None or len(mem.samples) < 2:
        return []
    warm, last = mem.samples[1], mem.samples[-1]
    mib = 1024.0
    return [
        _head(f"Memory: gateway worker (pid {mem.pid}), {mem.requests:,} requests", "RSS MiB"),
        _row(f"after the warm-up ({warm['requests']:,.0f} requests)",
             f"{warm['rss_kib'] / mib:.1f}"),
        _row(f"at the end ({last['requests']:,.0f} requests)", f"{last['rss_kib'] / mib:.1f}"),
        _row("growth", f"{mem.growth_pct:+.2f}%"),
        _row("peak (VmHWM)", f"{last['hwm_kib'] / mib:.1f}"),
    ]


def _targets(m: Measurements) -> list[str]:
    lines = [_head("Targets", "measured", "target", "")]
    for t in targets(m):
        bound = f"{'>=' if t.at_least else '<='} {t.bound:g}{t.unit}"
        lines.append(_row(t.name, f"{t.value:g}{t.unit}", bound, "met" if t.met else "MISSED"))
    return lines


def _disturbed(m: Measurements) -> list[str]:
    phases = disturbed(m)
    if not phases:
        return []
    return [f"WARNING: other processes used over {QUIET_PCT:g}% of a core, or the hypervisor "
            f"stole over {STEAL_PCT:g}% of one, during: {', '.join(phases)}.",
            "The machine was shared; rerun those numbers on a quiet one."]


def render(m: Measurements, info: dict[str, Any]) -> str:
    """The whole table, headed by when, where and on what commit it was measured."""
    machine = info["machine"]
    opts = info["options"]
    dirty = " + uncommitted changes" if info["dirty"] else ""
    layout = ("server on core 0; simulator, load and bench on core 1" if info["pinned"]
              else "NOT pinned (fewer than 2 usable cores)")
    settings = " ".join(f"{k}={v}" for k, v in opts.get("gateway_env", ()))
    head = [f"Switchboard benchmark, {info['date']}, commit {info['commit']}{dirty}"
            + (f"; gateway run with {settings}" if settings else ""),
            f"{machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB; {layout}; "
            f"closed loop by {info['closed_loop_tool']}; busy before the run: "
            + ", ".join(f"{k} {v:.0f}%" for k, v in info.get("background_busy_pct", {}).items())]
    sections = [_throughput(m, opts), _open_loop(m, opts), _ttft(m, opts), _memory(m),
                _targets(m), _disturbed(m)]
    return "\n\n".join("\n".join(s) for s in [head, *sections] if s)
