"""One benchmark run from start to end: servers up, phases in order, table and JSON out.

1. reference forwarder: closed-loop throughput, then open-loop latency at a fixed rate;
2. gateway: the same two; then the simulator direct at the same rate (the baseline "added
   latency" is measured against); then time to first streamed byte via the gateway and direct;
   then, with ``--profile``, a py-spy profile of the gateway under load;
3. a fresh gateway for the memory phase.

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

from bench import drivers, phases, report, table
from bench.options import Options, parse_args
from bench.procs import Service, ServiceFailed, Services, busy_pct, can_pin, cpu_ticks
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
# Busy percentage of a core, before the run, above which the machine is not quiet.
_QUIET_PCT = 10.0


def measure_reference(b: Bench, m: report.Measurements, fast: Service, slow: Service) -> None:
    """The reference forwarder: throughput, latency at the fixed rate, first streamed byte."""
    reference = start_forwarder(b, fast)
    try:
        print("reference: throughput, then open loop", flush=True)
        request = b.request(reference.port, CHAT_BODY)
        m.throughput["reference"] = phases.throughput(b, request, "reference")
        m.open_loop["reference"] = phases.open_loop(b, request, "reference")
    finally:
        b.services.stop(reference)
    reference = start_forwarder(b, slow, name="reference-ttft")
    try:
        print("reference: first streamed byte", flush=True)
        m.ttft["reference"] = phases.first_byte(b, b.request(reference.port, STREAM_BODY),
                                                "reference")
    finally:
        b.services.stop(reference)


def measure_gateway(b: Bench, m: report.Measurements, fast: Service, slow: Service) -> None:
    """The gateway's throughput, latency and first byte, each with its direct baseline."""
    gateway = start_gateway(b, fast, slow)
    try:
        print("gateway: throughput, then open loop", flush=True)
        request = b.request(gateway.port, CHAT_BODY)
        m.throughput["gateway"] = phases.throughput(b, request, "gateway")
        m.open_loop["gateway"] = phases.open_loop(b, request, "gateway")
        print("direct to the simulator: open loop", flush=True)
        m.open_loop["direct"] = phases.open_loop(b, b.request(fast.port, CHAT_BODY), "direct")
        print("first streamed byte: direct, then via the gateway", flush=True)
        m.ttft["direct"] = phases.first_byte(b, b.request(slow.port, STREAM_BODY), "direct")
        m.ttft["gateway"] = phases.first_byte(b, b.request(gateway.port, STREAM_BODY),
                                              "gateway")
        if b.opts.profile:
            print("gateway: profiling under load with py-spy", flush=True)
            m.profile = phases.profiled(b, gateway, request)
    finally:
        b.services.stop(gateway)


def run(b: Bench) -> report.Measurements:
    """All phases; the measurements so far are kept in ``m`` even if a phase fails."""
    m = report.Measurements()
    wait_for_simulator(b.opts.wait_simulator_s)
    fast = start_simulator(b, "simulator", ttft_ms=0)
    slow = start_simulator(b, "simulator-ttft", ttft_ms=b.opts.ttft_ms)
    measure_reference(b, m, fast, slow)
    measure_gateway(b, m, fast, slow)
    if not b.opts.skip_memory:
        print(f"gateway: memory over {b.opts.memory_requests:,} requests", flush=True)
        hint = m.throughput["gateway"].rps
        m.memory = phases.memory(b, fast, slow, rps_hint=hint)
    return m


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def background_load(seconds: float = 1.0) -> dict[str, float]:
    """How busy each core is before the run starts anything (others' work skews the numbers)."""
    before = cpu_ticks()
    time.sleep(seconds)
    busy = busy_pct(before, cpu_ticks())
    if max(busy.values(), default=0.0) > _QUIET_PCT:
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
                 wrk=drivers.find_wrk(install=opts.install_wrk),
                 key="sk-bench-" + secrets.token_hex(16))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table, write the JSON; the exit status says how it went."""
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
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
    if m.profile is not None:
        print(Path(m.profile.summary_path).read_text())
    print(f"results: {opts.output}")
    missed = [t.name for t in report.targets(m) if not t.met]
    return EXIT_MISSED if missed and opts.strict else 0
