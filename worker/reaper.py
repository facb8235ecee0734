"""Who holds a running job, and settling the jobs whose worker vanished.

Celery's `acks_late` + `reject_on_worker_lost` cover a lost *pool process*: the worker's main
process sees it die and puts the message back. A lost *worker* (SIGKILL of the whole process
group, an OOM-killed container, a host that powers off) acknowledges nothing: its message sits in
Redis' unacked set until the broker visibility timeout (hours), and its Job row says `running`.
This module makes the database row authoritative instead:

- a lease: each delivery that starts a job writes a fresh `lease` token, its node name, its pool
  process's pid and host (`Job.claim`); a running job whose holder is alive is never taken over by a
  second delivery (a message redelivered after the visibility timeout is dropped: the job does not
  run twice), and a run whose lease was taken away stops and stores nothing;
- a heartbeat: a thread in the pool process refreshes `heartbeat_at` every JOB_HEARTBEAT_S;
- the reaper: `reap()` finds running jobs whose holder is provably gone (it ran on this host, in
  this PID namespace, and its pid no longer exists) or silent (no heartbeat for
  JOB_HEARTBEAT_TIMEOUT_S, from any host) and re-queues them (new message, `requeued` event) while
  attempts remain (JOB_MAX_ATTEMPTS), else fails them (`generation_failed` with `retriable: true`).
  A job whose cancel was accepted is cancelled instead, never run again.

Worker names prove nothing: two workers started with the same `-n` (two stacks on one host) are
both alive, so a job is never judged by whether its node name matches ours.

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
import socket
import threading
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from videoservice.models import Job

log = logging.getLogger(__name__)

def _host_id() -> str:
    """This host and PID namespace: pids are only comparable between processes that share both."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}:{namespace}"[:200]


HOST_ID = _host_id()


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


def holder_alive(job: Job, now=None) -> bool:
    """Whether the process holding this running job may still be there: not when it ran on this
    host (and PID namespace) and its pid is gone, else while its heartbeat is fresh. (A reused pid
    only delays the verdict to the heartbeat timeout.)"""
    if job.worker_host == HOST_ID and job.worker_pid and not pid_alive(job.worker_pid):
        return False
    last = job.heartbeat_at or job.started_at or job.created_at
    now = now or timezone.now()
    return last is not None and now - last < timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_S)


# ---------------------------------------------------------------- heartbeat (pool process)
class Heartbeat:
    """One daemon thread per pool process; refreshes heartbeat_at of the job this process holds."""

    def __init__(self):
        self.lock = threading.Lock()
        self.job = None
        self.thread = None
        self.wake = threading.Event()

    def hold(self, job: Job) -> None:
        with self.lock:
            self.job = job
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
                held.beat()
            except Exception:
                log.exception("heartbeat for job %s failed", held.pk)


heartbeat = Heartbeat()


# ---------------------------------------------------------------- the reaper (worker main process)
def reap(provably_gone_only: bool = False) -> dict:
    """Settle every running job whose holder is gone (with `provably_gone_only`, only those whose pid
    is gone on this host: a cheap check before a turn). Returns {job_id: "requeued" | "failed" |
    "cancelled"}."""
    done = {}
    now = timezone.now()
    running = Job.objects.filter(status=Job.Status.RUNNING)
    if provably_gone_only:
        running = running.filter(worker_host=HOST_ID)
    for job in running:
        if provably_gone_only and (not job.worker_pid or pid_alive(job.worker_pid)):
            continue
        if holder_alive(job, now):
            continue
        outcome = job.settle_lost(lost_reason(job))
        if outcome:
            log.warning("job %s %s: its worker %s was lost (attempt %d of %d done)", job.pk, outcome, job.worker,
                        job.attempts, settings.JOB_MAX_ATTEMPTS)
            done[str(job.pk)] = outcome
    return done


def lost_reason(job: Job) -> str:
    """Why a running job's holder is taken for gone, as its users read it."""
    reason = f"the worker running this job ({job.worker or 'unknown'}) was lost"
    if job.worker_host == HOST_ID and job.worker_pid and not pid_alive(job.worker_pid):
        # a process that ends mid-job without a word was killed: most often by the kernel's
        # out-of-memory killer (inputs are capped: MAX_INPUT_*; sizes: the model's limits)
        return f"{reason}: its process ended mid-job, killed (running out of memory is the usual cause)"
    return f"{reason}: no heartbeat for {settings.JOB_HEARTBEAT_TIMEOUT_S:g} s"


# Held by a reaper pass and around every fork of this process: a pool process is never forked while
# the reaper thread has a database connection open.
_FORK_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_FORK_LOCK.acquire, after_in_parent=_FORK_LOCK.release,
                        after_in_child=_FORK_LOCK.release)


class Reaper:
    """reap() now and then every JOB_REAPER_INTERVAL_S on a daemon thread (one per worker); each pass
    also gives this worker's queues a turn per waiting job when they have jobs and no turn
    (Job.objects.top_up: turns lost to a Redis restart)."""

    def __init__(self, hostname: str, queues=()):
        self.hostname, self.queues = hostname, list(queues)
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
                done = reap()
                if done:
                    log.warning("reaper on %s settled %d job(s): %s", self.hostname, len(done), done)
                if self.queues and Job.objects.top_up(self.queues):
                    log.warning("reaper on %s gave waiting jobs of %s turns", self.hostname, self.queues)
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
