"""One benchmark run from start to end: servers up, phases in order, table and JSON out.

1. closed-loop throughput, in rounds that alternate the reference forwarder and the gateway
   (both up, one under load at a time);
2. open-loop latency at a fixed rate: reference, gateway, and the simulator direct (the baseline
   "added latency" is measured against); with ``--profile``, py-spy profiles of both servers;
3. time to the first streamed byte: direct, via the reference, via the gateway;
4. a fresh gateway for the memory phase.

Every process started is stopped when the run ends, whichever way it ends.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from bench import drivers, phases, profile, report, table
from bench.drivers import Request
from bench.options import Options, parse_args
from bench.procs import Service, ServiceFailed, Services, can_pin, cpu_sample, cpu_usage
from bench.servers import (
    CHAT_BODY,
    STREAM_BODY,
    Bench,
    BenchError,
    start_forwarder,
    start_gateway,
    start_simulator,
    wait_for_simulator,
)

# Exit statuses: a target missed (only with --strict), the run itself failed.
EXIT_MISSED, EXIT_FAILED = 3, 1


def measure_throughput(b: Bench, m: report.Measurements, servers: dict[str, Service],
                       targets: dict[str, Request]) -> None:
    """Closed-loop rounds, the servers taking turns (machine drift hits both alike); each
    server's result is its median round."""
    for i in range(b.opts.rounds):
        for path, request in targets.items():
            print(f"throughput, round {i + 1} of {b.opts.rounds}: {path}", flush=True)
            result = phases.throughput(b, servers[path], request, path)
            m.rounds.setdefault(path, []).append(result)
    for path, rounds in m.rounds.items():
        m.throughput[path] = sorted(rounds, key=lambda r: r.rps)[(len(rounds) - 1) // 2]


def measure_chat(b: Bench, m: report.Measurements, fast: Service, slow: Service) -> Service:
    """Throughput, then latency at the fixed rate (and the direct baseline), then profiles:
    the reference and the gateway both up, one under load at a time. Returns the gateway."""
    reference = start_forwarder(b, fast)
    gateway = start_gateway(b, fast, slow)
    try:
        servers = {"reference": reference, "gateway": gateway}
        targets = {path: b.request(s.port, CHAT_BODY) for path, s in servers.items()}
        measure_throughput(b, m, servers, targets)
        targets["direct"] = b.request(fast.port, CHAT_BODY)
        for path, request in targets.items():
            print(f"open loop at {b.opts.rate:g} req/s: {path}", flush=True)
            m.open_loop[path] = phases.open_loop(b, request, path)
        if b.opts.profile:
            for path, server in servers.items():
                print(f"profiling under load with py-spy: {path}", flush=True)
                found = phases.profiled(b, server, targets[path], path)
                m.profiles += [found] if found is not None else []
    except BaseException:
        b.services.stop(gateway)
        raise
    finally:
        b.services.stop(reference)
    return gateway


def measure_first_byte(b: Bench, m: report.Measurements, gateway: Service,
                       slow: Service) -> None:
    """Time to the first streamed byte: direct, via the reference, via the gateway."""
    reference = start_forwarder(b, slow, name="reference-ttft")
    try:
        targets = {"direct": slow.port, "reference": reference.port, "gateway": gateway.port}
        for path, port in targets.items():
            print(f"first streamed byte: {path}", flush=True)
            m.ttft[path] = phases.first_byte(b, b.request(port, STREAM_BODY), path)
    finally:
        b.services.stop(reference)


def run(b: Bench) -> report.Measurements:
    """All phases, in order."""
    m = report.Measurements()
    wait_for_simulator(b.opts.wait_simulator_s)
    fast = start_simulator(b, "simulator", ttft_ms=0)
    slow = start_simulator(b, "simulator-ttft", ttft_ms=b.opts.ttft_ms)
    gateway = measure_chat(b, m, fast, slow)
    try:
        measure_first_byte(b, m, gateway, slow)
    finally:
        b.services.stop(gateway)
    if not b.opts.skip_memory:
        print(f"memory over {b.opts.memory_requests:,} requests: a fresh gateway", flush=True)
        m.memory = phases.memory(b, fast, slow, rps_hint=m.throughput["gateway"].rps)
    return m


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def background_load(seconds: float = 1.0) -> dict[str, float]:
    """How busy each core is before the run starts anything (others' work skews the numbers)."""
    before = cpu_sample()
    time.sleep(seconds)
    busy = cpu_usage(before, cpu_sample())
    if busy["others"] > report.QUIET_PCT:
        print(f"bench: WARNING: the machine is not quiet before the run ({busy}); other "
              "processes will skew these numbers", file=sys.stderr, flush=True)
    return busy


def _bench(opts: Options, services: Services) -> Bench:
    pin = can_pin()
    if pin:  # keep this script's own work off the server's core
        os.sched_setaffinity(0, {1})
    else:
        print("bench: cannot pin to cores 0 and 1; numbers will be noisier", file=sys.stderr)
    return Bench(opts=opts, services=services, run_dir=services.log_dir,
                 server_core=0 if pin else None, load_core=1 if pin else None,
                 wrk=None if opts.python_load else drivers.find_wrk(install=opts.install_wrk),
                 key="sk-bench-" + secrets.token_hex(16))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table, write the JSON; the exit status says how it went."""
    opts = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    run_dir = opts.output.parent / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    with Services(run_dir) as services:
        b = _bench(opts, services)
        info = report.meta(opts, tool="wrk" if b.wrk else "python", pinned=b.load_core is not None)
        info["background_busy_pct"] = background_load()
        try:
            m = run(b)
        except (BenchError, ServiceFailed, drivers.DriverFailed) as exc:
            print(f"\nBENCHMARK FAILED: {exc}\n(logs of the servers: {run_dir})", file=sys.stderr)
            return EXIT_FAILED
    doc = report.document(m, info)
    report.write(doc, opts.output)
    print("\n" + table.render(m, info) + "\n")
    for found in m.profiles:
        if found.name == "gateway":
            print(Path(found.summary_path).read_text())
        print(f"profile of the {found.name}: {found.summary_path}")
    if len(m.profiles) > 1:
        print(profile.compare(sorted(m.profiles, key=lambda p: p.name)))
    print(f"results: {opts.output}")
    missed = [t.name for t in report.targets(m) if not t.met]
    return EXIT_MISSED if missed and opts.strict else 0
