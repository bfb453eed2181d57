"""The workers' signed routes (status callback, housekeeping) as a small app of their own.

Every task brings two or more status reports, so the callback is the api's busiest
route. In the public app a report was matched against every route of the UI and the
JSON API before its own, and ran in the app that carries their dependencies. The
public app now hands these paths to an app holding only the signed routers, with the
same error answers (:class:`SignedRoutes`, its innermost layer: every check before
it, host, internal port, origin, body limit, security headers and HTTP metrics, still
applies). In process, a report costs about a third less of the api's CPU for it
(``bench/FINDINGS.md``).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from tasklab_api import errorhandlers
from tasklab_api.routers import callbacks, maintenance

#: The routers of the signed routes (the public app includes them too, for its docs).
ROUTERS: tuple[APIRouter, ...] = (callbacks.router, maintenance.router)
#: Their paths.
PATHS = frozenset(route.path for router in ROUTERS for route in router.routes)  # type: ignore[attr-defined]


def create_signed_app() -> FastAPI:
    """The app of the signed routes; its ``state.tasklab`` is the public app's, set in
    the public app's lifespan."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    errorhandlers.install(app)
    for router in ROUTERS:
        app.include_router(router)
    return app


class SignedRoutes:
    """Pure ASGI: HTTP requests for :data:`PATHS` go to ``signed_app``, the rest on."""

    def __init__(self, app: ASGIApp, signed_app: ASGIApp) -> None:
        self.app = app
        self.signed_app = signed_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in PATHS:
            await self.signed_app(scope, receive, send)
        else:
            await self.app(scope, receive, send)
