"""``PromptLibrary``: templates as the request path reads them, the store behind a small cache.

- Versions are immutable, so a compiled version is cached for the life of the process (up to
  ``MAX_VERSIONS`` of them; past it the cache starts over).
- Labels move, so where a label points is cached for ``LABEL_TTL_S`` seconds. A move made
  through this process (the admin API of this worker) calls ``forget`` and is seen at once;
  one made elsewhere (another worker, another gateway, the CLI) within ``LABEL_TTL_S`` (and the
  lookup that reads it).
- An expired label is looked up again by one lookup at a time (concurrent calls share it). A
  call that has the label's previous answer waits for the lookup at most ``STALE_WAIT_S``
  (counted from when the lookup began) and is otherwise served that answer, stale; the lookup
  goes on without it and caches what it finds. When the lookup fails, the stale answer is kept
  for another ``LABEL_TTL_S``: until then calls are served it without asking the database
  (stale beats failing a call, and a database that hangs is asked once per ``LABEL_TTL_S``,
  not by every call). With nothing cached, a call waits for the lookup at most
  ``LOOKUP_WAIT_S`` and fails with the store's error, or ``TimeoutError`` past that bound.
- A version not yet compiled here is read with the same bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from app.db.engine import DATABASE_ERRORS
from app.prompts.model import CompiledVersion
from app.prompts.store import PromptStore

LABEL_TTL_S = 5.0
STALE_WAIT_S = 0.5
"""The longest a call that has a label's previous answer waits for its lookup. A label lookup
is one indexed query (a millisecond); without this bound a hung database held each templated
call by label for the engine's bounds, 5 s to connect or 60 s for a statement (63 s measured)."""
LOOKUP_WAIT_S = 5.0
"""The longest a call waits for a lookup it has no previous answer to fall back on (a version
not yet read, a label never read here): the engine's own bounds, a 5 s connect and a 60 s
statement, held each such call on a hung database for up to a minute before its 503."""
MAX_VERSIONS = 10_000
MAX_LABELS = 10_000

_Key = tuple[str, str]


class PromptLibrary:
    """Compiled versions and label lookups over a ``PromptStore`` (see the module docstring)."""

    def __init__(self, store: PromptStore, *, label_ttl_s: float = LABEL_TTL_S,
                 stale_wait_s: float = STALE_WAIT_S, lookup_wait_s: float = LOOKUP_WAIT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._ttl = label_ttl_s
        self._stale_wait = stale_wait_s
        self._lookup_wait = lookup_wait_s
        self._clock = clock
        self._versions: dict[tuple[str, int], CompiledVersion] = {}
        self._labels: dict[_Key, tuple[int, float]] = {}
        """(template, label) -> (version, expiry on ``clock``)."""
        self._lookups: dict[_Key, tuple[asyncio.Task[int], float]] = {}
        """The label lookups in flight, each with when it began (the event loop's time: the
        wait is real time, whatever ``clock`` is)."""
        self._generation = 0
        """Counts ``forget``: a lookup begun before one caches nothing."""

    async def version(self, template_id: str, number: int) -> CompiledVersion:
        """Version ``number`` of ``template_id``, compiled; ``NotFound`` if there is none."""
        key = (template_id, number)
        found = self._versions.get(key)
        if found is None:
            try:
                async with asyncio.timeout(self._lookup_wait):
                    stored = await self.store.get_version(template_id, number)
            except TimeoutError:
                raise self._no_answer() from None
            found = CompiledVersion.of(stored)
            if len(self._versions) >= MAX_VERSIONS:
                self._versions.clear()
            self._versions[key] = found
        return found

    async def label(self, template_id: str, label: str) -> int:
        """The version ``label`` points at (``latest``: the highest); stale while the database
        cannot say (see the module docstring)."""
        key = (template_id, label)
        cached = self._labels.get(key)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        lookup, began = self._lookups.get(key) or self._look_up(key)
        if cached is None:
            # Shielded: a caller cancelled (or out of time) leaves the lookup to the others
            # waiting on it, and to cache what it finds.
            try:
                return await asyncio.wait_for(asyncio.shield(lookup), self._lookup_wait)
            except TimeoutError:
                raise self._no_answer() from None
        left = began + self._stale_wait - asyncio.get_running_loop().time()
        if left <= 0:  # in flight for longer than a call waits: stale at once
            return cached[0]
        try:
            return await asyncio.wait_for(asyncio.shield(lookup), left)
        except DATABASE_ERRORS:  # TimeoutError (the wait's) among them, as an OSError
            return cached[0]

    def _no_answer(self) -> TimeoutError:
        """A lookup past ``LOOKUP_WAIT_S``: a ``DATABASE_ERRORS`` one (an ``OSError``)."""
        return TimeoutError(f"no answer in {self._lookup_wait:g} s")

    def _look_up(self, key: _Key) -> tuple[asyncio.Task[int], float]:
        """Start the one lookup of ``key``."""
        loop = asyncio.get_running_loop()
        lookup = loop.create_task(self._resolve(key, self._generation),
                                  name="prompt-label-lookup")
        lookup.add_done_callback(_retrieved)  # its callers were told, or were served stale
        self._lookups[key] = entry = (lookup, loop.time())
        return entry

    async def _resolve(self, key: _Key, generation: int) -> int:
        """Look ``key`` up and cache the answer; after a database failure, keep the stale
        answer (if any) for another TTL, then raise."""
        try:
            number = await self.store.resolve(*key)
        except DATABASE_ERRORS:
            cached = self._labels.get(key)
            if cached is not None and generation == self._generation:
                self._labels[key] = (cached[0], self._clock() + self._ttl)
            raise
        finally:
            entry = self._lookups.get(key)
            if entry is not None and entry[0] is asyncio.current_task():
                del self._lookups[key]
        if generation == self._generation:  # no change made here since it began
            if len(self._labels) >= MAX_LABELS:
                self._labels.clear()
            self._labels[key] = (number, self._clock() + self._ttl)
        return number

    def forget(self, template_id: str) -> None:
        """Drop the cached labels of ``template_id`` (after a change made in this process),
        and leave its lookups in flight to their callers: the next call looks it up anew."""
        self._generation += 1
        for key in [k for k in self._labels if k[0] == template_id]:
            del self._labels[key]
        for key in [k for k in self._lookups if k[0] == template_id]:
            del self._lookups[key]


def _retrieved(task: asyncio.Task[int]) -> None:
    """Mark a lookup's failure as seen: a lookup whose callers were served stale has nobody
    awaiting it, and asyncio would log its exception as never retrieved."""
    if not task.cancelled():
        task.exception()
