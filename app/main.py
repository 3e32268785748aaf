"""The app factory: ``create_app(settings)`` builds the app; its lifespan builds the resources."""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import logging
import os
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.types import ASGIApp

from app import errors
from app.api import admin, admin_keys, admin_prompts, health, v1
from app.api import errors as api_errors
from app.api import feedback as feedback_api
from app.api import messages as messages_api
from app.api import metrics as metrics_api
from app.api.admission import Admission
from app.api.fastlane import FastLane
from app.api.incoming import BodyDeadlines
from app.api.loopback import LoopbackOnly
from app.background import close_within
from app.calllog import CallSink, LogSink
from app.calllog.redact import Redactor
from app.calllog.runtime import open_call_log
from app.config import GatewayConfig, embedded_config, load_config
from app.gateway import Gateway
from app.keys import KeyDirectory, KeyStore
from app.limits import Limiter, LocalLimiter, RedisLimiter
from app.limits.budget import (
    FIRST_RECONCILE_WAIT_S,
    Reconciles,
    reconcile,
    reconcile_in_turn,
    reconcile_local,
)
from app.limits.redis import PREFIX
from app.metrics.runtime import open_metrics
from app.pipeline import Pipeline, Stage
from app.pricing import PriceBook, shipped_prices
from app.prompts import PromptStore
from app.prompts.library import PromptLibrary
from app.providers import build_provider
from app.providers.base import Provider, Warmable
from app.providers.http import new_session
from app.reload import ConfigReloader
from app.resources import RedisPools, Resources
from app.routing.shared import SharedBreakers
from app.serving import SIBLING_RELOAD, SUPERVISOR_PID, follow_supervisor, sibling_notices
from app.settings import Settings, environment
from app.stages.admit import Account, Admit
from app.stages.authenticate import Authenticate
from app.stages.privacy import Privacy
from app.stages.template import Template

log = logging.getLogger("switchboard")


def resolve_config(settings: Settings) -> GatewayConfig:
    """The config file named by the settings, or the embedded default."""
    env = environment()
    if settings.config is None:
        return embedded_config(env)
    return load_config(settings.config, env)


async def _warm(resources: Resources, providers: dict[str, Provider]) -> None:
    """Prepare slow providers (model loads) in the background; ready once each has loaded or
    failed to. A provider that failed is logged, one line, and its models answer 503 (it tries
    again on later requests); the gateway is ready all the same, since every other model
    serves."""
    for name, provider in providers.items():
        if isinstance(provider, Warmable):
            try:
                await provider.warm()
            except errors.GatewayError as exc:
                log.warning("provider %s could not be prepared; its models answer 503: %s",
                            name, exc.message)
            except Exception:  # a bug: log it, and still warm the rest and become ready
                # (nothing awaits this task, so an exception would end it unseen)
                log.exception("provider %s failed while being prepared", name)
    resources.ready = True


def _version() -> str:
    """The installed package's version (pyproject.toml), as ``switchboard --version`` prints."""
    try:
        return importlib.metadata.version("switchboard")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
        return "0+unknown"


async def _open_resources(stack: AsyncExitStack, settings: Settings, config: GatewayConfig,
                          sink: CallSink | None, strict: bool,
                          stages: Sequence[Stage], *, live: bool) -> Resources:
    """Build the process's resources; ``stack`` closes them in the reverse order. ``live``:
    reload the config from ``settings.config`` when it changes (``app.reload``)."""
    limits = config.rate_limits
    redis = RedisPools.open(settings.redis_url) if settings.redis_url else None
    if redis is not None:
        stack.push_async_callback(close_within, "Redis", redis.aclose)
    calllog = None
    if settings.call_log:
        calllog = await open_call_log(settings, config.calllog,
                                      redis=redis.calllog if redis else None, strict=strict)
        stack.push_async_callback(close_within, "the call log", calllog.aclose)
    session = new_session()
    stack.push_async_callback(close_within, "the HTTP session", session.close)
    providers: dict[str, Provider] = {
        name: build_provider(cfg, session) for name, cfg in config.providers.items()
    }
    prices = PriceBook({**shipped_prices(), **config.pricing})
    metrics = open_metrics(config, session=session, engine=calllog.engine if calllog else None,
                           metrics_dir=settings.metrics_dir, strict=strict) \
        if settings.metrics else None
    if metrics is not None:
        await metrics.start(writer=calllog.writer if calllog else None,
                            sync_interval_s=config.drift.sync_interval_s)
        stack.push_async_callback(close_within, "the metrics", metrics.aclose)
    keys = None
    if calllog is not None:
        keys = KeyDirectory(KeyStore(calllog.engine), redis.calllog if redis else None)
        await keys.start()
        stack.push_async_callback(close_within, "the key directory", keys.aclose)
    limiter: Limiter
    # The first reconcile (at start-up) runs whoever's turn it is: each starting process must
    # know the counters hold the log's spend before it serves (app.limits.budget.Reconciles).
    reconciles: Reconciles | None = None
    if redis is not None:
        limiter = RedisLimiter(redis.limiter, timeout_s=limits.redis_timeout_ms / 1000,
                               fail_open=limits.on_redis_down == "open",
                               budget_fail_open=limits.budgets_on_redis_down == "open",
                               credits=True, news=redis.calllog)
        if calllog is not None:
            reconciles = Reconciles(
                first=partial(reconcile, calllog.engine, redis.calllog, prefix=PREFIX),
                then=partial(reconcile_in_turn, calllog.engine, redis.calllog, prefix=PREFIX,
                             interval_s=limits.reconcile_interval_s))
    else:
        limiter = local = LocalLimiter()
        if calllog is not None:
            reconciles = Reconciles.each(partial(reconcile_local, calllog.engine, local))
    await limiter.start()
    stack.push_async_callback(close_within, "the limiter", limiter.aclose)
    if reconciles is not None:
        reconciling = asyncio.create_task(reconciles.loop(
            limits.reconcile_interval_s,
            limiter.reconnected if isinstance(limiter, RedisLimiter) else None))
        stack.callback(reconciling.cancel)
        if calllog is not None and calllog.writer.conditions()["store"].up:
            # (A database found down or hung at start has been waited for once already.)
            await reconciles.started(FIRST_RECONCILE_WAIT_S)
    authenticator = Authenticate(settings.master_key, keys, limiter=limiter)
    recorder = metrics.recorder if metrics else None
    # Prompt templates live in the call log's database; without one a request naming a
    # template is a 503 (the stage is always there, so `prompt` never reaches an upstream).
    prompts = PromptLibrary(PromptStore(calllog.engine)) if calllog is not None else None
    pipeline = Pipeline([authenticator, Template(prompts),
                         Admit(limiter, output_reservation=limits.output_reservation,
                               recorder=recorder),
                         Account(limiter), Privacy(recorder=recorder), *stages])
    await pipeline.prepare(config)  # e.g. the privacy stage's Presidio model: before serving
    log_config = config.calllog
    gateway = Gateway(config=config, providers=providers, prices=prices,
                      sink=sink or (calllog.writer if calllog else LogSink()),
                      pipeline=pipeline, recorder=recorder,
                      backends=metrics.backends.state if metrics else None,
                      strict_telemetry=strict,
                      redactor=Redactor(keys=log_config.redact_keys,
                                        patterns=log_config.redact_patterns,
                                        own=pipeline.scrub_keys)
                      if log_config.capture_bodies else None)
    # Closed before the metrics and the call log (the stack unwinds in reverse): the providers'
    # last records still reach them.
    stack.push_async_callback(close_within, "the providers", gateway.aclose)
    if redis is not None:
        shared = SharedBreakers(
            redis.calllog, gateway.router,
            max_cooldown_s=lambda: gateway.snapshot.config.breaker.max_cooldown_s)
        gateway.router.shared = shared
        shared.start()
        stack.push_async_callback(close_within, "the shared breakers", shared.aclose)
    reloader = None
    if live and settings.config is not None:
        reloader = ConfigReloader(gateway, settings.config, session=session, metrics=metrics,
                                  poll_s=settings.config_poll_s)
        reloader.start()  # stopped before the gateway closes (the stack unwinds in reverse)
        stack.push_async_callback(close_within, "the config reloader", reloader.aclose)
    return Resources(settings=settings, gateway=gateway, authenticator=authenticator,
                     limiter=limiter, redis=redis, calllog=calllog,
                     engine=calllog.engine if calllog else None, metrics=metrics, keys=keys,
                     reloader=reloader, prompts=prompts)


def _reload_on_signals(stack: AsyncExitStack, reloader: ConfigReloader | None) -> None:
    """``SIGHUP`` and ``SIGUSR1`` reload the config now; without a config file (the embedded
    default) there is nothing to reload, and the signal is logged, not fatal (Python's default
    for both ends the process). (With ``--workers``, uvicorn's supervisor takes ``SIGHUP`` as
    "restart the workers" and passes no signal on: signal the workers themselves with
    ``SIGUSR1``, as the README shows; they also poll the file.)"""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGHUP, signal.SIGUSR1):
        try:
            loop.add_signal_handler(sig, _no_config_file if reloader is None
                                    else reloader.request, sig.name)
        except (NotImplementedError, RuntimeError, ValueError):  # a loop off the main thread:
            # an app served in a test thread, which reloads by polling or the endpoint
            return
        stack.callback(loop.remove_signal_handler, sig)
    if reloader is not None and os.environ.get(SUPERVISOR_PID) is not None:
        # A worker: another one's ``POST /admin/config/reload`` reaches it this way
        # (``app.reload.tell_siblings``), also one that came while this app was starting.
        loop.add_signal_handler(SIBLING_RELOAD, reloader.request, "another worker's reload")
        # Ignored once the app stops (asyncio restores the default action, which would end a
        # worker a sibling tells during its shutdown, before its call log is flushed).
        stack.callback(signal.signal, SIBLING_RELOAD, signal.SIG_IGN)
        stack.callback(loop.remove_signal_handler, SIBLING_RELOAD)
        if sibling_notices():
            reloader.request("another worker's reload, while this one started")


def _no_config_file(signal_name: str) -> None:
    log.warning("%s: no config file to reload (serving the embedded default)", signal_name)


GC_THRESHOLDS = (5000, 10, 50)
"""The cyclic collector's thresholds in ``switchboard serve`` (Python's are 700, 10, 10). A call
makes and frees thousands of objects, nearly all freed by reference counting; at 700, saturated,
the young generation was collected ~300 times a second of CPU, and collections (with the full
ones their survivors led to) took 6-7% of the gateway's CPU. At 5,000: ~12 times a second of
CPU, ~1% of it, and 6-8% less CPU a request; the gateway's memory stayed the same
(``bench/keys_overhead.py``, bench/README.md)."""


def create_app(settings: Settings, *, config: GatewayConfig | None = None,
               sink: CallSink | None = None, strict_telemetry: bool = False,
               freeze_gc: bool = False, stages: Sequence[Stage] = ()) -> Admission:
    """Build the gateway app. ``config`` defaults to the one the settings name.

    The result is the concurrency limit (``app.api.admission``) around the model-call fast lane
    (``app.api.fastlane``) around the FastAPI app, which is its ``.app``. The API reference
    (``/docs``, ``/redoc``, ``/openapi.json``) is served only with ``settings.docs``; no path
    redirects (``/v1/chat/completions/`` is a 404, not a redirect built from the ``Host``).
    ``stages`` join the request pipeline (``app.pipeline``), each in its slot."""
    settings.check_exposure()
    gateway_config = config if config is not None else resolve_config(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.resources = await _open_resources(stack, settings, gateway_config, sink,
                                                        strict_telemetry, stages,
                                                        live=config is None)
            resources = app.state.resources
            if config is None:  # a process of its own, serving the settings' config
                _reload_on_signals(stack, resources.reloader)
            if settings.master_key is None:
                log.warning("no SWITCHBOARD_MASTER_KEY: serving unauthenticated, on loopback only")
            deadlines = BodyDeadlines(settings.body_timeout_s)
            deadlines.start()
            stack.callback(deadlines.stop)
            warming = asyncio.create_task(_warm(resources, resources.gateway.providers))
            stack.callback(warming.cancel)
            if freeze_gc:
                # Everything built so far lives as long as the process: keep it out of the
                # collector's full passes, which took 46-162 ms each under load
                # (bench/README.md). Only for a process of its own (``switchboard serve``):
                # freezing and the thresholds are process-wide.
                gc.collect()
                gc.freeze()
                gc.set_threshold(*GC_THRESHOLDS)
            try:
                yield
            finally:
                resources.ready = False

    docs = settings.docs
    app = FastAPI(title="Switchboard", version=_version(), lifespan=lifespan,
                  summary="An OpenAI-compatible gateway to many model providers.",
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None, redirect_slashes=False)
    api_errors.install(app)
    app.include_router(health.router)
    app.include_router(metrics_api.router)
    app.include_router(v1.router)
    app.include_router(messages_api.router)
    app.include_router(admin.router)
    app.include_router(admin_keys.router)
    app.include_router(admin_prompts.router)
    app.include_router(feedback_api.router)
    served: ASGIApp = FastLane(app)
    if settings.master_key is None:  # loopback-only mode: no web page gets in (app.api.loopback)
        served = LoopbackOnly(served, app=app)
    return Admission(served, app=app, limit=settings.max_concurrency)


def from_environment() -> Admission:
    """The app for ``switchboard serve`` (and uvicorn's workers): settings from the environment.
    A worker stops with its supervisor (``app.serving.follow_supervisor``)."""
    follow_supervisor()
    return create_app(Settings(), freeze_gc=True)
