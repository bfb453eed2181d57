"""FastAPI dependencies (``Annotated`` aliases used by the routers)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from tasklab_api.config import Settings
from tasklab_api.state import AppState


# Async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a
# thread hop on every request for what is an attribute lookup.
async def get_state(request: Request) -> AppState:
    return cast(AppState, request.app.state.tasklab)


async def get_settings(request: Request) -> Settings:
    return (await get_state(request)).settings


State = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
