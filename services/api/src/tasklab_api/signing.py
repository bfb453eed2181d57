"""Requests signed with the callback secret (the workers' status reports, housekeeping).

:func:`verified_nonce` checks a request's signature (the status callback's endpoint
calls it); :data:`SignedBody` is the housekeeping route's dependency: the request's body
once its signature (HMAC-SHA256 over timestamp, nonce and body, see
:mod:`tasklab_common.signing`) is verified. The nonce is the route's to record, in the
transaction of what the request does, so that a replay changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from tasklab_api import metrics
from tasklab_api.config import Settings
from tasklab_api.deps import State
from tasklab_common.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackAuthError,
    verify,
)

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Signed:
    """A signed request's body and its nonce (not recorded yet)."""

    body: bytes
    nonce: str

    def parse(self, model: type[Model], refusal: metrics.Refusal | None = None) -> Model:
        """The body as ``model``; 422 with a reason per problem (counted as ``refusal``)."""
        try:
            return model.model_validate_json(self.body)
        except ValidationError as exc:
            if refusal is not None:
                metrics.on_callback_refused(refusal)
            errors = exc.errors(include_url=False, include_context=False)
            raise RequestValidationError(errors) from None


def verified_nonce(settings: Settings, body: bytes, headers: Mapping[str, str]) -> str:
    """The nonce of a request whose signature verifies with the callback secret.

    :class:`CallbackAuthError` (its ``reason`` safe to answer) for a missing, bad or
    stale signature, counted as an unauthenticated callback: the same secret, the same
    alert on forgeries.
    """
    try:
        call = verify(
            settings.callback_secret.get_secret_value(),
            body,
            headers.get(TIMESTAMP_HEADER),
            headers.get(NONCE_HEADER),
            headers.get(SIGNATURE_HEADER),
            tolerance=settings.callback_tolerance_seconds,
        )
    except CallbackAuthError:
        metrics.on_callback_refused(metrics.Refusal.UNAUTHENTICATED)
        raise
    return call.nonce


async def signed_body(request: Request, state: State) -> Signed:
    """The body of a signed request, its signature verified.

    401 for a missing, bad or stale signature (counted as an unauthenticated
    callback: the same secret, the same alert on forgeries), and 400 when the client
    went away mid-request (e.g. a killed worker): nothing was applied, and it is not a
    server error.
    """
    try:
        raw = await request.body()
    except ClientDisconnect:
        raise HTTPException(400, "incomplete request: the client disconnected") from None
    try:
        nonce = verified_nonce(state.settings, raw, request.headers)
    except CallbackAuthError as exc:
        raise HTTPException(401, f"callback rejected: {exc.reason}") from None
    return Signed(raw, nonce)


SignedBody = Annotated[Signed, Depends(signed_body)]
