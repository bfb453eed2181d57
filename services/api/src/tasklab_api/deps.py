"""FastAPI dependencies (``Annotated`` aliases used by the routers)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

from tasklab_api.state import AppState


# Async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a
# thread hop on every request for what is an attribute lookup.
async def get_state(request: Request) -> AppState:
    return cast(AppState, request.app.state.tasklab)


State = Annotated[AppState, Depends(get_state)]


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def known_query(request: Request) -> None:
    """422 for a query parameter the route does not take (``?stauts=DONE`` would
    otherwise be ignored and return everything)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    known = _query_names(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise RequestValidationError(
            [
                {
                    "loc": ("query", name),
                    "msg": f"unknown query parameter (this route takes: {takes})",
                    "type": "extra_forbidden",
                }
                for name in unknown
            ]
        )


#: Router dependencies of the JSON API and the UI.
KnownQuery = Depends(known_query)
