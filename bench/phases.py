"""The measurements: throughput, latency at a fixed rate, time to first byte, memory, profile.

Every phase is bounded in requests and in time, and stops the run (``BenchError``) when any
request fails: numbers from a path that answers errors mean nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench import drivers, profile
from bench.drivers import Request
from bench.procs import Service, cpu_sample, cpu_usage, rss_kib, tree_cpu_s, worker_pid
from bench.servers import CHAT_BODY, Bench, checked, start_gateway
from bench.stats import LoadReport

# Bounds on the memory phase's chunks: the rate assumed at worst, the longest chunk.
_MIN_MEMORY_RPS = 50
_MAX_CHUNK_S = 60


@dataclass
class MemoryResult:
    """RSS of one gateway worker sampled after each chunk of requests (KiB).

    ``growth_pct`` compares the last sample with the one after the warm-up chunk, so start-up
    allocations and first-request caches do not count as growth.
    """

    pid: int
    requests: int
    warmup_requests: int
    samples: list[dict[str, float]] = field(default_factory=list)

    @property
    def growth_pct(self) -> float:
        """RSS growth from the end of the warm-up to the end, in percent."""
        if len(self.samples) < 2:
            return 0.0
        base, last = self.samples[1]["rss_kib"], self.samples[-1]["rss_kib"]
        return (last - base) / base * 100.0


def throughput(b: Bench, server: Service, request: Request, what: str) -> LoadReport:
    """Closed loop at ``--connections``: a warm-up run, then the measured one, with the cores'
    busy time (was the server's core the limit?) and the server's CPU time per request."""
    checked(b.closed(request, duration_s=b.opts.warmup_s), f"{what} warm-up")
    before, server_s = cpu_sample(), tree_cpu_s(server.pid)
    report = checked(b.closed(request, duration_s=b.opts.duration_s), f"{what} throughput")
    report.server_cpu_us = round((tree_cpu_s(server.pid) - server_s) * 1e6 / report.requests, 1)
    report.cpu_busy_pct = cpu_usage(before, cpu_sample())
    return report


def open_loop(b: Bench, request: Request, what: str) -> LoadReport:
    """Requests at ``--rate`` for ``--duration``, latency from each scheduled send time."""
    before = cpu_sample()
    report = drivers.loadgen(request, mode="open", core=b.load_core,
                             duration_s=b.opts.duration_s, rate=b.opts.rate)
    report.cpu_busy_pct = cpu_usage(before, cpu_sample())
    return checked(report, f"{what} at {b.opts.rate:g} req/s")


def first_byte(b: Bench, request: Request, what: str) -> LoadReport:
    """``--ttft-requests`` streamed requests, ``--ttft-concurrency`` at a time, timed to the
    first body byte."""
    per_request_s = (b.opts.ttft_ms + 50.0) / 1000.0
    bound_s = 30.0 + b.opts.ttft_requests * per_request_s / b.opts.ttft_concurrency
    before = cpu_sample()
    report = drivers.loadgen(request, mode="ttft", core=b.load_core, duration_s=bound_s,
                             connections=b.opts.ttft_concurrency,
                             requests=b.opts.ttft_requests)
    report.cpu_busy_pct = cpu_usage(before, cpu_sample())
    return checked(report, f"{what} streaming")


def memory(b: Bench, fast: Service, slow: Service, *, rps_hint: float) -> MemoryResult:
    """A fresh gateway under ``--memory-requests`` closed-loop requests, in chunks of about
    10,000, its worker's RSS read from /proc after each (the first chunk is the warm-up).

    wrk runs for a time, not a count, so each chunk runs for its size over the last rate seen;
    the counts are the requests actually answered.
    """
    gateway = start_gateway(b, fast, slow, name="gateway-memory")
    try:
        pid = worker_pid(gateway.pid, gateway.port)
        total = b.opts.memory_requests
        chunk = max(1, min(10_000, total // 5))
        result = MemoryResult(pid=pid, requests=0, warmup_requests=chunk)
        rss, hwm = rss_kib(pid)
        result.samples.append({"requests": 0, "rss_kib": rss, "hwm_kib": hwm, "rps": 0.0})
        request = b.request(gateway.port, CHAT_BODY)
        rate = max(rps_hint, _MIN_MEMORY_RPS)
        while result.requests < total:
            want = min(chunk, total - result.requests)
            seconds = min(_MAX_CHUNK_S, max(1, round(want / rate)))
            report = checked(b.closed(request, duration_s=seconds, limit=want), "memory phase")
            gateway.check_alive()
            result.requests += report.requests
            rate = max(report.rps, _MIN_MEMORY_RPS)
            rss, hwm = rss_kib(pid)
            result.samples.append({"requests": result.requests, "rss_kib": rss,
                                   "hwm_kib": hwm, "rps": round(report.rps, 1)})
            print(f"  memory: {result.requests:>7} requests, RSS {rss / 1024:.1f} MiB, "
                  f"{report.rps:.0f} req/s", flush=True)
        return result
    finally:
        b.services.stop(gateway)


def profiled(b: Bench, server: Service, request: Request, name: str) -> profile.Profile | None:
    """A closed-loop run with py-spy sampling ``server``'s worker; None without py-spy."""
    spy = profile.find_pyspy(install=True)
    if spy is None:
        print("bench: py-spy unavailable; skipping the profile", flush=True)
        return None
    pid = worker_pid(server.pid, server.port)
    seconds = max(3, round(b.opts.duration_s))
    folder = b.opts.output.parent
    out = folder / f"profile-{name}.raw.txt"
    with profile.record(spy, pid=pid, seconds=seconds, output=out, core=b.load_core):
        load = b.closed(request, duration_s=seconds + 1)
    return profile.summarize(out, name=name, rps=load.rps,
                             summary_path=folder / f"profile-{name}.txt")
