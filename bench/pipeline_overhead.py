"""What a pipeline stage costs per call when it is off, and when it is on, in one run.

    .venv/bin/python -m bench.pipeline_overhead [--calls 200000]

Runs the pipeline's per-call work (``arrive``, ``admit``, ten streamed chunks through the chunk
hooks, ``finish`` with its end hooks and a no-op sink) for three pipelines, alternating them
over five rounds and keeping each one's median:

- reference: the authenticate stage only (as a gateway without keys or limits runs);
- disabled: the same plus three stages that override no hook (a stage switched off for a
  deployment, e.g. privacy with no policy): the target is no measurable difference;
- enabled: the reference plus one stage overriding every hook with a no-op, for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from app.api.incoming import Incoming
from app.calllog import CallRecord
from app.config import embedded_config
from app.gateway import Gateway
from app.pipeline import ModelCall, Pipeline, Slot, Stage
from app.pricing import PriceBook
from app.providers.base import Json
from app.stages.authenticate import Authenticate

CHUNKS = 10


class Off(Stage):
    slot = Slot.PRIVACY


class NoOp(Stage):
    slot = Slot.CACHE

    async def on_headers(self, call: ModelCall) -> None:
        return None

    async def on_request(self, call: ModelCall) -> None:
        return None

    def on_chunk(self, call: ModelCall, chunk: Json) -> Json | None:
        return chunk

    def on_end(self, call: ModelCall) -> None:
        return None


class Discard:
    def submit(self, record: CallRecord) -> None:
        return None


async def _receive() -> dict[str, object]:
    return {"type": "http.disconnect"}


async def per_call_us(pipeline: Pipeline, calls: int) -> float:
    gateway = Gateway(config=embedded_config({}), providers={}, prices=PriceBook({}),
                      sink=Discard(), pipeline=pipeline)
    incoming = Incoming(path="/v1/chat/completions", headers={}, receive=_receive)
    chunk: Json = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
    started = time.perf_counter()
    for _ in range(calls):
        call = gateway.open(incoming)
        async with call:
            snapshot = call.snapshot.pipeline
            await snapshot.arrive(call)
            await snapshot.admit(call)
            hooks = snapshot.chunk_hooks
            for _ in range(CHUNKS):
                if hooks:
                    out: Json | None = chunk
                    for hook in hooks:
                        out = hook(call, chunk) if out is not None else None
    return (time.perf_counter() - started) / calls * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    auth = Authenticate(None, None)
    pipelines = {"reference": Pipeline([auth]),
                 "disabled": Pipeline([auth, Off(), Off(), Off()]),
                 "enabled": Pipeline([auth, NoOp()])}
    samples: dict[str, list[float]] = {name: [] for name in pipelines}
    for round_ in range(5):
        order = list(pipelines) if round_ % 2 == 0 else list(reversed(pipelines))
        for name in order:
            samples[name].append(await per_call_us(pipelines[name], args.calls))
    reference = statistics.median(samples["reference"])
    print(f"{'pipeline':<10} {'us/call':>8} {'vs reference':>13}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:<10} {median:8.2f} {median / reference:12.3f}x")


if __name__ == "__main__":
    asyncio.run(main())
