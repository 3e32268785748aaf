"""The benchmark's command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from bench.procs import ROOT

RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Options:
    """Everything a run can be told; see ``parse_args`` for the meaning of each."""

    duration_s: float
    warmup_s: float
    connections: int
    rounds: int
    rate: float
    ttft_ms: float
    ttft_requests: int
    ttft_concurrency: int
    memory_requests: int
    skip_memory: bool
    profile: bool
    wait_simulator_s: float
    install_wrk: bool
    python_load: bool
    strict: bool
    output: Path
    gateway_env: tuple[tuple[str, str], ...] = ()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark the Switchboard gateway against a minimal forwarder, on loopback, "
                    "in one run. Results: a table on stdout and bench/results/latest.json.")
    add = parser.add_argument
    add("--duration", type=float, help="seconds per measured phase (default 10; --quick: 3)")
    add("--warmup", type=float, help="seconds of warm-up before throughput (default 3; quick 1)")
    add("--quick", action="store_true",
        help="smoke run: 3 s phases, 1 throughput round, 100 streamed requests, 5000 memory "
             "requests")
    add("--connections", type=int, default=32, help="closed-loop connections (default 32)")
    add("--rounds", type=int,
        help="throughput rounds per server, alternating; the median counts (default 3; quick 1)")
    add("--rate", type=float, default=300.0, help="open-loop requests/s (default 300)")
    add("--ttft-ms", type=float, default=20.0,
        help="the simulator's time to first token for the streaming phase (default 20)")
    add("--ttft-requests", type=int, help="streamed requests per path (default 400; quick 100)")
    add("--ttft-concurrency", type=int, default=2, help="streams in flight (default 2)")
    add("--memory-requests", type=int,
        help="requests for the memory phase (default 100000; --quick: 5000)")
    add("--skip-memory", action="store_true", help="skip the memory phase")
    add("--profile", action="store_true",
        help="also profile the gateway and the reference under load with py-spy (installed "
             "into the venv if missing); writes bench/results/profile-*.txt")
    add("--wait-simulator", type=float, default=120.0,
        help="seconds to wait for `switchboard simulate` to exist (default 120)")
    add("--no-install", action="store_true",
        help="never apt-get wrk; fall back to the Python generator when it is missing")
    add("--python-load", action="store_true",
        help="closed loop by the Python generator even when wrk is there (it costs the load "
             "core more, so throughput numbers are lower and not comparable with wrk's)")
    add("--strict", action="store_true", help="exit with status 3 when a target is missed")
    add("--output", type=Path, default=RESULTS / "latest.json", help="where to write the JSON")
    add("--gateway-env", action="append", default=[], metavar="NAME=VALUE",
        help="an environment variable for the gateway (repeatable), e.g. "
             "SWITCHBOARD_CALL_LOG=false; SWITCHBOARD_* variables of this shell are not passed")
    return parser


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse the command line into ``Options`` (``--quick`` changes the defaults only)."""
    args = _parser().parse_args(argv)
    quick = bool(args.quick)

    def pick(value: float | None, normal: float, short: float) -> float:
        """The value given, else the default for a normal or a quick run."""
        return value if value is not None else (short if quick else normal)

    return Options(
        duration_s=pick(args.duration, 10, 3),
        warmup_s=pick(args.warmup, 3, 1),
        connections=args.connections,
        rounds=max(1, int(pick(args.rounds, 3, 1))),
        rate=args.rate,
        ttft_ms=args.ttft_ms,
        ttft_requests=int(pick(args.ttft_requests, 400, 100)),
        ttft_concurrency=args.ttft_concurrency,
        memory_requests=int(pick(args.memory_requests, 100_000, 5_000)),
        skip_memory=args.skip_memory,
        profile=args.profile,
        wait_simulator_s=args.wait_simulator,
        install_wrk=not args.no_install,
        python_load=args.python_load,
        strict=args.strict,
        output=args.output.resolve(),
        gateway_env=tuple(_pair(item) for item in args.gateway_env),
    )


def _pair(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise SystemExit(f"--gateway-env wants NAME=VALUE, not {item!r}")
    return name, value
