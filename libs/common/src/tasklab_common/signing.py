"""HMAC signing of the workers' status callbacks.

A request carries a timestamp, a fresh random nonce and
``HMAC-SHA256(secret, "<timestamp>.<nonce>.<body>")``. The api rejects a bad
signature (401), a timestamp outside the tolerance window (401) and a nonce it has
already seen (403, a replay). A worker retrying a callback signs every attempt anew.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Final

TIMESTAMP_HEADER: Final = "X-Tasklab-Timestamp"
NONCE_HEADER: Final = "X-Tasklab-Nonce"
SIGNATURE_HEADER: Final = "X-Tasklab-Signature"
#: How far a callback's timestamp may be from the api's clock.
DEFAULT_TOLERANCE_SECONDS: Final = 300
MIN_SECRET_LENGTH: Final = 16
#: A signature is the hex digest of HMAC-SHA256.
SIGNATURE_HEX_LENGTH: Final = 64
_HEX: Final = frozenset("0123456789abcdef")


def signature(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    mac.update(f"{timestamp}.{nonce}.".encode())
    mac.update(body)
    return mac.hexdigest()


def sign_headers(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """Headers that authenticate ``body`` for one request."""
    ts = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    return {
        TIMESTAMP_HEADER: ts,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature(secret, ts, nonce, body),
    }


class CallbackAuthError(Exception):
    """A callback that is not authentic; ``reason`` says why (safe to return)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedCall:
    timestamp: int
    nonce: str


def verify(
    secret: str,
    body: bytes,
    timestamp: str | None,
    nonce: str | None,
    sig: str | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> VerifiedCall:
    """Check a callback's signature and freshness; raise :class:`CallbackAuthError`.

    The caller must still reject a nonce it has seen before.
    """
    if not timestamp or not nonce or not sig:
        raise CallbackAuthError("missing signature headers")
    # Headers arrive as any Latin-1 text: check the shapes in ASCII before anything else
    # (int() reads non-ASCII digits, compare_digest refuses non-ASCII str).
    if len(nonce) > 64 or not (nonce.isascii() and nonce.isalnum()):
        raise CallbackAuthError("malformed nonce")
    if len(timestamp) > 20 or not (timestamp.isascii() and timestamp.isdigit()):
        raise CallbackAuthError("malformed timestamp")
    ts = int(timestamp)
    given = sig.strip().lower()
    if len(given) != SIGNATURE_HEX_LENGTH or not all(c in _HEX for c in given):
        raise CallbackAuthError("malformed signature")
    expected = signature(secret, timestamp, nonce, body)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise CallbackAuthError("bad signature")
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise CallbackAuthError("stale timestamp")
    return VerifiedCall(timestamp=ts, nonce=nonce)
