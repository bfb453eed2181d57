"""FastAPI dependencies (``Annotated`` aliases used by the routers)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from tasklab_api.config import Settings
from tasklab_api.state import AppState


def get_state(request: Request) -> AppState:
    return cast(AppState, request.app.state.tasklab)


def get_settings(request: Request) -> Settings:
    return get_state(request).settings


State = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
