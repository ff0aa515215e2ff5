"""The inspector's request checks: the CSRF token (double submit), same origin, trusted hosts,
and the security headers every response carries.

The inspector has no login, so these checks are what stands between a web page the user happens
to visit and their memories: a cross-site form cannot post (no token, wrong origin), and a site
that rebinds its DNS name to 127.0.0.1 cannot read the pages either (its name is not an allowed
``Host``).

Example:
    >>> guard = CsrfGuard()
    >>> guard.valid(guard.token, guard.token), guard.valid(guard.token, "forged")
    (True, False)
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "CsrfGuard", "Shield", "allowed_hosts_for", "host_name", "same_origin"]

CSRF_COOKIE = "headroom_csrf"
CSRF_FIELD = "csrf_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")

HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


class CsrfGuard:
    """The CSRF token of one app instance and its check (double submit: cookie and form field).

    The token is random per instance, so restarting the inspector invalidates open forms.

    Example:
        >>> guard = CsrfGuard("t0ken")
        >>> guard.valid("t0ken", "t0ken"), guard.valid(None, "t0ken"), guard.valid("t0ken", "")
        (True, False, False)
    """

    def __init__(self, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(32)

    def valid(self, cookie: str | None, field: object) -> bool:
        """True when both the cookie and the form field carry this instance's token."""
        if not isinstance(cookie, str) or not isinstance(field, str):
            return False
        ok_cookie = secrets.compare_digest(cookie.encode(), self.token.encode())
        ok_field = secrets.compare_digest(field.encode(), self.token.encode())
        return ok_cookie and ok_field


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(headers: Mapping[str, str], scheme: str) -> bool:
    """True unless the request's ``Origin`` (or, without one, its ``Referer``) names another origin
    than the ``Host`` it was sent to. A request with neither header passes (the token still counts).

    Example:
        >>> same_origin({"host": "127.0.0.1:8765", "origin": "http://127.0.0.1:8765"}, "http")
        True
        >>> same_origin({"host": "127.0.0.1:8765", "origin": "https://evil.example"}, "http")
        False
        >>> same_origin({"host": "127.0.0.1:8765", "origin": "null"}, "http")
        False
    """
    host = headers.get("host", "").lower()
    expected = f"{scheme}://{host}"
    origin = headers.get("origin")
    if origin is not None:
        return _origin_of(origin) == expected
    referer = headers.get("referer")
    if referer is not None:
        return _origin_of(referer) == expected
    return True


def allowed_hosts_for(host: str) -> list[str]:
    """The ``Host`` header values to accept for a server bound to ``host``: loopback names, plus
    ``host`` itself; every name when bound to all interfaces (``0.0.0.0``, ``::``).

    Example:
        >>> allowed_hosts_for("127.0.0.1")
        ['127.0.0.1', 'localhost', '[::1]']
        >>> allowed_hosts_for("::1")
        ['127.0.0.1', 'localhost', '[::1]']
        >>> allowed_hosts_for("0.0.0.0")
        ['*']
    """
    try:
        if ipaddress.ip_address(host).is_unspecified:
            return ["*"]
    except ValueError:
        pass
    names = list(LOOPBACK_HOSTS)
    name = f"[{host}]" if ":" in host and not host.startswith("[") else host.lower()
    if name not in names:
        names.append(name)
    return names


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header, without its port (IPv6 addresses keep their brackets).

    Example:
        >>> host_name("LocalHost:8765"), host_name("[::1]:8765"), host_name("127.0.0.1")
        ('localhost', '[::1]', '127.0.0.1')
    """
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host if end < 0 else host[: end + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


class Shield:
    """ASGI middleware: refuses requests whose ``Host`` is not allowed (400; this defeats DNS
    rebinding) and adds the security headers (CSP, no framing, no sniffing, no caching) to every
    HTTP response.

    Args:
        app: the wrapped ASGI app.
        allowed_hosts: accepted host names (see :func:`allowed_hosts_for`); ``"*"`` accepts any.

    Example::

        app = Shield(app, allowed_hosts_for("127.0.0.1"))
    """

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.allowed = {host.lower() for host in allowed_hosts}

    def _host_ok(self, scope: Scope) -> bool:
        if "*" in self.allowed:
            return True
        for name, value in scope.get("headers", []):
            if name == b"host":
                return host_name(value.decode("latin-1")) in self.allowed
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the host, then run the wrapped app and add the headers to its response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("cache-control", "no-store")
            await send(message)

        if not self._host_ok(scope):
            await PlainTextResponse("unknown host: open the inspector by the address it listens on",
                                    status_code=400)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
