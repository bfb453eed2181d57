"""Requests signed with the callback secret (the workers' status reports, housekeeping)."""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

from tasklab_api.config import Settings
from tasklab_common.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackAuthError,
    VerifiedCall,
    verify,
)


async def read_signed(request: Request, settings: Settings) -> tuple[bytes, VerifiedCall]:
    """The body of a signed request and its verified signature.

    Raises :class:`~tasklab_common.signing.CallbackAuthError` for a missing, bad or stale
    signature, and ``HTTPException(400)`` when the client went away mid-request (e.g. a
    killed worker): nothing was applied, and it is not a server error.
    """
    try:
        raw = await request.body()
    except ClientDisconnect:
        raise HTTPException(400, "incomplete request: the client disconnected") from None
    call = verify(
        settings.callback_secret.get_secret_value(),
        raw,
        request.headers.get(TIMESTAMP_HEADER),
        request.headers.get(NONCE_HEADER),
        request.headers.get(SIGNATURE_HEADER),
        tolerance=settings.callback_tolerance_seconds,
    )
    return raw, call


__all__ = ["CallbackAuthError", "read_signed"]
