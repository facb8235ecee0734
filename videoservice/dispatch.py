"""Which waiting job a free worker runs next: priorities, fair share between owners, pauses.

Celery on Redis is a FIFO per queue. So the queue does not carry jobs: it carries *turns*. Each
submitted job (and each resume, re-queue, or top-up) puts one turn message (the task
`worker.tasks.run_next(queue)`) on its queue; a worker that takes a turn claims, at that moment,
the best waiting job of the queue from the database (`Job.objects.claim_next`), with a guarded
UPDATE, so two workers never claim the same job. The database is the queue's truth:

- nothing is lost: a job waits as `queued` in the database until a worker claims it; a lost turn
  (a Redis restart, a turn taken while paused) is made again by every worker's reaper thread when
  its queue has waiting jobs and no turn (`top_up`), and at resume;
- nothing runs twice: a claim only takes a `queued` job; a turn delivered twice (the visibility
  timeout) finds the next job or none;
- an extra turn costs nothing: it finds no job and ends.

The order (`dispatch_order`), within one queue:
1. jobs moved to the front by staff (`promoted_at`), the latest move first;
2. higher `priority` first (default 0; above 0 for staff and tokens allowed to);
3. fair share: owners take turns. A job's round is its rank among its owner's waiting jobs; within
   a round, the owner whose last job started longest ago (or never) goes first, then the oldest
   job. So one owner's 20 jobs do not hold back another owner's single job: it waits at most for
   the job that is running and one more.
`DISPATCH_ORDER=fifo` orders by arrival only (the benchmark's baseline).

Pauses (`DispatchPause`): of one model, or of all (`*`). A paused model's jobs stay queued, in
order; turns taken meanwhile find nothing; resume sends one turn per waiting job.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone as dt_timezone

EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
ALL_MODELS = "*"


def dispatch_order(jobs: list, last_start: dict, fifo: bool = False) -> list:
    """The jobs (waiting, of one queue) in the order they will be claimed. `last_start`: owner ->
    when that owner's last job started (absent: never)."""
    if fifo:
        return sorted(jobs, key=lambda j: (j.created_at, str(j.pk)))
    rank = {}
    by_owner = defaultdict(list)
    for job in sorted(jobs, key=lambda j: (j.created_at, str(j.pk))):
        by_owner[(job.owner, job.priority)].append(job)
    for owned in by_owner.values():
        for k, job in enumerate(owned):
            rank[job.pk] = k

    def key(job):
        promoted = job.promoted_at is not None
        return (not promoted, -(job.promoted_at or EPOCH).timestamp(), -job.priority, rank[job.pk],
                last_start.get(job.owner, EPOCH), job.created_at, str(job.pk))
    return sorted(jobs, key=key)


def is_paused(model: str, paused: set) -> bool:
    return ALL_MODELS in paused or model in paused
