"""Redis failing under a running service (tests/support/faults.py): redis-server SIGKILLed under load
and restarted on its append-only file (queued jobs survive, clients reconnect), /stream readers
across a restart, progress that never waits for a frozen Redis.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import threading
import time
import urllib.parse
from http.client import HTTPConnection

import av
import pytest

from tests.support.client import Client, run, session_cookie
from tests.support.faults import KILL_JOB, SMALL, fault_service
from tests.support.stack import http, wait_for


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    with fault_service(tmp_path_factory.mktemp("faults")) as svc:
        yield svc


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


class StreamReader(threading.Thread):
    """GET /api/jobs/<id>/stream on its own thread: when the headers came, the bytes, how it ended."""

    def __init__(self, base: str, job_id: str):
        super().__init__(daemon=True)
        self.url = urllib.parse.urlsplit(f"{base}/api/jobs/{job_id}/stream")
        self.opened, self.status, self.data, self.error, self.ended = time.monotonic(), None, b"", None, None
        self.start()

    def run(self):
        connection = HTTPConnection(self.url.hostname, self.url.port, timeout=120)
        try:
            connection.request("GET", self.url.path)
            response = connection.getresponse()
            self.status, self.headers_after = response.status, time.monotonic() - self.opened
            while piece := response.read1(65536):
                self.data += piece
        except Exception as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic() - self.opened
            connection.close()


def test_stream_readers_get_headers_at_once_and_survive_a_redis_restart(faults):
    """/stream across a Redis restart: a reader of a running job resumes after the last piece it read
    and gets the whole video (it ended in a truncated 200); a reader of a job nobody runs gets its
    headers at once and its end after STREAM_IDLE_S (6 s here; it had no headers, no close, for more
    than 10 minutes)."""
    me = {"Cookie": session_cookie(faults.base)}  # (to cancel the parked job at the end)
    status, _, body = http("POST", f"{faults.base}/api/jobs", {"prompt": "parked", "model": "fake-parked"}, me)
    parked = json.loads(body)["job"]["id"]
    status, _, body = http("POST", f"{faults.base}/api/jobs", {
        "prompt": "a streamed square", "model": "fake-steps", "num_frames": 9, "width": 64, "height": 64,
        "steps": 12, "num_chunks": 6})
    assert status == 201, body
    running = json.loads(body)["job"]["id"]
    waiting, streamed = StreamReader(faults.base, parked), StreamReader(faults.base, running)
    wait_for(lambda: waiting.status == 200 and len(streamed.data) > 0, 60, "headers, and the first pieces")
    assert waiting.headers_after < 3 and faults.job(running)["status"] == "running"
    faults.kill_redis()
    time.sleep(1)
    faults.start_redis()
    streamed.join(90)
    waiting.join(30)
    job = faults.wait_job(running, timeout=60)
    assert job["status"] == "succeeded", job
    assert streamed.error is None and waiting.error is None, (streamed.error, waiting.error)
    frames = sum(1 for _ in av.open(io.BytesIO(streamed.data)).decode(video=0))
    assert frames == job["num_frames"], (frames, job["num_frames"])  # resumed: nothing missing, nothing twice
    assert waiting.data == b"" and waiting.ended < 6 + 15, waiting.ended  # the idle limit, Redis restart and all
    assert http("POST", f"{faults.base}/api/jobs/{parked}/cancel", {}, me)[0] == 200


def test_progress_never_waits_for_a_frozen_redis(faults):
    """Redis frozen (SIGSTOP) for 6 s while a 4 s job denoises: the steps go on (progress events are
    dropped or coalesced, not awaited); the completion is delivered once Redis is back."""
    async def scenario():
        async with Client(faults) as c:
            queued = await c.submit(prompt="through the freeze", model="fake-steps", steps=80)
            job_id = queued["job_id"]
            await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "progress", 60)
            os.kill(faults.redis.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(6)
            finally:
                os.kill(faults.redis.pid, signal.SIGCONT)
            done = await c.terminal(job_id, 60)
            assert done["type"] == "generation_complete", done
            # 80 steps of 50 ms: ~4 s of denoising; waiting on Redis would have added the 6 s freeze
            assert done["elapsed_s"] < 5.5, done["elapsed_s"]
    run(scenario())
