"""The HTTP API under /api/ (django-ninja): the same requests as the websocket, described by OpenAPI 3
at /api/openapi.json (interactive docs: /api/docs), generated from the contract's models.

Bodies are read by our own code, not by ninja, so that every refusal keeps its stable code
(`invalid_json`, 415 for another Content-Type, 413 for a body over the cap ...); the OpenAPI
document still describes them with the contract's JSON Schema. Every error is
`{"error": {code, message, field}, "code", "message", "field"}` with its status; 429 and 503
carry `Retry-After`.
"""
from __future__ import annotations

import logging
import re
from typing import Literal, Optional, Union

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import FileResponse, HttpResponse, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from ninja import NinjaAPI, Query, Schema
from ninja.errors import HttpError, ValidationError as NinjaValidationError
from ninja.security.base import AuthBase
from pydantic import Field

from generator.interface import DEFAULT_MODEL, list_models
from videoservice import bus, media
from videoservice.auth import authenticate_http, owner_key
from videoservice.contract import (AUTH_REQUIRED, CSRF_FAILED, FORBIDDEN, INTERNAL_ERROR, INVALID_FIELD, INVALID_JSON,
                                   METHOD_NOT_ALLOWED, NOT_CANCELLABLE, NOT_FOUND, RATE_LIMITED, TOO_LARGE, UNAVAILABLE,
                                   DescribeRequest, GenerateRequest, JobBody, RequestError, SteerBody, parse,
                                   parse_json,
                                   websocket_schema)
from videoservice.models import DispatchPause, Job, Submitter, WebhookSecret
from videoservice.origin import http_request_allowed

log = logging.getLogger(__name__)
RANGE_RE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$")  # longer numbers: malformed, so ignored
MAX_RANGE_CHUNK = 8 * 1024 * 1024
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


# ---------------------------------------------------------------- response bodies
class ErrorDetail(Schema):
    code: str = Field(description="stable code (docs/protocol.md)")
    message: str
    field: Optional[str] = None


class ErrorOut(Schema):
    error: ErrorDetail
    code: str
    message: str
    field: Optional[str] = None


class JobCreated(Schema):
    job: JobBody
    position: int
    request_id: Optional[Union[str, int]] = None


class JobOne(Schema):
    job: JobBody


class JobList(Schema):
    jobs: list[JobBody]


class CancelOut(Schema):
    job: JobBody
    state: Literal["cancelled", "cancelling"]


class SteerOut(Schema):
    job: JobBody
    state: Literal["steering", "queued"] = Field(description="running: takes effect at the next chunk (`steered` "
                                                             "announces it); queued: the job starts with it")


class StopOut(Schema):
    job: JobBody
    state: Literal["stopping", "cancelled"] = Field(description="running: ends after its current chunk, its frames "
                                                                "so far become its video; queued: cancelled")


class ModelOut(Schema):
    name: str
    description: str
    supports_image: bool
    native_size: list[int]
    default_frames: int
    min_frames: int
    max_frames: int
    frame_multiple: int
    frame_offset: int
    frame_rule: str
    default_width: int
    default_height: int
    size_multiple: int
    min_size: int
    max_size: int
    default_steps: int
    max_steps: int
    default_guidance: float
    max_guidance: float
    default_fps: float
    supports_video: bool
    has_audio: bool
    extra: dict


class ModelList(Schema):
    models: list[ModelOut]
    default: str


def errors(*statuses: int) -> dict:
    return {status: ErrorOut for status in statuses}


# ---------------------------------------------------------------- who is asking
def viewer_of(request, create: bool = True) -> str | None:
    """The owner key: `u:<id>` for a signed-in user (session or API token), else this browser's
    session (created on first use when `create`; read-only requests from clients without a session
    cookie do not create one)."""
    import time

    owner = owner_key(request.user, request.session.session_key)
    if owner is None and create:
        request.session["created"] = int(time.time())
        request.session.save()
        owner = owner_key(request.user, request.session.session_key)
    return owner


def submitter_of(request) -> Submitter:
    return Submitter.of(viewer_of(request), request.user, request.META.get("REMOTE_ADDR"),
                        getattr(request, "api_token", None))


def _csrf_ok(request) -> bool:
    from django.middleware.csrf import CsrfViewMiddleware

    def callback(req):  # not csrf_exempt: process_view checks it
        return None

    return CsrfViewMiddleware(lambda req: None).process_view(request, callback, (), {}) is None


class ServiceAuth(AuthBase):
    """Bearer token or session (anonymous on loopback; `auth_required` when REQUIRE_AUTH); a
    state-changing request of a session must come from our own origin, and a signed-in session's
    must carry the CSRF token (a token request needs neither: a header is no ambient credential)."""

    openapi_type = "http"
    openapi_scheme = "bearer"
    openapi_description = ("An API token (`manage.py create_api_token USER`). Optional on loopback, where an "
                           "anonymous session cookie works too; required off loopback or with REQUIRE_AUTH=1.")

    def __call__(self, request):
        token_auth = authenticate_http(request)
        if request.method not in SAFE_METHODS and not token_auth:
            if not http_request_allowed(request):
                raise RequestError(CSRF_FAILED, "cross-origin request refused: only pages of this service "
                                                "(or an API token) may change jobs", status=403)
            if request.user.is_authenticated and not _csrf_ok(request):
                raise RequestError(CSRF_FAILED, "CSRF check failed: send the csrftoken cookie's value in an "
                                                "X-CSRFToken header (or use an API token)", status=403)
        return True


class ServiceAPI(NinjaAPI):
    def get_openapi_schema(self, **kwargs):
        """Credentials are optional where the service runs on loopback (anonymous sessions): each
        operation's security lists the empty requirement too."""
        schema = super().get_openapi_schema(**kwargs)
        for item in schema["paths"].values():
            for operation in item.values():
                if operation.get("security"):
                    operation["security"] = [{}, *operation["security"]]
        return schema


api = ServiceAPI(title="videoservice", version="1.0",
               description="Self-hosted video generation: submit a prompt, watch the job, fetch the MP4. The "
                           "websocket lobby (/ws/lobby/) speaks the same requests; its messages are described "
                           "by the JSON Schema at /api/schema/websocket.json. Protocol: docs/protocol.md.",
               urls_namespace="api", docs_url="/docs", openapi_url="/openapi.json", auth=ServiceAuth())


def error_response(err: RequestError) -> JsonResponse:
    response = JsonResponse({"error": err.as_dict(), **err.as_dict()}, status=err.status)
    if err.status in (429, 503):
        response["Retry-After"] = str(err.retry_after or (30 if err.status == 429 else 5))
    return response


@api.exception_handler(RequestError)
def _refused(request, exc: RequestError):
    return error_response(exc)


@api.exception_handler(NinjaValidationError)
def _bad_parameter(request, exc: NinjaValidationError):  # query or path parameters of the wrong type
    first = exc.errors[0] if exc.errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("query", "path")]
    name = loc[0] if loc else "a parameter"
    rule = "must be an integer" if str(first.get("type", "")).startswith("int") else f"is not valid: {first.get('msg')}"
    return error_response(RequestError(INVALID_FIELD, f"{name} {rule}", name))


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):  # ninja's own refusals (a body that is not JSON ...): our error body
    code = {400: INVALID_JSON, 401: AUTH_REQUIRED, 403: FORBIDDEN, 404: NOT_FOUND, 429: RATE_LIMITED}.get(
        exc.status_code, INTERNAL_ERROR if exc.status_code >= 500 else INVALID_FIELD)
    return error_response(RequestError(code, str(exc), status=exc.status_code))


@api.exception_handler(RequestDataTooBig)
def _too_big(request, exc):
    return error_response(RequestError(TOO_LARGE, "request body too large", status=413))


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def _database_busy(request, exc):  # locked (SQLite) or a broken connection: passing, worth a retry
    log.warning("API request hit a busy database: %s %s: %s", request.method, request.path, exc)
    return error_response(RequestError(UNAVAILABLE, "the database is busy; try again shortly", status=503,
                                       retry_after=5))


@api.exception_handler(Exception)
def _crashed(request, exc: Exception):
    log.exception("API request failed: %s %s", request.method, request.path, exc_info=exc)
    return error_response(RequestError(INTERNAL_ERROR, "the server failed to handle this request", status=500))


def json_errors_middleware(get_response):
    """Outside ninja's operations: a method a path does not define (405) answers our JSON error too."""
    def middleware(request):
        response = get_response(request)
        if (response.status_code == 405 and request.path.startswith("/api/")
                and not response.get("Content-Type", "").startswith("application/json")):
            allowed = response.get("Allow", "")
            response = error_response(RequestError(METHOD_NOT_ALLOWED, f"{request.method} is not allowed here "
                                                                       f"(allowed: {allowed})", status=405))
            response["Allow"] = allowed
        return response
    return middleware


def read_json_body(request):
    if (request.content_type or "") != "application/json":
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


def body_of(model) -> dict:
    """The OpenAPI requestBody of a contract model (bodies are parsed by read_json_body + parse)."""
    schema = model.model_json_schema(mode="validation")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _job_id(raw: str) -> str:
    import uuid

    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise RequestError(NOT_FOUND, "no such job", status=404) from None


def _created(request, job: Job, request_id) -> tuple:
    return 201, {"job": job.as_dict(job.owner), "position": job.position(), "request_id": request_id}


# ---------------------------------------------------------------- operations
@api.post("/jobs", response={201: JobCreated, **errors(400, 401, 403, 404, 413, 415, 429, 503)},
          openapi_extra=body_of(GenerateRequest), summary="Submit a generation (the websocket's `generate`)")
def create_job(request):
    req = parse(GenerateRequest, read_json_body(request))
    job = Job.objects.submit_generate(req, submitter_of(request))
    return _created(request, job, req.request_id)


STATUSES = "(queued|running|succeeded|failed|cancelled)"


@api.get("/jobs", response={200: JobList, **errors(400, 401)}, summary="Public jobs and yours, newest first")
def list_jobs(request, status: Optional[str] = Query(None, pattern=f"^{STATUSES}(,{STATUSES})*$",
                                                     description="comma-separated statuses"),
              mine: Optional[Literal["1", "true", "0", "false"]] = None, limit: int = 50):
    viewer = viewer_of(request, create=False)
    qs = Job.objects.visible_to(viewer, staff=request.user.is_staff)
    if status:
        wanted = [s for s in status.split(",") if s]
        bad = [s for s in wanted if s not in Job.Status.values]
        if bad:
            raise RequestError(INVALID_FIELD, f"unknown status {bad[0]!r}", "status")
        qs = qs.filter(status__in=wanted)
    if mine in ("1", "true"):
        qs = qs.filter(owner=viewer)
    limit = min(max(limit, 1), 200)
    return {"jobs": [j.as_dict(viewer) for j in qs.order_by("-created_at")[:limit]]}


@api.get("/jobs/{job_id}", response={200: JobOne, **errors(401, 404)}, summary="One job")
def get_job(request, job_id: str):
    viewer = viewer_of(request, create=False)
    return {"job": Job.objects.get_visible(_job_id(job_id), viewer, staff=request.user.is_staff).as_dict(viewer)}


@api.post("/jobs/{job_id}/cancel", response={200: CancelOut, 202: CancelOut, **errors(401, 403, 404, 409)},
          summary="Cancel a queued job (200) or stop a running one between two steps (202)")
def cancel_job(request, job_id: str):
    viewer = viewer_of(request)
    job = Job.objects.get_visible(_job_id(job_id), viewer, staff=request.user.is_staff)
    state = job.request_cancel(viewer, staff=request.user.is_staff)
    return (200 if state == "cancelled" else 202), {"job": job.as_dict(viewer), "state": state}


@api.post("/jobs/{job_id}/steer", response={202: SteerOut, **errors(400, 401, 403, 404, 409, 415)},
          openapi_extra=body_of(SteerBody),
          summary="A live job's new prompt, from its next chunk on (owner or staff)")
def steer_job(request, job_id: str):
    viewer = viewer_of(request)
    req = parse(SteerBody, read_json_body(request))
    job = Job.objects.get_visible(_job_id(job_id), viewer, staff=request.user.is_staff)
    state = job.request_steer(req.prompt, viewer, staff=request.user.is_staff)
    return 202, {"job": job.as_dict(viewer), "state": state}


@api.post("/jobs/{job_id}/stop", response={200: StopOut, 202: StopOut, **errors(401, 403, 404, 409)},
          summary="End a live job gracefully: its frames so far become its video (202; a queued one is cancelled: 200)")
def stop_job(request, job_id: str):
    viewer = viewer_of(request)
    job = Job.objects.get_visible(_job_id(job_id), viewer, staff=request.user.is_staff)
    state = job.request_stop(viewer, staff=request.user.is_staff)
    return (200 if state == "cancelled" else 202), {"job": job.as_dict(viewer), "state": state}


VIDEO_RESPONSES = {"responses": {
    "200": {"description": "the MP4", "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
    "206": {"description": "the requested byte range (Content-Range)",
            "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
    "302": {"description": "S3_DOWNLOADS=redirect: a presigned URL of the object in the bucket (Location)"},
    "416": {"description": "the range is not satisfiable (Content-Range: bytes */size)"}}}


@api.get("/jobs/{job_id}/video", response={**errors(401, 404, 410)}, openapi_extra=VIDEO_RESPONSES,
         summary="The finished MP4, with single-range `Range` support")
@api.api_operation(["HEAD"], "/jobs/{job_id}/video", response={**errors(401, 404, 410)}, openapi_extra=VIDEO_RESPONSES,
                   operation_id="job_video_head", summary="The finished MP4's headers")
def job_video(request, job_id: str):
    return _stored_video(request, job_id, "output")


@api.get("/jobs/{job_id}/hdr", response={**errors(401, 404, 410)}, openapi_extra=VIDEO_RESPONSES,
         summary="An HDR model's HDR10 master (HEVC Main 10, PQ, BT.2020), with single-range `Range` support")
@api.api_operation(["HEAD"], "/jobs/{job_id}/hdr", response={**errors(401, 404, 410)}, openapi_extra=VIDEO_RESPONSES,
                   operation_id="job_hdr_head", summary="The HDR10 master's headers")
def job_hdr(request, job_id: str):
    return _stored_video(request, job_id, "hdr_output")


def _stored_video(request, job_id: str, field: str) -> HttpResponse:
    """A visible job's stored MP4: `output` (its video) or `hdr_output` (an HDR model's HDR10 master)."""
    viewer = viewer_of(request, create=False)
    job = Job.objects.get_visible(_job_id(job_id), viewer, staff=request.user.is_staff)
    if not getattr(job, field):
        missing = "no video yet" if field == "output" else "it has no HDR10 master (only HDR models make one)"
        raise RequestError(NOT_FOUND, f"job is {job.status}; {missing}", status=404)
    name = getattr(job, field).name
    size = job.size_bytes if field == "output" and job.size_bytes is not None else None
    filename = f"{job.id}.mp4" if field == "output" else f"{job.id}.hdr10.mp4"
    if settings.S3_DOWNLOADS == "redirect" and (url := media.presigned_url(name)):
        return HttpResponseRedirect(url)  # the client fetches (and seeks in) the object from the bucket
    try:
        resp = _video_response(request, name, size if size is not None else media.size(name),
                               job.mime or "video/mp4")
    except Exception as exc:
        if not media.is_missing(exc):
            raise
        log.warning("a video of job %s (%s) is missing from the storage", job.pk, filename)
        raise RequestError(NOT_FOUND, "the video of this job is no longer stored", status=410) from None
    if resp.status_code == 416:
        return resp
    resp["Accept-Ranges"] = "bytes"
    resp["Cache-Control"] = "private, max-age=3600"
    resp["Content-Disposition"] = f'inline; filename="{filename}"'
    return resp


def _video_response(request, name: str, size: int, mime: str) -> HttpResponse:
    """The stored MP4, whole or the asked single range (FileNotFoundError and the like when it is gone)."""
    range_header = request.headers.get("Range", "").strip()
    match = RANGE_RE.match(range_header) if range_header else None
    if not match:  # none, multi-range or malformed: the whole file (RFC 9110)
        resp = FileResponse(media.open_stream(name), content_type=mime)
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
        data = media.read_range(name, start, end)
        resp = HttpResponse(data, status=206, content_type=mime)
        resp["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/{size}"
        resp["Content-Length"] = str(len(data))
    return resp


STREAM_RESPONSES = {"responses": {
    "200": {"description": "fragmented MP4 while the job runs (a progressive response that ends with the job), "
                           "the finished MP4 once it is done",
            "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}}}}


@api.get("/jobs/{job_id}/stream", response={**errors(401, 404, 410)}, openapi_extra=STREAM_RESPONSES,
         summary="The video while it is generated (plays in <video>, ffmpeg, PyAV)")
async def job_stream(request, job_id: str):
    from asgiref.sync import sync_to_async

    viewer = await sync_to_async(viewer_of)(request, False)
    job = await sync_to_async(Job.objects.get_visible)(_job_id(job_id), viewer, request.user.is_staff)
    if job.output:
        return await sync_to_async(job_video)(request, str(job.pk))
    if job.status not in (Job.Status.QUEUED, Job.Status.RUNNING):
        raise RequestError(NOT_FOUND, f"job is {job.status}; no video", status=404)
    pieces = bus.stream_read(str(job.pk), idle_timeout=settings.STREAM_IDLE_S)
    response = StreamingHttpResponse(_headers_now(_watching(str(job.pk), pieces) if job.live else pieces),
                                     content_type="video/mp4")
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # (a proxy must not hold it back)
    return response


async def _headers_now(pieces):
    """The status and headers go out at once (Daphne writes them with the first body bytes, and a
    queued job may send none for minutes): an empty first piece."""
    yield b""
    async for piece in pieces:
        yield piece


async def _watching(job_id: str, pieces):
    """A live job's /stream: its reader counts as a viewer (LIVE_IDLE_S) while pieces reach it."""
    async for piece in pieces:
        yield piece
        await bus.note_watched(job_id, settings.LIVE_IDLE_S)


def _unsatisfiable(size: int) -> HttpResponse:
    resp = HttpResponse(status=416)
    resp["Content-Range"] = f"bytes */{size}"
    return resp


@api.post("/describe", response={201: JobCreated, **errors(400, 401, 403, 404, 409, 413, 415, 429, 503)},
          openapi_extra=body_of(DescribeRequest), summary="Caption a video or answer a question about it")
def describe(request):
    req = parse(DescribeRequest, read_json_body(request))
    job = Job.objects.submit_describe(req, submitter_of(request))
    return _created(request, job, req.request_id)


class JobPromoted(Schema):
    job: JobBody
    position: int


class DispatchState(Schema):
    paused: list[str] = Field(description='paused models ("*": all)')
    turns_sent: Optional[int] = None


class PauseRequest(Schema):
    model: str = Field("*", description='a model name, or "*" for every model')


class SecretOut(Schema):
    secret: str = Field(description="HMAC-SHA256 key of your webhook deliveries (docs/protocol.md)")


def staff_only(request) -> None:
    if not request.user.is_staff:
        raise RequestError(FORBIDDEN, "only staff may change the queue", status=403)


@api.post("/jobs/{job_id}/retry", response={201: JobCreated, **errors(401, 403, 404, 409, 429, 503)},
          summary="Submit a failed or cancelled job again (a new job, linked to it)")
def retry_job(request, job_id: str):
    submitter = submitter_of(request)
    job = Job.objects.get_visible(_job_id(job_id), submitter.owner, staff=submitter.staff)
    return _created(request, job.retry(submitter), None)


@api.post("/jobs/{job_id}/front", response={200: JobPromoted, **errors(401, 403, 404, 409)},
          summary="Move a waiting job to the front of its queue (staff)")
def front_job(request, job_id: str):
    staff_only(request)
    job = Job.objects.get_visible(_job_id(job_id), None, staff=True)
    if not job.promote():
        raise RequestError(NOT_CANCELLABLE, f"job is {job.status}, not waiting", "job_id", status=409)
    job.refresh_from_db()
    return {"job": job.as_dict(viewer_of(request)), "position": job.position()}


@api.get("/dispatch", response={200: DispatchState, **errors(401)}, summary="Which models are paused")
def dispatch_state(request):
    return {"paused": sorted(DispatchPause.paused())}


@api.post("/dispatch/pause", response={200: DispatchState, **errors(400, 401, 403)},
          summary="Stop dispatching a model's jobs, or every model's (staff); nothing is lost or reordered")
def dispatch_pause(request, body: PauseRequest):
    staff_only(request)
    Job.objects.pause(body.model, by=request.user)
    return {"paused": sorted(DispatchPause.paused())}


@api.post("/dispatch/resume", response={200: DispatchState, **errors(400, 401, 403)},
          summary="Dispatch again (staff)")
def dispatch_resume(request, body: PauseRequest):
    staff_only(request)
    sent = Job.objects.resume(body.model)
    return {"paused": sorted(DispatchPause.paused()), "turns_sent": sent}


@api.get("/account/webhook-secret", response={200: SecretOut, **errors(401, 403)},
         summary="The key your webhook deliveries are signed with")
def webhook_secret(request):
    if not request.user.is_authenticated:
        raise RequestError(FORBIDDEN, "webhooks are for signed-in users", status=403)
    return {"secret": WebhookSecret.of(request.user)}


@api.get("/models", response={200: ModelList, **errors(401)}, summary="The models and their defaults and limits")
def models_list(request):
    return {"models": [m.as_dict() for m in list_models()], "default": DEFAULT_MODEL}


@api.get("/schema/websocket.json", response={200: dict}, auth=None, include_in_schema=False)
def websocket_messages(request):
    return websocket_schema()
