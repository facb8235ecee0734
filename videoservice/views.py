"""HTTP outside the API: the web UI page, /healthz, and the 404 page (JSON under /api/)."""
from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from generator.registry_setup import config_errors
from videoservice import redis_clients
from videoservice import bus
from videoservice.api import error_response, viewer_of
from videoservice.auth import auth_required
from videoservice.contract import NOT_FOUND, RequestError


@ensure_csrf_cookie
def index(request):
    if not request.user.is_authenticated and auth_required(getattr(request, "scope", {}).get("server")):
        from django.contrib.auth.views import redirect_to_login

        return redirect_to_login(request.get_full_path())
    viewer_of(request)  # the websocket handshake then carries the session cookie (private jobs)
    return render(request, "videoservice/index.html", {
        "ws_path": "/ws/lobby/",
        "max_message_bytes": settings.WS_MAX_CLIENT_MESSAGE_BYTES,
    })


def _check_db() -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchone()
    return "ok"


def _check_redis() -> str:
    client = redis_clients.new(timeout=1)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


async def healthz(request):
    """200 when the database and Redis answer; `workers` lists the Celery workers that answered;
    `model_config_errors` the models.json entries skipped at start-up ({model, field, message})."""
    body = {"status": "ok"}
    ok = True
    for name, check in (("database", _check_db), ("redis", _check_redis)):
        try:
            body[name] = await sync_to_async(check, thread_sensitive=name == "database")()
        except Exception as exc:
            body[name] = f"error: {exc}"
            ok = False
    body["workers"] = []
    if body.get("redis") == "ok":
        try:
            timeout = float(request.GET.get("timeout", 0.5))
            body["workers"] = await sync_to_async(bus.ping_workers, thread_sensitive=False)(min(max(timeout, 0.1), 5))
        except Exception as exc:
            body["workers_error"] = str(exc)
    # broken models.json entries (skipped at start-up, the other models are served): named here for operators
    body["model_config_errors"] = await sync_to_async(config_errors, thread_sensitive=False)()
    if not ok:
        body["status"] = "unavailable"
    response = JsonResponse(body, status=200 if ok else 503)
    if not ok:
        response["Retry-After"] = "5"
    return response


def not_found(request, exception=None):
    """404 handler: the JSON error under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error_response(RequestError(NOT_FOUND, f"no such resource: {request.path[:200]}", status=404))
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)
