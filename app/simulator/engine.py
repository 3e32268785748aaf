"""A vLLM server's queueing, for benchmarks of routing across vLLM pools (``switchboard
simulate --vllm-max-seqs N``): decode slots, a FIFO waiting queue, a KV cache of bounded size
and a prefix cache, so that ``/metrics`` reports what load and routing really did.

- At most ``max_seqs`` requests generate at once (vLLM's ``max_num_seqs``), and only while the
  tokens they hold (prompt and completion) fit in ``kv_tokens``; the others wait, first come
  first served (``vllm:num_requests_waiting``).
- A running request's time to first token is its prefill: ``prefill_ms`` per prompt token not
  found in the prefix cache. Each later token takes ``tpot_ms``, plus ``batch_slowdown`` of it
  per other running request (decode batches slow as they grow), fixed when it starts.
- The prefix cache keeps prompts in 16-token blocks, each named by the hash of the whole prompt
  up to its end (so a block hits only after the same prefix), in least-recently-used order, as
  many blocks as the KV cache holds. A prompt hits on its longest cached run of leading blocks
  (``vllm:prefix_cache_queries`` and ``_hits``, in tokens).

A simplification: a request that waits in the queue keeps its place when its client leaves
(vLLM aborts it); it then runs and its answer is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

BLOCK = 16
"""Tokens per prefix-cache block (vLLM's default block size)."""


@dataclass(frozen=True, slots=True)
class EngineOptions:
    max_seqs: int
    kv_tokens: int = 65_536
    prefill_ms: float = 0.1
    """Milliseconds per uncached prompt token."""
    tpot_ms: float = 10.0
    batch_slowdown: float = 0.02


def block_hashes(ids: Sequence[int]) -> list[int]:
    """The chained hash of each full ``BLOCK`` of ``ids``: block i's names every token up to its
    end."""
    hashes: list[int] = []
    running = 0
    for end in range(BLOCK, len(ids) + 1, BLOCK):
        running = hash((running, tuple(ids[end - BLOCK:end])))
        hashes.append(running)
    return hashes


class Engine:
    """One simulated vLLM engine (see the module docstring); touched only from the event loop."""

    def __init__(self, options: EngineOptions, *, clock: Callable[[], float] = time.monotonic,
                 ) -> None:
        self.options = options
        self.running = 0
        self.kv_used = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._cache: OrderedDict[int, None] = OrderedDict()
        self._cache_blocks = max(1, options.kv_tokens // BLOCK)
        self.prefix_queries = 0
        self.prefix_hits = 0
        self._clock = clock

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_usage(self) -> float:
        """The share of the KV cache running requests hold (``vllm:kv_cache_usage_perc``)."""
        return min(1.0, self.kv_used / self.options.kv_tokens)

    def _fits(self, tokens: int) -> bool:
        return self.running < self.options.max_seqs and (
            self.running == 0 or self.kv_used + tokens <= self.options.kv_tokens)

    def _take(self, tokens: int) -> None:
        self.running += 1
        self.kv_used += tokens

    def _release(self, tokens: int) -> None:
        self.running -= 1
        self.kv_used -= tokens
        while self._waiting and self._fits(self._waiting[0][0]):
            need, waiter = self._waiting.popleft()
            if not waiter.done():
                self._take(need)
                waiter.set_result(None)

    def prefill(self, ids: Sequence[int]) -> int:
        """Look ``ids`` up in the prefix cache and cache them; how many tokens hit."""
        hashes = block_hashes(ids)
        hit = 0
        for h in hashes:
            if h not in self._cache:
                break
            hit += 1
        for h in hashes:
            self._cache[h] = None
            self._cache.move_to_end(h)
        while len(self._cache) > self._cache_blocks:
            self._cache.popitem(last=False)
        self.prefix_queries += len(ids)
        self.prefix_hits += hit * BLOCK
        return hit * BLOCK

    def timing(self, ids: Sequence[int]) -> tuple[float, float]:
        """(time to first token, time per later token) in seconds for a request starting now."""
        options = self.options
        uncached = len(ids) - self.prefill(ids)
        tpot = options.tpot_ms * (1 + options.batch_slowdown * (self.running - 1))
        return uncached * options.prefill_ms / 1000, tpot / 1000

    @asynccontextmanager
    async def generation(self, ids: Sequence[int], completion: int
                         ) -> AsyncIterator[tuple[float, float]]:
        """Wait for a slot, then hold it (and the KV cache the request needs) while the body
        runs; yields ``timing(ids)``."""
        need = len(ids) + completion
        if not self._waiting and self._fits(need):
            self._take(need)
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (need, waiter)
            self._waiting.append(entry)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release(need)  # admitted as it was cancelled
                else:
                    self._waiting.remove(entry)
                raise
        try:
            yield self.timing(ids)
        finally:
            self._release(need)
