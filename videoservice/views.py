"""HTTP: the web UI page, the JSON API, the video file with Range support, and /healthz."""
from __future__ import annotations

import json
import logging
import re
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.storage import default_storage
from django.db import connection
from django.http import FileResponse, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie
from django.views.decorators.http import require_http_methods

from videoservice import jobs, limits
from videoservice.auth import auth_required, authenticate_http
from videoservice.models import Job
from videoservice.validation import (CSRF_FAILED, INTERNAL_ERROR, INVALID_FIELD, INVALID_JSON, METHOD_NOT_ALLOWED,
                                     NOT_FOUND, TOO_LARGE, RequestError, parse_json, validate_generate,
                                     validate_job_id)

log = logging.getLogger(__name__)
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
MAX_RANGE_CHUNK = 8 * 1024 * 1024


def viewer_of(request, create: bool = True) -> str | None:
    """The owner key: `u:<id>` for a signed-in user (session or API token), else this browser's
    session (created on first use when `create`; read-only requests from clients without a session
    cookie do not create one)."""
    if request.user.is_authenticated:
        return f"u:{request.user.pk}"
    if not request.session.session_key:
        if not create:
            return None
        request.session["created"] = int(time.time())
        request.session.save()
    return f"s:{request.session.session_key}"


def error_response(err: RequestError) -> JsonResponse:
    return JsonResponse({"error": err.as_dict(), **err.as_dict()}, status=err.status)


def _csrf_ok(request) -> bool:
    from django.middleware.csrf import CsrfViewMiddleware

    def callback(req):  # not csrf_exempt: process_view checks it
        return None

    return CsrfViewMiddleware(lambda req: None).process_view(request, callback, (), {}) is None


def api(view):
    """JSON API wrapper: authentication (Bearer token or session; auth_required when REQUIRE_AUTH),
    CSRF for POSTs of signed-in sessions (token requests need none: a header is no ambient
    credential), and RequestError -> {"error": {code, message}, code, message} with its status."""
    def wrapped(request, *args, **kwargs):
        try:
            token_auth = authenticate_http(request)
            if request.method not in ("GET", "HEAD", "OPTIONS") and not token_auth \
                    and request.user.is_authenticated and not _csrf_ok(request):
                raise RequestError(CSRF_FAILED, "CSRF check failed: send the csrftoken cookie's value in an "
                                                "X-CSRFToken header (or use an API token)", status=403)
            response = view(request, *args, **kwargs)
            if response.status_code == 405 and not response.get("Content-Type", "").startswith("application/json"):
                allowed = response.get("Allow", "")
                err = RequestError(METHOD_NOT_ALLOWED, f"{request.method} is not allowed here (allowed: {allowed})",
                                   status=405)
                response = error_response(err)
                response["Allow"] = allowed
            return response
        except RequestError as err:
            return error_response(err)
        except RequestDataTooBig:
            return error_response(RequestError(TOO_LARGE, "request body too large", status=413))
        except Exception:
            log.exception("API request failed: %s %s", request.method, request.path)
            return error_response(RequestError(INTERNAL_ERROR, "the server failed to handle this request",
                                               status=500))
    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return csrf_exempt(wrapped)


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


def read_json_body(request):
    ctype = request.content_type or ""
    if ctype != "application/json":
        # a cross-site HTML form cannot send application/json without a CORS preflight
        raise RequestError(INVALID_JSON, "send the request body as application/json", status=415)
    body = request.body
    if len(body) > settings.WS_MAX_CLIENT_MESSAGE_BYTES:
        raise RequestError(TOO_LARGE, "request body too large", status=413)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(INVALID_JSON, "request body is not UTF-8") from None
    return parse_json(text)


@api
@require_http_methods(["GET", "POST"])
def jobs_collection(request):
    viewer = viewer_of(request, create=request.method == "POST")
    if request.method == "POST":
        data = read_json_body(request)
        if isinstance(data, dict) and data.get("type") == "generate":
            data = {k: v for k, v in data.items() if k != "type"}
        req = validate_generate(data)
        limits.check_submission(viewer)
        job, position = jobs.create_job(req, viewer, request.user)
        body = {"job": job.as_dict(viewer), "position": position, "request_id": req.request_id}
        return JsonResponse(body, status=201)
    qs = jobs.visible_jobs(viewer, staff=request.user.is_staff)
    status = request.GET.get("status")
    if status:
        wanted = [s for s in status.split(",") if s]
        bad = [s for s in wanted if s not in Job.Status.values]
        if bad:
            raise RequestError(INVALID_FIELD, f"unknown status {bad[0]!r}", "status")
        qs = qs.filter(status__in=wanted)
    if request.GET.get("mine") in ("1", "true"):
        qs = qs.filter(owner=viewer)
    try:
        limit = min(max(int(request.GET.get("limit", 50)), 1), 200)
    except ValueError:
        raise RequestError(INVALID_FIELD, "limit must be an integer", "limit") from None
    return JsonResponse({"jobs": [j.as_dict(viewer) for j in qs.order_by("-created_at")[:limit]]})


def _job_id(raw: str) -> str:
    try:
        return validate_job_id(raw)
    except RequestError:
        raise RequestError(NOT_FOUND, "no such job", status=404) from None


@api
@require_http_methods(["GET"])
def job_detail(request, job_id):
    viewer = viewer_of(request, create=False)
    job = jobs.get_visible(_job_id(job_id), viewer, staff=request.user.is_staff)
    return JsonResponse({"job": job.as_dict(viewer)})


@api
@require_http_methods(["POST"])
def job_cancel(request, job_id):
    viewer = viewer_of(request)
    job, state = jobs.cancel_job(_job_id(job_id), viewer, staff=request.user.is_staff)
    return JsonResponse({"job": job.as_dict(viewer), "state": state}, status=200 if state == "cancelled" else 202)


@api
@require_http_methods(["GET", "HEAD"])
def job_video(request, job_id):
    """The MP4, with single-range `Range: bytes=a-b` support (206) so `<video>` can seek."""
    viewer = viewer_of(request, create=False)
    job = jobs.get_visible(_job_id(job_id), viewer, staff=request.user.is_staff)
    if not job.output:
        raise RequestError(NOT_FOUND, f"job is {job.status}; no video yet", status=404)
    name = job.output.name
    size = job.size_bytes if job.size_bytes is not None else default_storage.size(name)
    mime = job.mime or "video/mp4"
    range_header = request.headers.get("Range", "").strip()
    match = RANGE_RE.match(range_header) if range_header else None
    if range_header and not match:
        range_header = ""  # multi-range or malformed: ignore it, send the whole file (RFC 9110)
    if not match:
        resp = FileResponse(default_storage.open(name, "rb"), content_type=mime)
        resp["Content-Length"] = str(size)
    else:
        first, last = match.groups()
        if first == "":  # suffix: the last N bytes
            n = int(last or 0)
            if n == 0:
                return _unsatisfiable(size)
            start, end = max(size - n, 0), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else min(start + MAX_RANGE_CHUNK, size) - 1
            if start >= size or (last and int(last) < start):
                return _unsatisfiable(size)
        with default_storage.open(name, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start + 1)
        resp = HttpResponse(data, status=206, content_type=mime)
        resp["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/{size}"
        resp["Content-Length"] = str(len(data))
    resp["Accept-Ranges"] = "bytes"
    resp["Cache-Control"] = "private, max-age=3600"
    resp["Content-Disposition"] = f'inline; filename="{job.id}.mp4"'
    return resp


def _unsatisfiable(size: int) -> HttpResponse:
    resp = HttpResponse(status=416)
    resp["Content-Range"] = f"bytes */{size}"
    return resp


@api
@require_http_methods(["GET"])
def models_list(request):
    from generator.interface import DEFAULT_MODEL, list_models

    models = [m.as_dict() for m in list_models()]
    return JsonResponse({"models": models, "default": DEFAULT_MODEL},
                        json_dumps_params={"default": str})


def _check_db() -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchone()
    return "ok"


def _check_redis() -> str:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _ping_workers(timeout: float) -> list:
    from worker.celery import app

    replies = app.control.ping(timeout=timeout) or []
    return sorted(name for reply in replies for name in reply)


async def healthz(request):
    """200 when the database and Redis answer; `workers` lists the Celery workers that answered."""
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
            body["workers"] = await sync_to_async(_ping_workers, thread_sensitive=False)(min(max(timeout, 0.1), 5))
        except Exception as exc:
            body["workers_error"] = str(exc)
    if not ok:
        body["status"] = "unavailable"
    return JsonResponse(body, status=200 if ok else 503)


def not_found(request, exception=None):
    """404 handler: the JSON error under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error_response(RequestError(NOT_FOUND, f"no such resource: {request.path[:200]}", status=404))
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)
