from __future__ import annotations

import time

import pytest

from tasklab_common.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackAuthError,
    sign_headers,
    verify,
)

SECRET = "s" * 32


def _verify(body: bytes, h: dict[str, str], secret: str = SECRET, now: float | None = None):  # type: ignore[no-untyped-def]
    return verify(
        secret, body, h.get(TIMESTAMP_HEADER), h.get(NONCE_HEADER), h.get(SIGNATURE_HEADER), now=now
    )


def test_round_trip_and_fresh_nonces() -> None:
    h1, h2 = sign_headers(SECRET, b"{}"), sign_headers(SECRET, b"{}")
    assert h1[NONCE_HEADER] != h2[NONCE_HEADER]
    assert _verify(b"{}", h1).nonce == h1[NONCE_HEADER]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b, h: (b + b" ", h), "bad signature"),
        (lambda b, h: (b, {**h, SIGNATURE_HEADER: "0" * 64}), "bad signature"),
        (lambda b, h: (b, {**h, NONCE_HEADER: "other"}), "bad signature"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != NONCE_HEADER}), "missing"),
        (lambda b, h: (b, {**h, TIMESTAMP_HEADER: "soon"}), "malformed timestamp"),
        (lambda b, h: (b, {**h, NONCE_HEADER: "../.."}), "malformed nonce"),
        # Any Latin-1 text can arrive in a header: never a TypeError (a 500) for these.
        (lambda b, h: (b, {**h, SIGNATURE_HEADER: "\xe9"}), "malformed signature"),
        (lambda b, h: (b, {**h, SIGNATURE_HEADER: "\xe9" * 64}), "malformed signature"),
        (lambda b, h: (b, {**h, SIGNATURE_HEADER: "g" * 64}), "malformed signature"),
        (lambda b, h: (b, {**h, SIGNATURE_HEADER: h[SIGNATURE_HEADER] + "0"}), "malformed sig"),
        (lambda b, h: (b, {**h, NONCE_HEADER: "\xe9\xe9"}), "malformed nonce"),
        (lambda b, h: (b, {**h, TIMESTAMP_HEADER: "\u0661\u0662"}), "malformed timestamp"),
        (lambda b, h: (b, {**h, TIMESTAMP_HEADER: "9" * 400}), "malformed timestamp"),
        (lambda b, h: (b, {**h, TIMESTAMP_HEADER: "-5"}), "malformed timestamp"),
    ],
)
def test_rejects(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    body, h = mutate(b'{"a":1}', sign_headers(SECRET, b'{"a":1}'))
    with pytest.raises(CallbackAuthError, match=reason):
        _verify(body, h)


def test_wrong_secret_and_stale() -> None:
    h = sign_headers(SECRET, b"x")
    with pytest.raises(CallbackAuthError, match="bad signature"):
        _verify(b"x", h, secret="t" * 32)
    old = sign_headers(SECRET, b"x", now=time.time() - 301)
    with pytest.raises(CallbackAuthError, match="stale"):
        _verify(b"x", old)
