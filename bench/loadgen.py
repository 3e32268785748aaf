"""A Python load generator (aiohttp on uvloop), run as its own process on the load core.

Three modes, each bounded in count and time, each printing one ``LoadReport`` as JSON:

- ``open``: requests at a fixed rate, each scheduled at ``start + i / rate`` whatever happened to
  the earlier ones, latency counted from the scheduled time (wrk2's idea: a server that stalls
  cannot hide the queue it causes, as it can from a closed loop);
- ``closed``: ``--connections`` workers, each sending its next request when the last one ends
  (the fallback when ``wrk`` is not available);
- ``ttft``: closed loop measuring the time from send to the first byte of the response body
  (use with ``"stream": true`` bodies).

Usage: ``python -m bench.loadgen --mode open --rate 300 --duration 10 --url URL --body JSON``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import uvloop

from bench.stats import LoadReport, summarize_ms

# The prefix of the result line on stdout.
MARKER = "LOADJSON "
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


@dataclass(frozen=True)
class Target:
    """Where and what to send."""

    url: str
    body: bytes
    headers: dict[str, str]
    timeout_s: float = 30.0
    keys: tuple[str, ...] = ()
    """Bearer keys used in turn, one per request (``--keys-file``); none: ``headers`` alone."""
    turn: list[int] = field(default_factory=lambda: [0])

    def next_headers(self) -> dict[str, str]:
        if not self.keys:
            return self.headers
        self.turn[0] += 1
        return {**self.headers,
                "Authorization": f"Bearer {self.keys[self.turn[0] % len(self.keys)]}"}


@dataclass
class Tally:
    """Samples gathered by one run."""

    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    overheads: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def report(self, *, mode: str, duration_s: float) -> LoadReport:
        """The ``LoadReport`` of these samples."""
        overhead = summarize_ms(o / 1000.0 for o in self.overheads) if self.overheads else None
        return LoadReport(tool="python", mode=mode, requests=len(self.latencies),
                          errors=sum(self.errors.values()), duration_s=round(duration_s, 3),
                          latency_ms=summarize_ms(self.latencies),
                          errors_detail=dict(self.errors),
                          lag_ms=summarize_ms(self.lags) if self.lags else None,
                          overhead_ms=overhead)


async def send(session: aiohttp.ClientSession, target: Target, tally: Tally, *,
               since: float | None = None, first_byte: bool = False) -> None:
    """One request; records its latency (from ``since`` if given, else from now) or its error.

    With ``first_byte`` the latency ends at the first body byte; the rest is read and dropped.
    """
    start = time.perf_counter()
    origin = start if since is None else min(since, start)
    try:
        async with session.post(target.url, data=target.body,
                                headers=target.next_headers()) as resp:
            await resp.content.readany()
            first = time.perf_counter()
            while await resp.content.readany():
                pass
            end = time.perf_counter()
            if not 200 <= resp.status < 300:
                tally.errors[f"http_{resp.status}"] += 1
                return
            overhead = resp.headers.get("x-switchboard-overhead-ms")
    except TRANSPORT_ERRORS as exc:
        tally.errors[type(exc).__name__] += 1
        return
    tally.latencies.append((first if first_byte else end) - origin)
    if since is not None:
        tally.lags.append(max(0.0, start - since))
    if overhead is not None:
        tally.overheads.append(float(overhead))


def new_session(target: Target, *, limit: int) -> aiohttp.ClientSession:
    """A client session with at most ``limit`` connections (0: unlimited)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=target.timeout_s))


async def warm(session: aiohttp.ClientSession, target: Target, connections: int) -> None:
    """Open ``connections`` keep-alive connections and push a few requests through each."""
    scratch = Tally()
    for _ in range(3):
        await asyncio.gather(*(send(session, target, scratch) for _ in range(connections)))
    if scratch.errors:
        raise SystemExit(f"warm-up failed: {dict(scratch.errors)}")


async def open_loop(target: Target, *, rate: float, duration_s: float) -> LoadReport:
    """``rate * duration_s`` requests at fixed intervals, latency from each scheduled time."""
    count = max(1, round(rate * duration_s))
    tally = Tally()
    async with new_session(target, limit=0) as session:
        await warm(session, target, 8)
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.01
        for i in range(count):
            due = start + i / rate
            # One sleep, no spin: the loop's timers are only ms-precise, so a request may go out
            # slightly early; ``send`` then times it from its real start instead.
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.ensure_future(send(session, target, tally, since=due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return tally.report(mode="open", duration_s=elapsed)


async def closed_loop(target: Target, *, connections: int, duration_s: float,
                      requests: int, first_byte: bool = False) -> LoadReport:
    """``connections`` workers back to back until ``requests`` are done or time is up."""
    tally = Tally()
    budget = [requests if requests > 0 else 1 << 62]

    async def worker(session: aiohttp.ClientSession, deadline: float) -> None:
        """One connection's loop: take a request from the budget, send it, repeat."""
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            await send(session, target, tally, first_byte=first_byte)

    async with new_session(target, limit=connections) as session:
        await warm(session, target, connections)
        start = time.perf_counter()
        await asyncio.gather(*(worker(session, start + duration_s) for _ in range(connections)))
        elapsed = time.perf_counter() - start
    return tally.report(mode="ttft" if first_byte else "closed", duration_s=elapsed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Switchboard benchmark load generator.")
    parser.add_argument("--mode", choices=("open", "closed", "ttft"), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--keys-file", default=None,
                        help="bearer keys, one per line, used in turn (one per request)")
    parser.add_argument("--rate", type=float, default=300.0, help="open: requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (an upper bound)")
    parser.add_argument("--connections", type=int, default=32, help="closed/ttft: concurrency")
    parser.add_argument("--requests", type=int, default=0, help="closed/ttft: stop after N")
    args = parser.parse_args(argv)
    args.keys = ()
    if args.keys_file:
        with open(args.keys_file) as lines:
            args.keys = tuple(line.strip() for line in lines if line.strip())
    return args


async def run(args: argparse.Namespace) -> LoadReport:
    """Run the mode the arguments ask for."""
    headers = {"Content-Type": "application/json"}
    for item in args.header:
        name, _, value = item.partition(":")
        headers[name.strip()] = value.strip()
    target = Target(url=args.url, body=args.body.encode(), headers=headers, keys=args.keys)
    if args.mode == "open":
        return await open_loop(target, rate=args.rate, duration_s=args.duration)
    return await closed_loop(target, connections=args.connections, duration_s=args.duration,
                             requests=args.requests, first_byte=args.mode == "ttft")


def main() -> None:
    """Entry point: print the report as one line of JSON."""
    args = parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        report = runner.run(run(args))
    print(MARKER + json.dumps(report.to_dict()))


if __name__ == "__main__":
    main()
