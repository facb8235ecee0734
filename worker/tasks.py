"""The generation task: thin glue between a Job row, the generator backend and the channel layer.

Events (docs/protocol.md) go to the job's audience: the "lobby" group, or the owner's group for
private jobs. The video itself is never returned as the task result (the Redis result backend
would store and publish it); it is stored through Django's storage and broadcast base64.
"""
from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import threading
import time

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import close_old_connections
from django.utils import timezone

from videoservice.models import Job
from worker import reaper
from worker.celery import app

log = logging.getLogger(__name__)
PREVIEW_FRAMES = 4
PREVIEW_HEIGHT = 96


# ---------------------------------------------------------------- channel layer from a sync task
class _LayerLoop:
    """One event loop thread per worker process, so the channel layer keeps its Redis connections."""

    def __init__(self):
        self.loop = None
        self.lock = threading.Lock()

    def _ensure(self):
        with self.lock:
            if self.loop is None or not self.thread.is_alive():
                self.loop = asyncio.new_event_loop()
                self.thread = threading.Thread(target=self.loop.run_forever, name="channel-layer", daemon=True)
                self.thread.start()
        return self.loop

    def group_send(self, group: str, message: dict, timeout: float = 30.0) -> None:
        fut = asyncio.run_coroutine_threadsafe(get_channel_layer().group_send(group, message), self._ensure())
        fut.result(timeout)


_layer = _LayerLoop()


def send_event(job: Job, event_type: str, **fields) -> None:
    try:
        _layer.group_send(job.audience(), {"type": "job.event",
                                           "event": {"type": event_type, "job_id": str(job.id), **fields}})
    except Exception:  # a lost event must not fail the job; the DB row stays authoritative
        log.exception("could not send %s for job %s", event_type, job.id)


# ---------------------------------------------------------------- previews
def preview_jpeg(frames: np.ndarray) -> str | None:
    """A contact sheet of up to 4 evenly spaced frames, <= 96 px high, as base64 JPEG."""
    from PIL import Image

    if frames is None:
        return None
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[0] == 0:
        return None
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    idx = np.unique(np.linspace(0, frames.shape[0] - 1, min(PREVIEW_FRAMES, frames.shape[0])).round().astype(int))
    h, w = frames.shape[1:3]
    th = min(PREVIEW_HEIGHT, h)
    tw = max(1, round(w * th / h))
    tiles = [Image.fromarray(frames[i][..., :3]).resize((tw, th), Image.Resampling.BILINEAR) for i in idx]
    sheet = Image.new("RGB", (tw * len(tiles), th))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, (k * tw, 0))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=70)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------- the task
def _finish(job: Job, status: str, **fields) -> bool:
    """Move a running job to a terminal status (only from running, and only while this delivery
    holds its lease: a concurrent change, or a reaper that handed the job to another worker, wins)."""
    return bool(Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, lease=job.lease).update(
        status=status, finished_at=timezone.now(), **fields))


def failed_event(job: Job) -> str:
    return "description_failed" if job.kind == Job.Kind.DESCRIBE else "generation_failed"


def enqueue(job: Job) -> None:
    """Put the job's task on its queue (describe jobs: the describe queue; others: the model's)."""
    if job.kind == Job.Kind.DESCRIBE:
        describe_video.apply_async(args=[str(job.pk)], task_id=str(job.pk))
    else:
        generate_video.apply_async(args=[str(job.pk)], kwargs={"model": job.model}, task_id=str(job.pk))


def _fail(job: Job, message: str, retriable: bool = False) -> dict:
    if _finish(job, Job.Status.FAILED, error=message[:2000]):
        send_event(job, failed_event(job), error=message, retriable=retriable)
    return {"job_id": str(job.id), "status": "failed", "error": message}


class LeaseLost(Exception):
    """The reaper gave this job to another delivery (this worker looked dead): stop, store nothing."""


def _load_image(job: Job):
    if not job.input_image:
        return None
    from PIL import Image

    try:
        with job.input_image.open("rb") as fh:
            img = Image.open(fh)
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:  # truncated / overwritten / missing file
        from generator.interface import GenerationError

        raise GenerationError(f"the start image could not be read ({type(exc).__name__}: {exc}); "
                              "submit it again") from None


def _check_frames(frames) -> np.ndarray:
    """A backend's frames as T x H x W x 3 uint8; NaN/Inf (a numerically broken model) is an error."""
    from generator.interface import GenerationError

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3:
        raise GenerationError(f"the model returned frames of shape {frames.shape}, not T x H x W x 3")
    if frames.dtype != np.uint8:
        if np.issubdtype(frames.dtype, np.floating) and not np.isfinite(frames).all():
            raise GenerationError("the model produced NaN/Inf values (numerical instability); "
                                  "try another seed, fewer steps or a float32 model")
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    return frames


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


@app.task(bind=True, name="worker.tasks.generate_video")
def generate_video(self, job_id: str, model: str | None = None) -> dict:
    close_old_connections()
    try:
        return _run(job_id, self.request.hostname or "worker")
    finally:
        close_old_connections()


def _run(job_id: str, hostname: str, held=None) -> dict:
    """Claim the job (lease, heartbeat; duplicates and jobs that keep killing workers are refused),
    then run `held(job, job_id, hostname)`: the generation by default."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        log.warning("job %s does not exist", job_id)
        return {"job_id": job_id, "status": "missing"}
    if job.status not in (Job.Status.QUEUED, Job.Status.RUNNING):
        return {"job_id": job_id, "status": job.status}  # e.g. cancelled while queued
    if job.status == Job.Status.RUNNING and reaper.holder_alive(job, hostname):
        # a second delivery of a job that is running (the broker's visibility timeout expired, or the
        # reaper re-queued it while this message was redelivered): never run it twice
        log.warning("duplicate delivery of job %s dropped: it is running on %s (pid %s)", job_id, job.worker,
                    job.worker_pid)
        return {"job_id": job_id, "status": "duplicate"}
    attempts = job.attempts + 1
    if job.status == Job.Status.RUNNING and attempts > settings.JOB_MAX_ATTEMPTS:
        # redelivered after its worker was lost; a job that keeps crashing workers stops here
        return _fail(job, f"the worker running this job ({job.worker}) was lost {job.attempts} times; giving up "
                          "(submit it again to retry)", retriable=True)
    started = timezone.now()
    lease = reaper.new_lease()
    if not Job.objects.filter(pk=job.pk, status=job.status, lease=job.lease).update(
            status=Job.Status.RUNNING, started_at=started, worker=hostname, attempts=attempts,
            progress=0.0, step=0, lease=lease, worker_pid=os.getpid(), heartbeat_at=started):
        job.refresh_from_db()
        return {"job_id": job_id, "status": job.status}
    reaper.heartbeat.hold(job.pk, lease)
    from generator.interface import Cancelled

    try:
        return (held or _run_held)(job, job_id, hostname)
    except Cancelled:
        if _finish(job, Job.Status.CANCELLED, error="cancelled while running"):
            send_event(job, "cancelled")
        return {"job_id": job_id, "status": "cancelled"}
    except LeaseLost:
        log.warning("%s job %s was handed to another worker while this one ran it; result dropped", job.kind, job_id)
        return {"job_id": job_id, "status": "lease_lost"}
    except SoftTimeLimitExceeded:
        return _fail(job, f"time limit exceeded ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s)")
    except Exception as exc:
        log.exception("%s job %s failed", job.kind, job_id)
        _fail(job, f"internal error: {type(exc).__name__}: {exc}")
        raise
    finally:
        reaper.heartbeat.release()


def _run_held(job: Job, job_id: str, hostname: str) -> dict:
    from generator.encode import encode_video, mime_type
    from generator.interface import Cancelled, GenerationError, GenerationRequest, get_backend
    from generator.longvideo import LongVideoOptions, run_job

    job.refresh_from_db()
    p = job.params
    send_event(job, "started", worker=hostname, prompt=job.prompt, model=job.model, params=p,
               private=job.private)

    t0 = time.monotonic()
    state = {"sent": -1e9, "checked": -1e9, "cancel": False, "gen_t0": None}

    def should_cancel() -> bool:
        now = time.monotonic()
        if not state["cancel"] and now - state["checked"] >= 0.1:
            state["checked"] = now
            row = Job.objects.filter(pk=job.pk).values("cancel_requested", "lease").first()
            if row is None or row["lease"] != job.lease:
                raise LeaseLost()
            state["cancel"] = row["cancel_requested"]
        return state["cancel"]

    def progress(step: int, total: int, preview=None) -> None:
        now = time.monotonic()
        state["total"] = total
        if state["gen_t0"] is None:
            state["gen_t0"] = t0
        if step < total and now - state["sent"] < settings.PROGRESS_INTERVAL_S:
            return
        state["sent"] = now
        spent = now - state["gen_t0"]
        eta = spent / max(step, 1) * (total - step)
        Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(
            progress=step / max(total, 1), step=step, total_steps=total)
        try:
            preview_b64 = preview_jpeg(preview) if preview is not None else None
        except Exception:
            log.exception("preview failed")
            preview_b64 = None
        send_event(job, "progress", step=step, total_steps=total, percent=round(100.0 * step / max(total, 1), 1),
                   eta_s=round(eta, 2), preview=preview_b64, preview_mime="image/jpeg" if preview_b64 else None)

    try:
        try:
            backend = get_backend(job.model)
        except (GenerationError, KeyError, ImportError, OSError, ValueError, RuntimeError) as exc:
            if _is_oom(exc):
                raise
            raise GenerationError(f"model {job.model!r} could not be loaded: {exc}") from None
        request = GenerationRequest(
            prompt=job.prompt, num_frames=p.get("num_frames"), width=p.get("width"), height=p.get("height"),
            steps=p.get("steps"), guidance_scale=p.get("guidance_scale"), seed=p.get("seed"), fps=p.get("fps"),
            image=_load_image(job))
        options = LongVideoOptions(num_chunks=p.get("num_chunks") or 1, duration_s=p.get("duration_s"),
                                   overlap=p.get("overlap"), interpolate=p.get("interpolate") or 1,
                                   upscale=p.get("upscale") or 1)
        state["gen_t0"] = time.monotonic()
        if options.active:  # chunks, then upscaling, then interpolation; progress counts all chunks' steps
            result = run_job(backend, request, options, progress=progress, should_cancel=should_cancel)
        else:
            result = backend.generate(request, progress=progress, should_cancel=should_cancel)
        if should_cancel():
            raise Cancelled()
        result.frames = _check_frames(result.frames)
        data = encode_video(result.frames, result.fps, fmt="mp4")
        evaluation = _evaluate(job, data) if p.get("evaluate") else None
        t, h, w = result.frames.shape[:3]
        h, w = h - h % 2, w - w % 2  # the encoder crops odd sizes
        elapsed = time.monotonic() - t0
        name = job.output.field.generate_filename(job, "video.mp4")
        stored = job.output.storage.save(name, ContentFile(data))
        if not _finish(job, Job.Status.SUCCEEDED, output=stored, mime=mime_type("mp4"), size_bytes=len(data),
                       fps=float(result.fps), num_frames=int(t), width=int(w), height=int(h), seed=int(result.seed),
                       elapsed_s=round(elapsed, 3), progress=1.0, result=evaluation or {},
                       step=state.get("total") or job.total_steps or p.get("steps") or 0):
            job.refresh_from_db()
            return {"job_id": job_id, "status": job.status}
        job.refresh_from_db()
        inline = len(data) <= settings.INLINE_VIDEO_MAX_BYTES
        send_event(job, "generation_complete", prompt=job.prompt, model=job.model,
                   video=base64.b64encode(data).decode("ascii") if inline else None,
                   url=job.url, mime=job.mime, num_frames=job.num_frames, fps=job.fps, width=job.width,
                   height=job.height, seed=job.seed, elapsed_s=job.elapsed_s, size_bytes=len(data),
                   private=job.private, evaluation=evaluation)
        return {"job_id": job_id, "status": "succeeded", "url": job.url, "elapsed_s": job.elapsed_s,
                "size_bytes": len(data)}
    except GenerationError as exc:
        return _fail(job, str(exc) or "generation failed")
    except Exception as exc:
        if not _is_oom(exc):
            raise  # _run settles it
        # the worker survives it: free what the failed run held and take the next job
        detail = f"{type(exc).__name__}: {exc}"
        del exc
        _free_memory()
        log.warning("job %s ran out of memory: %s", job_id, detail)
        return _fail(job, f"out of memory running model {job.model} at {p.get('width')}x{p.get('height')}, "
                          f"{p.get('num_frames')} frames ({detail[:300]}); try fewer frames or a smaller size",
                     retriable=True)


# ---------------------------------------------------------------- evaluation and describe jobs
def _evaluate(job: Job, data: bytes) -> dict:
    """The `evaluate` option: metrics of the MP4 as users get it; for the built-in model also what
    the built-in describer reads in it and how that agrees with the prompt. A failure here is
    reported in the result, it does not fail the finished video."""
    from generator.builtin.info import INFO as BUILTIN_INFO
    from generator.encode import decode_video
    from generator.metrics import video_metrics
    from generator.understanding import get_describer
    from generator.understanding.agreement import prompt_caption_agreement

    try:
        frames, _ = decode_video(data)
        out = {"metrics": video_metrics(frames)}
        if job.model == BUILTIN_INFO.name:
            caption = get_describer(BUILTIN_INFO.name).describe(frames).caption
            out |= {"caption": caption, "agreement": prompt_caption_agreement(job.prompt, caption)}
        return out
    except Exception as exc:
        log.exception("evaluation of job %s failed", job.id)
        return {"error": f"evaluation failed: {type(exc).__name__}: {exc}"}


@app.task(bind=True, name="worker.tasks.describe_video")
def describe_video(self, job_id: str) -> dict:
    close_old_connections()
    try:
        return _run(job_id, self.request.hostname or "worker", held=_describe_held)
    finally:
        close_old_connections()


def _describe_held(job: Job, job_id: str, hostname: str) -> dict:
    from generator.builtin.info import INFO as BUILTIN_INFO
    from generator.interface import Cancelled
    from generator.understanding import DescribeError, get_describer, sample_frames
    from generator.understanding.agreement import prompt_caption_agreement

    job.refresh_from_db()
    p = job.params
    source_id = p.get("source_job_id")
    send_event(job, "started", kind=job.kind, worker=hostname, model=job.model, question=p.get("question"),
               source_job_id=source_id, private=job.private)
    t0 = time.monotonic()
    state = {"sent": -1e9, "checked": -1e9, "cancel": False}

    def should_cancel() -> bool:
        now = time.monotonic()
        if not state["cancel"] and now - state["checked"] >= 0.1:
            state["checked"] = now
            row = Job.objects.filter(pk=job.pk).values("cancel_requested", "lease").first()
            if row is None or row["lease"] != job.lease:
                raise LeaseLost()
            state["cancel"] = row["cancel_requested"]
        return state["cancel"]

    def progress(step: int, total: int) -> None:
        now = time.monotonic()
        state["total"] = total
        if step < total and now - state["sent"] < settings.PROGRESS_INTERVAL_S:
            return
        state["sent"] = now
        Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(
            progress=step / max(total, 1), step=step, total_steps=total)
        send_event(job, "progress", kind=job.kind, step=step, total_steps=total,
                   percent=round(100.0 * step / max(total, 1), 1))

    try:
        source = Job.objects.filter(pk=source_id).first() if source_id else None
        if source_id and (source is None or not source.output):
            raise DescribeError(f"the video of job {source_id} is no longer stored")
        video = source.output if source else job.input_video
        with video.open("rb") as fh:
            data = fh.read()
        try:
            describer = get_describer(job.model)
        except (ImportError, OSError, ValueError) as exc:  # a broken checkpoint folder or configuration
            raise DescribeError(f"describer {job.model!r} could not be loaded: {exc}") from None
        frames = sample_frames(data)
        description = describer.describe(frames, question=p.get("question"), progress=progress,
                                         should_cancel=should_cancel)
        if should_cancel():
            raise Cancelled()
        result = description.as_dict()
        if source is not None and description.caption:
            agreement = prompt_caption_agreement(source.prompt, description.caption)
            if source.model != BUILTIN_INFO.name:  # attributes are those of the built-in world
                agreement.pop("attributes")
            result["agreement"] = agreement
        elapsed = round(time.monotonic() - t0, 3)
        if not _finish(job, Job.Status.SUCCEEDED, result=result, elapsed_s=elapsed, progress=1.0,
                       step=state.get("total") or 1):
            job.refresh_from_db()
            return {"job_id": job_id, "status": job.status}
        send_event(job, "description_complete", kind=job.kind, model=job.model, source_job_id=source_id,
                   question=p.get("question"), elapsed_s=elapsed, private=job.private, **result)
        return {"job_id": job_id, "status": "succeeded", "caption": result["caption"], "answer": result["answer"]}
    except DescribeError as exc:
        return _fail(job, str(exc) or "describe failed")


# ---------------------------------------------------------------- the reaper (worker main process)
_reaper = None


@worker_ready.connect
def _start_reaper(sender=None, **kwargs):
    """Settle the jobs a previous life of this worker (or a vanished one) left `running`, then keep
    doing so every JOB_REAPER_INTERVAL_S (worker/reaper.py says why not Celery beat)."""
    global _reaper
    hostname = getattr(sender, "hostname", None) or "worker"
    _reaper = reaper.Reaper(hostname).start()


@worker_shutdown.connect
def _stop_reaper(**kwargs):
    if _reaper is not None:
        _reaper.stop()


# ---------------------------------------------------------------- warm-up
@worker_process_init.connect
def _warm_up(**kwargs):
    """Load the model of this worker's first model queue in the background (handlers of this
    signal are killed after 4 s, so the load runs in a thread; a job arriving meanwhile waits on
    the registry's lock)."""
    if not settings.WORKER_WARMUP:
        return
    try:
        queues = list(app.amqp.queues.consume_from or {})
    except Exception:
        queues = []

    def load():
        from generator.interface import get_backend
        from worker.routing import models_of

        for queue in queues:
            for name in models_of(queue)[:1]:
                try:
                    t = time.monotonic()
                    get_backend(name)
                    log.info("model %s loaded in %.1f s", name, time.monotonic() - t)
                except Exception:
                    log.exception("warm-up of model %s failed", name)
                return

    threading.Thread(target=load, name="warm-up", daemon=True).start()
