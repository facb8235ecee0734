"""The Celery tasks: thin glue from a job id to the body that runs it.

A task claims its job (a fresh lease; a duplicate delivery of a running job, or one that keeps
killing workers, is refused), holds it with a heartbeat while the body runs (worker/generation.py,
worker/describing.py), and settles how the body ended: cancelled, failed (with a message fit for
the user), out of memory (the worker lives on), over the time limit, or lost to another delivery.
Each outcome is one method of the job (videoservice/models.py). The video is never the task's
result: the Redis result backend would store and publish it.

Signals: the reaper starts and stops with the worker's main process (worker/reaper.py); the model
of the worker's first queue is loaded when a pool process starts.
"""
from __future__ import annotations

import logging
import os
import threading
import time

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections

from videoservice import bus
from videoservice.models import Job, LeaseLost
from worker import reaper
from worker.celery import app

log = logging.getLogger(__name__)


@app.task(bind=True, name=bus.GENERATE_TASK)
def generate_video(self, job_id: str) -> dict:
    from worker import generation

    return run_task(job_id, self.request.hostname or "worker", generation.run)


@app.task(bind=True, name=bus.DESCRIBE_TASK)
def describe_video(self, job_id: str) -> dict:
    from worker import describing

    return run_task(job_id, self.request.hostname or "worker", describing.run)


def run_task(job_id: str, hostname: str, body) -> dict:
    close_old_connections()
    try:
        return claim_and_run(job_id, hostname, body)
    finally:
        close_old_connections()


class Run:
    """A claimed job as its body sees it: throttled cancel checks and progress reports."""

    def __init__(self, job: Job, worker: str):
        self.job, self.worker = job, worker
        self.started = time.monotonic()
        self.total = job.total_steps
        self._checked, self._cancel, self._sent = -1e9, False, -1e9

    def should_cancel(self) -> bool:
        """Asked at most every 0.1 s; LeaseLost when the job was handed to another delivery."""
        now = time.monotonic()
        if not self._cancel and now - self._checked >= 0.1:
            self._checked = now
            self._cancel = self.job.check_held()
        return self._cancel

    def due(self, step: int, total: int) -> bool:
        """Whether a progress report for this step goes out (at most every PROGRESS_INTERVAL_S, the
        last step always); records it in the job's row when it does."""
        self.total = total
        now = time.monotonic()
        if step < total and now - self._sent < settings.PROGRESS_INTERVAL_S:
            return False
        self._sent = now
        self.job.record_progress(step, total)
        return True

    def publish(self, event) -> None:
        bus.publish(self.job.audience(), event)

    def publish_progress(self, event) -> None:
        bus.publish_progress(self.job.audience(), event)


def claim_and_run(job_id: str, hostname: str, body) -> dict:
    from generator.interface import Cancelled, GenerationError, is_out_of_memory
    from generator.understanding import DescribeError

    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        log.warning("job %s does not exist", job_id)
        return {"job_id": job_id, "status": "missing"}
    if job.status not in (Job.Status.QUEUED, Job.Status.RUNNING):
        return {"job_id": job_id, "status": job.status}  # e.g. cancelled while queued
    if job.status == Job.Status.RUNNING and reaper.holder_alive(job):
        # a second delivery of a job that is running (the broker's visibility timeout expired, or the
        # reaper re-queued it while this message was redelivered): never run it twice
        log.warning("duplicate delivery of job %s dropped: it is running on %s (pid %s)", job_id, job.worker,
                    job.worker_pid)
        return {"job_id": job_id, "status": "duplicate"}
    if job.status == Job.Status.RUNNING and job.attempts >= settings.JOB_MAX_ATTEMPTS:
        # redelivered after its worker was lost; a job that keeps crashing workers stops here
        message = (f"the worker running this job ({job.worker}) was lost {job.attempts} times; giving up "
                   "(submit it again to retry)")
        job.fail(message, retriable=True)
        return {"job_id": job_id, "status": "failed", "error": message}
    if not job.claim(hostname, os.getpid(), reaper.HOST_ID):
        job.refresh_from_db()
        return {"job_id": job_id, "status": job.status}
    reaper.heartbeat.hold(job)
    try:
        return body(Run(job, hostname))
    except Cancelled:
        job.stop_cancelled()
        return {"job_id": job_id, "status": "cancelled"}
    except LeaseLost:
        log.warning("%s job %s was handed to another worker while this one ran it; result dropped", job.kind, job_id)
        return {"job_id": job_id, "status": "lease_lost"}
    except SoftTimeLimitExceeded:
        return _failed(job, f"time limit exceeded ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s)")
    except (GenerationError, DescribeError) as exc:  # a failure with a message fit for the user
        return _failed(job, str(exc) or f"{job.kind} failed")
    except Exception as exc:
        if not is_out_of_memory(exc):
            log.exception("%s job %s failed", job.kind, job_id)
            _failed(job, f"internal error: {type(exc).__name__}: {exc}")
            raise
        # the worker survives it: free what the failed run held and take the next job
        detail = f"{type(exc).__name__}: {exc}"[:300]
        del exc
        _free_memory()
        log.warning("job %s ran out of memory: %s", job_id, detail)
        p = job.params
        where = (f" at {p.get('width')}x{p.get('height')}, {p.get('num_frames')} frames"
                 if job.kind == Job.Kind.GENERATE else "")
        return _failed(job, f"out of memory running model {job.model}{where} ({detail}); try fewer frames or a "
                            "smaller size", retriable=True)
    finally:
        reaper.heartbeat.release()


def _failed(job: Job, message: str, retriable: bool = False) -> dict:
    job.fail(message, retriable=retriable)
    return {"job_id": str(job.pk), "status": "failed", "error": message}


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


# ---------------------------------------------------------------- the reaper (worker main process)
_reaper = None


@worker_ready.connect
def _start_reaper(sender=None, **kwargs):
    """Settle the jobs whose holder is gone (a previous life of this worker, or a vanished one), then
    keep doing so every JOB_REAPER_INTERVAL_S (worker/reaper.py says why not Celery beat)."""
    global _reaper
    _reaper = reaper.Reaper(getattr(sender, "hostname", None) or "worker").start()


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

        for queue in queues:
            for name in bus.models_of_queue(queue)[:1]:
                try:
                    t = time.monotonic()
                    get_backend(name)
                    log.info("model %s loaded in %.1f s", name, time.monotonic() - t)
                except Exception:
                    log.exception("warm-up of model %s failed", name)
                return

    threading.Thread(target=load, name="warm-up", daemon=True).start()
