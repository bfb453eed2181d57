"""Optional authentication of the UI and the API (off unless configured).

Two kinds of credentials, either or both:

- API keys (``API_KEYS``), for programs: ``Authorization: Bearer <key>`` or
  ``X-API-Key: <key>``;
- one HTTP Basic login (``AUTH_BASIC_USER``, ``AUTH_BASIC_PASSWORD``), for people: the
  browser asks once and then sends it with the page, its ``fetch`` calls and its
  live stream (``EventSource``) by itself.

When either is configured, the app applies :meth:`Authenticator.dependencies` to every
router but the open ones (``/healthz``, ``/readyz``, ``/metrics`` and the workers'
callback, which has its own HMAC signature); the OpenAPI document then lists the
configured schemes. A request is let through when one of the credentials it presents
is valid; otherwise it gets 401 with a JSON reason and a ``WWW-Authenticate``
challenge (``Basic realm="tasklab"`` when a Basic login is configured, so that a
browser asks for it).

Guessing is bounded: each client address may present wrong credentials
``failure_limit`` times per minute (the first that many at once). Past that it gets 429
with ``Retry-After``, and its credentials are not even checked until the budget has
refilled, so a guess cannot succeed faster than the limit. A request without any
credentials (a browser before its login prompt) is not a failure.

Secrets are compared in constant time: every presented value is reduced to an HMAC
(a random per-process key) and compared against every configured secret's HMAC with
:func:`hmac.compare_digest`, without stopping at the first match or mismatch, so
neither the length nor the content of a secret, nor which part of a login was wrong,
shows in the response time. Nothing here logs a credential.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Annotated, Final

from fastapi import Depends, HTTPException
from fastapi.params import Depends as DependsParam
from fastapi.security import (
    APIKeyHeader,
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from starlette.requests import HTTPConnection

from tasklab_api.limits import RateLimiter, client_key, too_many

REALM: Final = "tasklab"
API_KEY_HEADER: Final = "X-API-Key"


class _Basic(HTTPBasic):
    """:class:`HTTPBasic` that reports a malformed header as a wrong login.

    FastAPI's own answers a malformed ``Authorization: Basic ...`` with its own 401
    before the other schemes are looked at; here it is just a login that cannot match
    (an empty user name, which the settings never allow).
    """

    async def __call__(self, request: HTTPConnection) -> HTTPBasicCredentials | None:  # type: ignore[override]
        try:
            return await super().__call__(request)
        except HTTPException:
            return HTTPBasicCredentials(username="", password="")


basic_scheme = _Basic(
    scheme_name="BasicAuth",
    realm=REALM,
    auto_error=False,
    description="The login of AUTH_BASIC_USER and AUTH_BASIC_PASSWORD (for the web UI).",
)
bearer_scheme = HTTPBearer(
    scheme_name="BearerAuth",
    auto_error=False,
    description="One of the API_KEYS as `Authorization: Bearer <key>`.",
)
api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKeyAuth",
    auto_error=False,
    description=f"One of the API_KEYS as `{API_KEY_HEADER}: <key>`.",
)

BasicLogin = Annotated[HTTPBasicCredentials | None, Depends(basic_scheme)]
BearerToken = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
ApiKey = Annotated[str | None, Depends(api_key_scheme)]


class Authenticator:
    """Checks credentials against the configured ones (nothing configured: off)."""

    def __init__(
        self,
        api_keys: Sequence[str] = (),
        basic: tuple[str, str] | None = None,
        *,
        failure_limit: int = 0,
    ) -> None:
        self._key = secrets.token_bytes(32)
        # Wrong credentials per client address: failure_limit a minute (0: no limit).
        self._failures = RateLimiter(failure_limit / 60, max(1, failure_limit))
        self._keys = tuple(self._digest(k) for k in api_keys)
        self._basic = None if basic is None else (self._digest(basic[0]), self._digest(basic[1]))
        self.key_count = len(self._keys)
        self.basic_user = None if basic is None else basic[0]

    @property
    def enabled(self) -> bool:
        return bool(self._keys) or self._basic is not None

    def summary(self) -> str:
        """What is configured, for the startup log (no secret in it)."""
        if not self.enabled:
            return "off (API_KEYS and AUTH_BASIC_USER/AUTH_BASIC_PASSWORD are unset)"
        parts = []
        if self._keys:
            parts.append(f"{self.key_count} API key{'s' if self.key_count != 1 else ''}")
        if self.basic_user is not None:
            parts.append(f"Basic login of user {self.basic_user!r}")
        return "on: " + ", ".join(parts)

    def _digest(self, value: str) -> bytes:
        return hmac.new(self._key, value.encode(), hashlib.sha256).digest()

    def check_key(self, presented: str) -> bool:
        """Whether ``presented`` is one of the API keys (constant time)."""
        digest = self._digest(presented)
        found = False
        for key in self._keys:  # no early exit: the time does not say which key matched
            found |= hmac.compare_digest(digest, key)
        return found

    def check_basic(self, user: str, password: str) -> bool:
        """Whether ``user``/``password`` is the Basic login (constant time)."""
        if self._basic is None:
            return False
        # Both compared every time: the time does not say which one was wrong.
        user_ok = hmac.compare_digest(self._digest(user), self._basic[0])
        password_ok = hmac.compare_digest(self._digest(password), self._basic[1])
        return user_ok & password_ok

    def challenge(self) -> dict[str, str]:
        """The ``WWW-Authenticate`` header of a 401."""
        if self._basic is not None:
            return {"WWW-Authenticate": f'Basic realm="{REALM}"'}
        return {"WWW-Authenticate": f'Bearer realm="{REALM}"'}

    def how(self) -> str:
        ways = []
        if self._basic is not None:
            ways.append("a Basic login")
        if self._keys:
            ways.append(f"an API key (Authorization: Bearer <key>, or {API_KEY_HEADER}: <key>)")
        return " or ".join(ways)

    def verify(
        self,
        basic: HTTPBasicCredentials | None = None,
        bearer: HTTPAuthorizationCredentials | None = None,
        api_key: str | None = None,
        *,
        client: str = "unknown",
    ) -> None:
        """Let a request through when one of its credentials is valid; else 401, or 429
        while ``client`` (its address) has used up its wrong attempts."""
        presented = basic is not None or bearer is not None or api_key is not None
        if presented:
            wait = self._failures.wait(client)
            if wait:
                raise too_many(
                    "too many wrong credentials from this address; try again later", wait
                )
        ok = False
        if basic is not None:
            ok |= self.check_basic(basic.username, basic.password)
        if bearer is not None:
            ok |= self.check_key(bearer.credentials)
        if api_key is not None:
            ok |= self.check_key(api_key)
        if ok:
            return
        if presented:
            self._failures.allow(client)  # one wrong attempt used
        reason = "invalid credentials" if presented else "authentication required"
        raise HTTPException(401, f"{reason}: send {self.how()}", headers=self.challenge())

    # One dependency per configuration, so that OpenAPI lists only the schemes in use.

    async def _basic_or_key(
        self, conn: HTTPConnection, basic: BasicLogin, bearer: BearerToken, api_key: ApiKey
    ) -> None:
        self.verify(basic, bearer, api_key, client=client_key(conn))

    async def _key_only(self, conn: HTTPConnection, bearer: BearerToken, api_key: ApiKey) -> None:
        self.verify(None, bearer, api_key, client=client_key(conn))

    async def _basic_only(self, conn: HTTPConnection, basic: BasicLogin) -> None:
        self.verify(basic, client=client_key(conn))

    def dependencies(self) -> list[DependsParam]:
        """Router dependencies that require authentication ([] when it is off)."""
        if not self.enabled:
            return []
        if self._keys and self._basic is not None:
            return [Depends(self._basic_or_key)]
        return [Depends(self._key_only if self._keys else self._basic_only)]
