"""The Celery tasks: thin glue from a turn on a queue to the body that runs its next job.

`run_next(queue)` claims the queue's next waiting job (videoservice/dispatch.py: priorities, fair
share, pauses; a fresh lease), holds it with a heartbeat while the body runs
(worker/generation.py, worker/describing.py), and settles how the body ended: cancelled, failed
(with a message fit for the user), out of memory (the worker lives on), over the time limit, or
lost to another delivery. Each outcome is one method of the job (videoservice/models.py). The
video is never the task's result: the Redis result backend would store and publish it.
`deliver_webhooks(job_id)` POSTs a job's webhook events (videoservice/webhooks.py), on its own
queue and worker.

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

from generator.interface import Cancelled, GenerationError, get_backend, is_out_of_memory
from generator.understanding import DescribeError
from videoservice import bus, logs, webhooks
from videoservice.models import Job, LeaseLost, WebhookDelivery
from worker import describing, generation, live, reaper
from worker.celery import app

log = logging.getLogger(__name__)


@app.task(bind=True, name=bus.TURN_TASK)
def run_next(self, queue: str) -> dict:
    """A turn on `queue`: run its next waiting job (videoservice/dispatch.py), if any."""
    close_old_connections()
    try:
        reaper.reap(provably_gone_only=True)  # a pool process just lost on this host: its job waits again
        job = Job.objects.claim_next(queue, self.request.hostname or "worker", os.getpid(), reaper.HOST_ID)
        if job is None:
            return {"queue": queue, "status": "idle"}
        return run_claimed(job, self.request.hostname or "worker")
    finally:
        close_old_connections()


@app.task(bind=True, name=webhooks.DELIVER_TASK, ignore_result=True)
def deliver_webhooks(self, job_id: str) -> None:
    """POST a job's pending webhook deliveries in order; retried with back-off (videoservice/webhooks.py).
    One delivery task at a time per job: a second one for the same job leaves it to the first."""
    close_old_connections()
    lock = f"videoservice:webhook-lock:{job_id}"
    client = app.connection_for_write().default_channel.client
    if not client.set(lock, self.request.id or "1", nx=True, ex=120):
        self.apply_async(args=[job_id], countdown=1, queue=webhooks.QUEUE)  # (the holder may just be finishing)
        return
    try:
        wait = WebhookDelivery.deliver_pending(job_id)
    finally:
        client.delete(lock)
        close_old_connections()
    if wait is not None:
        self.apply_async(args=[job_id], countdown=wait, queue=webhooks.QUEUE)


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

    def publish(self, event, wait: bool = True, watched: float = 0.0) -> None:
        self.job.announce(event, wait=wait, watched=watched)

    def publish_progress(self, event) -> None:
        self.job.announce_progress(event)


def run_claimed(job: Job, hostname: str) -> dict:
    """Run a claimed job's body, holding it with a heartbeat; its log lines carry the job's fields."""
    with logs.job_context(job_id=str(job.pk), model=job.model, worker=hostname):
        log.info("%s job %s runs on %s (attempt %d)", job.kind, job.pk, hostname, job.attempts)
        reaper.heartbeat.hold(job)
        try:
            return _settled(job, hostname)
        finally:
            reaper.heartbeat.release()


def _settled(job: Job, hostname: str) -> dict:
    """The job's body, and how it ended: cancelled, failed, out of memory, timed out, lease lost."""
    job_id = str(job.pk)
    body = describing.run if job.kind == Job.Kind.DESCRIBE else live.run if job.live else generation.run
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


def _failed(job: Job, message: str, retriable: bool = False) -> dict:
    log.warning("%s job %s failed: %s", job.kind, job.pk, message)
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
    try:
        queues = [q for q in (app.amqp.queues.consume_from or {}) if q != webhooks.QUEUE]
    except Exception:
        queues = []
    _reaper = reaper.Reaper(getattr(sender, "hostname", None) or "worker", queues).start()


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
