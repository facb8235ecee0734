"""A generation job: who asked for what, where it stands, and the stored MP4."""
from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.db import models


def video_path(job: "Job", filename: str) -> str:
    return f"videos/{job.created_at:%Y/%m}/{job.id}.mp4"


def image_path(job: "Job", filename: str) -> str:
    return f"inputs/{job.created_at:%Y/%m}/{job.id}.png"


def input_video_path(job: "Job", filename: str) -> str:
    return f"inputs/{job.created_at:%Y/%m}/{job.id}.mp4"


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
    prompt = models.TextField()
    model = models.CharField(max_length=100, db_index=True)
    params = models.JSONField(default=dict, help_text="validated request with the model's defaults filled in")
    private = models.BooleanField(default=False)
    input_image = models.FileField(upload_to=image_path, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.GENERATE, db_index=True)
    input_video = models.FileField(upload_to=input_video_path, blank=True, help_text="describe: the uploaded video")
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
