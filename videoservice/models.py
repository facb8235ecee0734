"""A job (a generation or a describe job): who asked for what, where it stands, and the stored MP4.

Every change of a job's state is a method here, each one a guarded UPDATE so that concurrent
parties (web processes, workers, reapers) cannot undo each other (docs/architecture.md):

  Job.objects.submit(...)      create (caps checked) + enqueue        -> queued
  job.claim(worker, pid, host) a worker takes it, with a fresh lease  queued (or lost) -> running
  job.beat() / job.check_held() heartbeat / still ours? cancel asked?  running
  job.succeed(**result)        store the outcome                      running -> succeeded
  job.fail(message)            with a `*_failed` event                running -> failed
  job.stop_cancelled()         the worker stopped on a cancel         running -> cancelled
  job.request_cancel()         a client's cancel                      queued -> cancelled | running: asked
  job.settle_lost(reason)      the reaper: its holder is gone         running -> queued | failed | cancelled
"""
from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from videoservice import bus
from videoservice.contract import (FORBIDDEN, INVALID_FIELD, NOT_CANCELLABLE, NOT_FOUND, QUEUE_FULL, UNAVAILABLE,
                                   CancelledEvent, DescribeRequest, FailedEvent, GenerateRequest, QueuedEvent,
                                   RequeuedEvent, RequestError)

log = logging.getLogger(__name__)


def video_path(job: "Job", filename: str) -> str:
    return f"videos/{job.created_at:%Y/%m}/{job.id}.mp4"


def image_path(job: "Job", filename: str) -> str:
    return f"inputs/{job.created_at:%Y/%m}/{job.id}.png"


def input_video_path(job: "Job", filename: str) -> str:
    return f"inputs/{job.created_at:%Y/%m}/{job.id}.mp4"


class LeaseLost(Exception):
    """The reaper gave this job to another delivery (this worker looked dead): stop, store nothing."""


@dataclass(frozen=True)
class Submitter:
    """Who submits: the owner key jobs are filed under, the signed-in user (or None) and the
    client's address (anonymous owners are capped per address too: a client that drops its
    cookie on every connection is still one client)."""

    owner: str
    user: object = None
    address: str = ""
    staff: bool = False

    @classmethod
    def of(cls, owner: str, user=None, address: str | None = None) -> "Submitter":
        signed_in = user is not None and getattr(user, "is_authenticated", False)
        return cls(owner=owner, user=user if signed_in else None, address=(address or "")[:64],
                   staff=bool(signed_in and getattr(user, "is_staff", False)))


class JobQuerySet(models.QuerySet):
    def visible_to(self, viewer: str | None, staff: bool = False):
        """Public jobs plus the viewer's own private ones (staff: every job)."""
        if staff:
            return self
        if viewer is None:
            return self.filter(private=False)
        return self.filter(Q(private=False) | Q(owner=viewer))

    def get_visible(self, job_id: str, viewer: str | None, staff: bool = False) -> "Job":
        job = self.visible_to(viewer, staff).filter(pk=job_id).first()
        if job is None:
            raise RequestError(NOT_FOUND, "no such job", "job_id", status=404)
        return job

    def check_caps(self, submitter) -> None:
        """queue_full (429) when the queue, this owner or (anonymous) this address has too many jobs waiting."""
        queued = self.filter(status=Job.Status.QUEUED)
        if queued.count() >= settings.MAX_QUEUED_JOBS:
            raise RequestError(QUEUE_FULL, "the queue is full; try again later", status=429, retry_after=30)
        if queued.filter(owner=submitter.owner).count() >= settings.MAX_QUEUED_PER_OWNER:
            raise RequestError(QUEUE_FULL, f"you already have {settings.MAX_QUEUED_PER_OWNER} jobs waiting",
                               status=429, retry_after=30)
        if submitter.user is None and submitter.address and queued.filter(
                user=None, client_address=submitter.address).count() >= settings.MAX_QUEUED_PER_ADDRESS:
            raise RequestError(QUEUE_FULL, f"{settings.MAX_QUEUED_PER_ADDRESS} anonymous jobs from your address are "
                                           "already waiting; sign in or wait for them", status=429, retry_after=30)

    def submit(self, submitter: Submitter, files: dict | None = None, **fields) -> "Job":
        """Create a job with its input files ({field: (name, bytes)}) and enqueue it, after the
        submission rate limit and the queue caps."""
        from django.core.files.base import ContentFile

        from videoservice import limits

        limits.check_submission(submitter.owner)
        self.check_caps(submitter)
        job = self.create(owner=submitter.owner, user=submitter.user, client_address=submitter.address, **fields)
        for name, (filename, data) in (files or {}).items():
            getattr(job, name).save(filename, ContentFile(data), save=True)
        job.enqueue()
        return job

    def submit_generate(self, req: GenerateRequest, submitter: Submitter) -> "Job":
        params = req.params
        if params.source_job_id is not None:  # video-to-video from a finished job the submitter can see
            self.finished_video(params.source_job_id, submitter, "source_job_id")
        files = {}
        if req.image_png:
            files["input_image"] = ("start.png", req.image_png)
        if req.video_bytes:
            files["input_video"] = ("source.mp4", req.video_bytes)
        return self.submit(submitter, files=files, prompt=req.prompt, model=params.model, params=params.stored(),
                           private=bool(req.private), total_steps=params.total_steps, seed=params.seed)

    def finished_video(self, job_id: str, submitter: Submitter, field: str) -> "Job":
        """A generation with a stored video that the submitter may see (as a source to read)."""
        source = self.get_visible(job_id, submitter.owner, submitter.staff)
        if source.kind != Job.Kind.GENERATE or not source.output:
            raise RequestError(INVALID_FIELD, f"job {source.id} has no video (it is a {source.status} {source.kind} "
                                              "job)", field, status=409)
        return source

    def submit_describe(self, req: DescribeRequest, submitter: Submitter) -> "Job":
        source = self.finished_video(req.job_id, submitter, "job_id") if req.job_id is not None else None
        params = req.params(str(source.id) if source else None)
        return self.submit(submitter, files={"input_video": ("input.mp4", req.video_bytes)} if source is None else None,
                           kind=Job.Kind.DESCRIBE, prompt=req.question or "", model=req.model,
                           params=params.model_dump(),
                           # a private video's description stays private
                           private=bool(req.private) or bool(source is not None and source.private))


class Job(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Kind(models.TextChoices):
        GENERATE = "generate"
        DESCRIBE = "describe"  # caption a video (or answer a question about it); `model` names the describer

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.CharField(max_length=80, db_index=True,
                             help_text="session key (s:...) or connection id (c:...) of the submitter")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    client_address = models.CharField(max_length=64, blank=True, db_index=True,
                                      help_text="the submitter's IP address (anonymous owners are capped per address)")
    prompt = models.TextField()
    model = models.CharField(max_length=100, db_index=True)
    params = models.JSONField(default=dict, help_text="validated request with the model's defaults filled in")
    private = models.BooleanField(default=False)
    input_image = models.FileField(upload_to=image_path, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.GENERATE, db_index=True)
    input_video = models.FileField(upload_to=input_video_path, blank=True, help_text="describe: the video to describe; generate: the source of a video-to-video job")
    result = models.JSONField(default=dict, blank=True,
                              help_text="describe: caption, answer, agreement; generate with evaluate: metrics")

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    progress = models.FloatField(default=0.0, help_text="0..1")
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # who holds a running job (worker/reaper.py): a fresh token per delivery, the pool process's pid,
    # and a timestamp its heartbeat thread refreshes; a job whose holder is gone is re-queued or failed
    lease = models.CharField(max_length=32, blank=True)
    worker_pid = models.PositiveIntegerField(null=True, blank=True)
    worker_host = models.CharField(max_length=200, blank=True, help_text="host and PID namespace of worker_pid")
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    output = models.FileField(upload_to=video_path, blank=True)
    mime = models.CharField(max_length=40, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    fps = models.FloatField(null=True, blank=True)
    num_frames = models.PositiveIntegerField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    elapsed_s = models.FloatField(null=True, blank=True, help_text="generation + encoding time on the worker")

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "model", "created_at"])]

    def __str__(self) -> str:
        return f"{self.id} {self.status} {self.prompt[:40]!r}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def url(self) -> str | None:
        return f"/api/jobs/{self.id}/video" if self.output else None

    def audience(self) -> str:
        """The channel-layer group its events go to."""
        return owner_group(self.owner) if self.private else LOBBY_GROUP

    def as_dict(self, viewer: str | None = None) -> dict:
        return {
            "id": str(self.id),
            "job_id": str(self.id),
            "status": self.status,
            "prompt": self.prompt,
            "model": self.model,
            "params": self.params,
            "private": self.private,
            "mine": viewer is not None and viewer == self.owner,
            "progress": self.progress,
            "step": self.step,
            "total_steps": self.total_steps,
            "error": self.error or None,
            "worker": self.worker or None,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "url": self.url,
            "mime": self.mime or None,
            "size_bytes": self.size_bytes,
            "fps": self.fps,
            "num_frames": self.num_frames,
            "width": self.width,
            "height": self.height,
            "seed": self.seed if self.seed is not None else self.params.get("seed"),
            "elapsed_s": self.elapsed_s,
            "kind": self.kind,
            "result": self.result or None,
        }

    # ------------------------------------------------------------------ the lifecycle
    def _guarded(self, **conditions):
        return Job.objects.filter(pk=self.pk, **conditions)

    def enqueue(self) -> None:
        """Put the job's task on its queue; with the broker down the job fails and the caller gets
        `unavailable` (503)."""
        try:
            bus.send_job(str(self.pk), self.kind, self.model)
        except Exception as exc:
            log.exception("could not enqueue %s job %s", self.kind, self.pk)
            self._guarded(status=Job.Status.QUEUED).update(
                status=Job.Status.FAILED, error=f"could not be queued: {exc}"[:2000], finished_at=timezone.now())
            raise RequestError(UNAVAILABLE, "the job queue is unavailable; try again later", status=503,
                               retry_after=5) from None
        if not self.task_id:
            self.task_id = str(self.pk)
            self._guarded().update(task_id=self.task_id)

    def position(self) -> int:
        """How many jobs for the same model are ahead of this one (queued or running)."""
        return Job.objects.filter(model=self.model, status__in=(Job.Status.QUEUED, Job.Status.RUNNING),
                                  created_at__lt=self.created_at).count()

    def claim(self, worker: str, pid: int, host: str) -> bool:
        """Take the job for this delivery with a fresh lease (from queued, or from running when the
        caller found its holder gone). False when someone else changed it first."""
        from uuid import uuid4

        now = timezone.now()
        lease = uuid4().hex
        if not self._guarded(status=self.status, lease=self.lease).update(
                status=Job.Status.RUNNING, started_at=now, worker=worker, attempts=self.attempts + 1,
                progress=0.0, step=0, lease=lease, worker_pid=pid, worker_host=host, heartbeat_at=now):
            return False
        self.refresh_from_db()
        return True

    def beat(self) -> bool:
        """Heartbeat of the process holding it."""
        return bool(self._guarded(status=Job.Status.RUNNING, lease=self.lease).update(heartbeat_at=timezone.now()))

    def check_held(self) -> bool:
        """Whether a cancel was asked; LeaseLost when the job was handed to another delivery."""
        row = Job.objects.filter(pk=self.pk).values("cancel_requested", "lease").first()
        if row is None or row["lease"] != self.lease:
            raise LeaseLost()
        return row["cancel_requested"]

    def record_progress(self, step: int, total: int) -> None:
        self._guarded(status=Job.Status.RUNNING).update(progress=step / max(total, 1), step=step, total_steps=total)

    def _end(self, status: str, **fields) -> bool:
        """Running (and still ours) -> a terminal status."""
        done = bool(self._guarded(status=Job.Status.RUNNING, lease=self.lease).update(
            status=status, finished_at=timezone.now(), **fields))
        if done:
            self.refresh_from_db()
        return done

    def succeed(self, **fields) -> bool:
        return self._end(Job.Status.SUCCEEDED, progress=1.0, **fields)

    def fail(self, message: str, retriable: bool = False) -> bool:
        if not self._end(Job.Status.FAILED, error=message[:2000]):
            return False
        bus.publish(self.audience(), FailedEvent(type=self.failed_event, job_id=str(self.pk), error=message,
                                                 retriable=retriable))
        return True

    def stop_cancelled(self) -> bool:
        if not self._end(Job.Status.CANCELLED, error="cancelled while running"):
            return False
        bus.publish(self.audience(), CancelledEvent(job_id=str(self.pk)))
        return True

    def request_cancel(self, viewer: str, staff: bool = False) -> str:
        """A client's cancel: a queued job is cancelled at once ("cancelled"); a running one is asked
        to stop between two steps ("cancelling"). Only the submitter (or staff) may."""
        if self.owner != viewer and not staff:
            raise RequestError(FORBIDDEN, "only the submitter can cancel this job", "job_id", status=403)
        if self._guarded(status=Job.Status.QUEUED).update(status=Job.Status.CANCELLED, cancel_requested=True,
                                                          finished_at=timezone.now(), error="cancelled while queued"):
            self.refresh_from_db()
            bus.publish(self.audience(), CancelledEvent(job_id=str(self.pk)))
            return "cancelled"
        if self._guarded(status=Job.Status.RUNNING).update(cancel_requested=True):
            self.refresh_from_db()
            return "cancelling"
        self.refresh_from_db()
        raise RequestError(NOT_CANCELLABLE, f"job already {self.status}", "job_id", status=409)

    def settle_lost(self, reason: str) -> str | None:
        """The reaper found this running job's holder gone: cancel it (a cancel was accepted: it must
        not run again), re-queue it (attempts left) or fail it. None if someone else settled it."""
        now = timezone.now()
        held = self._guarded(status=Job.Status.RUNNING, lease=self.lease)
        if self.cancel_requested:
            if not held.update(status=Job.Status.CANCELLED, error=f"cancelled ({reason})", finished_at=now, lease=""):
                return None
            bus.publish(self.audience(), CancelledEvent(job_id=str(self.pk)))
            return "cancelled"
        if self.attempts >= settings.JOB_MAX_ATTEMPTS:
            message = f"{reason}; it was lost {self.attempts} times, giving up (submit it again to retry)"
            if not held.update(status=Job.Status.FAILED, error=message[:2000], finished_at=now, lease=""):
                return None
            bus.publish(self.audience(), FailedEvent(type=self.failed_event, job_id=str(self.pk), error=message,
                                                     retriable=True))
            return "failed"
        if not held.update(status=Job.Status.QUEUED, lease="", worker_pid=None, heartbeat_at=None, progress=0.0, step=0):
            return None
        self.status = Job.Status.QUEUED
        try:
            bus.send_job(str(self.pk), self.kind, self.model)
        except Exception as exc:  # broker down: say so rather than leave a queued job with no message
            log.exception("could not re-queue job %s", self.pk)
            message = f"{reason}; it could not be re-queued ({type(exc).__name__}); submit it again"
            if self._guarded(status=Job.Status.QUEUED).update(status=Job.Status.FAILED, error=message[:2000],
                                                               finished_at=now):
                bus.publish(self.audience(), FailedEvent(type=self.failed_event, job_id=str(self.pk),
                                                         error=message, retriable=True))
            return "failed"
        bus.publish(self.audience(), RequeuedEvent(job_id=str(self.pk), reason=reason, attempts=self.attempts,
                                                   max_attempts=settings.JOB_MAX_ATTEMPTS))
        return "requeued"

    def queued_event(self, request_id=None) -> QueuedEvent:
        """The answer to the submitter, once the job is saved and on the queue."""
        common = {"job_id": str(self.pk), "kind": self.kind, "request_id": request_id, "position": self.position(),
                  "model": self.model, "private": self.private}
        if self.kind == Job.Kind.DESCRIBE:
            return QueuedEvent(**common, question=self.params.get("question"),
                               source_job_id=self.params.get("source_job_id"))
        return QueuedEvent(**common, prompt=self.prompt, params=self.params)

    @property
    def failed_event(self) -> str:
        return "description_failed" if self.kind == Job.Kind.DESCRIBE else "generation_failed"


LOBBY_GROUP = "lobby"


def owner_group(owner: str) -> str:
    """Group names must be short ASCII: hash the owner key."""
    return "owner." + hashlib.sha256(owner.encode()).hexdigest()[:32]


class ApiToken(models.Model):
    """A secret for scripts: `Authorization: Bearer <token>` (HTTP) or `?token=` / the same header
    (websocket) act as `user`. Only a SHA-256 of the token is stored; the token itself is shown
    once, by `manage.py create_api_token USER` or the admin."""

    PREFIX = "vs_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="what it is for, e.g. 'render farm'")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=12, editable=False, help_text="first characters, to tell tokens apart")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.hint}... ({self.user})"

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()

    @classmethod
    def issue(cls, user, name: str = "") -> tuple:
        """Create a token for `user`; returns (ApiToken, the token string, shown only now)."""
        import secrets

        token = cls.PREFIX + secrets.token_urlsafe(32)
        return cls.objects.create(user=user, name=name, digest=cls.hash(token), hint=token[:10]), token
