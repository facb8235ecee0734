"""Who is asking: Django login sessions, API tokens, and the owner key jobs are filed under.

- HTTP: `Authorization: Bearer <token>` (an `ApiToken`), else the session (login or anonymous).
- Websocket: the same header on the handshake, or `?token=<token>` in the URL (browsers cannot
  set headers), else the session cookie.
- `settings.REQUIRE_AUTH` (on whenever the server binds to a non-loopback address): anonymous
  requests are refused with `auth_required` (HTTP 401; websocket: an `error`, then close 4401).
- Owner keys: `u:<user id>` for a signed-in user (every session and token of that user),
  `s:<session key>` for an anonymous browser, `c:<uuid>` for an anonymous cookieless connection.
"""
from __future__ import annotations

import datetime
from typing import Optional
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.utils import timezone

from videoservice.contract import AUTH_REQUIRED, RequestError

LAST_USED_RESOLUTION = datetime.timedelta(minutes=1)


def api_token(token: str):
    """The ApiToken row of an active user's token (its `user` loaded), or None."""
    from videoservice.models import ApiToken

    if not token or len(token) > 200:
        return None
    row = ApiToken.objects.select_related("user").filter(digest=ApiToken.hash(token)).first()
    if row is None or not row.user.is_active:
        return None
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row


def user_for_token(token: str):
    """The active user an API token belongs to, or None."""
    row = api_token(token)
    return row.user if row is not None else None


def bearer(value: Optional[str]) -> Optional[str]:
    """The token of an `Authorization: Bearer <token>` header value (None when there is none)."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def owner_for(user, session_key: Optional[str]) -> Optional[str]:
    if user is not None and getattr(user, "is_authenticated", False):
        return f"u:{user.pk}"
    return f"s:{session_key}" if session_key else None


def auth_required(server) -> bool:
    """Whether this request / connection must be authenticated: REQUIRE_AUTH, or (a guard for a server
    bound to a public address without BIND_ADDRESS saying so) it arrived on a non-loopback local
    address. `server` is the ASGI scope's (host, port) of the listening side."""
    from django.conf import settings

    from videoservice.settings import is_loopback

    if settings.REQUIRE_AUTH:
        return True
    host = server[0] if server else None
    return bool(host) and not is_loopback(str(host))


def authenticate_http(request) -> bool:
    """Sets request.user from a Bearer token if there is one; True when the request is token-authenticated.
    Raises auth_required for a bad token, or for an anonymous request when REQUIRE_AUTH is on."""
    # only Bearer is ours: a proxy in front may forward its own Basic credentials, which must not
    # hide the session
    token = bearer(request.headers.get("Authorization"))
    if token is not None:
        row = api_token(token) if token else None
        if row is None:
            raise RequestError(AUTH_REQUIRED, "invalid API token (Authorization: Bearer <token>)", status=401)
        request.user, request.api_token = row.user, row
        request._dont_enforce_csrf_checks = True  # no ambient credential: a header cannot be forged cross-site
        return True
    if not request.user.is_authenticated and auth_required(getattr(request, "scope", {}).get("server")):
        raise RequestError(AUTH_REQUIRED, "log in or send an API token (Authorization: Bearer <token>)",
                           status=401)
    return False


class TokenAuthMiddleware:
    """ASGI middleware for the websocket (inside AuthMiddlewareStack): a token in `?token=` or in an
    `Authorization: Bearer` handshake header replaces the session user. A token that matches no
    user sets scope["auth_error"]; the consumer refuses the connection."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        token = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":  # other schemes (a proxy's Basic) are not ours: the session stays
                token = bearer(value.decode("latin-1"))
        if token is None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if query.get("token"):
                token = query["token"][0]
        if token is not None:
            row = await database_sync_to_async(api_token)(token)
            if row is None:
                scope = {**scope, "auth_error": "invalid API token"}
            else:
                scope = {**scope, "user": row.user, "api_token": row, "auth_method": "token"}
        return await self.inner(scope, receive, send)
