"""The workers' signed routes (status callback, housekeeping), served apart.

Every task brings two or more status reports, so the callback is the api's busiest
route. In the public app a report was matched against every route of the UI and the
JSON API before its own, and ran in the app that carries their dependencies. The
public app now hands these paths on as its innermost layer (:class:`SignedRoutes`:
every check before it, host, internal port, origin, body limit, security headers and
HTTP metrics, still applies): the callback to its pure ASGI endpoint
(:class:`~tasklab_api.callback.CallbackEndpoint`), housekeeping to a small app holding
only its router, with the same error answers (``bench/FINDINGS.md``).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from tasklab_api import errorhandlers
from tasklab_api.callback import CallbackEndpoint
from tasklab_api.routers import callbacks, maintenance
from tasklab_common.settings import CALLBACK_PATH

#: The routers of the signed routes (the public app includes them too, for its docs).
ROUTERS: tuple[APIRouter, ...] = (callbacks.router, maintenance.router)
#: Their paths.
PATHS = frozenset(route.path for router in ROUTERS for route in router.routes)  # type: ignore[attr-defined]


def create_signed_app() -> FastAPI:
    """The app of the signed routes but the callback; its ``state.tasklab`` is the
    public app's, set in the public app's lifespan."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    errorhandlers.install(app)
    app.include_router(maintenance.router)
    return app


class SignedRoutes:
    """Pure ASGI: HTTP requests for the callback go to its endpoint, for the other
    :data:`PATHS` to ``signed_app``, the rest on."""

    def __init__(self, app: ASGIApp, signed_app: ASGIApp) -> None:
        self.app = app
        self.signed_app = signed_app
        (route,) = (r for r in callbacks.router.routes if getattr(r, "path", None) == CALLBACK_PATH)
        self.callback = CallbackEndpoint(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"] == CALLBACK_PATH:
            await self.callback(scope, receive, send)
        elif scope["path"] in PATHS:
            await self.signed_app(scope, receive, send)
        else:
            await self.app(scope, receive, send)
