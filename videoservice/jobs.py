"""Creating, cancelling and announcing jobs; shared by the websocket consumer and the HTTP API.

Everything here is synchronous (ORM + Celery publish); the consumer calls it through
`database_sync_to_async`.
"""
from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files.base import ContentFile
from django.db.models import Q
from django.utils import timezone

from videoservice.models import Job
from videoservice.validation import (FORBIDDEN, NOT_CANCELLABLE, NOT_FOUND, QUEUE_FULL, UNAVAILABLE,
                                     GenerateRequest, RequestError)

log = logging.getLogger(__name__)
ACTIVE = (Job.Status.QUEUED, Job.Status.RUNNING)


def event(kind: str, **fields) -> dict:
    """The channel-layer message the consumer relays to its client as {"type": kind, ...fields}."""
    return {"type": "job.event", "event": {"type": kind, **fields}}


def broadcast(group: str, kind: str, **fields) -> None:
    async_to_sync(get_channel_layer().group_send)(group, event(kind, **fields))


def queue_position(job: Job) -> int:
    """How many jobs for the same model are ahead of this one (queued or running)."""
    return Job.objects.filter(model=job.model, status__in=ACTIVE, created_at__lt=job.created_at).count()


def create_job(req: GenerateRequest, owner: str, user=None) -> tuple:
    """Save the job, enqueue its task on the model's queue; returns (job, position)."""
    if Job.objects.filter(status=Job.Status.QUEUED).count() >= settings.MAX_QUEUED_JOBS:
        raise RequestError(QUEUE_FULL, "the queue is full; try again later", status=429)
    if Job.objects.filter(status=Job.Status.QUEUED, owner=owner).count() >= settings.MAX_QUEUED_PER_OWNER:
        raise RequestError(QUEUE_FULL, f"you already have {settings.MAX_QUEUED_PER_OWNER} jobs waiting", status=429)
    job = Job.objects.create(
        owner=owner, user=user if (user is not None and user.is_authenticated) else None,
        prompt=req.prompt, model=req.model, params=req.params, private=req.private,
        total_steps=req.total_steps or req.params["steps"], seed=req.params["seed"],
    )
    if req.image_png is not None:
        job.input_image.save("start.png", ContentFile(req.image_png), save=True)
    send_to_queue(job)
    return job, queue_position(job)


def send_to_queue(job: Job) -> None:
    """Enqueue a saved job's task (task id = job id); with the broker down the job fails and the
    caller gets `unavailable`."""
    try:
        from worker.tasks import enqueue

        enqueue(job)
    except Exception as exc:  # broker down
        log.exception("could not enqueue %s job %s", job.kind, job.id)
        Job.objects.filter(pk=job.pk).update(status=Job.Status.FAILED, error=f"could not be queued: {exc}",
                                             finished_at=timezone.now())
        raise RequestError(UNAVAILABLE, "the job queue is unavailable; try again later", status=503) from None
    Job.objects.filter(pk=job.pk).update(task_id=str(job.id))


def visible_jobs(viewer: str | None, staff: bool = False):
    """Public jobs plus the viewer's own private ones (staff: every job)."""
    if staff:
        return Job.objects.all()
    if viewer is None:
        return Job.objects.filter(private=False)
    return Job.objects.filter(Q(private=False) | Q(owner=viewer))


def get_visible(job_id: str, viewer: str | None, staff: bool = False) -> Job:
    job = visible_jobs(viewer, staff).filter(pk=job_id).first()
    if job is None:
        raise RequestError(NOT_FOUND, "no such job", "job_id", status=404)
    return job


def cancel_job(job_id: str, viewer: str, staff: bool = False) -> tuple:
    """Cancel a queued job at once, or ask the worker to stop a running one between steps.

    Returns (job, "cancelled" | "cancelling"). Only the submitter (or staff) may cancel.
    """
    job = get_visible(job_id, viewer, staff)
    if job.owner != viewer and not staff:
        raise RequestError(FORBIDDEN, "only the submitter can cancel this job", "job_id", status=403)
    now = timezone.now()
    if Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
            status=Job.Status.CANCELLED, cancel_requested=True, finished_at=now, error="cancelled while queued"):
        job.refresh_from_db()
        broadcast(job.audience(), "cancelled", job_id=str(job.id))
        return job, "cancelled"
    if Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(cancel_requested=True):
        job.refresh_from_db()
        return job, "cancelling"
    job.refresh_from_db()
    raise RequestError(NOT_CANCELLABLE, f"job already {job.status}", "job_id", status=409)
