"""Faults on real parts: whole Celery workers SIGKILLed mid-job (20 times), Redis killed and restarted
under load with append-only persistence, a message redelivered after the broker visibility timeout,
and jobs whose model fails (faked OOM, NaN output, a model that does not load, a corrupt start image).

The module starts its own service (fixture `faults`): redis-server with appendonly/appendfsync always,
Daphne, and Celery workers it can SIGKILL and restart (the shared `live_service` is not touched).
Reaper timings are shortened through settings env (heartbeat 0.5 s, timeout 4 s, sweep 1 s).
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import websockets
from PIL import Image

from tests.conftest import BIN, ROOT, WS_MAX_MESSAGE_BYTES, Proc, free_port, http

SMALL = {"num_frames": 8, "width": 64, "height": 64, "steps": 3}
TERMINAL = {"generation_complete", "generation_failed", "cancelled"}
FAULT_QUEUE = "faults"
FAKE_ENTRY = {"backend": "tests.fault_backends:fake_faults", "pipeline": "ltx", "queue": FAULT_QUEUE,
              "defaults": {"steps": 4, "width": 64, "height": 64, "frames": 9, "fps": 8},
              "limits": {"min_size": 32, "max_size": 128, "max_frames": 25, "max_steps": 1000}}
MODELS = {
    "fake-oom": FAKE_ENTRY,
    "fake-memoryerror": FAKE_ENTRY,
    "fake-nan": FAKE_ENTRY,
    "fake-steps": FAKE_ENTRY,
    # served by no worker: its jobs stay queued (back-pressure test)
    "fake-parked": {**FAKE_ENTRY, "queue": "parked"},
    # a real diffusers entry whose checkpoint folder does not exist: its load fails for real
    "broken-model": {"path": "checkpoints/does-not-exist", "pipeline": "ltx", "dtype": "float32",
                     "queue": FAULT_QUEUE, "defaults": {"steps": 2, "width": 32, "height": 32, "frames": 9},
                     "limits": {"min_size": 32, "max_size": 128}},
}


# ---------------------------------------------------------------- the service under test
class Service:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.redis_port, self.web_port = free_port(), free_port()
        (tmp / "redis").mkdir()
        models = tmp / "models.json"
        models.write_text(json.dumps(MODELS))
        self.env = dict(os.environ)
        self.env.pop("DEBUG", None)
        self.env.update({
            "DJANGO_SETTINGS_MODULE": "videoservice.settings",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            "MEDIA_ROOT": str(tmp / "media"),
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
            "WEBSOCKET_MAX_MESSAGE_BYTES": str(WS_MAX_MESSAGE_BYTES),
            "VIDEO_MODELS_CONFIG": str(models),
            "LOG_LEVEL": "INFO",
            "JOB_HEARTBEAT_S": "0.5",
            "JOB_HEARTBEAT_TIMEOUT_S": "4",
            "JOB_REAPER_INTERVAL_S": "1",
            "JOB_MAX_ATTEMPTS": "2",
            "MAX_QUEUED_JOBS": "12",
            "MAX_QUEUED_PER_OWNER": "8",
            "SUBMISSIONS_PER_MINUTE": "1000",
        })
        self.base = f"http://127.0.0.1:{self.web_port}"
        self.ws = f"ws://127.0.0.1:{self.web_port}/ws/lobby/"
        self.redis = self.web = None
        self.workers: dict = {}
        self.starts = 0

    # redis ------------------------------------------------------------------------------------
    def start_redis(self) -> None:
        self.starts += 1
        self.redis = Proc(f"redis-{self.starts}", [
            "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(self.tmp / "redis"),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"], self.env, self.tmp)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), 1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"redis did not start:\n{self.redis.tail()}")

    def kill_redis(self) -> None:
        os.killpg(self.redis.proc.pid, signal.SIGKILL)
        self.redis.stop()

    # workers ----------------------------------------------------------------------------------
    def start_worker(self, name: str = "w1", queues: str = f"{FAULT_QUEUE},builtin", concurrency: int = 1,
                     env: dict | None = None, wait: bool = True) -> Proc:
        self.starts += 1
        proc = Proc(f"worker-{name}-{self.starts}", [
            str(BIN / "celery"), "-A", "worker", "worker", "-P", "prefork", "-c", str(concurrency), "-Q", queues,
            "-E", "-n", f"fault-{name}@%h", "--without-mingle", "--without-gossip", "--loglevel", "INFO"],
            {**self.env, **(env or {})}, self.tmp)
        proc.node = f"fault-{name}@{socket.gethostname()}"
        self.workers[name] = proc
        if wait:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: Proc, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in proc.tail(100000):
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited:\n{proc.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{proc.name} not ready:\n{proc.tail()}")
            time.sleep(0.1)

    def kill_worker(self, name: str = "w1") -> None:
        """SIGKILL the whole worker: main process and pool processes at once (its process group)."""
        proc = self.workers.pop(name)
        os.killpg(proc.proc.pid, signal.SIGKILL)
        proc.stop()

    def stop_worker(self, name: str) -> None:
        self.workers.pop(name).stop(grace=20)

    def row(self, job_id: str) -> dict:
        """The job's row straight from the database (fields the API does not show: attempts, lease)."""
        import sqlite3

        with sqlite3.connect(self.tmp / "db.sqlite3", timeout=30) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM videoservice_job WHERE id = ?", (uuid.UUID(job_id).hex,)).fetchone()
        return dict(row)

    def job(self, job_id: str) -> dict:
        status, _, body = http("GET", f"{self.base}/api/jobs/{job_id}")
        assert status == 200, body
        return json.loads(body)["job"]


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    svc = Service(tmp)
    try:
        svc.start_redis()
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=svc.env,
                       check=True, timeout=120)
        svc.web = Proc("web", [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(svc.web_port),
                               "--websocket-max-message-size", str(WS_MAX_MESSAGE_BYTES),
                               "videoservice.asgi:application"], svc.env, tmp)
        svc.start_worker("w1")
        deadline = time.monotonic() + 60
        while True:
            try:
                if http("GET", f"{svc.base}/healthz?timeout=1", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert svc.web.alive() and time.monotonic() < deadline, svc.web.tail()
            time.sleep(0.2)
        yield svc
    finally:
        for proc in list(svc.workers.values()):
            proc.stop(grace=10)
        for proc in (svc.web, svc.redis):
            if proc is not None:
                proc.stop(grace=5)


# ---------------------------------------------------------------- a websocket client
class Client:
    """A lobby connection that records everything; with `reconnect`, it reconnects when the server
    closes the socket (as the web UI does) and counts the reconnections."""

    def __init__(self, svc: Service, reconnect: bool = False):
        self.svc, self.reconnect = svc, reconnect
        self.ws = None
        self.seen: list = []
        self.closes = 0

    async def __aenter__(self):
        await self._connect()
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()

    async def _connect(self, timeout: float = 10) -> None:
        # max_queue=None: a client that reads one job's events at a time must not stall (and miss
        # keepalive pongs) behind a full buffer of other jobs' progress
        self.ws = await websockets.connect(self.svc.ws, origin=self.svc.base, max_size=None, max_queue=None,
                                           open_timeout=timeout)

    async def send(self, msg: dict) -> None:
        await self.ws.send(json.dumps(msg))

    async def recv(self, timeout: float) -> dict:
        while True:
            try:
                msg = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
                self.seen.append(msg)
                return msg
            except websockets.ConnectionClosed:
                if not self.reconnect:
                    raise
                self.closes += 1
                self.seen.append({"type": "_closed"})
                deadline = time.monotonic() + 60
                while True:  # back off until the server accepts us again
                    try:
                        await self._connect(timeout=5)
                        self.seen.append({"type": "_reconnected"})
                        return self.seen[-1]
                    except (OSError, websockets.InvalidHandshake, asyncio.TimeoutError):
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.5)

    async def until(self, pred, timeout: float = 60.0, since: int = 0) -> dict:
        """The first message from index `since` on (already seen or still to come) that matches."""
        for msg in self.seen[since:]:
            if pred(msg):
                return msg
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; seen: {[m.get('type') for m in self.seen][-30:]}")
            msg = await self.recv(left)
            if pred(msg):
                return msg

    async def submit(self, **fields) -> dict:
        rid = uuid.uuid4().hex
        await self.send({"type": "generate", "request_id": rid, **fields})
        msg = await self.until(lambda m: m.get("request_id") == rid and m["type"] in ("queued", "error"), 30)
        assert msg["type"] == "queued", msg
        return msg

    async def terminal(self, job_id: str, timeout: float = 90.0) -> dict:
        return await self.until(lambda m: m.get("job_id") == job_id and m["type"] in TERMINAL, timeout)

    def events(self, job_id: str) -> list:
        return [m["type"] for m in self.seen if m.get("job_id") == job_id]


def run(coro):
    return asyncio.run(coro)


def png_b64() -> str:
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:40, 8:32] = (230, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def pool_pids(proc: Proc) -> list:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.proc.pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


# ---------------------------------------------------------------- a job fails, the worker serves on
async def _fails_then_next_succeeds(svc: Service, c: Client, job: dict, expect: str) -> dict:
    pools = pool_pids(svc.workers["w1"])
    queued = await c.submit(**job)
    failed = await c.terminal(queued["job_id"])
    assert failed["type"] == "generation_failed", failed
    assert re.search(expect, failed["error"]), failed["error"]
    row = svc.job(queued["job_id"])
    assert row["status"] == "failed" and re.search(expect, row["error"]), row
    nxt = await c.submit(prompt="a blue square moving right", **SMALL)
    done = await c.terminal(nxt["job_id"])
    assert done["type"] == "generation_complete", done
    assert pool_pids(svc.workers["w1"]) == pools  # the same pool process: nothing crashed or restarted
    return failed


def test_faked_oom_fails_the_job_and_the_worker_serves_the_next(faults):
    async def scenario():
        async with Client(faults) as c:
            failed = await _fails_then_next_succeeds(faults, c, {"prompt": "x", "model": "fake-oom"},
                                                     r"^out of memory running model fake-oom at 64x64, 9 frames")
            assert failed["retriable"] is True and "OutOfMemoryError" in failed["error"]
            failed = await _fails_then_next_succeeds(faults, c, {"prompt": "x", "model": "fake-memoryerror"},
                                                     r"^out of memory running model fake-memoryerror")
            assert "MemoryError" in failed["error"]
    run(scenario())


def test_faked_nan_output_fails_the_job_and_the_worker_serves_the_next(faults):
    async def scenario():
        async with Client(faults) as c:
            failed = await _fails_then_next_succeeds(faults, c, {"prompt": "x", "model": "fake-nan"},
                                                     r"produced NaN/Inf values")
            assert failed["retriable"] is False
    run(scenario())


def test_model_that_fails_to_load_fails_the_job_and_the_worker_serves_the_next(faults):
    async def scenario():
        async with Client(faults) as c:
            await _fails_then_next_succeeds(faults, c, {"prompt": "x", "model": "broken-model"},
                                            r"^model 'broken-model' could not be loaded: .*does-not-exist")
    run(scenario())


def test_corrupt_start_image_fails_the_job_and_the_worker_serves_the_next(faults):
    """The image passed validation; its stored copy is then damaged before the worker reads it."""
    async def scenario():
        async with Client(faults) as c:
            blocker = await c.submit(prompt="a yellow triangle moving down", **{**SMALL, "steps": 100})
            await c.until(lambda m: m.get("job_id") == blocker["job_id"] and m["type"] == "progress", 60)
            queued = await c.submit(prompt="a red square moving left", image=png_b64(), **SMALL)
            stored = list((faults.tmp / "media" / "inputs").rglob(f"{queued['job_id']}.png"))
            assert len(stored) == 1, stored
            stored[0].write_bytes(stored[0].read_bytes()[:40])  # truncated: header only
            await c.send({"type": "cancel", "job_id": blocker["job_id"]})
            assert (await c.terminal(blocker["job_id"]))["type"] == "cancelled"
            pools = pool_pids(faults.workers["w1"])
            failed = await c.terminal(queued["job_id"])
            assert failed["type"] == "generation_failed", failed
            assert failed["error"].startswith("the start image could not be read"), failed
            nxt = await c.submit(prompt="a red square moving left", image=png_b64(), **SMALL)
            assert (await c.terminal(nxt["job_id"]))["type"] == "generation_complete"
            assert pool_pids(faults.workers["w1"]) == pools
    run(scenario())


# ---------------------------------------------------------------- whole workers SIGKILLed mid-job
KILL_JOB = {"model": "fake-steps", "num_frames": 9, "width": 64, "height": 64, "steps": 30}  # 1.5 s
# kills per job, 20 in all: a job killed once is re-queued and completes; one killed twice
# (JOB_MAX_ATTEMPTS=2) fails with a reason and retriable: true
KILL_PLAN = [1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 2, 1]


def test_worker_sigkilled_mid_job_20_times_on_a_stand_in_model_every_job_settles_and_subscribers_are_told(faults):
    assert sum(KILL_PLAN) == 20
    kills = []

    async def scenario():
        async with Client(faults) as c, Client(faults) as watcher:
            jobs = []
            for n, times in enumerate(KILL_PLAN):
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
    assert len(kills) == 20
    for job_id, times in zip(jobs, KILL_PLAN):
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


def test_periodic_reaper_of_another_worker_requeues_the_job_of_a_vanished_worker(faults):
    """No restart this time: the surviving worker's periodic sweep sees the dead worker's heartbeat go
    stale (JOB_HEARTBEAT_TIMEOUT_S=4) and re-queues the job, which the survivor then runs."""
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
                assert waited >= 3, waited  # settled by the heartbeat timeout, not by a restart
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
    job's message out again (to the second slot); the lease drops that delivery."""
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
        assert f"duplicate delivery of job {job_id} dropped" in vt.tail(10**6), vt.tail()
        row = faults.row(job_id)
        assert row["status"] == "succeeded" and row["attempts"] == 1, row
    finally:
        if "vt" in faults.workers:
            faults.stop_worker("vt")
        faults.start_worker("w1")


def test_redis_restarted_under_load_queued_jobs_survive_and_clients_reconnect(faults):
    """redis-server SIGKILLed with a queue of jobs and one running, then started again on the same
    append-only file: the queued jobs survive and run, the worker reconnects, websocket clients
    are disconnected (told) and reconnect, and what they missed is in the API."""
    async def scenario():
        async with Client(faults, reconnect=True) as c, Client(faults, reconnect=True) as w1, \
                Client(faults, reconnect=True) as w2:
            ids = []
            for n in range(6):
                ids.append((await c.submit(prompt=f"a queued square {n}", seed=n,
                                           **{**KILL_JOB, "steps": 40}))["job_id"])
            await c.until(lambda m: m.get("job_id") == ids[0] and m["type"] == "progress", 60)
            faults.kill_redis()
            await asyncio.sleep(2)
            faults.start_redis()
            # the server closes sockets whose channel layer went away; every client reconnects
            for client in (c, w1, w2):
                await client.until(lambda m: m["type"] == "_reconnected", 60)
                assert client.closes >= 1
            deadline = time.monotonic() + 120
            pending = set(ids)
            while pending and time.monotonic() < deadline:
                for job_id in list(pending):
                    if faults.job(job_id)["status"] in ("succeeded", "failed", "cancelled"):
                        pending.discard(job_id)
                await asyncio.sleep(0.5)
            assert not pending, [faults.job(j) for j in pending]
            # the reconnected socket and the reconnected worker serve a new job end to end
            after = await c.submit(prompt="after the restart", **SMALL)
            done = await c.terminal(after["job_id"], 90)
            assert done["type"] == "generation_complete", done
            for client in (w1, w2):  # the reconnected watchers are in the lobby again
                await client.terminal(after["job_id"], 30)
            return ids

    ids = run(scenario())
    rows = [faults.job(j) for j in ids]
    assert all(r["status"] == "succeeded" for r in rows), rows
    assert "Connection to broker lost" in faults.workers["w1"].tail(10**7)  # the same worker reconnected


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


def test_queue_caps_answer_queue_full_and_free_up_when_jobs_leave(faults):
    """MAX_QUEUED_PER_OWNER=8, MAX_QUEUED_JOBS=12 (fixture env); jobs for a queue no worker serves
    stay queued, so the caps are reached and held."""
    async def submit(c: Client) -> dict:
        rid = uuid.uuid4().hex
        await c.send({"type": "generate", "request_id": rid, "prompt": "parked", "model": "fake-parked"})
        return await c.until(lambda m: m.get("request_id") == rid and m["type"] in ("queued", "error"), 30)

    async def scenario():
        async with Client(faults) as a, Client(faults) as b:
            mine = [await submit(a) for _ in range(8)]
            assert all(m["type"] == "queued" for m in mine), mine
            over = await submit(a)
            assert (over["type"], over["code"]) == ("error", "queue_full"), over
            assert "8 jobs waiting" in over["message"]
            others = [await submit(b) for _ in range(4)]
            assert all(m["type"] == "queued" for m in others), others
            full = await submit(b)  # 12 queued in all
            assert (full["type"], full["code"]) == ("error", "queue_full") and "queue is full" in full["message"], full
            await a.send({"type": "cancel", "job_id": mine[0]["job_id"]})
            await a.until(lambda m: m.get("job_id") == mine[0]["job_id"] and m["type"] == "cancelled", 10)
            again = await submit(b)  # a place came free
            assert again["type"] == "queued", again
            for c, q in [(a, m) for m in mine[1:]] + [(b, m) for m in others + [again]]:
                await c.send({"type": "cancel", "job_id": q["job_id"]})
                await c.until(lambda m: m.get("job_id") == q["job_id"] and m["type"] == "cancelled", 10)
            status, _, body = http("GET", f"{faults.base}/api/jobs?limit=200")
            assert not [j for j in json.loads(body)["jobs"] if j["status"] == "queued"]
    run(scenario())


def test_holder_alive_rules_same_node_other_node_and_a_reused_pid():
    """The reaper's verdicts on unsaved Job rows (no service needed)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videoservice.settings")
    django.setup()
    from datetime import timedelta

    from django.test import override_settings

    from videoservice.models import Job
    from worker import reaper

    now = reaper.BOOTED_AT + timedelta(seconds=10)  # this "worker" has been up for 10 s
    fresh, stale = now - timedelta(seconds=1), now - timedelta(seconds=9)
    with override_settings(JOB_HEARTBEAT_TIMEOUT_S=5):
        _check_holder_rules(reaper, Job, now, fresh, stale)


def _check_holder_rules(reaper, Job, now, fresh, stale) -> None:
    from datetime import timedelta

    me, other = "w@host", "x@host"
    live_pid = os.getppid()  # exists, and is not this process
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert reaper.holder_alive(Job(worker=me, worker_pid=live_pid, heartbeat_at=fresh), me, now)
    assert not reaper.holder_alive(Job(worker=me, worker_pid=dead.pid, heartbeat_at=fresh), me, now)  # pool process lost
    # a previous life of this node: last seen before this worker started, even if the pid exists again
    before_boot = reaper.BOOTED_AT - timedelta(seconds=1)
    assert not reaper.holder_alive(Job(worker=me, worker_pid=live_pid, heartbeat_at=before_boot), me,
                                   reaper.BOOTED_AT + timedelta(seconds=2))
    # a pid that exists (reused) cannot keep a job whose heartbeat stopped
    assert not reaper.holder_alive(Job(worker=me, worker_pid=live_pid, heartbeat_at=stale), me, now)
    # another node: the heartbeat alone decides
    assert reaper.holder_alive(Job(worker=other, worker_pid=dead.pid, heartbeat_at=fresh), me, now)
    assert not reaper.holder_alive(Job(worker=other, worker_pid=live_pid, heartbeat_at=stale), me, now)
