"""What virtual keys, rate limits and budgets cost: the gateway serving 1,000 keys (each with RPM,
TPM and a budget, in 100 teams with limits and budgets of their own), against the same gateway
with only the master key, against the reference forwarder (``bench/forwarder.py``), in one run.
Targets (issue 9): keys + limits + budgets cost <= 10% of the gateway's CPU per request, and add
<= 5 ms to the p99 latency at 300 requests/s.

    .venv/bin/python -m bench.keys_overhead [--duration 10] [--rounds 2] [--rate 300]
        [--pairs N] [--syscalls] [--together N] [--only-pairs] [--instructions N]
        [--prompt-words N] [--keys-in-turn N]

``--pairs`` adds the steadier comparison (see ``paired``): one gateway process serving the master
key, 1,000 keys without limits and the 1,000 keys with them, in alternating windows.
``--together N`` (default 4) is the comparison the CPU target is judged by (see ``together``):
two gateway processes on one core at once, one per caller, in N windows of 30 s, so the
machine's drift hits both alike (the separate runs' CPU ratio moves by tens of percent).
``--instructions N`` adds the exact one (see ``instructions``): the user-space instructions a
request costs each caller, counted by valgrind, the same from run to run whatever the machine is
doing. ``--prompt-words N`` sends a prompt of N words instead of two: the keyed path estimates
every prompt's tokens, so its cost grows with the prompt. ``--keys-in-turn N`` sends the timed
runs' keyed requests with only the first N of the 1,000 keys (all 1,000 are created, and the
instructions windows use them all): what the number of keys in use costs by itself (each key's
state is touched once per N requests, and its credit serves more calls).

Both gateways log every call to Postgres and Redis (private instances this script starts) and
use that Redis for the limiter. The embedding drift signal is off in both (its model loads on
its first sample, seconds of CPU that land in one run or another at random;
``bench/metrics_overhead.py`` measures it). The server under test is pinned to core 0; the
simulator, Redis and the load generator (``bench.loadgen``, which sends each request with the
next of the 1,000 keys in turn) share core 1 (``--redis-core 0`` moves Redis beside the server:
every admission waits for Redis, and on the busy load core Redis's own scheduling delays show up
in the keyed gateway's latency). Postgres is not pinned: its backends run where the scheduler
puts them (pinned to the load core too, the keyed gateway measured 1.5-1.6x instead of
1.3-1.4x: every keyed call waits for Redis, which then shares its core with four busy
programs). Each run measures a closed loop (32
connections: requests/s and the server's CPU time per request, from /proc), then an open loop at
``--rate`` (latency, and CPU per request again: at equal load, the fairer comparison, since a
saturated server's CPU per request depends on how much the load core lets it batch). Rounds
alternate the order of the setups, so that drift in the machine's speed hits them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.db.migrate import upgrade
from app.limits.redis import CREDIT_S
from bench.calllog_overhead import BIN, KEY, wait_ok
from bench.drivers import Request, loadgen
from bench.metrics_overhead import cpu_seconds
from bench.profile import Profile, compare, find_pyspy, record, summarize
from bench.stats import LoadReport
from tests.calllog.servers import PrivatePostgres, PrivateRedis
from tests.servers import free_port

BODY = '{"model":"chat","messages":[{"role":"user","content":"hello bench"}],"max_tokens":40}'
"""The request every run sends (``--prompt-words`` replaces it, in ``main``, before any run)."""
PROSE = ("Summarise the following notes for the weekly operations review, keeping every number "
         "and naming each team: the gateway served requests for twelve applications, latency "
         "stayed within budget, two providers had short outages, and spend rose by a tenth.")
"""English text a ``--prompt-words`` prompt repeats (words, numbers and punctuation: what a
real prompt's token estimate goes through)."""


def body_with(words: int) -> str:
    """A chat request like ``BODY`` whose prompt has ``words`` words of ``PROSE``."""
    prose = PROSE.split()
    text = " ".join(prose[i % len(prose)] for i in range(words))
    return json.dumps({"model": "chat", "messages": [{"role": "user", "content": text}],
                       "max_tokens": 40})
KEYS, TEAMS = 1000, 100
HIGH = {"rpm": 1_000_000, "tpm": 1_000_000_000, "budget_usd": 1_000_000.0}
"""Limits no run reaches: every admission is checked and charged, none refused."""


@dataclass
class Results:
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    cpu_us_at_rate: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)


def load(url: str, keys_file: Path, *, mode: str, seconds: float, rate: float = 0.0,
         requests: int = 0) -> LoadReport:
    """One ``bench.loadgen`` run on core 1; fails on any error answer."""
    report = loadgen(Request(url=url, body=BODY, headers={}), mode=mode, core=1,
                     duration_s=seconds, rate=rate, connections=32, requests=requests,
                     keys_file=keys_file)
    if report.errors:
        raise RuntimeError(f"errors during the run: {report.errors_detail}")
    return report


def gateway_env(work: Path, upstream: str, database_url: str, redis_url: str) -> dict[str, str]:
    """The environment of a gateway serving ``chat`` from ``upstream`` (an OpenAI-compatible
    base URL), logging to Postgres and Redis, with the embedding drift signal off; its config
    file is written under ``work``."""
    config = work / "gateway.yaml"
    config.write_text(f"providers:\n  sim: {{type: openai, base_url: '{upstream}', "
                      "api_key: sk-sim}\nmodels:\n"
                      "  chat: {targets: [{provider: sim, model: gpt-4o-mini}]}\n"
                      "drift: {embedding: {sample_rate: 0}}\n")
    return {**os.environ, "SWITCHBOARD_CONFIG": str(config), "SWITCHBOARD_MASTER_KEY": KEY,
            "SWITCHBOARD_DATABASE_URL": database_url, "SWITCHBOARD_REDIS_URL": redis_url,
            "SWITCHBOARD_SPOOL_DIR": str(work / "spool")}


def start(argv: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    log = Path(env["SWITCHBOARD_SPOOL_DIR"]).with_name("server.log")
    with log.open("ab") as sink:
        proc = subprocess.Popen(["taskset", "-c", "0", *argv], env=env,
                                stdout=sink, stderr=sink)
    try:
        if "serve" in argv:
            wait_ok(f"http://127.0.0.1:{port}/readyz")
        else:  # the forwarder has one route, POST only: wait for its port
            wait_listening(port)
    except RuntimeError:
        proc.kill()
        raise
    return proc


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def create_keys(env: dict[str, str], work: Path, *, budgets: bool = True) -> tuple[Path, Path]:
    """Start the gateway once and create the teams and keys through its admin API: the 1,000
    keys with limits and budgets (``budgets=False``: limits only, so the limiter may admit
    their calls from admission credits, ``app.limits.model``), and 1,000 without any (no team),
    which show what a virtual key costs without its limiter."""
    limits = HIGH if budgets else {k: v for k, v in HIGH.items() if k != "budget_usd"}
    port = free_port()
    proc = start([str(BIN), "serve", "--port", str(port)], env, port)
    keys: list[str] = []
    plain: list[str] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"Authorization": f"Bearer {KEY}"}) as admin:
            teams = [admin.post("/admin/teams", json={"name": f"team-{t}", **limits})
                     .raise_for_status().json()["id"] for t in range(TEAMS)]
            for k in range(KEYS):
                created = admin.post("/admin/keys", json={
                    "name": f"app-{k}", "team_id": teams[k % TEAMS], **limits}
                ).raise_for_status()
                keys.append(created.json()["key"])
                plain.append(admin.post("/admin/keys", json={"name": f"plain-{k}"})
                             .raise_for_status().json()["key"])
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    path, plain_path = work / "keys.txt", work / "plain.txt"
    path.write_text("\n".join(keys) + "\n")
    plain_path.write_text("\n".join(plain) + "\n")
    return path, plain_path


def measure(argv: list[str], env: dict[str, str], port: int, keys_file: Path, *,
            seconds: float, rate: float, into: Results, profile: Path | None = None
            ) -> Profile | None:
    """One setup's two runs; with ``profile``, py-spy samples the server through the closed
    loop (saturated: its samples over the throughput are its CPU per request), and its
    summary is returned."""
    proc = start(argv, env, port)
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        # Warm-up: every key used twice (cached, its Redis keys created), and 3 s at least.
        load(url, keys_file, mode="closed", seconds=60, requests=2 * KEYS)
        load(url, keys_file, mode="closed", seconds=3)
        spy = find_pyspy(install=True) if profile else None
        raw = profile / "raw.txt" if profile else Path()
        before = cpu_seconds(proc.pid)
        with (record(spy, pid=proc.pid, seconds=max(1, int(seconds) - 1), output=raw, core=1)
              if spy else contextlib.nullcontext()):
            closed = load(url, keys_file, mode="closed", seconds=seconds)
        into.cpu_us.append((cpu_seconds(proc.pid) - before) / closed.requests * 1e6)
        into.rps.append(closed.rps)
        before = cpu_seconds(proc.pid)
        opened = load(url, keys_file, mode="open", seconds=seconds, rate=rate)
        into.cpu_us_at_rate.append((cpu_seconds(proc.pid) - before) / opened.requests * 1e6)
        into.p50_ms.append(opened.latency_ms["p50"])
        into.p99_ms.append(opened.latency_ms["p99"])
        if not spy or not profile:
            return None
        return summarize(raw, name=profile.name, rps=closed.rps,
                         summary_path=profile / "summary.txt")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


PERF_EVENTS = ("context-switches", "raw_syscalls:sys_enter", "syscalls:sys_enter_epoll_pwait",
               "syscalls:sys_enter_write", "syscalls:sys_enter_read",
               "syscalls:sys_enter_getpid")


def perf_stat(pid: int) -> subprocess.Popen[str]:
    """``perf stat`` counting ``PERF_EVENTS`` of ``pid`` until ``read_perf_stat``."""
    return subprocess.Popen(["perf", "stat", "-x,", "-e", ",".join(PERF_EVENTS), "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def read_perf_stat(counter: subprocess.Popen[str], requests: int) -> dict[str, float]:
    """Stop ``counter``: each event's count per request."""
    counter.send_signal(2)
    _, err = counter.communicate(timeout=30)
    out: dict[str, float] = {}
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            out[fields[2].split(":")[-1].removeprefix("sys_enter_")] = int(fields[0]) / requests
    return out


def paired(argv: list[str], env: dict[str, str], port: int, master_file: Path,
           keys_file: Path, plain_file: Path, *, pairs: int, seconds: float,
           rate: float, syscalls: bool = False, keyed: str = "keys + limits + budgets") -> None:
    """One gateway process serving both callers in alternating windows: pairs of open-loop
    runs at ``rate``, one with the master key and one with the 1,000 keys (which goes first
    alternates), the gateway's CPU per request measured over each. A machine whose speed
    drifts by tens of percent between runs a minute apart (this VM's does) moves both halves
    of a pair alike, so the median of the per-pair ratios is steadier than a ratio of medians
    of separate runs; the same process serves both, so nothing differs but the caller.

    Admission credits (``app.limits.model``) last ``CREDIT_S`` of wall time. At 300 req/s over
    the 1,000 keys each key comes back every 3.3 s and asks Redis about once in nine calls;
    with 2-s windows, each window goes through the same first 600 keys, each back only every
    ~8 s (the other windows in between), and about one call in three asks. Windows of
    ``CREDIT_S`` (``--duration 30``) see the steady state: each key asks once a window and its
    credit serves the other eight calls."""
    proc = start(argv, env, port)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    ratios: list[float] = []
    plain_ratios: list[float] = []
    p99_added: list[float] = []
    counts: dict[str, list[dict[str, float]]] = {}
    try:
        load(url, keys_file, mode="closed", seconds=60, requests=2 * KEYS)
        load(url, plain_file, mode="closed", seconds=60, requests=2 * KEYS)
        load(url, master_file, mode="closed", seconds=2)
        for pair in range(pairs):
            got: dict[Path, tuple[float, float]] = {}
            callers = (master_file, plain_file, keys_file)
            for caller in callers if pair % 2 == 0 else reversed(callers):
                time.sleep(0.5)  # the last window's settles and log writes land before this one
                counter = perf_stat(proc.pid) if syscalls else None
                before = cpu_seconds(proc.pid)
                report = load(url, caller, mode="open", seconds=seconds, rate=rate)
                if counter is not None:
                    counts.setdefault(caller.stem, []).append(
                        read_perf_stat(counter, report.requests))
                got[caller] = ((cpu_seconds(proc.pid) - before) / report.requests * 1e6,
                               report.latency_ms["p99"])
            (master_cpu, master_p99), (keys_cpu, keys_p99) = got[master_file], got[keys_file]
            ratios.append(keys_cpu / master_cpu)
            plain_ratios.append(got[plain_file][0] / master_cpu)
            p99_added.append(keys_p99 - master_p99)
            print(f"  pair {pair + 1}: CPU us/request at {rate:.0f}/s master {master_cpu:.0f}, "
                  f"keys without limits {got[plain_file][0]:.0f} ({plain_ratios[-1]:.3f}x), "
                  f"keys {keys_cpu:.0f} ({ratios[-1]:.3f}x); p99 {master_p99:.2f} / "
                  f"{keys_p99:.2f} ms", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    quartiles = _quartiles(ratios)
    print(f"\npaired, one gateway process, {pairs} pairs of {seconds:g} s at {rate:.0f} req/s: "
          f"{keyed} cost {statistics.median(ratios):.3f}x the master key's CPU "
          f"per request (quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}; target <= 1.10x); "
          f"p99 added {statistics.median(p99_added):+.2f} ms (median; target <= 5 ms); keys "
          f"without limits or budgets {statistics.median(plain_ratios):.3f}x")
    for name, runs in counts.items():
        print(f"  per request, {name}: " + ", ".join(
            f"{event} {statistics.median(run.get(event, 0.0) for run in runs):.2f}"
            for event in sorted({e for run in runs for e in run})))


TOGETHER_S = 30.0
"""The length of a ``--together`` window: the budget reconcile (every 60 s, in whichever of
the two processes takes the turn) lands in every other window, a few percent of a 10-s window's
CPU."""
SATURATED_S = 10.0
"""The length of a ``--together`` saturated window."""


def together(argv: list[str], env: dict[str, str], master_file: Path, keys_file: Path, *,
             pairs: int, seconds: float, rate: float,
             keyed: str = "keys + limits + budgets") -> tuple[float, float]:
    """Two gateway processes on the same core at the same time, one serving the master key and
    the other the 1,000 keys, each at ``rate`` (the core serves twice that), their CPU per
    request measured over the same window; then both saturated at once (closed loops of 32
    connections each for ``SATURATED_S``: the core's time is shared between them, so the ratio
    of their throughputs mirrors that of their CPU per request); the next window swaps which
    process serves which. Whatever slows the machine during a window (this VM's speed moves by
    tens of percent from one window to the next) slows both callers alike, and the swap cancels
    what differs between the two processes (one of the two has read 1-4% higher than the other
    in either role). Returns the median ratios, keys to master: at ``rate``, and saturated.
    (The p99 here is not the p99 target's measure: each process also waits for the other.)

    Each key comes back every ``1,000 / rate`` seconds (3.3 s at 300/s), so after the warm-up
    (every key twice) each keeps its admission credit renewed (``app.limits.redis.RENEW_S``)
    and the windows see the steady state whatever their length."""
    ports = [free_port(), free_port()]
    procs = [start([*argv[:-1], str(port)], env, port) for port in ports]
    urls = [f"http://127.0.0.1:{port}/v1/chat/completions" for port in ports]
    ratios: list[float] = []
    saturated: list[float] = []
    p99_added: list[float] = []

    def window(callers: tuple[Path, Path], **how: Any) -> dict[Path, tuple[float, LoadReport]]:
        """Each caller's CPU us per request and load report over one window of both at once."""
        before = [cpu_seconds(proc.pid) for proc in procs]
        runs = [pool.submit(load, url, caller, **how)
                for url, caller in zip(urls, callers, strict=True)]
        reports = [run.result() for run in runs]
        return {caller: ((cpu_seconds(proc.pid) - was) / report.requests * 1e6, report)
                for caller, proc, was, report in zip(callers, procs, before, reports, strict=True)}

    try:
        for url in urls:  # every key cached in both processes, its Redis keys made
            load(url, keys_file, mode="closed", seconds=60, requests=2 * KEYS)
            load(url, master_file, mode="closed", seconds=2)
        with ThreadPoolExecutor(2) as pool:
            for pair in range(pairs):
                callers = (master_file, keys_file) if pair % 2 == 0 else (keys_file, master_file)
                time.sleep(0.5)  # the last window's settles and log writes land before this one
                got = window(callers, mode="open", seconds=seconds, rate=rate)
                (master_cpu, master), (keys_cpu, keys) = got[master_file], got[keys_file]
                ratios.append(keys_cpu / master_cpu)
                p99_added.append(keys.latency_ms["p99"] - master.latency_ms["p99"])
                time.sleep(0.5)
                got = window(callers, mode="closed", seconds=SATURATED_S)
                (master_sat, master_run), (keys_sat, keys_run) = got[master_file], got[keys_file]
                saturated.append(keys_sat / master_sat)
                print(f"  window {pair + 1}: CPU us/request at {rate:.0f}/s each, master "
                      f"(process {callers.index(master_file) + 1}) {master_cpu:.0f}, keys "
                      f"{keys_cpu:.0f} ({ratios[-1]:.3f}x); p99 {master.latency_ms['p99']:.2f}"
                      f" / {keys.latency_ms['p99']:.2f} ms; saturated: master "
                      f"{master_run.rps:.0f} req/s, {master_sat:.0f} us/request, keys "
                      f"{keys_run.rps:.0f} req/s, {keys_sat:.0f} us/request "
                      f"({saturated[-1]:.3f}x)", flush=True)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    quartiles, spread = _quartiles(ratios), _quartiles(saturated)
    swapped = [math.sqrt(a * b) for a, b in zip(ratios[::2], ratios[1::2], strict=False)]
    print(f"\ntogether, two gateway processes on one core, {pairs} windows of {seconds:g} s at "
          f"{rate:.0f} req/s each: {keyed} cost {statistics.median(ratios):.3f}x the master "
          f"key's CPU per request (quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}; "
          f"target <= 1.10x); over each window and its swap (geometric means) "
          f"{', '.join(f'{r:.3f}' for r in swapped)}; p99 added "
          f"{statistics.median(p99_added):+.2f} ms (median); saturated together "
          f"{statistics.median(saturated):.3f}x (quartiles {spread[0]:.3f}-{spread[2]:.3f})")
    return statistics.median(ratios), statistics.median(saturated)


def instructions(env: dict[str, str], master_file: Path, keys_file: Path, plain_file: Path, *,
                 requests: int, work: Path, rate: float,
                 keyed: str = "keys + limits + budgets") -> None:
    """The gateway's user-space instructions per request for each caller, counted by valgrind's
    callgrind (instrumentation switched on only around each window; the gateway runs ~30 times
    slower under it, so requests go one at a time). Each caller gets two windows, in the order
    master, plain keys, keys, master, plain keys, keys; the smaller count of the two is reported.

    The keyed windows reproduce what admission credits (``app.limits.model``) see at ``rate``
    over the 1,000 keys, whatever valgrind's pace: each key comes back every ``1,000 / rate``
    seconds (3.3 s at 300/s), so a window goes in turn through as many keys as valgrind serves
    in that time, and a window lasts at least a credit's life (``CREDIT_S``; at least
    ``requests``), so each key asks Redis once a window and its credit serves the rest, about
    one call in nine at 300/s. Windows of one caller are more than a credit's life apart: every
    keyed window starts with no credits, so its count does not depend on when the last one
    ended. Plain keys go through the same number of keys. What this cannot reproduce: work
    batched by time. Settles with no admission to ride on go out every ``SETTLE_DELAY_S``
    (25 ms), which under valgrind is one round trip a call against ~7 calls a round trip at
    300/s, and the call log's writer stores every ~50 ms, a row or two a batch against ~15
    (both callers). So the count overstates what keys cost at ``rate``.

    The periodic work is not request work: the budget reconcile is pushed to an hour away by the
    config; the key directory's refresh (every 30 s) re-reads only the keys this run used.
    Instructions are not time (a request that finds its code and data out of the caches costs
    more per instruction, and syscalls and wake-ups are the kernel's), but they are exact: a
    change of 1% shows."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    config = Path(env["SWITCHBOARD_CONFIG"])
    quiet = work / "gateway-instructions.yaml"
    quiet.write_text(config.read_text() + "rate_limits: {reconcile_interval_s: 3600}\n")
    port = free_port()
    out = work / "callgrind"
    out.mkdir()
    log = (work / "valgrind.log").open("wb")
    proc = subprocess.Popen(
        ["taskset", "-c", "0", "valgrind", "--tool=callgrind", "--instr-atstart=no",
         f"--callgrind-out-file={out}/out", str(BIN), "serve", "--port", str(port)],
        env={**env, "SWITCHBOARD_CONFIG": str(quiet)}, stdout=log, stderr=log)
    counts: dict[str, list[float]] = {}
    try:
        deadline = time.monotonic() + 600
        while not _ready(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start under valgrind (see {log.name})")
            time.sleep(1)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        with httpx.Client(timeout=120) as client:
            def run(keys: list[str]) -> None:
                for key in keys:
                    client.post(url, content=BODY, headers={
                        "Authorization": f"Bearer {key}", "Content-Type": "application/json"
                    }).raise_for_status()
            def instrument(*commands: list[str]) -> None:
                for command in commands:
                    subprocess.run(["callgrind_control", *command, str(proc.pid)], check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run([KEY] * 20)
            instrument(["-i", "on"])  # the pace of the windows: valgrind counting
            began = time.monotonic()
            run([KEY] * 40)
            pace = (time.monotonic() - began) / 40
            instrument(["-i", "off"], ["-z"])
            turn = max(1, round(KEYS / rate / pace))  # keys: each back every KEYS / rate s
            size = max(requests, math.ceil(CREDIT_S / pace))
            cycle = size // turn + 1
            callers = {"master key": [KEY] * size,
                       "keys without limits": (plain_file.read_text().split()[:turn]
                                               * cycle)[:size],
                       keyed: (keys_file.read_text().split()[:turn] * cycle)[:size]}
            counts = {name: [] for name in callers}
            print(f"  instructions: {size} requests a window ({pace * 1000:.0f} ms each under "
                  f"valgrind), keys in turns of {turn}", flush=True)
            for keys in callers.values():  # warm-up: every key cached, its Redis keys made
                run(keys[:turn])
            time.sleep(CREDIT_S)  # the warm-up's credits end before the first keyed window
            for window, (name, keys) in enumerate([*callers.items(), *callers.items()]):
                instrument(["-z"], ["-i", "on"])
                run(keys)
                time.sleep(0.5)  # its settles and call-log writes, which belong to it
                instrument(["-i", "off"], ["-d", f"window{window}"])
                dump = max(out.glob("out.*"), key=lambda p: int(p.suffix[1:]))
                total = next(int(line.split()[1]) for line in dump.read_text().splitlines()
                             if line.startswith("totals:"))
                counts[name].append(total / len(keys))
                print(f"  instructions, {name}: {counts[name][-1]:,.0f} a request", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        log.close()
    best = {name: min(runs) for name, runs in counts.items()}
    master = best["master key"]
    print(f"\nuser-space instructions per request (valgrind, the smaller of 2 windows): master "
          f"key {master:,.0f}; keys without limits {best['keys without limits']:,.0f} "
          f"({best['keys without limits'] / master:.3f}x); {keyed} {best[keyed]:,.0f} "
          f"({best[keyed] / master:.3f}x)")


def in_turn(keys_file: Path, n: int) -> Path:
    """A keys file with the first ``n`` keys of ``keys_file``."""
    subset = keys_file.with_name(f"{keys_file.stem}-{n}.txt")
    subset.write_text("\n".join(keys_file.read_text().split()[:n]) + "\n")
    return subset


def _quartiles(values: list[float]) -> list[float]:
    """The three quartiles of ``values`` (one value: itself three times)."""
    return statistics.quantiles(values, n=4) if len(values) > 1 else values * 3


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--redis-core", type=int, choices=(0, 1), default=1,
                        help="the core Redis runs on: 1, the load core (default), or 0, beside "
                             "the server under test, where it waits for no busy load process")
    parser.add_argument("--pairs", type=int, default=0,
                        help="also run PAIRS alternating master/keys windows of --duration at "
                             "--rate on one gateway process (see paired())")
    parser.add_argument("--together", type=int, default=4, metavar="N",
                        help="windows of 30 s with two gateway processes on one core at once, "
                             "one per caller, each at --rate: the CPU target's measure (see "
                             "together(); default 4, 0: none)")
    parser.add_argument("--syscalls", action="store_true",
                        help="with --pairs: count the gateway's syscalls and context switches "
                             "per request in each window (perf stat; needs perf and root)")
    parser.add_argument("--only-pairs", action="store_true",
                        help="skip the separate runs: only the paired windows, --together "
                             "and --instructions")
    parser.add_argument("--instructions", type=int, default=0, metavar="N",
                        help="also count the gateway's instructions per request under "
                             "valgrind, at least N requests per window, and as many as a "
                             "credit's life takes (see instructions())")
    parser.add_argument("--without-budgets", action="store_true",
                        help="the 1,000 keys and their teams get RPM and TPM limits but no "
                             "budget (so their calls may be admitted from admission credits)")
    parser.add_argument("--prompt-words", type=int, default=0, metavar="N",
                        help="send a prompt of N words of English prose instead of 'hello "
                             "bench' (the keyed path estimates every prompt's tokens)")
    parser.add_argument("--keys-in-turn", type=int, default=KEYS, metavar="N",
                        help=f"the timed runs send keyed requests with the first N of the "
                             f"{KEYS:,} keys in turn (default: all)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="py-spy the two gateways through their last closed loop; summaries "
                             "and CPU per request by package under DIR")
    args = parser.parse_args()
    if not 1 <= args.keys_in_turn <= KEYS:
        parser.error(f"--keys-in-turn must be between 1 and {KEYS:,}")
    if args.prompt_words:
        global BODY
        BODY = body_with(args.prompt_words)
    work = Path(tempfile.mkdtemp(prefix="sb-keysbench-"))
    pg, redis = PrivatePostgres(), PrivateRedis()
    pg.start()
    redis.start()
    subprocess.run(["taskset", "-p", "-c", str(args.redis_core), str(redis.pid)],
                   check=True, stdout=subprocess.DEVNULL)
    sim_port = free_port()
    sim = subprocess.Popen(["taskset", "-c", "1", str(BIN), "simulate", "--port", str(sim_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        asyncio.run(upgrade(pg.url))
        wait_ok(f"http://127.0.0.1:{sim_port}/health")
        env = gateway_env(work, f"http://127.0.0.1:{sim_port}/v1", pg.url, redis.url)
        keys_file, plain_file = create_keys(env, work, budgets=not args.without_budgets)
        keyed = "keys + limits" if args.without_budgets else "keys + limits + budgets"
        master_file = work / "master.txt"
        master_file.write_text(KEY + "\n")
        if args.instructions:
            instructions(env, master_file, keys_file, plain_file,
                         requests=args.instructions, work=work, rate=args.rate, keyed=keyed)
        if args.keys_in_turn < KEYS:
            keys_file, plain_file = (in_turn(path, args.keys_in_turn)
                                     for path in (keys_file, plain_file))
            keyed += f" ({args.keys_in_turn} keys in turn)"
        port = free_port()
        gateway = [str(BIN), "serve", "--port", str(port)]
        forwarder = [sys.executable, "-m", "bench.forwarder", "--port", str(port),
                     "--upstream", f"http://127.0.0.1:{sim_port}/v1"]
        setups = {"reference forwarder": (forwarder, master_file),
                  "gateway, master key": (gateway, master_file),
                  f"gateway, {args.keys_in_turn:,} keys": (gateway, keys_file)}
        results = {name: Results() for name in setups}
        profiles: dict[str, Profile] = {}
        measured_together: tuple[float, float] | None = together(
            gateway, env, master_file, keys_file, pairs=args.together, seconds=TOGETHER_S,
            rate=args.rate, keyed=keyed) if args.together else None
        if args.pairs:
            paired(gateway, env, port, master_file, keys_file, plain_file, pairs=args.pairs,
                   seconds=args.duration, rate=args.rate, syscalls=args.syscalls, keyed=keyed)
        for round_ in range(0 if args.only_pairs else args.rounds):
            order = list(setups.items())
            for name, (argv, keys) in order if round_ % 2 == 0 else reversed(order):
                spied = (args.profile / ("keys" if keys is keys_file else "master")
                         if args.profile and argv is gateway and round_ == args.rounds - 1
                         else None)
                summary = measure(argv, env, port, keys, seconds=args.duration, rate=args.rate,
                                  into=results[name], profile=spied)
                if summary is not None:
                    profiles[name] = summary
                r = results[name]
                print(f"  round {round_ + 1}, {name}: {r.rps[-1]:.0f} req/s, "
                      f"{r.cpu_us[-1]:.0f} us CPU/request; at {args.rate:.0f}/s "
                      f"{r.cpu_us_at_rate[-1]:.0f} us CPU/request, p99 {r.p99_ms[-1]:.2f} ms",
                      flush=True)
    finally:
        sim.terminate()
        sim.wait(timeout=30)
        redis.stop()
        pg.stop()
    if args.only_pairs:
        return
    if profiles:
        print(compare(list(profiles.values())))
        print(f"py-spy summaries: {', '.join(p.summary_path for p in profiles.values())}")
    med = {name: {k: statistics.median(getattr(r, k))
                  for k in ("rps", "cpu_us", "cpu_us_at_rate", "p50_ms", "p99_ms")}
           for name, r in results.items()}
    print(f"\n{'':<22} {'saturated':>20}   {f'at {args.rate:.0f} req/s':>28}")
    print(f"{'setup':<22} {'req/s':>8} {'CPU us/req':>11}   {'CPU us/req':>10} {'p50 ms':>8} "
          f"{'p99 ms':>8}   (medians of {args.rounds} rounds)")
    for name, m in med.items():
        print(f"{name:<22} {m['rps']:>8.0f} {m['cpu_us']:>11.0f}   {m['cpu_us_at_rate']:>10.0f} "
              f"{m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f}")
    ref, master, with_keys = med.values()
    print(f"\n{keyed}, CPU per request: "
          f"{with_keys['cpu_us_at_rate'] / master['cpu_us_at_rate']:.3f}x the master-key gateway "
          f"at {args.rate:.0f} req/s, {with_keys['cpu_us'] / master['cpu_us']:.3f}x saturated, "
          "in separate runs (drift between runs moves these by tens of percent)" + (
              "" if measured_together is None else
              f"; measured together {measured_together[0]:.3f}x at {args.rate:.0f} req/s, "
              f"{measured_together[1]:.3f}x saturated (target <= 1.10x)"))
    print(f"p99 added at {args.rate:.0f} req/s: "
          f"{with_keys['p99_ms'] - master['p99_ms']:+.2f} ms vs the master-key gateway "
          "(target <= 5 ms)")
    print(f"throughput: keys {with_keys['rps'] / ref['rps']:.2f}x, master key "
          f"{master['rps'] / ref['rps']:.2f}x the reference forwarder; CPU per request: keys "
          f"{with_keys['cpu_us'] / ref['cpu_us']:.2f}x, "
          f"master {master['cpu_us'] / ref['cpu_us']:.2f}x")


if __name__ == "__main__":
    main()
