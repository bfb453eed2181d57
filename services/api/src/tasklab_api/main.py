"""The FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from tasklab_api import errorhandlers, signedapp
from tasklab_api.brokerstats import BrokerStats
from tasklab_api.cancelling import Canceller
from tasklab_api.config import Settings, get_settings
from tasklab_api.db import create_engine, is_sqlite, libpq_conninfo, normalize_url, session_factory
from tasklab_api.deps import KnownQuery
from tasklab_api.events import EventHub
from tasklab_api.headers import SecurityHeadersMiddleware
from tasklab_api.httpmetrics import HttpMetricsMiddleware
from tasklab_api.internalport import InternalPortMiddleware
from tasklab_api.limits import BodyLimitMiddleware, RateLimiter
from tasklab_api.login import Authenticator
from tasklab_api.origin import HostCheckMiddleware, OriginCheckMiddleware
from tasklab_api.publisher import Publisher
from tasklab_api.routers import (
    activity,
    cluster,
    docs,
    health,
    overview,
    stream,
    tasks,
    ui,
)
from tasklab_api.schemas import ErrorOut
from tasklab_api.state import AppState
from tasklab_api.store import TaskStore
from tasklab_api.workloads import ClusterView

log = logging.getLogger("tasklab.api")

NONCE_PURGE_INTERVAL = 60.0


async def _purge_nonces(store: TaskStore, keep: timedelta) -> None:
    while True:
        await asyncio.sleep(NONCE_PURGE_INTERVAL)
        try:
            await store.housekeeping.purge_nonces(keep)
        except Exception as exc:
            log.warning("purging callback nonces failed: %s", exc)


def authenticator(settings: Settings) -> Authenticator:
    basic = None
    if settings.auth_basic_user is not None and settings.auth_basic_password is not None:
        basic = (settings.auth_basic_user, settings.auth_basic_password.get_secret_value())
    keys = [key.get_secret_value() for key in settings.api_keys or ()]
    return Authenticator(keys, basic, failure_limit=settings.auth_failure_limit)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    auth = authenticator(settings)
    signed = signedapp.create_signed_app()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = normalize_url(settings.database_url)
        postgres = not is_sqlite(url)
        engine = create_engine(settings.database_url)
        hub = EventHub()
        store = TaskStore(
            session_factory(engine),
            postgres=postgres,
            delivery_limit=settings.delivery_limit,
            hub=hub,
        )
        publisher = Publisher(
            settings.amqp_url(),
            publish_timeout=settings.publish_timeout,
            connect_timeout=settings.broker_connect_timeout,
        )
        canceller = Canceller(settings, publisher)
        state = AppState(
            settings=settings,
            store=store,
            publisher=publisher,
            hub=hub,
            limiter=RateLimiter(settings.submit_rate, settings.submit_burst),
            canceller=canceller,
            broker_stats=BrokerStats(settings.rmq_management_url, settings.amqp_url()),
            cluster=ClusterView(
                settings.k8s_namespace, settings.k8s_workloads, settings.k8s_scale_from_ui
            ),
        )
        app.state.tasklab = signed.state.tasklab = state
        log.info("authentication of the UI and the API: %s", auth.summary())
        log.info("Kubernetes workers view: %s", state.cluster.summary())
        if postgres:
            hub.start_listener(libpq_conninfo(url), store.get_many)
        await publisher.start()
        await publisher.wait_connected(settings.broker_connect_timeout)
        keep = timedelta(seconds=2 * settings.callback_tolerance_seconds)
        purger = asyncio.create_task(_purge_nonces(store, keep), name="purge-nonces")
        try:
            yield
        finally:
            purger.cancel()
            await hub.close()
            await publisher.close()
            await state.broker_stats.close()
            canceller.close()
            await asyncio.to_thread(store.close)
            await engine.dispose()

    app = FastAPI(
        title="tasklab",
        summary="Asynchronous tasks through Celery, RabbitMQ (direct) or synchronously.",
        version="0.1.0",
        lifespan=lifespan,
        # Served by routers.docs instead, so that authentication applies to them.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    errorhandlers.install(app)
    # Innermost: the workers' signed routes go to an app of their own, after every
    # check below (added later is further out).
    app.add_middleware(signedapp.SignedRoutes, signed_app=signed)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(OriginCheckMiddleware, allowed_origins=settings.allowed_origins)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    # A request for a host the api does not serve (DNS rebinding) goes no further.
    app.add_middleware(HostCheckMiddleware, allowed_hosts=settings.allowed_hosts)
    # With an internal port, the workers' signed routes are served there alone.
    app.add_middleware(
        InternalPortMiddleware,
        internal_port=settings.api_internal_port,
        signed_paths=signedapp.PATHS,
    )
    # Authentication (when configured) is a dependency of every router but the open
    # ones: health, readiness and metrics, and the workers' callback (HMAC-signed).
    # As a dependency it runs after the middlewares above: a cross-origin write is
    # refused (403) before credentials are looked at, and an oversized body is 413;
    # it runs before the endpoint, so a request without valid credentials never
    # reaches the submission rate limit of its address.
    protected: dict[str, Any] = {"dependencies": auth.dependencies()}
    if auth.enabled:
        protected["responses"] = {
            401: {"model": ErrorOut, "description": "Missing or invalid credentials"},
            429: {"model": ErrorOut, "description": "Too many wrong credentials"},
        }
    # The JSON API also refuses query parameters its routes do not take (422).
    api = {**protected, "dependencies": [*protected["dependencies"], KnownQuery]}
    app.include_router(tasks.router, **api)
    app.include_router(stream.router, **api)
    app.include_router(overview.router, **api)
    app.include_router(activity.router, **api)
    app.include_router(cluster.router, **api)
    app.include_router(ui.router, **protected)
    app.include_router(docs.router, **protected)
    for router in signedapp.ROUTERS:  # HMAC-signed; served by ``signed`` (in the docs here)
        app.include_router(router)
    app.include_router(health.router)
    return app
