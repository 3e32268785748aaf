"""The upstream model versions of each drift target, in the order they were first seen: what
``switchboard_upstream_model_info`` exports under their own labels (the first
``MAX_VERSIONS``) and what counts as a version change.

With several workers (multiprocess mode) every worker sees every version, so a change kept per
worker was counted once per worker, and each worker's own first 16 versions made the capped
``upstream_model_info`` series differ between workers. Here the workers share the order through
files in the metrics folder (``PROMETHEUS_MULTIPROC_DIR``, emptied by ``switchboard serve`` at
start-up): slot ``i`` of a target is a file, written once (an atomic hard link: the first
worker to place a version there wins) and read by the others. A version placed in a new slot
(other than the first) is one change, counted by the worker that placed it. Versions past the
cap have no slot: each worker counts the changes to them it sees (an upstream that rotates its
fingerprint on every answer; ``switchboard_upstream_model_info`` shows them as ``other``).

A worker caches the slots it has read (``known``): files are touched only when it meets a
version it has not placed or read before, at most ``MAX_VERSIONS`` reads per target in all.

The capped label values of ``app.metrics.recorder`` (the teams of
``switchboard_spend_usd_total``, the template versions of the prompt series) take their slots
the same way, so that every worker gives one team or template version the same label.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import orjson

from app.metrics.families import MAX_VERSIONS

log = logging.getLogger("switchboard.drift")

Version = tuple[str, str]
"""(response model, system fingerprint)."""
VERSIONS_DIR = "drift-versions"
"""The folder under ``PROMETHEUS_MULTIPROC_DIR`` that holds the slots."""


class VersionSlots:
    """Places versions in their targets' slots: in memory (one process), or shared through
    ``directory`` (multiprocess mode)."""

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._failed = False

    def place(self, target: tuple[str, ...], known: dict[Version, int],
              version: Version, cap: int = MAX_VERSIONS) -> tuple[int | None, bool]:
        """``version``'s slot for ``target`` (``None``: past the ``cap`` slots ``target``
        has) and whether this call put it there. ``known``: the caller's slots of ``target``
        read so far (updated)."""
        slot = known.get(version)
        if slot is not None:
            return slot, False
        if len(known) >= cap:
            return None, False
        if self._directory is not None and not self._failed:
            try:
                return self._shared(target, known, version, cap)
            except OSError as exc:  # a full or read-only disk: count per worker from now on
                self._failed = True
                log.error("drift: version slots in %s unusable (%s); each worker counts "
                          "version changes itself from now on", self._directory, exc)
        known[version] = len(known)
        return known[version], True

    def _shared(self, target: tuple[str, ...], known: dict[Version, int],
                version: Version, cap: int) -> tuple[int | None, bool]:
        assert self._directory is not None
        folder = self._directory / hashlib.sha256(orjson.dumps(target)).hexdigest()[:32]
        folder.mkdir(parents=True, exist_ok=True)
        mine = orjson.dumps(version)
        for i in range(len(known), cap):
            path = folder / f"slot-{i}"
            if not path.exists():
                scratch = folder / f".{os.getpid()}-{i}"
                scratch.write_bytes(mine)
                try:
                    os.link(scratch, path)
                    known[version] = i
                    return i, True
                except FileExistsError:  # another worker placed one there first
                    pass
                finally:
                    scratch.unlink(missing_ok=True)
            theirs = orjson.loads(path.read_bytes())
            known[(theirs[0], theirs[1])] = i
            if theirs == list(version):
                return i, False
        return None, False
