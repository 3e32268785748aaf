"""Live configuration: ``ConfigReloader`` re-reads the config file and swaps the gateway's
snapshot (``Gateway.swap``) when it changed, without a restart.

When: every ``poll_s`` (the file's bytes and those of every ``${file:...}`` it references are
hashed; reading the path each time follows a Kubernetes ConfigMap or Secret update, which swaps a
symlink that a watch on the file itself would miss), on ``SIGHUP`` or ``SIGUSR1`` (``app.main``
installs the handlers), and on ``POST /admin/config/reload``.

Workers of ``switchboard serve --workers N``: a reload request reaches one worker. Once it has
reloaded, it tells its siblings (``tell_siblings``: ``SIGUSR2`` to the other children of the
supervisor that run ``spawn_main`` and catch that signal; Linux's ``/proc``), and each reloads
the file at once as well, without telling anyone further. So ``POST /admin/config/reload``
reaches every worker even with ``SWITCHBOARD_CONFIG_POLL_S=0``, where no worker would ever look
at the file again otherwise. A worker still starting catches the notice early
(``app.serving.follow_supervisor``) and reloads once its app is up. Signals to one worker
(``SIGHUP``/``SIGUSR1``) stay that worker's: the README's recipe signals each.

How: the new file is validated completely first (``app.config.load_config``), then what it
needs is built (providers, and what the pipeline's stages load for it: ``Pipeline.prepare``);
an invalid one, or one whose parts cannot be built (a provider whose builder raises
``ConfigError``, a credential the environment lacks settings for; a ``local`` model that
cannot load), changes nothing: the error, with its path in the YAML, is logged, kept for
``GET /admin/config`` and counted in ``switchboard_config_reload_errors_total``, and the old
config keeps serving. A valid one
becomes a new ``Snapshot``: providers whose settings did not change are carried over
(the same object, so their connection pools stay), new or changed ones are built, and the old
ones are closed once the last call on the old snapshot has finished. Calls that started before
the swap, streams included, finish on the config they started with; every call row names the
version that served it (``calls.config_version``).

What a reload does not change: the sections read once at start-up (``RESTART_SECTIONS``: the
call log, the rate limiter's Redis settings, drift). ``restart_needed`` names those in which the
file serving now differs from the config the process started with, whatever reloads came in
between (an edit elsewhere keeps them listed; an edit back to the start-up values clears them);
a reload swaps everything else, and logs a warning with their differences from the running
values while there are any. The vLLM ``/metrics`` scrape targets follow the new config
(``BackendScraper.follow``), and drift forgets the targets it no longer has
(``DriftMonitor.set_targets``: their series go, as a removed target's ``target_state`` and a
removed model's traffic series, ``Recorder.set_models``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from app import errors
from app.background import pause
from app.config import FILE_REF, ConfigError, GatewayConfig, load_config
from app.config_diff import RESTART_SECTIONS, changes
from app.gateway import Gateway
from app.metrics.runtime import (
    MetricsRuntime,
    configured_targets,
    drift_targets,
    vllm_providers,
)
from app.pipeline import Snapshot, config_version
from app.pricing import PriceBook, shipped_prices
from app.providers import build_provider
from app.providers.base import Provider, Warmable
from app.serving import SIBLING_RELOAD, SUPERVISOR_PID
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
    """The sections read at start-up only (``RESTART_SECTIONS``) in which the config serving
    after it differs from the one the process started with: a restart would apply them."""


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
    """As ``Reload.restart_needed``, of the config serving now."""


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
        self._started = gateway.snapshot.config
        """The config the process started with: the sections read only then are its."""
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
        """Reload soon, in a task (a signal handler's way in); this process only."""
        task = asyncio.get_running_loop().create_task(
            self.reload(reason=reason, force=True, siblings=False))
        task.add_done_callback(_retrieve)

    async def reload(self, *, reason: str, force: bool = False,
                     siblings: bool = True) -> Reload:
        """Read the files; swap in their config if it is valid and differs from the one
        serving. ``force``: parse them even when their bytes did not change (an environment
        variable may have); then, in a worker of ``switchboard serve --workers N`` and unless
        ``siblings`` is false, tell the other workers to reload too (``tell_siblings``). Never
        raises for a bad file."""
        outcome = await self._reload(reason=reason, force=force)
        if force and siblings:
            tell_siblings()
        return outcome

    async def _reload(self, *, reason: str, force: bool) -> Reload:
        async with self._lock:
            serving = self.gateway.snapshot
            fingerprint = self._fingerprint()
            if not force and fingerprint == self._seen:
                return self._unchanged(serving.version)
            self._seen = fingerprint
            try:
                config = load_config(self.path, environment())
            except ConfigError as exc:
                return self._refused(str(exc), reason, serving.version)
            except Exception as exc:  # a file no check foresaw: the old config keeps serving
                log.exception("reading the config file %s failed", self.path)
                return self._refused(f"config: reading it failed ({type(exc).__name__}; the "
                                     "gateway's log has the details)", reason, serving.version)
            version = config_version(config)
            if version == serving.version:
                self.state.last_error = self.state.last_error_at = None
                return self._unchanged(version)
            try:
                snapshot = await self._snapshot(config, serving)
            except ConfigError as exc:  # a provider its builder refuses (settings it reads
                # from the environment)
                return self._refused(str(exc), reason, serving.version)
            except errors.GatewayError as exc:  # a provider (or a stage's model) that
                # cannot be prepared
                return self._refused(exc.message, reason, serving.version)
            restart = tuple(s for s in RESTART_SECTIONS
                            if getattr(config, s) != getattr(self._started, s))
            resumed = [s for s in self.state.restart_needed if s not in restart]
            self.gateway.swap(snapshot)
            self.state.last_error = self.state.last_error_at = None
            self.state.loaded_at = time.time()
            self.state.reloads += 1
            self.state.restart_needed = restart
            if self._metrics is not None:
                self._metrics.flush()  # the calls finished so far, under the old models
                self._metrics.recorder.set_models(config.models)
                self._metrics.recorder.set_targets(configured_targets(config))
                if self._metrics.drift is not None:
                    self._metrics.drift.set_targets(drift_targets(config))
                metrics = self._metrics.metrics
                info = metrics.config_info
                info.labels(serving.version).set(0)  # 0 first: a worker's file keeps the value
                metrics.remove_series(info, serving.version)
                info.labels(version).set(1)
                await self._metrics.backends.follow(vllm_providers(config))
            self._log_swap(serving, config, version, reason, restart=restart, resumed=resumed)
            return Reload(changed=True, version=version, restart_needed=restart)

    def _log_swap(self, old: Snapshot, config: GatewayConfig, version: str, reason: str, *,
                  restart: tuple[str, ...], resumed: list[str]) -> None:
        """Log what the swap from ``old`` to ``config`` applied and, while there is any, what
        waits for a restart. The sections read at start-up are compared with the values the
        process runs with (the start-up config's), not with the last file's, which were never
        applied."""
        started = self._started
        applied = [*changes(_sections_of(old.config, started), _sections_of(config, started)),
                   *(f"{section}: back to the settings this process runs with"
                     for section in resumed)]
        log.info("config %s -> %s (%s): %s", old.version, version, reason,
                 "; ".join(applied) or "no change to what a reload applies")
        if restart:
            others = [s for s in type(config).model_fields if s not in RESTART_SECTIONS]
            log.warning("config sections read at start-up only differ from the ones this "
                        "process runs with (restart it to apply them): %s",
                        "; ".join(changes(started, _sections_of(config, started, others))))

    def _unchanged(self, version: str) -> Reload:
        return Reload(changed=False, version=version, restart_needed=self.state.restart_needed)

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
                    try:
                        providers[name] = built[name] = build_provider(settings, self._session)
                    except ConfigError as exc:
                        raise ConfigError(f"providers.{name}: {exc}") from None
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


def _sections_of(config: GatewayConfig, source: GatewayConfig,
                 sections: Iterable[str] = RESTART_SECTIONS) -> GatewayConfig:
    """``config`` with ``source``'s ``sections`` (for a diff that leaves them out); the paths
    of ``config``'s referenced values are kept, so that ``changes`` still hides them."""
    return config.model_copy(update={section: getattr(source, section) for section in sections})


def tell_siblings() -> int:
    """In a worker of ``switchboard serve --workers N`` (Linux): send ``SIBLING_RELOAD`` to the
    supervisor's other children that run ``spawn_main`` (uvicorn's workers; not
    multiprocessing's resource tracker, which the signal would end) and catch or ignore it (a
    worker set up by ``follow_supervisor``); how many were told. Elsewhere: 0."""
    supervisor = os.environ.get(SUPERVISOR_PID)
    if supervisor is None or not sys.platform.startswith("linux"):
        return 0
    told = 0
    bit = 1 << (SIBLING_RELOAD - 1)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            status = Path(entry.path, "status").read_text()
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            if fields.get("PPid", "").strip() != supervisor:
                continue
            if b"spawn_main" not in Path(entry.path, "cmdline").read_bytes():
                continue
            handled = int(fields.get("SigCgt", "0"), 16) | int(fields.get("SigIgn", "0"), 16)
            if not handled & bit:
                continue  # not set up yet: it reads the file as it starts
            os.kill(int(entry.name), SIBLING_RELOAD)
            told += 1
        except (OSError, ValueError):  # gone meanwhile, or not ours to read or signal
            continue
    log.info("config reload: told %d other worker(s) to reload", told)
    return told


def _retrieve(task: asyncio.Task[Reload]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("config reload failed", exc_info=task.exception())
