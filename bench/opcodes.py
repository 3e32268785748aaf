"""Where a keyed request's extra Python goes: the bytecode instructions (opcodes) each function
runs per request, for the master key, 1,000-key-style virtual keys without limits, and keys with
limits and budgets, on one gateway process, and the functions whose counts differ most.

    .venv/bin/python -m bench.opcodes [--requests 300] [--keys 30] [--top 50]

Exact and cheap where sampling profilers and cProfile are not at this grain (cProfile put a
credit's ``headers()`` at 5.6 us, a timed loop at 0.1-0.2 us). The gateway runs with a
``sitecustomize`` (written to the run's temp dir, on ``PYTHONPATH``) that, on ``SIGRTMIN+1``,
turns on ``sys.settrace`` with opcode events for the event loop's thread, and on ``SIGRTMIN+2``
turns it off and writes each code object's opcode and call counts. (``SIGUSR1`` and ``SIGHUP``
are the gateway's own reload signals.) Requests go one at a time over ``--keys`` keys in turn,
after a warm-up that caches every key and gives each an admission credit, so the keyed windows
measure calls taken from credits, as at load. Work batched by time (the call log's writes to
Postgres and Redis, the limiter's pipelines) falls into a window as the timing goes, so its
functions (asyncpg's, redis-py's) move by tens of opcodes a request from run to run; the
request's own path (the stages, the limiter's local steps) is the same every run.

Opcodes are not time: a C call (SHA-256, a regex, orjson) is one opcode however long it runs.
For those, ``bench.keys_overhead --instructions`` counts machine instructions under callgrind.
Postgres and Redis run privately, as in ``bench.keys_overhead``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from app.db.migrate import upgrade
from bench.calllog_overhead import BIN, KEY, wait_ok
from bench.keys_overhead import BODY, create_keys, gateway_env
from tests.calllog.servers import PrivatePostgres, PrivateRedis
from tests.servers import free_port

START, STOP = signal.SIGRTMIN + 1, signal.SIGRTMIN + 2

TRACER = f'''
import collections, json, os, signal, sys
_out = os.environ.get("SWITCHBOARD_OPCODES_OUT")
if _out:
    _ops, _calls = collections.Counter(), collections.Counter()
    def _trace(frame, event, arg):
        code = frame.f_code
        if event == "opcode":
            _ops[(code.co_filename, code.co_firstlineno, code.co_qualname)] += 1
        elif event == "call":
            frame.f_trace_opcodes = True
            _calls[(code.co_filename, code.co_firstlineno, code.co_qualname)] += 1
        return _trace
    def _start(signum, frame):
        _ops.clear()
        _calls.clear()
        sys.settrace(_trace)
    def _stop(signum, frame):
        sys.settrace(None)
        windows = sorted(os.listdir(_out))
        with open(os.path.join(_out, "window%d.json" % len(windows)), "w") as sink:
            json.dump([[list(k), n, _calls.get(k, 0)] for k, n in _ops.items()], sink)
    signal.signal({int(START)}, _start)
    signal.signal({int(STOP)}, _stop)
'''
"""The gateway's ``sitecustomize``: counts opcodes and calls per code object between the two
signals, and writes them as ``windowN.json``."""

Counts = dict[tuple[str, int, str], tuple[int, int]]


def load(path: Path) -> Counts:
    """A window's counts: (file, first line, name) -> (opcodes, calls)."""
    counts: Counts = {}
    prefix = str(Path(sys.prefix, "lib"))
    for (filename, line, name), ops, calls in json.loads(path.read_text()):
        short = filename.split("site-packages/", 1)[-1].replace(f"{Path.cwd()}/", "")
        short = short.replace(prefix, "python")
        was = counts.get((short, line, name), (0, 0))
        counts[(short, line, name)] = (was[0] + ops, was[1] + calls)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests a window")
    parser.add_argument("--keys", type=int, default=30, help="keys each keyed window goes through")
    parser.add_argument("--top", type=int, default=50, help="functions listed")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-opcodes-"))
    (work / "site").mkdir()
    (work / "site" / "sitecustomize.py").write_text(TRACER)
    out = work / "counts"
    out.mkdir()
    pg, redis = PrivatePostgres(), PrivateRedis()
    pg.start()
    redis.start()
    sim_port = free_port()
    sim = subprocess.Popen([str(BIN), "simulate", "--port", str(sim_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gateway: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(upgrade(pg.url))
        wait_ok(f"http://127.0.0.1:{sim_port}/health")
        env = gateway_env(work, f"http://127.0.0.1:{sim_port}/v1", pg.url, redis.url)
        keys_file, plain_file = create_keys(env, work)
        callers = {"master key": [KEY],
                   "keys without limits": plain_file.read_text().split()[:args.keys],
                   "keys + limits + budgets": keys_file.read_text().split()[:args.keys]}
        path = os.pathsep.join(p for p in (str(work / "site"), env.get("PYTHONPATH")) if p)
        port = free_port()
        with (work / "server.log").open("wb") as log:
            gateway = subprocess.Popen(
                [str(BIN), "serve", "--port", str(port)],
                env={**env, "PYTHONPATH": path, "SWITCHBOARD_OPCODES_OUT": str(out)},
                stdout=log, stderr=log)
        wait_ok(f"http://127.0.0.1:{port}/readyz")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        with httpx.Client(timeout=60) as client:
            def run(keys: list[str], n: int) -> None:
                for i in range(n):
                    client.post(url, content=BODY, headers={
                        "Authorization": f"Bearer {keys[i % len(keys)]}",
                        "Content-Type": "application/json"}).raise_for_status()
            for keys in callers.values():  # cached, credited, warm
                run(keys, 100)
            for name, keys in callers.items():
                run(keys, 30)
                os.kill(gateway.pid, START)
                time.sleep(0.3)
                run(keys, args.requests)
                time.sleep(0.5)  # its call-log batch, settles and live counters
                os.kill(gateway.pid, STOP)
                deadline = time.monotonic() + 30
                while len(list(out.iterdir())) < list(callers).index(name) + 1:
                    assert time.monotonic() < deadline, "the gateway wrote no counts"
                    time.sleep(0.1)
                print(f"  counted: {name}", flush=True)
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(timeout=30)
        sim.terminate()
        sim.wait(timeout=30)
        redis.stop()
        pg.stop()
    windows = [load(out / f"window{n}.json") for n in range(3)]
    for name, counts in zip(callers, windows, strict=True):
        ops = sum(o for o, _ in counts.values()) / args.requests
        calls = sum(c for _, c in counts.values()) / args.requests
        print(f"{name}: {ops:,.0f} opcodes and {calls:,.0f} Python calls a request")
    master, _, keyed = windows
    print(f"\nopcodes a request, keys + limits + budgets against the master key "
          f"(the {args.top} largest differences):")
    print(f"{'keyed - master':>15} {'master':>8}  function")
    names = set(master) | set(keyed)
    rows = sorted(((keyed.get(n, (0, 0))[0] - master.get(n, (0, 0))[0]) / args.requests, n)
                  for n in names)
    for diff, (filename, line, name) in sorted(rows, key=lambda r: -abs(r[0]))[:args.top]:
        print(f"{diff:>15.1f} {master.get((filename, line, name), (0, 0))[0] / args.requests:>8.1f}"
              f"  {name} ({filename}:{line})")
    print(f"\ncounts: {out}")


if __name__ == "__main__":
    main()
