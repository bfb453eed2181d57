"""The OpenAPI document and its viewers, as routes of their own.

FastAPI's built-in ``/openapi.json``, ``/docs`` and ``/redoc`` take no dependencies;
served from this router they are authenticated like the rest of the API when
authentication is on (the app includes it with the same dependencies).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse

OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
REDOC_URL = "/redoc"

router = APIRouter(include_in_schema=False)


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    """The document; behind a proxy's path prefix (root_path) it names that prefix."""
    root = _root(request)
    schema: dict[str, Any] = request.app.openapi()
    if root and request.app.root_path_in_servers:
        servers = schema.get("servers", [])
        if root not in {s.get("url") for s in servers}:
            schema = {**schema, "servers": [{"url": root}, *servers]}
    return JSONResponse(schema)


@router.get(DOCS_URL)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=root + OPENAPI_URL,
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
    )


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(REDOC_URL)
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=_root(request) + OPENAPI_URL, title=f"{request.app.title} - ReDoc"
    )
