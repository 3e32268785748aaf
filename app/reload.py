"""Live configuration: ``ConfigReloader`` re-reads the config file and swaps the gateway's
snapshot (``Gateway.swap``) when it changed, without a restart.

When: every ``poll_s`` (the file's bytes and those of every ``${file:...}`` it references are
hashed; reading the path each time follows a Kubernetes ConfigMap or Secret update, which swaps a
symlink that a watch on the file itself would miss), on ``SIGHUP`` or ``SIGUSR1`` (``app.main``
installs the handlers), and on ``POST /admin/config/reload``.

How: the new file is validated completely first (``app.config.load_config``), then what it
needs is built (providers, and what the pipeline's stages load for it: ``Pipeline.prepare``);
an invalid one, or one whose parts cannot be built, changes nothing: the error, with its path
in the YAML, is logged, kept for ``GET /admin/config`` and counted in
``switchboard_config_reload_errors_total``, and the old config keeps serving. A valid one
becomes a new ``Snapshot``: providers whose settings did not change are carried over
(the same object, so their connection pools stay), new or changed ones are built, and the old
ones are closed once the last call on the old snapshot has finished. Calls that started before
the swap, streams included, finish on the config they started with; every call row names the
version that served it (``calls.config_version``).

What a reload does not change: the sections read once at start-up (``RESTART_SECTIONS``: the
call log, the rate limiter's Redis settings, drift). A reload that changes them swaps everything
else, logs a warning naming them and reports them in ``restart_needed``. The vLLM ``/metrics``
scrape targets follow the new config (``BackendScraper.follow``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from app import errors
from app.background import pause
from app.config import FILE_REF, ConfigError, GatewayConfig, load_config
from app.config_diff import RESTART_SECTIONS, changes
from app.gateway import Gateway
from app.metrics.runtime import MetricsRuntime, configured_targets, vllm_providers
from app.pipeline import Snapshot, config_version
from app.pricing import PriceBook, shipped_prices
from app.providers import build_provider
from app.providers.base import Provider, Warmable
from app.settings import environment

log = logging.getLogger("switchboard.config")



@dataclass(frozen=True, slots=True)
class Reload:
    """What one reload did."""

    changed: bool
    version: str
    """The version serving after it."""
    error: str | None = None
    """Why the file was refused (the old config keeps serving); ``None`` when it was not."""
    restart_needed: tuple[str, ...] = ()
    """Changed sections that take effect only on a restart."""


@dataclass(slots=True)
class ReloadState:
    """What ``GET /admin/config`` shows about reloads."""

    loaded_at: float = field(default_factory=time.time)
    """When the version serving now was loaded (epoch seconds)."""
    reloads: int = 0
    """Versions swapped in since start-up."""
    last_error: str | None = None
    last_error_at: float | None = None
    restart_needed: tuple[str, ...] = ()


class ConfigReloader:
    """Reloads one gateway process's config from ``path`` (see the module docstring)."""

    def __init__(self, gateway: Gateway, path: Path, *, session: aiohttp.ClientSession,
                 metrics: MetricsRuntime | None, poll_s: float) -> None:
        self.gateway = gateway
        self.path = path
        self.poll_s = poll_s
        self.state = ReloadState()
        self._session = session
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._seen: bytes | None = None
        """The fingerprint of the files last read (``None``: read them on the next poll)."""
        self._task: asyncio.Task[None] | None = None
        if metrics is not None:
            metrics.metrics.config_info.labels(gateway.snapshot.version).set(1)

    def start(self) -> None:
        """Start polling the files."""
        if self.poll_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="config")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _poll(self) -> None:
        while True:
            await pause(self.poll_s)
            try:
                await self.reload(reason="file change")
            except Exception:  # the poller must outlive any one failure
                log.exception("config reload failed")

    def request(self, reason: str) -> None:
        """Reload soon, in a task (a signal handler's way in)."""
        task = asyncio.get_running_loop().create_task(self.reload(reason=reason, force=True))
        task.add_done_callback(_retrieve)

    async def reload(self, *, reason: str, force: bool = False) -> Reload:
        """Read the files; swap in their config if it is valid and differs from the one
        serving. ``force``: parse them even when their bytes did not change (an environment
        variable may have). Never raises for a bad file."""
        async with self._lock:
            serving = self.gateway.snapshot
            fingerprint = self._fingerprint()
            if not force and fingerprint == self._seen:
                return Reload(changed=False, version=serving.version)
            self._seen = fingerprint
            try:
                config = load_config(self.path, environment())
            except ConfigError as exc:
                return self._refused(str(exc), reason, serving.version)
            self.state.last_error = self.state.last_error_at = None
            version = config_version(config)
            if version == serving.version:
                return Reload(changed=False, version=version)
            try:
                snapshot = await self._snapshot(config, serving)
            except errors.GatewayError as exc:  # a provider (or a stage's model) that
                # cannot be built from it
                return self._refused(exc.message, reason, serving.version)
            restart = tuple(s for s in RESTART_SECTIONS
                            if getattr(config, s) != getattr(serving.config, s))
            self.gateway.swap(snapshot)
            self.state.loaded_at = time.time()
            self.state.reloads += 1
            self.state.restart_needed = restart
            if self._metrics is not None:
                self._metrics.recorder.set_models(config.models)
                self._metrics.recorder.set_targets(configured_targets(config))
                metrics = self._metrics.metrics
                info = metrics.config_info
                info.labels(serving.version).set(0)  # 0 first: a worker's file keeps the value
                metrics.remove_series(info, serving.version)
                info.labels(version).set(1)
                await self._metrics.backends.follow(vllm_providers(config))
            log.info("config %s -> %s (%s): %s", serving.version, version, reason,
                     "; ".join(changes(serving.config, config)))
            if restart:
                log.warning("config sections changed that take effect on restart only: %s",
                            ", ".join(restart))
            return Reload(changed=True, version=version, restart_needed=restart)

    def _refused(self, message: str, reason: str, version: str) -> Reload:
        self.state.last_error = message
        self.state.last_error_at = time.time()
        if self._metrics is not None:
            self._metrics.metrics.config_reload_errors.inc()
        log.error("config reload (%s) refused, still serving %s:\n%s", reason, version, message)
        return Reload(changed=False, version=version, error=message)

    async def _snapshot(self, config: GatewayConfig, serving: Snapshot) -> Snapshot:
        """``config`` as a snapshot, reusing the serving snapshot's unchanged providers."""
        providers: dict[str, Provider] = {}
        built: dict[str, Provider] = {}
        try:
            for name, settings in config.providers.items():
                if name in serving.providers and serving.config.providers.get(name) == settings:
                    providers[name] = serving.providers[name]
                else:
                    providers[name] = built[name] = build_provider(settings, self._session)
            for name, provider in built.items():
                if isinstance(provider, Warmable):
                    try:
                        await provider.warm()
                    except errors.GatewayError as exc:  # a model that cannot load: refused
                        # like an invalid file, saying which provider
                        raise errors.UpstreamUnavailable(
                            f"provider {name} could not be prepared: {exc.message}",
                            status=503) from exc
            await serving.pipeline.prepare(config)
        except BaseException:
            for provider in built.values():
                await provider.aclose()
            raise
        prices = PriceBook({**shipped_prices(), **config.pricing})
        return Snapshot.build(config, serving.pipeline, providers, prices, previous=serving)

    def _fingerprint(self) -> bytes:
        """A hash of the config file's bytes and of every file it references."""
        digest = hashlib.sha256()
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            return f"unreadable: {exc.strerror}".encode()
        digest.update(raw)
        for reference in FILE_REF.findall(raw.decode("utf-8", errors="replace")):
            try:
                digest.update(b"\0" + Path(reference).read_bytes())
            except OSError:
                digest.update(b"\0unreadable")
        return digest.digest()


def _retrieve(task: asyncio.Task[Reload]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("config reload failed", exc_info=task.exception())
