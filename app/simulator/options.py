"""What one simulator process plays: latency, model list, limits and the vLLM version's dialect."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.simulator.engine import EngineOptions

# The model name reported in ``/v1/models`` and the ``/metrics`` labels when no list is configured.
DEFAULT_MODEL = "sim-model"

_LEADING_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class SimOptions:
    """Settings of one simulator process (immutable; per-request changes travel as headers,
    process-wide runtime changes through ``POST /_sim/state``: see ``drift``).

    ``ttft_ms``/``tpot_ms``: time to the first token and between later tokens; ``jitter``: a
    uniform +/- fraction applied to each wait, drawn from a generator seeded with ``seed``.
    ``models``: accepted model names (empty accepts any). ``vllm_version`` selects the vLLM
    dialect (error bodies, structured-output fields, metric names).
    """

    ttft_ms: float = 0.0
    tpot_ms: float = 0.0
    jitter: float = 0.0
    seed: int = 0
    vllm_version: str = "0.12.0"
    models: tuple[str, ...] = ()
    max_model_len: int = 8192
    default_completion_tokens: int = 16
    embedding_dimensions: int = 384
    """The vector length of an embedding model without a known one
    (``embeddings.MODEL_DIMENSIONS``) when the request does not set it."""
    entra_token_lifetime_s: int = 3599
    """How long the Microsoft Entra ID tokens the simulator issues last (``azure_entra``)."""
    google_token_lifetime_s: int = 3599
    """How long the Google OAuth2 access tokens the simulator issues last (``vertex``)."""
    engine: EngineOptions | None = None
    """vLLM's queueing (``app.simulator.engine``) for chat; ``None``: every request is served
    at once, after ``ttft_ms``/``tpot_ms``."""


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.10.1rc2"`` -> ``(0, 10, 1)``: the leading number of each dotted part, numerically."""
    parts: list[int] = []
    for part in text.strip().lstrip("vV").split("."):
        match = _LEADING_DIGITS.match(part)
        if match is None:
            break
        parts.append(int(match.group()))
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class Dialect:
    """The version-dependent behaviour of the vLLM being played, computed once per process."""

    flat_errors: bool = field(default=False)
    structured_outputs: bool = field(default=True)
    legacy_metric_names: bool = field(default=False)

    @classmethod
    def of(cls, vllm_version: str) -> Dialect:
        """Flat error bodies up to 0.10.0; ``structured_outputs`` from 0.12 (``guided_*``
        before); ``vllm:gpu_cache_usage_perc`` and ``gpu_``-prefixed prefix-cache counters
        before 0.10.0."""
        version = parse_version(vllm_version)
        return cls(flat_errors=version <= (0, 10, 0),
                   structured_outputs=version >= (0, 12, 0),
                   legacy_metric_names=version < (0, 10, 0))
