"""The api's answers to bad requests: a reason per problem, never a 500, never the
input echoed. Installed on every app of the api (:func:`install`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

#: FastAPI's answer when the JSON parser itself fails (not a JSONDecodeError).
_UNPARSABLE = "There was an error parsing the body"


def problems(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A 422's ``detail``: where, why and what kind, per problem; never the input."""
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in errors
    ]


def detail_body(detail: Any) -> bytes:
    """An error answer's JSON body, ``{"detail": ...}``, as every handler here renders it."""
    return json.dumps({"detail": detail}, ensure_ascii=False, separators=(",", ":")).encode()


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 with a reason per problem; never echoes the (possibly huge or non-JSON) input."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": problems(exc.errors())}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own handler, but a body its JSON parser gives up on (nested too deep,
    a number too long, not UTF-8) is a 422 with the reason, like any other bad JSON."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE:
        cause = exc.__cause__
        if isinstance(cause, RecursionError):
            why = "JSON nested too deeply"
        elif isinstance(cause, UnicodeDecodeError):
            why = "the body is not UTF-8"
        elif isinstance(cause, ValueError):
            why = f"JSON the parser refuses: {str(cause)[:120]}"
        else:
            why = "the body could not be parsed as JSON"
        detail = [{"loc": ["body"], "msg": why, "type": "json_invalid"}]
        return JSONResponse({"detail": detail}, status_code=422)
    return await http_exception_handler(request, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
