"""``PromptLibrary``: templates as the request path reads them, the store behind a small cache.

- Versions are immutable, so a compiled version is cached for the life of the process (up to
  ``MAX_VERSIONS`` of them; past it the cache starts over).
- Labels move, so where a label points is cached for ``LABEL_TTL_S`` seconds. A move made
  through this process (the admin API of this worker) calls ``forget`` and is seen at once;
  one made elsewhere (another worker, another gateway, the CLI) within ``LABEL_TTL_S``.
- When the database cannot answer, a label whose cached answer has expired keeps being served
  from it (stale beats failing a call); with nothing cached the call fails with the store's
  error.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from app.db.engine import DATABASE_ERRORS
from app.prompts.model import CompiledVersion
from app.prompts.store import PromptStore

LABEL_TTL_S = 5.0
MAX_VERSIONS = 10_000
MAX_LABELS = 10_000


class PromptLibrary:
    """Compiled versions and label lookups over a ``PromptStore`` (see the module docstring)."""

    def __init__(self, store: PromptStore, *, label_ttl_s: float = LABEL_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._ttl = label_ttl_s
        self._clock = clock
        self._versions: dict[tuple[str, int], CompiledVersion] = {}
        self._labels: dict[tuple[str, str], tuple[int, float]] = {}
        """(template, label) -> (version, expiry on ``clock``)."""

    async def version(self, template_id: str, number: int) -> CompiledVersion:
        """Version ``number`` of ``template_id``, compiled; ``NotFound`` if there is none."""
        key = (template_id, number)
        found = self._versions.get(key)
        if found is None:
            found = CompiledVersion.of(await self.store.get_version(template_id, number))
            if len(self._versions) >= MAX_VERSIONS:
                self._versions.clear()
            self._versions[key] = found
        return found

    async def label(self, template_id: str, label: str) -> int:
        """The version ``label`` points at (``latest``: the highest)."""
        key = (template_id, label)
        cached = self._labels.get(key)
        now = self._clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            number = await self.store.resolve(template_id, label)
        except DATABASE_ERRORS:
            if cached is not None:
                return cached[0]
            raise
        if len(self._labels) >= MAX_LABELS:
            self._labels.clear()
        self._labels[key] = (number, now + self._ttl)
        return number

    def forget(self, template_id: str) -> None:
        """Drop the cached labels of ``template_id`` (after a change made in this process)."""
        for key in [k for k in self._labels if k[0] == template_id]:
            del self._labels[key]
