"""The app factory: ``create_app(settings)`` builds the app; its lifespan builds the resources."""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import errors
from app.api import admin, health, v1
from app.api import errors as api_errors
from app.api import metrics as metrics_api
from app.api.admission import Admission
from app.api.fastlane import FastLane
from app.api.incoming import BodyDeadlines
from app.calllog import CallSink, LogSink
from app.calllog.redact import Redactor
from app.calllog.runtime import open_call_log
from app.config import GatewayConfig, embedded_config, load_config
from app.gateway import Gateway
from app.metrics.runtime import open_metrics
from app.pricing import PriceBook, shipped_prices
from app.providers import PROVIDER_TYPES
from app.providers.base import Provider, Warmable
from app.providers.http import new_session
from app.settings import Settings, environment

log = logging.getLogger("switchboard")


def resolve_config(settings: Settings) -> GatewayConfig:
    """The config file named by the settings, or the embedded default."""
    env = environment()
    if settings.config is None:
        return embedded_config(env)
    return load_config(settings.config, env)


async def _warm(app: FastAPI, providers: dict[str, Provider]) -> None:
    """Prepare slow providers (model loads) in the background; ready once they are done."""
    for name, provider in providers.items():
        if isinstance(provider, Warmable):
            try:
                await provider.warm()
            except errors.GatewayError as exc:
                log.warning("provider %s could not be prepared: %s", name, exc.message)
    app.state.ready = True


def _version() -> str:
    """The installed package's version (pyproject.toml), as ``switchboard --version`` prints."""
    try:
        return importlib.metadata.version("switchboard")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
        return "0+unknown"


def create_app(settings: Settings, *, config: GatewayConfig | None = None,
               sink: CallSink | None = None, strict_telemetry: bool = False,
               freeze_gc: bool = False) -> Admission:
    """Build the gateway app. ``config`` defaults to the one the settings name.

    The result is the concurrency limit (``app.api.admission``) around the model-call fast lane
    (``app.api.fastlane``) around the FastAPI app, which is its ``.app``. The API reference
    (``/docs``, ``/redoc``, ``/openapi.json``) is served only with ``settings.docs``; no path
    redirects (``/v1/chat/completions/`` is a 404, not a redirect built from the ``Host``)."""
    settings.check_exposure()
    gateway_config = config if config is not None else resolve_config(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        calllog = await open_call_log(settings, gateway_config.calllog, strict=strict_telemetry) \
            if settings.call_log else None
        app.state.db_engine = calllog.engine if calllog else None
        app.state.calllog = calllog.writer if calllog else None
        session = new_session()
        providers: dict[str, Provider] = {
            name: PROVIDER_TYPES[cfg.type](cfg, session)
            for name, cfg in gateway_config.providers.items()
        }
        prices = PriceBook({**shipped_prices(), **gateway_config.pricing})
        capture = gateway_config.calllog
        telemetry = open_metrics(gateway_config, session=session,
                                 engine=calllog.engine if calllog else None,
                                 metrics_dir=settings.metrics_dir, strict=strict_telemetry) \
            if settings.metrics else None
        app.state.metrics = telemetry
        if telemetry is not None:
            await telemetry.start(writer=calllog.writer if calllog else None,
                                  sync_interval_s=gateway_config.drift.sync_interval_s)
        gateway = Gateway(config=gateway_config, providers=providers, prices=prices,
                          sink=sink or (calllog.writer if calllog else LogSink()),
                          telemetry=telemetry.recorder if telemetry else None,
                          strict_telemetry=strict_telemetry,
                          capture=Redactor(keys=capture.redact_keys,
                                           patterns=capture.redact_patterns)
                          if capture.capture_bodies else None)
        app.state.gateway = gateway
        app.state.settings = settings
        if settings.master_key is None:
            log.warning("no SWITCHBOARD_MASTER_KEY: serving unauthenticated, on loopback only")
        app.state.ready = False
        deadlines = BodyDeadlines(settings.body_timeout_s)
        deadlines.start()
        warming = asyncio.create_task(_warm(app, providers))
        if freeze_gc:
            # Everything built so far lives as long as the process: keep it out of the
            # collector's full passes, which took 46-162 ms each under load (bench/README.md).
            # Only for a process of its own (``switchboard serve``): freezing is process-wide.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            app.state.ready = False
            warming.cancel()
            deadlines.stop()
            if telemetry is not None:
                await telemetry.aclose()
            await gateway.aclose()
            await session.close()
            if calllog is not None:
                await calllog.aclose()

    docs = settings.docs
    app = FastAPI(title="Switchboard", version=_version(), lifespan=lifespan,
                  summary="An OpenAI-compatible gateway to many model providers.",
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None, redirect_slashes=False)
    api_errors.install(app)
    app.include_router(health.router)
    app.include_router(metrics_api.router)
    app.include_router(v1.router)
    app.include_router(admin.router)
    return Admission(FastLane(app), app=app, limit=settings.max_concurrency)


def from_environment() -> Admission:
    """The app for ``switchboard serve`` (and uvicorn's workers): settings from the environment."""
    return create_app(Settings(), freeze_gc=True)
