"""A vLLM server's scheduler, KV cache and prefix cache, for benchmarks of routing across vLLM
pools (``switchboard simulate --vllm-max-seqs N``): a pure model driven by a clock (no I/O, no
event loop; ``core.engine_slot`` runs requests through it), so that latency and ``/metrics``
follow from the load and from what each server has cached.

- **Slots and queue.** At most ``max_seqs`` sequences run at once (vLLM's ``max_num_seqs``),
  and only while their KV blocks fit in ``kv_tokens``; the others wait, first come first
  served (``vllm:num_requests_waiting``). A sequence alone is admitted however large it is.
- **KV cache**, in blocks of ``BLOCK`` tokens, as vLLM's paged attention allocates it. A
  sequence holds its prompt's full blocks, shared with every running sequence whose prompt
  starts alike, plus blocks of its own for the prompt's last partial block and its whole
  completion (reserved at admission: nothing is preempted). ``vllm:kv_cache_usage_perc`` is the
  share of blocks running sequences hold.
- **Prefix cache.** A full prompt block is named by the chained hash of every token up to its
  end, so it matches only after the same prefix. A block no running sequence holds stays cached
  in a least-recently-freed queue (a sequence's deeper blocks freed first, so prefixes outlive
  their tails) until a new block needs its room. A prompt hits on its longest run of cached
  leading blocks, never on its last token, which vLLM always computes
  (``vllm:prefix_cache_queries`` and ``_hits``, in tokens).
- **Timing.** Prefill is one GPU's work, done in admission order: a sequence's first token
  comes ``prefill_ms`` per uncached prompt token after the prefills admitted before it. Each
  later token takes ``tpot_ms``, plus ``batch_slowdown`` of it per other running sequence,
  read as each token is produced (decode steps slow as the batch grows).

Simplifications: decode steps do not stall for prefills; a request's ``n`` choices, or a
completion request's several prompts, are one sequence; a waiting request whose client left
stays queued until admitted (then ends at once), where vLLM aborts it.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

BLOCK = 16
"""Tokens per KV-cache block (vLLM's default block size)."""


@dataclass(frozen=True, slots=True)
class EngineOptions:
    max_seqs: int
    kv_tokens: int = 65_536
    prefill_ms: float = 0.1
    """Milliseconds per uncached prompt token."""
    tpot_ms: float = 10.0
    """Milliseconds per decoded token with one sequence running."""
    batch_slowdown: float = 0.02
    """The share of ``tpot_ms`` each other running sequence adds."""


def block_hashes(ids: Sequence[int]) -> list[int]:
    """The chained hash of each full ``BLOCK`` of ``ids``: block i's names every token up to its
    end (ints and tuples hash alike in every process)."""
    hashes: list[int] = []
    running = 0
    for end in range(BLOCK, len(ids) + 1, BLOCK):
        running = hash((running, tuple(ids[end - BLOCK:end])))
        hashes.append(running)
    return hashes


@dataclass(eq=False)
class Seq:
    """One request in the engine (compared by identity)."""

    blocks: list[int]
    """The chained hashes of its prompt's full blocks."""
    prompt: int
    own: int
    """KV blocks of its own: the prompt's partial last block and the completion."""
    admitted: bool = False
    hit: int = 0
    """Prompt tokens found in the prefix cache (set at admission)."""
    first_token_at: float = field(default=0.0)
    """Clock time of its first token (set at admission)."""


class Engine:
    """One simulated vLLM engine (see the module docstring)."""

    def __init__(self, options: EngineOptions, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.clock = clock
        self.capacity = max(1, options.kv_tokens // BLOCK)
        """KV-cache blocks."""
        self.prefix_queries = 0
        self.prefix_hits = 0
        self._running: set[Seq] = set()
        self._waiting: deque[Seq] = deque()
        self._holders: dict[int, int] = {}
        """Every cached block -> how many running sequences hold it (0: free, evictable)."""
        self._free: OrderedDict[int, None] = OrderedDict()
        """Cached blocks nobody holds, least recently freed first."""
        self._own = 0
        self._prefill_done_at = 0.0

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def blocks_used(self) -> int:
        """KV blocks running sequences hold."""
        return len(self._holders) - len(self._free) + self._own

    @property
    def kv_usage(self) -> float:
        """``vllm:kv_cache_usage_perc``: the share of the KV cache running sequences hold."""
        return min(1.0, self.blocks_used / self.capacity)

    def cached(self, ids: Sequence[int]) -> int:
        """How many leading tokens of ``ids`` the prefix cache holds now (no side effect)."""
        return self._hit_blocks(block_hashes(ids), len(ids)) * BLOCK

    def submit(self, ids: Sequence[int], completion: int) -> Seq:
        """Queue a request of prompt ``ids`` generating ``completion`` tokens, and admit it
        now if it is next and fits (``admitted``)."""
        seq = Seq(blocks=block_hashes(ids), prompt=len(ids),
                  own=-(-(len(ids) % BLOCK + completion) // BLOCK))
        self._waiting.append(seq)
        self._schedule()
        return seq

    def leave(self, seq: Seq) -> None:
        """A waiting sequence gives its place up."""
        self._waiting.remove(seq)

    def finish(self, seq: Seq) -> list[Seq]:
        """A running sequence ends: its blocks are freed (its own at once, its prompt's to the
        prefix cache). The sequences this lets in, in order."""
        self._running.remove(seq)
        self._own -= seq.own
        for h in reversed(seq.blocks):  # deeper blocks first, so they are evicted first
            self._holders[h] -= 1
            if self._holders[h] == 0:
                self._free[h] = None
        return self._schedule()

    def first_token_in(self, seq: Seq) -> float:
        """Seconds from now to ``seq``'s first token (0 when it is due)."""
        return max(0.0, seq.first_token_at - self.clock())

    def tpot(self) -> float:
        """Seconds per decoded token for the batch running now."""
        options = self.options
        return options.tpot_ms * (1 + options.batch_slowdown * max(0, self.running - 1)) / 1000

    def forget(self) -> None:
        """Empty the prefix cache of the blocks nobody holds and zero its counters."""
        for h in self._free:
            del self._holders[h]
        self._free.clear()
        self.prefix_queries = self.prefix_hits = 0

    def _hit_blocks(self, blocks: list[int], prompt: int) -> int:
        hit = 0
        for h in blocks[:(prompt - 1) // BLOCK]:
            if h not in self._holders:
                break
            hit += 1
        return hit

    def _schedule(self) -> list[Seq]:
        admitted: list[Seq] = []
        while self._waiting and self.running < self.options.max_seqs:
            seq = self._waiting[0]
            unheld = sum(1 for h in seq.blocks if self._holders.get(h, 0) == 0)
            if self._running and self.blocks_used + unheld + seq.own > self.capacity:
                break
            self._waiting.popleft()
            self._admit(seq)
            admitted.append(seq)
        return admitted

    def _admit(self, seq: Seq) -> None:
        hit = self._hit_blocks(seq.blocks, seq.prompt) * BLOCK
        for h in seq.blocks:
            self._free.pop(h, None)
            self._holders[h] = self._holders.get(h, 0) + 1
        self._own += seq.own
        while len(self._holders) + self._own > self.capacity and self._free:
            evicted, _ = self._free.popitem(last=False)
            del self._holders[evicted]
        self.prefix_queries += seq.prompt
        self.prefix_hits += hit
        start = max(self.clock(), self._prefill_done_at)
        self._prefill_done_at = start + (seq.prompt - hit) * self.options.prefill_ms / 1000
        seq.hit, seq.first_token_at, seq.admitted = hit, self._prefill_done_at, True
        self._running.add(seq)
