"""Workers lost mid-job, on real parts (tests/support/faults.py), on SQLite and on PostgreSQL (the
`database_url` fixture: the claims, leases and the reaper's sweeps are database work): the periodic
reaper of another worker, a message redelivered after the broker visibility timeout, a frozen worker
taken for dead, two workers with one node name, a cancel the dead worker never saw. (Workers killed
and restarted 20 times: test_worker_kills.)
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import pytest

from tests.support.client import Client, run
from tests.support.faults import KILL_JOB, fault_service


@pytest.fixture(scope="module")
def faults(tmp_path_factory, database_url):
    with fault_service(tmp_path_factory.mktemp("faults"), database_url) as svc:
        yield svc


def test_periodic_reaper_of_another_worker_requeues_the_job_of_a_vanished_worker(faults):
    """No restart this time: the surviving worker's periodic sweep (every 1 s) sees that the dead
    worker's pool process, on this host, is gone, and re-queues the job at once (without waiting for
    the heartbeat timeout, 4 s; a frozen holder, whose pid still exists, waits for it: see the frozen
    worker test below); the survivor then runs it."""
    faults.start_worker("w2")
    try:
        async def scenario():
            async with Client(faults) as c:
                queued = await c.submit(prompt="a green circle moving up", **{**KILL_JOB, "steps": 60})
                job_id = queued["job_id"]
                started = await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "started", 60)
                await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "progress", 60)
                victim = next(name for name, p in faults.workers.items() if p.node == started["worker"])
                faults.kill_worker(victim)
                t_kill = time.monotonic()
                requeued = await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "requeued", 30)
                waited = time.monotonic() - t_kill
                assert started["worker"] in requeued["reason"], requeued
                assert "its process ended mid-job, killed" in requeued["reason"], requeued  # not just "lost"
                assert waited < 4, waited  # the pid is provably gone: no need to wait for the heartbeat timeout
                again = await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "started"
                                      and m is not started, 30)
                assert again["worker"] != started["worker"]
                done = await c.terminal(job_id, 60)
                assert done["type"] == "generation_complete", done
                return victim
        victim = run(scenario())
        if victim == "w1":
            faults.start_worker("w1")
    finally:
        if "w2" in faults.workers:
            faults.stop_worker("w2")


def test_task_running_longer_than_the_visibility_timeout_runs_once(faults):
    """A worker with two slots and a 2 s broker visibility timeout: Redis hands the still-running
    job's turn out again (to the second slot); a turn only claims a waiting job, so the second
    delivery finds nothing to run."""
    faults.stop_worker("w1")
    try:
        vt = faults.start_worker("vt", concurrency=2, env={"JOB_VISIBILITY_TIMEOUT_S": "2",
                                                           "BROKER_RESTORE_INTERVAL_S": "1"})

        async def scenario():
            async with Client(faults) as c:
                queued = await c.submit(prompt="a slow blue square", **{**KILL_JOB, "steps": 160})  # ~8 s
                done = await c.terminal(queued["job_id"], 90)
                assert done["type"] == "generation_complete", done
                await asyncio.sleep(1.5)  # a late duplicate would start now
                return queued["job_id"], c.events(queued["job_id"])

        job_id, kinds = run(scenario())
        assert kinds.count("started") == 1 and kinds.count("generation_complete") == 1, kinds
        assert "'status': 'idle'" in vt.tail(10**6), vt.tail()  # the redelivered turn ran nothing
        row = faults.row(job_id)
        assert row["status"] == "succeeded" and row["attempts"] == 1, row
    finally:
        if "vt" in faults.workers:
            faults.stop_worker("vt")
        faults.start_worker("w1")


def test_frozen_worker_taken_for_dead_loses_its_lease_and_stores_nothing(faults):
    """SIGSTOP the whole worker mid-job (a stalled VM, a partition): its heartbeat stops, the other
    worker's reaper re-queues the job and runs it; on SIGCONT the first run finds its lease gone,
    stops at its next step and stores nothing, so the job completes exactly once."""
    faults.start_worker("w2")
    frozen = None
    try:
        async def scenario():
            nonlocal frozen
            async with Client(faults) as c:
                queued = await c.submit(prompt="a frozen square", **{**KILL_JOB, "steps": 60})
                job_id = queued["job_id"]
                started = await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "started", 60)
                await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "progress", 60)
                frozen = next(p for p in faults.workers.values() if p.node == started["worker"])
                os.killpg(frozen.proc.pid, signal.SIGSTOP)
                await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "requeued", 30)
                done = await c.terminal(job_id, 60)
                assert done["type"] == "generation_complete", done
                os.killpg(frozen.proc.pid, signal.SIGCONT)
                deadline = time.monotonic() + 30
                while "result dropped" not in frozen.tail(10**6):
                    assert time.monotonic() < deadline, frozen.tail()
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1)
                return job_id, started, c.events(job_id), c.seen

        job_id, started, kinds, seen = run(scenario())
        assert f"job {job_id} was handed to another worker" in frozen.tail(10**6)
        assert kinds.count("generation_complete") == 1 and kinds.count("started") == 2, kinds
        workers = [m["worker"] for m in seen if m.get("job_id") == job_id and m["type"] == "started"]
        assert workers[0] == started["worker"] != workers[1], workers
        row = faults.row(job_id)
        assert row["status"] == "succeeded" and row["worker"] == workers[1], row
    finally:
        if frozen is not None and frozen.alive():
            os.killpg(frozen.proc.pid, signal.SIGCONT)
        if "w2" in faults.workers:
            faults.stop_worker("w2")


def test_a_worker_with_the_same_name_does_not_take_over_a_live_workers_job(faults):
    """Two workers started with one node name (two stacks on one host both said builtin@%h): the
    second one's start-up sweep must leave the first one's running job alone. The holder beats every
    5 s here, so the sweep sees a heartbeat older than its own start (which once read as "a dead
    earlier life of mine")."""
    twins = {"JOB_HEARTBEAT_S": "5", "JOB_HEARTBEAT_TIMEOUT_S": "60"}
    faults.stop_worker("w1")
    faults.start_worker("twin1", node="fault-twin@%h", env=twins)
    try:
        async def scenario():
            async with Client(faults) as c:
                queued = await c.submit(prompt="mine, still", model="fake-steps", steps=140)  # 7 s
                job_id = queued["job_id"]
                await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "started", 60)
                faults.start_worker("twin2", node="fault-twin@%h", env=twins)  # its sweep runs when ready
                done = await c.terminal(job_id, 60)
                assert done["type"] == "generation_complete", done
                assert c.events(job_id).count("started") == 1 and "requeued" not in c.events(job_id), c.events(job_id)
            row = faults.row(job_id)
            assert row["attempts"] == 1 and row["status"] == "succeeded", row
        run(scenario())
    finally:
        for name in ("twin1", "twin2"):
            if name in faults.workers:
                faults.stop_worker(name)
        faults.start_worker("w1")


def test_a_cancel_accepted_before_the_worker_died_is_final(faults):
    """The worker is frozen (SIGSTOP) mid-job, so it cannot see the cancel; the client is told
    `cancelling`; the worker is SIGKILLed. The next worker's reaper must cancel the job, not run it again."""
    async def scenario():
        async with Client(faults) as c:
            queued = await c.submit(prompt="cancel me", model="fake-steps", steps=400)
            job_id = queued["job_id"]
            await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "progress", 60)
            worker = faults.workers["w1"]
            os.killpg(worker.pid, signal.SIGSTOP)
            try:
                await c.send({"type": "cancel", "job_id": job_id})
                await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "cancelling", 10)
            finally:
                faults.kill_worker("w1")
            faults.start_worker("w1")  # its start-up reaper finds the job's pool process gone
            end = await c.terminal(job_id, 60)
            assert end["type"] == "cancelled", end
            await asyncio.sleep(2)  # a re-run would start within the reaper interval (1 s)
            assert c.events(job_id).count("started") == 1, c.events(job_id)
        row = faults.row(job_id)
        assert row["status"] == "cancelled" and row["attempts"] == 1, row
    run(scenario())


def test_holder_alive_rules_this_host_other_host_same_node_name_and_a_reused_pid():
    """The reaper's verdicts on unsaved Job rows (no service needed)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videoservice.settings")
    django.setup()
    from datetime import timedelta

    from django.test import override_settings
    from django.utils import timezone

    from videoservice.models import Job
    from worker import reaper

    now = timezone.now()
    fresh, stale = now - timedelta(seconds=1), now - timedelta(seconds=9)
    here, elsewhere = reaper.HOST_ID, "another-host:4026531836"
    live_pid = os.getppid()  # exists, and is not this process
    dead = subprocess.Popen(["true"])
    dead.wait()
    with override_settings(JOB_HEARTBEAT_TIMEOUT_S=5):
        alive = lambda **kw: reaper.holder_alive(Job(worker="w@host", **kw), now)  # noqa: E731
        assert alive(worker_host=here, worker_pid=live_pid, heartbeat_at=fresh)
        assert not alive(worker_host=here, worker_pid=dead.pid, heartbeat_at=fresh)  # pool process lost
        # a job last seen long ago by a worker of the same name is not ours to take while it beats
        # (two stacks on one host both name their worker builtin@host)
        assert alive(worker_host=here, worker_pid=live_pid, heartbeat_at=now - timedelta(seconds=4))
        # a pid that exists (reused) cannot keep a job whose heartbeat stopped
        assert not alive(worker_host=here, worker_pid=live_pid, heartbeat_at=stale)
        # another host (or PID namespace): its pids mean nothing here, the heartbeat alone decides
        assert alive(worker_host=elsewhere, worker_pid=dead.pid, heartbeat_at=fresh)
        assert not alive(worker_host=elsewhere, worker_pid=live_pid, heartbeat_at=stale)
