"""Cross-origin protection: a web page on another site cannot submit or cancel tasks.

A browser sends some cross-site requests without asking first (no CORS preflight):
a form post, or a ``fetch`` with a "simple" content type (``text/plain``, form
encodings) or no body at all, like ``POST /api/tasks/{id}/cancel``. The page cannot
read the answer, but the request has its effect. Browsers say where such a request
comes from (``Origin`` on every POST, and ``Sec-Fetch-Site``), so a state-changing
request (any method but GET, HEAD and OPTIONS) is refused with 403 when:

- its ``Origin`` is neither the api's own (the scheme-less ``host[:port]`` the
  browser addressed, i.e. the ``Host`` header) nor in ``ALLOWED_ORIGINS``;
  ``Origin: null`` (sandboxed frames, local files) is always refused;
- it has no ``Origin`` but ``Sec-Fetch-Site`` says ``cross-site`` or ``same-site``.

Requests without either header (curl, scripts, the workers' callbacks) pass: they
do not come from a browser page, so they carry no one else's ambient authority.
The api's own UI is same-origin and unaffected.

``ALLOWED_ORIGINS`` also opens CORS for those origins (and only those), so that a
UI served elsewhere can call the API; without it no CORS header is ever sent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from tasklab_api.asgi import send_error

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port; None if invalid."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    suffix = "" if port in (None, _DEFAULT_PORTS[parts.scheme]) else f":{port}"
    return f"{parts.scheme}://{host}{suffix}"


def _netloc(origin: str) -> str:
    """``host[:port]`` of a normalized origin, with its scheme's default port explicit."""
    scheme, _, rest = origin.partition("://")
    has_port = "]:" in rest if rest.startswith("[") else ":" in rest
    return rest if has_port else f"{rest}:{_DEFAULT_PORTS[scheme]}"


def _host_netlocs(host: str) -> set[str]:
    """The ``host:port`` forms a ``Host`` header stands for (no port: 80 or 443)."""
    host = host.strip().lower()
    if not host:
        return set()
    if host.endswith("]") or ":" not in host:  # no port given
        return {f"{host}:80", f"{host}:443"}
    return {host}


class OriginCheckMiddleware:
    """Refuses cross-origin state-changing requests (see the module's doc). Pure ASGI."""

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str] = ()) -> None:
        allowed = [o for o in (normalize_origin(x) for x in allowed_origins) if o]
        self.allowed = frozenset(allowed)
        self.app: ASGIApp = app
        if allowed:
            self.app = CORSMiddleware(
                app,
                allow_origins=sorted(allowed),
                allow_methods=["GET", "POST"],
                # The API key headers: a UI served elsewhere authenticates with them.
                allow_headers=["Content-Type", "Authorization", "X-API-Key"],
                max_age=600,
            )

    def refusal(self, scope: Scope) -> str | None:
        """Why a request is refused, or None when it may pass."""
        if scope["method"] in SAFE_METHODS:
            return None
        headers = dict(scope["headers"])
        raw_origin = headers.get(b"origin")
        if raw_origin is not None:
            text = raw_origin.decode("latin-1")
            origin = normalize_origin(text)
            if origin is None:
                return f"cross-origin request refused (Origin {text[:100]!r})"
            if origin in self.allowed:
                return None
            host = headers.get(b"host", b"").decode("latin-1")
            if _netloc(origin) in _host_netlocs(host):
                return None
            return f"cross-origin request refused (Origin {origin} is not allowed)"
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
        if site in ("cross-site", "same-site"):
            return f"cross-origin request refused (Sec-Fetch-Site: {site})"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (reason := self.refusal(scope)) is not None:
            await send_error(send, 403, reason, (b"vary", b"Origin"))
            return
        await self.app(scope, receive, send)


def _host_name(value: str) -> str | None:
    """The host name of a ``Host`` header (no port, lower case); None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :] if end > 0 else "?"
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return value[1:end]
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return name or None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostCheckMiddleware:
    """Answers 400 to a request whose ``Host`` is not one the api serves (DNS rebinding).

    A page on ``rebind.example`` whose name is made to resolve to the api's address
    would otherwise be same-origin with it: the browser sends ``Host:
    rebind.example``, the origin check above sees Origin and Host agree, and the page
    can submit tasks and read the answers. Accepted: an IP address literal (a name is
    needed to rebind; probes and Prometheus address pods by IP), ``localhost``, and the
    names in ``ALLOWED_HOSTS`` (``*.example.com`` for a domain's subdomains); the chart
    adds its Service's names and ``api.allowedHosts``. Pure ASGI.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        names = {h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip()}
        names.add("localhost")
        self.exact = frozenset(n for n in names if not n.startswith("*."))
        self.suffixes = tuple(n[1:] for n in names if n.startswith("*."))

    def allowed(self, host: str) -> bool:
        if not host.strip():
            return True  # no Host (HTTP/1.0 tools): not a browser, nothing to rebind
        name = _host_name(host)
        if name is None:
            return False
        name = name.rstrip(".")
        return _is_ip(name) or name in self.exact or name.endswith(self.suffixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not self.allowed(host):
                reason = f"unknown host {host[:100]!r} (set ALLOWED_HOSTS to serve it)"
                await send_error(send, 400, reason)
                return
        await self.app(scope, receive, send)
