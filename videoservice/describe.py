"""Describe jobs: caption a video (a finished job's, or an uploaded MP4), or answer a question about it.

Shared by the websocket lobby (`{"type": "describe", ...}`) and `POST /api/describe`; the work
runs in the Celery task `worker.tasks.describe_video` on the `describe` queue. Protocol:
docs/protocol.md ("Describe").
"""
from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field
from typing import Any, Optional

from django.conf import settings
from django.core.files.base import ContentFile
from django.http import JsonResponse
from django.views.decorators.http import require_http_methods

from videoservice import jobs, limits
from videoservice.models import Job
from videoservice.views import api, read_json_body, viewer_of
from videoservice.validation import (INVALID_FIELD, MISSING_FIELD, QUEUE_FULL, UNAVAILABLE, UNKNOWN_MODEL,
                                     RequestError, _utf8, check_fields, request_id_of, validate_job_id)

DESCRIBE_FIELDS = {"type", "job_id", "video", "question", "model", "request_id", "private"}
VIDEO_INVALID = "video_invalid"
MAX_QUESTION_CHARS = 500


@dataclass
class DescribeRequest:
    describer: str
    question: Optional[str] = None
    source: Optional[Job] = None  # describe this finished job's video...
    video: Optional[bytes] = field(default=None, repr=False)  # ...or this uploaded one
    private: bool = False
    request_id: Any = None


def decode_video_upload(value: Any) -> bytes:
    """Base64 (optionally a data: URL) of a video file PyAV can open and that holds a video stream."""
    import av

    if not isinstance(value, str) or not value:
        raise RequestError(INVALID_FIELD, "video must be a base64 string (or a data: URL) of an MP4", "video")
    if value.startswith("data:"):
        value = value.split(",", 1)[-1]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(VIDEO_INVALID, "video is not valid base64", "video") from None
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise RequestError(VIDEO_INVALID, "the file holds no video stream", "video")
    except av.error.FFmpegError as exc:
        raise RequestError(VIDEO_INVALID, f"video could not be read: {exc}", "video") from None
    return data


def validate_describe(data: Any, viewer: Optional[str], staff: bool = False) -> DescribeRequest:
    from generator.understanding import DEFAULT_DESCRIBER, DescribeError, describer_names

    if not isinstance(data, dict):
        raise RequestError(INVALID_FIELD, "the request must be a JSON object")
    check_fields(data, DESCRIBE_FIELDS)
    has_job, has_video = data.get("job_id") is not None, data.get("video") is not None
    if has_job == has_video:
        raise RequestError(MISSING_FIELD if not has_job else INVALID_FIELD,
                           "give either job_id (a finished job) or video (base64 MP4), not both", "job_id")

    question = data.get("question")
    if question is not None:
        if not isinstance(question, str):
            raise RequestError(INVALID_FIELD, "question must be a string", "question")
        question = question.strip() or None
        if question and (len(question) > MAX_QUESTION_CHARS or "\x00" in question or not _utf8(question)):
            raise RequestError(INVALID_FIELD, f"question must be at most {MAX_QUESTION_CHARS} characters "
                                              "of valid Unicode with no NUL", "question")

    describer = data.get("model") or DEFAULT_DESCRIBER
    try:
        known = describer_names()
    except DescribeError as exc:  # the operator's describer configuration is broken
        raise RequestError(UNAVAILABLE, str(exc), status=503) from None
    if not isinstance(describer, str) or describer not in known:
        raise RequestError(UNKNOWN_MODEL, f"unknown describer {str(describer)[:100]!r} (known: {', '.join(known)})",
                           "model")

    private = data.get("private", False)
    if not isinstance(private, bool):
        raise RequestError(INVALID_FIELD, "private must be true or false", "private")

    req = DescribeRequest(describer=describer, question=question, private=private, request_id=request_id_of(data))
    if has_job:
        req.source = jobs.get_visible(validate_job_id(data["job_id"]), viewer, staff)
        if req.source.kind != Job.Kind.GENERATE or not req.source.output:
            raise RequestError(INVALID_FIELD, f"job {req.source.id} has no video to describe (it is a "
                                              f"{req.source.status} {req.source.kind} job)", "job_id", status=409)
        req.private = req.private or req.source.private  # a private video's description stays private
    else:
        req.video = decode_video_upload(data["video"])
    return req


def create_describe_job(req: DescribeRequest, owner: str, user=None) -> tuple:
    """Save the describe job, enqueue its task on the describe queue; returns (job, position)."""
    if Job.objects.filter(status=Job.Status.QUEUED).count() >= settings.MAX_QUEUED_JOBS:
        raise RequestError(QUEUE_FULL, "the queue is full; try again later", status=429)
    if Job.objects.filter(status=Job.Status.QUEUED, owner=owner).count() >= settings.MAX_QUEUED_PER_OWNER:
        raise RequestError(QUEUE_FULL, f"you already have {settings.MAX_QUEUED_PER_OWNER} jobs waiting", status=429)
    params = {"question": req.question, "source_job_id": str(req.source.id) if req.source else None}
    job = Job.objects.create(
        kind=Job.Kind.DESCRIBE, owner=owner, user=user if (user is not None and user.is_authenticated) else None,
        prompt=req.question or "", model=req.describer, params=params, private=req.private)
    if req.video is not None:
        job.input_video.save("input.mp4", ContentFile(req.video), save=True)
    jobs.send_to_queue(job)
    return job, jobs.queue_position(job)


def queued_event(job: Job, position: int, request_id: Any) -> dict:
    """The `queued` reply to the submitter of a describe job."""
    return {"type": "queued", "kind": job.kind, "job_id": str(job.id), "request_id": request_id,
            "position": position, "model": job.model, "question": job.params.get("question"),
            "source_job_id": job.params.get("source_job_id"), "private": job.private}


@api
@require_http_methods(["POST"])
def describe_view(request):
    """POST /api/describe: the same fields as the websocket `describe` message; 201 with the job."""
    viewer = viewer_of(request)
    data = read_json_body(request)
    if isinstance(data, dict) and data.get("type") == "describe":
        data = {k: v for k, v in data.items() if k != "type"}
    req = validate_describe(data, viewer, staff=request.user.is_staff)
    limits.check_submission(viewer)
    job, position = create_describe_job(req, viewer, request.user)
    return JsonResponse({"job": job.as_dict(viewer), "position": position, "request_id": req.request_id}, status=201)
