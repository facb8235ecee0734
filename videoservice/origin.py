"""Which web pages may talk to the service with a user's cookies: the same origin, exactly.

A browser attaches its cookies to a websocket handshake and to a form POST whatever page started
them, and to browsers every port of 127.0.0.1 is the same *site* (SameSite=Lax cookies go along).
So the `Origin` a browser sends is compared with the service's own origin, scheme, host **and**
port: the `Host` the request was sent to (which must be in ALLOWED_HOSTS), or one of the
CSRF_TRUSTED_ORIGINS (exact origins, e.g. https://video.example.org behind a TLS proxy).

- Websocket (`OriginValidator`, around the whole websocket stack): a handshake without an Origin,
  or with another one, is refused (HTTP 403).
- HTTP (`http_request_allowed`, called by the API's auth wrapper in api.py): a state-changing
  request that carries a session cookie and no API token must come from the same origin (an
  `Origin` or `Sec-Fetch-Site` header that says otherwise is refused with `csrf_failed`); scripts
  without cookies are not affected.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": "80", "https": "443"}


def normalise(origin: str) -> str | None:
    """scheme://host:port in lower case with the port spelled out; None if it is no http(s) origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or DEFAULT_PORTS[scheme]}"


def own_origins(host_header: str | None, secure: bool) -> set:
    """The origins this request's own address stands for (empty if its Host is not allowed)."""
    if not host_header:
        return set()
    domain, _ = split_domain_port(host_header)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return set()
    schemes = ("https",) if secure else ("http", "https") if settings.HTTPS else ("http",)
    return {o for o in (normalise(f"{s}://{host_header}") for s in schemes) if o}


def origin_allowed(origin: str | None, host_header: str | None, secure: bool) -> bool:
    if not origin:
        return False
    wanted = normalise(origin)
    if wanted is None:
        return False
    trusted = {normalise(o) for o in settings.CSRF_TRUSTED_ORIGINS}
    return wanted in trusted or wanted in own_origins(host_header, secure)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class OriginValidator:
    """ASGI middleware for websockets: only pages of the service's own origin may connect."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if origin_allowed(_header(scope, b"origin"), _header(scope, b"host"), scope.get("scheme") == "wss"):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


def http_request_allowed(request) -> bool:
    """A state-changing HTTP request with a session cookie: did a page of our own origin send it?"""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin_allowed(origin, request.get_host() if _host_ok(request) else None, request.is_secure())
    # no Origin (old browsers send none on same-origin POSTs): the fetch metadata, when present
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


def _host_ok(request) -> bool:
    from django.core.exceptions import DisallowedHost

    try:
        request.get_host()
    except DisallowedHost:
        return False
    return True
