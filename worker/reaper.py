"""Who holds a running job, and settling the jobs whose worker vanished.

Celery's `acks_late` + `reject_on_worker_lost` cover a lost *pool process*: the worker's main
process sees it die and puts the message back. A lost *worker* (SIGKILL of the whole process
group, an OOM-killed container, a host that powers off) acknowledges nothing: its message sits in
Redis' unacked set until the broker visibility timeout (hours), and its Job row says `running`.
This module makes the database row authoritative instead:

- a lease: each delivery that starts a job writes a fresh `lease` token, its node name and its pool
  process's pid; a running job whose holder is alive is never taken over by a second delivery (a
  message redelivered after the visibility timeout is dropped: the job does not run twice), and a
  run whose lease was taken away stops and stores nothing;
- a heartbeat: a thread in the pool process refreshes `heartbeat_at` every JOB_HEARTBEAT_S;
- the reaper: `reap()` finds running jobs whose holder is gone (same node: held before this worker
  started, or its pid no longer exists; any node: no heartbeat for JOB_HEARTBEAT_TIMEOUT_S) and re-queues them (new message,
  `requeued` event) while attempts remain (JOB_MAX_ATTEMPTS), else fails them (`generation_failed`
  with `retriable: true`).

Where the reaper runs: inside every worker's main process, once when the worker is ready (a
restarted worker settles what its previous life held at once) and then every
JOB_REAPER_INTERVAL_S on a daemon thread. Not Celery beat: beat is one more process to deploy,
supervise and keep single (two beats double every run), while a thread in each worker comes and
goes with the capacity that can run the re-queued jobs anyway; with no worker alive nothing could
run them, and the first worker to come back settles them at start-up. Concurrent reapers are safe:
each settlement is a conditional UPDATE on (status=running, lease), so one reaper wins per job.
"""
from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from videoservice.models import Job

log = logging.getLogger(__name__)
# when this worker started (imported by worker.tasks in the main process before the pool forks, so
# pool processes inherit it): a job of this node last seen alive before it was held by a previous life
BOOTED_AT = datetime.now(dt_timezone.utc)


def new_lease() -> str:
    return uuid.uuid4().hex


def pid_alive(pid) -> bool:
    if not pid:
        return False
    if pid == os.getpid():
        return False  # this process handles one job at a time: the job it is asked about is not running here
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def holder_alive(job: Job, hostname: str | None, now=None) -> bool:
    """Whether the process holding this running job is still there, as far as `hostname` can tell.

    Seen from the same node (a worker's node names are unique): a job last seen before this worker
    started belongs to a previous life of it, and one whose pid is gone lost its pool process; both
    are dead at once. Otherwise (and when the pid exists: in a container a restarted worker can get
    the same pids) the heartbeat decides."""
    last = job.heartbeat_at or job.started_at or job.created_at
    if hostname and job.worker == hostname:
        if last is None or last < BOOTED_AT:
            return False
        if job.worker_pid and not pid_alive(job.worker_pid):
            return False
    now = now or timezone.now()
    return last is not None and now - last < timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_S)


# ---------------------------------------------------------------- heartbeat (pool process)
class Heartbeat:
    """One daemon thread per pool process; refreshes heartbeat_at of the job this process holds."""

    def __init__(self):
        self.lock = threading.Lock()
        self.job = None  # (pk, lease)
        self.thread = None
        self.wake = threading.Event()

    def hold(self, pk, lease: str) -> None:
        with self.lock:
            self.job = (pk, lease)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="job-heartbeat", daemon=True)
                self.thread.start()

    def release(self) -> None:
        with self.lock:
            self.job = None

    def _loop(self) -> None:
        while True:
            self.wake.wait(settings.JOB_HEARTBEAT_S)
            with self.lock:
                held = self.job
            if held is None:
                continue
            try:
                close_old_connections()
                Job.objects.filter(pk=held[0], status=Job.Status.RUNNING, lease=held[1]).update(
                    heartbeat_at=timezone.now())
            except Exception:
                log.exception("heartbeat for job %s failed", held[0])


heartbeat = Heartbeat()


# ---------------------------------------------------------------- the reaper (worker main process)
def _send(job: Job, kind: str, **fields) -> None:
    from worker.tasks import send_event

    send_event(job, kind, **fields)


def settle(job: Job, reason: str) -> str | None:
    """Re-queue (attempts left) or fail one running job whose holder is gone; None if another won."""
    from worker.tasks import enqueue, failed_event  # tasks imports this module

    now = timezone.now()
    where = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, lease=job.lease)
    if job.attempts < settings.JOB_MAX_ATTEMPTS:
        if not where.update(status=Job.Status.QUEUED, lease="", worker_pid=None, heartbeat_at=None,
                            progress=0.0, step=0, cancel_requested=False):
            return None
        try:
            enqueue(job)
        except Exception as exc:  # broker down: say so rather than leave a queued job with no message
            log.exception("could not re-queue job %s", job.pk)
            message = f"{reason}; it could not be re-queued ({type(exc).__name__}); submit it again"
            if Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
                    status=Job.Status.FAILED, error=message[:2000], finished_at=now):
                _send(job, failed_event(job), error=message, retriable=True)
            return "failed"
        log.warning("job %s re-queued: %s (attempt %d of %d done)", job.pk, reason, job.attempts,
                    settings.JOB_MAX_ATTEMPTS)
        _send(job, "requeued", reason=reason, attempts=job.attempts, max_attempts=settings.JOB_MAX_ATTEMPTS)
        return "requeued"
    message = f"{reason}; it was lost {job.attempts} times, giving up (submit it again to retry)"
    if not where.update(status=Job.Status.FAILED, error=message[:2000], finished_at=now, lease=""):
        return None
    log.warning("job %s failed: %s", job.pk, message)
    _send(job, failed_event(job), error=message, retriable=True)
    return "failed"


def reap(hostname: str | None = None) -> dict:
    """Settle every running job whose holder is gone. Returns {job_id: "requeued" | "failed"}."""
    done = {}
    now = timezone.now()
    for job in Job.objects.filter(status=Job.Status.RUNNING):
        if holder_alive(job, hostname, now):
            continue
        reason = f"the worker running this job ({job.worker or 'unknown'}) was lost"
        outcome = settle(job, reason)
        if outcome:
            done[str(job.pk)] = outcome
    return done


# Held by a reaper pass and around every fork of this process: a pool process is never forked while
# the reaper thread has a database connection open.
_FORK_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_FORK_LOCK.acquire, after_in_parent=_FORK_LOCK.release,
                        after_in_child=_FORK_LOCK.release)


class Reaper:
    """reap() now and then every JOB_REAPER_INTERVAL_S on a daemon thread (one per worker)."""

    def __init__(self, hostname: str):
        self.hostname = hostname
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="job-reaper", daemon=True)

    def start(self) -> "Reaper":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _once(self) -> None:
        # no fork while a pass holds a database connection (see _FORK_LOCK)
        with _FORK_LOCK:
            try:
                close_old_connections()
                done = reap(self.hostname)
                if done:
                    log.warning("reaper on %s settled %d job(s): %s", self.hostname, len(done), done)
            except Exception:
                log.exception("reaper failed")
            finally:
                # This thread lives in the worker's main process, which forks pool processes (again
                # after one is lost). A child forked while a SQLite connection is open inherits
                # SQLite's lock bookkeeping without the locks, and its writes can corrupt the database
                # ("database disk image is malformed"): hold no connection between passes.
                connections.close_all()

    def _loop(self) -> None:
        self._once()
        while not self.stopped.wait(settings.JOB_REAPER_INTERVAL_S):
            self._once()
