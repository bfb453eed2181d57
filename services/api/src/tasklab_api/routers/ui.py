"""The web UI: one static page and its assets, served with no external CDN.

The assets are served by a route (not a mounted app), so that the router's
dependencies, authentication among them, apply to them as to the page.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)
_assets = StaticFiles(directory=STATIC_DIR)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.api_route("/static/{path:path}", methods=["GET", "HEAD"], name="static")
async def static(path: str, request: Request) -> Response:
    """A file of the static folder (never outside it: StaticFiles checks the real path)."""
    relative = posixpath.normpath("/" + path).lstrip("/")
    if not relative:
        raise HTTPException(404)
    return await _assets.get_response(relative, request.scope)
