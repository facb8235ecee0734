"""A job (a generation or a describe job): who asked for what, where it stands, and the stored MP4.

Every change of a job's state is a method here, each one a guarded UPDATE so that concurrent
parties (web processes, workers, reapers) cannot undo each other (docs/architecture.md):

  Job.objects.submit(...)      create (caps checked), files, a turn   -> queued
  job.claim(worker, pid, host) a worker takes it, with a fresh lease  queued (or lost) -> running
  job.beat() / job.check_held() heartbeat / still ours? cancel asked?  running
  job.succeed(**result)        store the outcome                      running -> succeeded
  job.fail(message)            with a `*_failed` event                running -> failed
  job.stop_cancelled()         the worker stopped on a cancel         running -> cancelled
  job.request_cancel()         a client's cancel                      queued -> cancelled | running: asked
  job.request_steer(prompt)    a live job's new prompt                queued: its prompt | running: asked
  job.request_stop()           a live job ends gracefully             queued -> cancelled | running: asked
  job.settle_lost(reason)      the reaper: its holder is gone         running -> queued | failed | cancelled
"""
from __future__ import annotations

import base64
import hashlib
import logging
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, models, transaction
from django.db.models import Q
from django.utils import timezone

from generator.interface import GenerationError
from generator.stream import faststart_mp4
from videoservice import bus, dispatch, limits, webhooks
from videoservice.contract import (FORBIDDEN, INVALID_FIELD, NOT_CANCELLABLE, NOT_FOUND, NOT_LIVE, QUEUE_FULL,
                                   UNAVAILABLE, CancelledEvent, DescribeRequest, FailedEvent, GenerateRequest,
                                   GenerationCompleteEvent, JobBody, QueuedEvent, RequeuedEvent, RequestError)

log = logging.getLogger(__name__)


def video_path(job: "Job", filename: str) -> str:
    return f"videos/{job.created_at:%Y/%m}/{job.id}.mp4"


def hdr_video_path(job: "Job", filename: str) -> str:
    return f"videos/{job.created_at:%Y/%m}/{job.id}.hdr10.mp4"


def image_path(job: "Job", filename: str) -> str:
    return f"inputs/{job.created_at:%Y/%m}/{job.id}.png"


def input_video_path(job: "Job", filename: str) -> str:
    return f"inputs/{job.created_at:%Y/%m}/{job.id}.mp4"


# A database that is locked (SQLite: a write waited DB_BUSY_TIMEOUT_S) or whose connection broke
# (PostgreSQL restarted): worth another try, never a reason to fail a job
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)


def retry_transient(write, what: str):
    """`write()`, tried again on transient database errors for DB_RETRY_S (the last one is raised)."""
    import time

    give_up, wait = time.monotonic() + settings.DB_RETRY_S, 0.5
    while True:
        try:
            return write()
        except TRANSIENT_DB_ERRORS as exc:
            if time.monotonic() + wait > give_up:
                raise
            log.warning("%s: %s; trying again in %.1f s", what, exc, wait)
            connections["default"].close_if_unusable_or_obsolete()
            time.sleep(wait)
            wait = min(wait * 2, 10.0)


# an absolute server path (not a URL's path): users and the lobby see only its last part
_SERVER_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"<>():,;]+/)+([^\s/'\"<>():,;]*)")


def public_error(message: str) -> str:
    """A failure's text as users see it: /srv/media/inputs/2026/12/<id>.png -> <id>.png."""
    return _SERVER_PATH.sub(lambda match: match.group(1) or "...", message)


def store_video(job: "Job", data: bytes, field: str = "output") -> str:
    """Store a job's finished MP4 (or, field "hdr_output", its HDR10 master); the stored name. A storage
    that refuses it (full, read-only) leaves no partial file: GenerationError, fit for the user."""
    from django.core.files.base import ContentFile

    file = getattr(job, field)
    name = file.field.generate_filename(job, "video.mp4")
    try:
        return file.storage.save(name, ContentFile(data))
    except Exception as exc:
        log.exception("could not store the video of job %s", job.pk)
        _delete_quietly(name)
        raise GenerationError(f"the video could not be stored ({type(exc).__name__}: {public_error(str(exc))}); "
                              "the media storage may be full or read-only") from None


def _delete_quietly(name: str) -> None:
    from django.core.files.storage import default_storage

    try:
        default_storage.delete(name)
    except Exception:  # the storage that failed the write may fail this too: the file is logged, not lost track of
        log.exception("could not remove %s", name)


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
    may_prioritize: bool = False  # staff, or an API token allowed to

    @classmethod
    def of(cls, owner: str, user=None, address: str | None = None, token=None) -> "Submitter":
        signed_in = user is not None and getattr(user, "is_authenticated", False)
        staff = bool(signed_in and getattr(user, "is_staff", False))
        return cls(owner=owner, user=user if signed_in else None, address=(address or "")[:64], staff=staff,
                   may_prioritize=staff or bool(token is not None and token.can_prioritize))


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
        submission rate limit and the queue caps. All or nothing: the row and its files are
        committed together, and removed again when its turn cannot be sent (`unavailable`, 503)."""
        limits.check_submission(submitter.owner)
        self.check_caps(submitter)
        queue = bus.DESCRIBE_QUEUE if fields.get("kind") == Job.Kind.DESCRIBE else bus.queue_of_model(fields["model"])
        with transaction.atomic():
            job = self.create(owner=submitter.owner, user=submitter.user, client_address=submitter.address,
                              queue=queue, **fields)
            job.store_inputs(files or {})
        # the turn goes after the commit (a worker taking it earlier would find no row); a web process
        # lost in between leaves a queued row without a turn, which the reapers' top-up gives one
        try:
            bus.send_turns(queue)
        except Exception:
            log.exception("could not enqueue %s job %s", job.kind, job.pk)
            job.discard()
            raise RequestError(UNAVAILABLE, "the job queue is unavailable; try again later", status=503,
                               retry_after=5) from None
        return job

    def dispatch_order(self, queue: str) -> list:
        """The waiting jobs of a queue in the order they will run (videoservice/dispatch.py)."""
        from django.db.models import Max

        waiting = list(self.filter(queue=queue, status=Job.Status.QUEUED).only(
            "id", "owner", "priority", "promoted_at", "created_at", "model"))
        owners = {job.owner for job in waiting}
        last_start = dict(self.filter(queue=queue, owner__in=owners, started_at__isnull=False)
                          .values_list("owner").annotate(last=Max("started_at")))
        return dispatch.dispatch_order(waiting, last_start, fifo=settings.DISPATCH_ORDER == "fifo")

    def claim_next(self, queue: str, worker: str, pid: int, host: str) -> "Job | None":
        """A worker's turn on `queue`: claim the first waiting job in dispatch order whose model is
        not paused (None: nothing to run now)."""
        paused = DispatchPause.paused()
        for candidate in self.dispatch_order(queue):
            if dispatch.is_paused(candidate.model, paused):
                continue
            with transaction.atomic():
                # PostgreSQL: a row another worker is claiming right now is skipped, not waited for
                # (its claim is about to win); SQLite has no row locks and its IMMEDIATE
                # transactions already run one at a time. The conditional UPDATE in claim() decides.
                job = self.select_for_update(skip_locked=True).filter(pk=candidate.pk, status=Job.Status.QUEUED).first()
                if job is not None and job.claim(worker, pid, host):
                    return job
        return None

    def pause(self, model: str = dispatch.ALL_MODELS, by=None) -> bool:
        """Stop dispatching a model's jobs (or every model's): they wait, in order."""
        return DispatchPause.objects.get_or_create(model=model, defaults={"by": by})[1]

    def resume(self, model: str = dispatch.ALL_MODELS) -> int:
        """Dispatch again; every queue with waiting jobs gets a turn per job. Returns the turns sent."""
        DispatchPause.objects.filter(model=model).delete()
        return self.top_up(every_job=True)

    def top_up(self, queues=None, every_job: bool = False) -> int:
        """Turns for queues that have waiting jobs and no turn on the broker (lost to a Redis restart,
        or taken while paused): one per waiting job."""
        sent = 0
        waiting = self.filter(status=Job.Status.QUEUED)
        if queues is not None:
            waiting = waiting.filter(queue__in=list(queues))
        paused = DispatchPause.paused()
        counts = defaultdict(int)
        for queue, model in waiting.values_list("queue", "model"):
            if not dispatch.is_paused(model, paused):
                counts[queue] += 1
        for queue, count in counts.items():
            if every_job or bus.turns_waiting(queue) == 0:
                bus.send_turns(queue, count)
                sent += count
        return sent

    def submit_generate(self, req: GenerateRequest, submitter: Submitter) -> "Job":
        params = req.params
        if params.source_job_id is not None:  # video-to-video from a finished job the submitter can see
            self.finished_video(params.source_job_id, submitter, "source_job_id")
        files = {}
        if req.image_png:
            files["input_image"] = ("start.png", req.image_png)
        if req.video_bytes:
            files["input_video"] = ("source.mp4", req.video_bytes)
        if params.live:
            self.check_live_cap(submitter)
        return self.submit(submitter, files=files, prompt=req.prompt, model=params.model, params=params.stored(),
                           private=bool(req.private), total_steps=params.total_steps, seed=params.seed,
                           live=bool(params.live), **self.dispatch_fields(req, submitter))

    def check_live_cap(self, submitter: Submitter) -> None:
        """Each live job holds a worker while it plays: LIVE_MAX_PER_OWNER queued or running per owner."""
        if self.filter(owner=submitter.owner, live=True, status__in=(Job.Status.QUEUED, Job.Status.RUNNING)
                       ).count() >= settings.LIVE_MAX_PER_OWNER:
            raise RequestError(QUEUE_FULL, f"you already have {settings.LIVE_MAX_PER_OWNER} live job(s); stop one "
                                           "first", "live", status=429, retry_after=30)

    @staticmethod
    def dispatch_fields(req, submitter: Submitter) -> dict:
        """priority and webhook of a request, checked against who submits it."""
        priority = req.priority or 0
        if priority > 0 and not submitter.may_prioritize:
            raise RequestError(FORBIDDEN, "only staff and tokens allowed to may raise a job's priority above 0",
                               "priority", status=403)
        if req.webhook and submitter.user is None:
            raise RequestError(INVALID_FIELD, "webhooks need a signed-in user (the deliveries are signed with "
                                              "the user's secret)", "webhook")
        return {"priority": priority, "webhook": req.webhook or "",
                "webhook_events": list(req.webhook_events or (webhooks.DEFAULT_EVENTS if req.webhook else []))}

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
                           private=bool(req.private) or bool(source is not None and source.private),
                           **self.dispatch_fields(req, submitter))


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
    # dispatch (videoservice/dispatch.py): the queue whose turns run it, and its place in that queue
    queue = models.CharField(max_length=100, blank=True, db_index=True)
    priority = models.SmallIntegerField(default=0, help_text="higher runs first; above 0 for staff and allowed tokens")
    promoted_at = models.DateTimeField(null=True, blank=True, help_text="moved to the front of its queue (staff)")
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    webhook = models.URLField(max_length=2000, blank=True, help_text="POSTed the job's JSON on its events")
    webhook_events = models.JSONField(default=list, blank=True)
    input_video = models.FileField(upload_to=input_video_path, blank=True,
                                   help_text="describe: the video to describe; generate: the source of a "
                                             "video-to-video job")
    result = models.JSONField(default=dict, blank=True,
                              help_text="describe: caption, answer, agreement; generate with evaluate: metrics")

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    # live jobs (worker/live.py): the prompt its owner last asked for, a graceful stop, and the
    # prompts in force from which frame on ([{"from_frame": 0, "prompt": ...}, ...], the worker's)
    live = models.BooleanField(default=False, db_index=True)
    steer_prompt = models.TextField(blank=True)
    stop_requested = models.BooleanField(default=False)
    timeline = models.JSONField(default=list, blank=True)
    progress = models.FloatField(default=0.0, help_text="0..1")
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
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
    has_audio = models.BooleanField(default=False, help_text="the MP4 carries the model's sound track")
    hdr_output = models.FileField(upload_to=hdr_video_path, blank=True,
                                  help_text="HDR models: the linear frames as an HDR10 MP4 (HEVC, PQ, BT.2020)")

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "model", "created_at"])]

    def __str__(self) -> str:
        return f"{self.id} {self.status} {self.prompt[:40]!r}"

    @property
    def url(self) -> str | None:
        return f"/api/jobs/{self.id}/video" if self.output else None

    @property
    def hdr_url(self) -> str | None:
        return f"/api/jobs/{self.id}/hdr" if self.hdr_output else None

    def audience(self) -> str:
        """The channel-layer group its events go to."""
        return owner_group(self.owner) if self.private else LOBBY_GROUP

    def as_dict(self, viewer: str | None = None) -> dict:
        """The job as the HTTP API and webhooks show it (validated: one schema for both)."""
        return JobBody(**{
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
            "queue": self.queue,
            "priority": self.priority,
            "retry_of": str(self.retry_of_id) if self.retry_of_id else None,
            "has_audio": self.has_audio,
            "hdr_url": self.hdr_url,
            "live": self.live,
            "timeline": self.timeline or None,
        }).model_dump()

    # ------------------------------------------------------------------ the lifecycle
    def _guarded(self, **conditions):
        return Job.objects.filter(pk=self.pk, **conditions)

    def store_inputs(self, files: dict) -> None:
        """Store the input files ({field: (name, bytes)}); when the storage refuses one (full, read-only,
        unreachable), every file written so far, a partial one too, is removed: `unavailable` (503)."""
        from django.core.files.base import ContentFile

        written = []
        try:
            for name, (filename, data) in files.items():
                field = getattr(self, name)
                written.append(field.field.generate_filename(self, filename))
                field.save(filename, ContentFile(data), save=True)
        except Exception:
            log.exception("could not store the input files of job %s", self.pk)
            for path in written:
                _delete_quietly(path)
            raise RequestError(UNAVAILABLE, "the media storage cannot take the upload now; try again later",
                               status=503, retry_after=30) from None

    def discard(self) -> None:
        """Remove a queued job that was never announced, with its files."""
        for field in (self.input_image, self.input_video):
            if field:
                _delete_quietly(field.name)
        Job.objects.filter(pk=self.pk, status=Job.Status.QUEUED).delete()

    def position(self) -> int:
        """How many jobs of its queue will run before this one: the running ones, and the waiting
        ones ahead of it in the dispatch order."""
        if self.status != Job.Status.QUEUED:
            return 0
        running = Job.objects.filter(queue=self.queue, status=Job.Status.RUNNING).count()
        order = Job.objects.dispatch_order(self.queue)
        return running + next((i for i, job in enumerate(order) if job.pk == self.pk), len(order))

    def claim(self, worker: str, pid: int, host: str) -> bool:
        """Take this queued job for a worker process with a fresh lease. False when someone else
        changed it first."""
        from uuid import uuid4

        now = timezone.now()
        if not self._guarded(status=Job.Status.QUEUED).update(
                status=Job.Status.RUNNING, started_at=now, worker=worker, attempts=self.attempts + 1,
                progress=0.0, step=0, lease=uuid4().hex, worker_pid=pid, worker_host=host, heartbeat_at=now):
            return False
        self.refresh_from_db()
        return True

    def promote(self) -> bool:
        """Move a waiting job to the front of its queue (staff)."""
        return bool(self._guarded(status=Job.Status.QUEUED).update(promoted_at=timezone.now()))

    def retry(self, submitter: "Submitter") -> "Job":
        """A new job with the same request (and input files), linked to this failed or cancelled one."""
        if self.status not in (Job.Status.FAILED, Job.Status.CANCELLED):
            raise RequestError(NOT_CANCELLABLE, f"only a failed or cancelled job can be retried (it is {self.status})",
                               "job_id", status=409)
        if self.owner != submitter.owner and not submitter.staff:
            raise RequestError(FORBIDDEN, "only the submitter can retry this job", "job_id", status=403)
        files = {}
        for name, filename in (("input_image", "start.png"), ("input_video", "input.mp4")):
            stored = getattr(self, name)
            if stored:
                with stored.open("rb") as fh:
                    files[name] = (filename, fh.read())
        return Job.objects.submit(Submitter(owner=self.owner, user=self.user, address=self.client_address),
                                  files=files, kind=self.kind, prompt=self.prompt, model=self.model,
                                  params=self.params, private=self.private, total_steps=self.total_steps,
                                  seed=self.seed if self.kind == Job.Kind.GENERATE else None,
                                  priority=self.priority, webhook=self.webhook, webhook_events=self.webhook_events,
                                  live=self.live, retry_of=self)

    def announce(self, event, wait: bool = True, watched: float = 0.0) -> None:
        """An event of this job: to its audience, and to its webhook when the job asked for it.
        `watched`: each process that relays it notes that the live job has viewers for that many seconds."""
        bus.publish(self.audience(), event, wait=wait, watched=watched)
        WebhookDelivery.record(self, event)

    def announce_progress(self, event) -> None:
        bus.publish_progress(self.audience(), event)
        WebhookDelivery.record(self, event)

    def beat(self) -> bool:
        """Heartbeat of the process holding it."""
        return bool(self._guarded(status=Job.Status.RUNNING, lease=self.lease).update(heartbeat_at=timezone.now()))

    def check_held(self) -> bool:
        """Whether a cancel was asked; LeaseLost when the job was handed to another delivery. (A
        database that cannot answer now answers "no cancel": the next check asks again.)"""
        try:
            row = Job.objects.filter(pk=self.pk).values("cancel_requested", "lease").first()
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("could not check job %s for a cancel: %s", self.pk, exc)
            return False
        if row is None or row["lease"] != self.lease:
            raise LeaseLost()
        return row["cancel_requested"]

    def record_progress(self, step: int, total: int) -> None:
        """The row's progress, best effort: a locked or unreachable database skips this one (the
        event still goes out; the next report or the job's end writes the row)."""
        try:
            self._guarded(status=Job.Status.RUNNING).update(progress=step / max(total, 1), step=step,
                                                            total_steps=total)
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("progress of job %s not written: %s", self.pk, exc)

    def _end(self, status: str, **fields) -> bool:
        """Running (and still ours) -> a terminal status (retried while the database is locked or away)."""
        done = bool(retry_transient(lambda: self._guarded(status=Job.Status.RUNNING, lease=self.lease).update(
            status=status, finished_at=timezone.now(), **fields), f"ending job {self.pk}"))
        if done:
            self.refresh_from_db()
        return done

    def succeed(self, **fields) -> bool:
        return self._end(Job.Status.SUCCEEDED, progress=1.0, **fields)

    def fail(self, message: str, retriable: bool = False) -> bool:
        """Running -> failed, with `message` told to the job's audience (server paths cut to file names)."""
        message = public_error(message)
        if not self._end(Job.Status.FAILED, error=message[:2000]):
            return False
        self.announce(FailedEvent(type=self.failed_event, job_id=str(self.pk), error=message, retriable=retriable))
        return True

    def stop_cancelled(self) -> bool:
        if not self._end(Job.Status.CANCELLED, error="cancelled while running"):
            return False
        self.announce(CancelledEvent(job_id=str(self.pk)))
        return True

    def request_cancel(self, viewer: str, staff: bool = False) -> str:
        """A client's cancel: a queued job is cancelled at once ("cancelled"); a running one is asked
        to stop between two steps ("cancelling"). Only the submitter (or staff) may."""
        if self.owner != viewer and not staff:
            raise RequestError(FORBIDDEN, "only the submitter can cancel this job", "job_id", status=403)
        if self._guarded(status=Job.Status.QUEUED).update(status=Job.Status.CANCELLED, cancel_requested=True,
                                                          finished_at=timezone.now(), error="cancelled while queued"):
            self.refresh_from_db()
            self.announce(CancelledEvent(job_id=str(self.pk)))
            return "cancelled"
        if self._guarded(status=Job.Status.RUNNING).update(cancel_requested=True):
            self.refresh_from_db()
            return "cancelling"
        self.refresh_from_db()
        raise RequestError(NOT_CANCELLABLE, f"job already {self.status}", "job_id", status=409)

    def _check_live(self, viewer: str, staff: bool, what: str) -> None:
        if self.owner != viewer and not staff:
            raise RequestError(FORBIDDEN, f"only the submitter can {what} this job", "job_id", status=403)
        if not self.live:
            raise RequestError(NOT_LIVE, f"only a live job can be {what}ed (this one is a fixed clip)", "job_id",
                               status=409)

    def request_steer(self, prompt: str, viewer: str, staff: bool = False) -> str:
        """A new prompt for a live job: a queued one starts with it ("queued"); a running one takes it
        from its next chunk ("steering": the worker announces `steered` with the first frame made
        under it). Only the submitter (or staff) may."""
        self._check_live(viewer, staff, "steer")
        if self._guarded(status=Job.Status.QUEUED).update(prompt=prompt, steer_prompt=prompt):
            self.refresh_from_db()
            return "queued"
        if self._guarded(status=Job.Status.RUNNING, stop_requested=False, cancel_requested=False).update(
                steer_prompt=prompt):
            self.refresh_from_db()
            return "steering"
        self.refresh_from_db()
        raise RequestError(NOT_CANCELLABLE, f"job already {self.status}"
                           + (" (stopping)" if self.status == Job.Status.RUNNING else ""), "job_id", status=409)

    def request_stop(self, viewer: str, staff: bool = False) -> str:
        """End a live job gracefully: a running one finishes its current chunk and its frames so far
        become the video ("stopping"); a queued one never ran, so it is cancelled ("cancelled")."""
        self._check_live(viewer, staff, "stop")
        if self._guarded(status=Job.Status.RUNNING).update(stop_requested=True):
            self.refresh_from_db()
            return "stopping"
        if self.status == Job.Status.QUEUED:
            return self.request_cancel(viewer, staff)
        self.refresh_from_db()
        raise RequestError(NOT_CANCELLABLE, f"job already {self.status}", "job_id", status=409)

    def live_commands(self) -> tuple:
        """(the prompt its owner asks for, whether a stop was asked), for the worker between chunks;
        LeaseLost when the job was handed to another delivery."""
        row = Job.objects.filter(pk=self.pk).values("steer_prompt", "stop_requested", "lease").first()
        if row is None or row["lease"] != self.lease:
            raise LeaseLost()
        return row["steer_prompt"] or self.prompt, row["stop_requested"]

    def record_timeline(self, timeline: list) -> None:
        self._guarded(status=Job.Status.RUNNING, lease=self.lease).update(timeline=timeline)
        self.timeline = timeline

    def settle_lost(self, reason: str) -> str | None:
        """The reaper found this running job's holder gone: cancel it (a cancel was accepted: it must
        not run again), re-queue it (attempts left) or fail it. None if someone else settled it."""
        now = timezone.now()
        held = self._guarded(status=Job.Status.RUNNING, lease=self.lease)
        if self.cancel_requested:
            if not held.update(status=Job.Status.CANCELLED, error=f"cancelled ({reason})", finished_at=now, lease=""):
                return None
            self.announce(CancelledEvent(job_id=str(self.pk)))
            return "cancelled"
        if self.live:
            return self._end_lost_live(reason, held)
        if self.attempts >= settings.JOB_MAX_ATTEMPTS:
            message = f"{reason}; it was lost {self.attempts} times, giving up (submit it again to retry)"
            if not held.update(status=Job.Status.FAILED, error=message[:2000], finished_at=now, lease=""):
                return None
            self.announce(FailedEvent(type=self.failed_event, job_id=str(self.pk), error=message, retriable=True))
            return "failed"
        if not held.update(status=Job.Status.QUEUED, lease="", worker_pid=None, heartbeat_at=None, progress=0.0,
                           step=0):
            return None
        self.status = Job.Status.QUEUED
        try:
            bus.send_turns(self.queue)
        except Exception:  # broker down: the job waits in the database; a reaper's top-up gives it a turn
            log.exception("could not give job %s a turn", self.pk)
        self.announce(RequeuedEvent(job_id=str(self.pk), reason=reason, attempts=self.attempts,
                                    max_attempts=settings.JOB_MAX_ATTEMPTS))
        return "requeued"

    def _end_lost_live(self, reason: str, held) -> str | None:
        """A live job is not run again when its worker vanished (a new run would be a new video): it
        ends with the frames it streamed (kept in its Redis stream), or fails if it streamed none."""
        try:
            data, frames = faststart_mp4(bus.stream_collect(str(self.pk)))
        except Exception as exc:  # nothing streamed yet (or Redis lost it)
            log.warning("live job %s: no streamed video to keep (%s)", self.pk, exc)
            data, frames = b"", 0
        now = timezone.now()
        stored, message = None, f"{reason}; the live video had streamed no frame"
        if frames:
            try:
                stored = store_video(self, data)
            except GenerationError as exc:
                message = f"{reason}; {exc}"
        if stored is None:
            if not held.update(status=Job.Status.FAILED, error=message[:2000], finished_at=now, lease=""):
                return None
            self.announce(FailedEvent(type=self.failed_event, job_id=str(self.pk), error=message, retriable=True))
            return "failed"
        p = self.params
        fields = dict(output=stored, mime="video/mp4", size_bytes=len(data), fps=float(p["fps"]), num_frames=frames,
                      width=p["width"] - p["width"] % 2, height=p["height"] - p["height"] % 2, seed=p["seed"],
                      elapsed_s=round((now - (self.started_at or now)).total_seconds(), 3))
        if not held.update(status=Job.Status.SUCCEEDED, progress=1.0, finished_at=now, lease="",
                           error=f"ended early ({reason}) with the {frames} frames streamed", **fields):
            self.output.storage.delete(stored)
            return None
        bus.stream_append(str(self.pk), end=True)  # readers of /stream stop waiting
        self.refresh_from_db()
        inline = len(data) <= settings.INLINE_VIDEO_MAX_BYTES
        self.announce(GenerationCompleteEvent(
            job_id=str(self.pk), prompt=self.prompt, model=self.model, url=self.url, mime=self.mime,
            video=base64.b64encode(data).decode("ascii") if inline else None, num_frames=frames, fps=self.fps,
            width=self.width, height=self.height, seed=self.seed, elapsed_s=self.elapsed_s, size_bytes=len(data),
            private=self.private, timeline=self.timeline or [{"from_frame": 0, "prompt": self.prompt}]))
        return "ended"

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


class DispatchPause(models.Model):
    """A model whose jobs are not dispatched for now ("*": every model). videoservice/dispatch.py."""

    model = models.CharField(max_length=100, unique=True)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"paused: {self.model}"

    @classmethod
    def paused(cls) -> set:
        """The paused models' names (with "*" when everything is paused)."""
        return set(cls.objects.values_list("model", flat=True))


class WebhookDelivery(models.Model):
    """One event of a job for its webhook, until delivered (how: videoservice/webhooks.py)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=20)
    body = models.TextField(help_text="the JSON POSTed")
    created_at = models.DateTimeField(auto_now_add=True)
    attempts = models.PositiveIntegerField(default=0)
    next_try_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    gave_up = models.BooleanField(default=False)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]

    @classmethod
    def record(cls, job: Job, event) -> None:
        """A job's event: written for its webhook (when it asked for this one) and handed to delivery."""
        found = webhooks.event_body(job, event)
        if found is None:
            return
        cls.objects.create(job=job, event=found[0], body=found[1])
        try:
            bus.app.send_task(webhooks.DELIVER_TASK, args=[str(job.pk)], queue=webhooks.QUEUE, ignore_result=True)
        except Exception:  # the row waits; the next event or the reaper's sweep sends it
            log.exception("could not hand the webhook delivery of job %s over", job.pk)

    @classmethod
    def deliver_pending(cls, job_id: str) -> float | None:
        """POST the job's pending deliveries in order. Returns seconds after which to try again (a
        delivery failed and has tries left), or None when there is nothing left to send now."""
        job = Job.objects.select_related("user").filter(pk=job_id).first()
        if job is None or not job.webhook or job.user is None:
            return None
        secret = WebhookSecret.of(job.user)
        for delivery in cls.objects.filter(job=job, delivered_at__isnull=True, gave_up=False):
            now = timezone.now()
            if delivery.next_try_at and delivery.next_try_at > now:
                return (delivery.next_try_at - now).total_seconds()
            error = webhooks.send(job.webhook, secret, str(delivery.pk), delivery.event, delivery.body)
            delivery.attempts += 1
            if not error:
                delivery.delivered_at = timezone.now()
                delivery.save(update_fields=["attempts", "delivered_at"])
                continue
            delivery.last_error = error[:500]
            if delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
                log.warning("webhook of job %s: giving up on %s after %d tries (%s)", job.pk, delivery.event,
                            delivery.attempts, error)
                delivery.gave_up = True
                delivery.save(update_fields=["attempts", "last_error", "gave_up"])
                continue
            wait = webhooks.backoff(delivery.attempts)
            delivery.next_try_at = timezone.now() + timedelta(seconds=wait)
            delivery.save(update_fields=["attempts", "last_error", "next_try_at"])
            return wait
        return None


class WebhookSecret(models.Model):
    """The key a user's webhook deliveries are signed with (HMAC-SHA256; docs/protocol.md)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_secret")
    secret = models.CharField(max_length=64)

    @classmethod
    def of(cls, user) -> str:
        import secrets

        return cls.objects.get_or_create(user=user, defaults={"secret": secrets.token_hex(32)})[0].secret


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
    can_prioritize = models.BooleanField(default=False, help_text="may submit jobs with a priority above 0")

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
