"""Whole Celery workers SIGKILLed mid-job and restarted, 20 times (4 on PostgreSQL: the 20 are about
repetition), on real parts (tests/support/faults.py), on SQLite and on PostgreSQL (the `database_url`
fixture): every job settles (re-run once, or failed as lost twice) and every subscriber is told.
"""
from __future__ import annotations

import json

import pytest

from tests.support.client import TERMINAL, Client, run
from tests.support.faults import KILL_JOB, fault_service
from tests.support.stack import http


@pytest.fixture(scope="module")
def faults(tmp_path_factory, database_url):
    with fault_service(tmp_path_factory.mktemp("faults"), database_url) as svc:
        yield svc


# kills per job, 20 in all: a job killed once is re-queued and completes; one killed twice
# (JOB_MAX_ATTEMPTS=2) fails with a reason and retriable: true. On PostgreSQL both cases with 4 kills.
KILL_PLANS = {"sqlite": [1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 2, 1], "postgres": [1, 2, 1]}


def test_worker_sigkilled_mid_job_20_times_on_a_stand_in_model_every_job_settles_and_subscribers_are_told(faults):
    plan = KILL_PLANS[faults.database]
    kills = []

    async def scenario():
        async with Client(faults) as c, Client(faults) as watcher:
            jobs = []
            for n, times in enumerate(plan):
                queued = await c.submit(prompt=f"a red square moving right {n}", seed=n, **KILL_JOB)
                job_id = queued["job_id"]
                jobs.append(job_id)
                for k in range(times):
                    mark = len(c.seen)
                    # mid-job: this delivery has started and reported a step
                    await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "progress", 90, since=mark)
                    faults.kill_worker("w1")
                    row = faults.row(job_id)
                    assert row["status"] == "running" and row["attempts"] == k + 1, row  # killed mid-job
                    kills.append(job_id)
                    faults.start_worker("w1")  # its start-up reaper settles the job at once
                done = await c.terminal(job_id, 90)
                if times == 1:
                    assert done["type"] == "generation_complete", done
                else:
                    assert done["type"] == "generation_failed" and done["retriable"] is True, done
                    assert "was lost 2 times" in done["error"], done
            for job_id in jobs:  # the other subscriber was told every outcome too
                await watcher.terminal(job_id, 30)
            return c, watcher, jobs

    c, watcher, jobs = run(scenario())
    assert len(kills) == sum(plan) == {"sqlite": 20, "postgres": 4}[faults.database]
    for job_id, times in zip(jobs, plan):
        kinds = c.events(job_id)
        assert kinds.count("requeued") == 1, kinds  # a second loss fails the job instead
        assert kinds.count("started") == times + (1 if times == 1 else 0), kinds
        terminal = [k for k in kinds if k in TERMINAL]
        assert terminal == (["generation_complete"] if times == 1 else ["generation_failed"]), kinds
        assert [k for k in watcher.events(job_id) if k in TERMINAL] == terminal
        row = faults.job(job_id)
        assert row["status"] == ("succeeded" if times == 1 else "failed"), row
        if times == 2:
            assert "was lost 2 times" in row["error"], row
    # nothing is left running
    listed = json.loads(http("GET", f"{faults.base}/api/jobs?limit=200")[2])["jobs"]
    assert not [j for j in listed if j["status"] in ("running", "queued")], listed
