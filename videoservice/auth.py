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
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import close_old_connections
from django.utils import timezone

from videoservice import limits
from videoservice.contract import AUTH_REQUIRED, RequestError
from videoservice.launch import is_loopback
from videoservice.models import ApiToken

LAST_USED_RESOLUTION = datetime.timedelta(minutes=1)
log = logging.getLogger(__name__)


def api_token(token: str):
    """The ApiToken row of an active user's token (its `user` loaded), or None."""
    if not token or len(token) > 200:
        return None
    row = ApiToken.objects.select_related("user").filter(digest=ApiToken.hash(token)).first()
    if row is None or not row.user.is_active:
        return None
    if row.last_used_at is None or timezone.now() - row.last_used_at > LAST_USED_RESOLUTION:
        _note_used(row.pk)
    return row


# last_used_at is bookkeeping: written on a thread of its own, never on the request's (Channels runs
# every handshake's database work on one shared thread: a write waiting for a lock held them all)
_last_used = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-last-used")
_last_used_pending: set = set()
_last_used_lock = threading.Lock()


def _note_used(token_pk) -> None:
    with _last_used_lock:
        if token_pk in _last_used_pending:
            return
        _last_used_pending.add(token_pk)
    _last_used.submit(_write_last_used, token_pk)


def _write_last_used(token_pk) -> None:
    try:
        close_old_connections()
        ApiToken.objects.filter(pk=token_pk).update(last_used_at=timezone.now())
    except Exception as exc:  # a locked or unreachable database: the next use writes it
        log.warning("could not note the use of API token %s: %s", token_pk, exc)
    finally:
        with _last_used_lock:
            _last_used_pending.discard(token_pk)


class ThrottledModelBackend(ModelBackend):
    """Django's password check, refused before the (costly) hash is computed while the account or the
    client's address has too many recent failures (videoservice.limits.login_throttled); failures are
    counted and logged. Covers every sign-in form (the login page and the admin's)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        address = (request.META.get("REMOTE_ADDR", "") if request is not None else "")[:64]
        name = username if username is not None else kwargs.get(get_user_model().USERNAME_FIELD, "")
        if limits.login_throttled(name or "", address):
            raise PermissionDenied("too many failed sign-ins")
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None and password is not None:
            limits.note_login_failure(name or "", address)
        return user


class ThrottledLoginForm(AuthenticationForm):
    """The login page's form: a throttled sign-in says so (and when to come back)."""

    def get_invalid_login_error(self):
        reason = limits.login_throttled(self.cleaned_data.get("username") or "",
                                        (self.request.META.get("REMOTE_ADDR", "") if self.request else "")[:64])
        return ValidationError(reason, code="throttled") if reason else super().get_invalid_login_error()


def bearer(value: Optional[str]) -> Optional[str]:
    """The token of an `Authorization: Bearer <token>` header value (None when there is none)."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def owner_key(user, session_key: Optional[str]) -> Optional[str]:
    """Who owns a job: `u:<id>` for a signed-in user (every session and token of theirs), else
    `s:<session key>` for an anonymous browser session; None without either."""
    if user is not None and getattr(user, "is_authenticated", False):
        return f"u:{user.pk}"
    return f"s:{session_key}" if session_key else None


def auth_required(server) -> bool:
    """Whether this request / connection must be authenticated: REQUIRE_AUTH, or (a guard for a server
    bound to a public address without BIND_ADDRESS saying so) it arrived on a non-loopback local
    address. `server` is the ASGI scope's (host, port) of the listening side."""
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
