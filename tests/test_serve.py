"""`scripts/serve.py` (command 1) as a process: two stacks on one host, signals at any moment, Flower's
authentication, and no orphan left when it is killed.

Each test starts real serve.py processes (redis-server, Daphne, a Celery worker and Flower under
it) with their Redis data, database and media in a temporary folder; processes are found by their
sessions (every child of serve.py leads a session of its own).
"""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.served import Served, sessions_alive
from tests.support.stack import ROOT, free_port, http, wait_for

# A stand-in model that sleeps 50 ms a step (tests/fault_backends.py): a job that takes as long as the
# test needs, costing no CPU beside the two stacks
MODELS = {"fake-steps": {"backend": "tests.fault_backends:fake_faults", "pipeline": "ltx", "queue": "fakes",
                         "defaults": {"steps": 4, "width": 64, "height": 64, "frames": 9, "fps": 8},
                         "limits": {"min_size": 32, "max_size": 128, "max_steps": 1000}}}
SLOW_JOB = {"prompt": "still running when the second stack starts", "model": "fake-steps", "steps": 400}  # 20 s
QUICK_JOB = {"prompt": "a quick one", "model": "fake-steps", "steps": 10}


@pytest.fixture
def shared(tmp_path):
    (tmp_path / "models.json").write_text(json.dumps(MODELS))
    return {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_DIR": str(tmp_path / "redis"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "MEDIA_ROOT": str(tmp_path / "media"),
            "VIDEO_MODELS_CONFIG": str(tmp_path / "models.json"), "WORKER_QUEUES": "builtin,fakes",
            "WORKER_WARMUP": "0"}


def db_row(shared: dict, job_id: str) -> dict:
    with sqlite3.connect(shared["DATABASE_URL"].removeprefix("sqlite:///"), timeout=30) as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM videoservice_job WHERE id = ?", (uuid.UUID(job_id).hex,)).fetchone())


def wait_status(base: str, job_id: str, token: str, statuses, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        _, _, body = http("GET", f"{base}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
        job = json.loads(body)["job"]
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.3)


def test_two_stacks_on_one_host_keep_their_jobs_and_flower_needs_auth(tmp_path, shared):
    """Two serve.py with one Redis and one database (as two `./scripts/serve.sh` with other PORTs):
    a job running on the first stack's worker is not taken over when the second worker starts, each
    job runs once; REQUIRE_AUTH=1 puts Flower behind basic auth; SIGKILL of serve.py kills its stack."""
    first = Served(tmp_path, "a", shared, {"REQUIRE_AUTH": "1"})
    second = None
    try:
        t0 = time.monotonic()
        first.wait_ready()
        print(f"first stack ready in {time.monotonic() - t0:.1f} s")
        password = re.search(r"user flower, password (\S+)\)", first.output()).group(1)
        flower = f"http://127.0.0.1:{first.flower_port}/"
        assert http("GET", flower)[0] == 401
        good = "Basic " + base64.b64encode(f"flower:{password}".encode()).decode()
        assert http("GET", flower, headers={"Authorization": good}, timeout=15)[0] == 200

        token = subprocess.run([sys.executable, "manage.py", "create_api_token", "ops", "--create-user"], cwd=ROOT,
                               env=first.env, check=True, capture_output=True, text=True, timeout=120).stdout.strip()
        auth = {"Authorization": f"Bearer {token}"}
        status, _, body = http("POST", f"{first.base}/api/jobs", SLOW_JOB, headers=auth)
        assert status == 201, body
        running = json.loads(body)["job"]["id"]
        wait_status(first.base, running, token, ("running",))

        second = Served(tmp_path, "b", shared, {"REQUIRE_AUTH": "1"})
        t0 = time.monotonic()
        second.wait_ready()  # its worker's start-up sweep has run
        print(f"second stack ready in {time.monotonic() - t0:.1f} s")
        assert wait_status(first.base, running, token, ("running", "succeeded"))["status"] == "running", \
            "the first job ended before the second worker started: make SLOW_JOB longer"
        status, _, body = http("POST", f"{second.base}/api/jobs", QUICK_JOB, headers=auth)
        assert status == 201, body
        other = json.loads(body)["job"]["id"]
        t0 = time.monotonic()
        for job_id in (running, other):
            ended = wait_status(second.base, job_id, token, ("succeeded", "failed", "cancelled"))
            assert ended["status"] == "succeeded", ended
            row = db_row(shared, job_id)
            assert row["attempts"] == 1 and not row["error"], row
        workers = {db_row(shared, running)["worker"], db_row(shared, other)["worker"]}
        assert all(w.startswith("builtin-") for w in workers), workers
        print(f"both jobs done in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        second.close()  # (while the first stack's Redis is still there: a quick warm shutdown)

        # SIGKILL of the first serve.py: nothing of its stack survives it (its Redis goes too)
        stack = set(first.child_pids().values())
        assert sessions_alive(stack)
        first.proc.kill()
        first.proc.wait()
        print(f"second closed in {time.monotonic() - t0:.1f} s")
        wait_for(lambda: not sessions_alive(stack), 30, "the first stack's processes to die")
    finally:
        first.close()
        if second is not None:
            second.close()


@pytest.mark.parametrize("when", ["one second after start", "once its children run"])
def test_sigterm_at_start_up_stops_everything(tmp_path, shared, when):
    served = Served(tmp_path, "t", shared)
    try:
        if when == "once its children run":
            wait_for(lambda: "started worker" in served.output(), 120, "serve.py to start its worker", [served])
        else:
            time.sleep(1)
        served.proc.send_signal(signal.SIGTERM)
        try:
            served.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve.py still running 45 s after SIGTERM:\n{served.tail()}")
        stack = set(served.child_pids().values())
        wait_for(lambda: not sessions_alive(stack), 15, f"the stack to stop: {sessions_alive(stack)}")
        assert "SIGTERM: stopping" in served.output(), served.tail()
    finally:
        served.close()


def test_worker_role_starts_one_pinned_worker_per_gpu_of_a_fake_nvidia_smi(tmp_path, shared):
    """SERVE_ROLE=worker on a host whose (fake: no GPU here) nvidia-smi lists two GPUs: two workers,
    CUDA_VISIBLE_DEVICES=0 and 1, node names apart; no web, no Flower, no migration, no Redis of its own."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --query-gpu=index ] && printf '0\\n1\\n'\n")
    fake.chmod(0o755)
    redis_port = int(shared["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, start_new_session=True)
    served = None
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True,
                       env={**os.environ, **shared}, timeout=180)
        served = Served(tmp_path, "gpus", shared, {"SERVE_ROLE": "worker", "WORKER_QUEUES": "fakes",
                                                   "PATH": f"{bin_dir}:{os.environ['PATH']}",
                                                   "CUDA_VISIBLE_DEVICES": ""})
        served.wait_ready()
        out = served.output()
        pids = served.child_pids()
        assert set(pids) == {"gpu0", "gpu1"}, pids  # workers only
        for gpu in ("0", "1"):
            environ = dict(item.split("=", 1) for item in
                           (Path("/proc") / str(pids[f"gpu{gpu}"]) / "environ").read_text().split("\0") if "=" in item)
            assert environ["CUDA_VISIBLE_DEVICES"] == gpu
            line = rf"^  Worker +fakes-{served.port}-gpu{gpu}@\S+ +\(CUDA_VISIBLE_DEVICES={gpu}\)$"
            assert re.search(line, out, re.M), out
        assert "migrating" not in out and "Web UI" not in out
    finally:
        if served is not None:
            served.close()
        redis.kill()
        redis.wait()


def test_serve_refuses_an_unknown_role(tmp_path, shared):
    out = subprocess.run([sys.executable, "-m", "scripts.serve"], cwd=ROOT, env={**os.environ, **shared,
                         "SERVE_ROLE": "everything"}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "SERVE_ROLE='everything' is not one of all, web, worker" in out.stdout
