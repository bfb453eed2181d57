"""The OpenAPI document and its viewers, as routes of their own.

FastAPI's built-in ``/openapi.json``, ``/docs`` and ``/redoc`` take no dependencies;
served from this router they are authenticated like the rest of the API when
authentication is on (the app includes it with the same dependencies). Their scripts
and styles (Swagger UI, ReDoc: the copies the ``fastapi-offline`` package ships) are
served from ``/docs/assets/`` rather than a CDN, so the pages work offline and run no
code from elsewhere on the api's origin; each page's Content-Security-Policy allows
its own inline start-up script by hash and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from typing import Any, Final

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
#: The files served under ASSETS_URL and their types.
ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)

router = APIRouter(include_in_schema=False)


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _with_csp(page: HTMLResponse, *, workers: bool = False) -> HTMLResponse:
    """The page with a policy allowing its own assets and its inline scripts by hash.

    Styles may be inline: both viewers set them from their scripts."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(m).digest()).decode()}'"
        for m in _SCRIPT.findall(bytes(page.body))
    )
    policy = [
        "default-src 'self'",
        f"script-src 'self' {hashes}".rstrip(),
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
    if workers:
        policy.append("worker-src 'self' blob:")  # ReDoc parses the document in a worker
    page.headers["Content-Security-Policy"] = "; ".join(policy)
    return page


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
    return _with_csp(
        get_swagger_ui_html(
            openapi_url=root + OPENAPI_URL,
            title=f"{request.app.title} - Swagger UI",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        )
    )


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_redirect() -> HTMLResponse:
    return _with_csp(get_swagger_ui_oauth2_redirect_html())


@router.get(REDOC_URL)
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return _with_csp(
        get_redoc_html(
            openapi_url=root + OPENAPI_URL,
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        ),
        workers=True,
    )


@router.get(ASSETS_URL + "/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, "no such asset")
    path = files("fastapi_offline").joinpath("static", name)
    return FileResponse(
        str(path), media_type=ASSETS[name], headers={"Cache-Control": "public, max-age=86400"}
    )
