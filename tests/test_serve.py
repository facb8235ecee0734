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

from tests.support.stack import ROOT, free_port, http, wait_for

# A stand-in model that sleeps 50 ms a step (tests/fault_backends.py): a job that takes as long as the
# test needs, costing no CPU beside the two stacks
MODELS = {"fake-steps": {"backend": "tests.fault_backends:fake_faults", "pipeline": "ltx", "queue": "fakes",
                         "defaults": {"steps": 4, "width": 64, "height": 64, "frames": 9, "fps": 8},
                         "limits": {"min_size": 32, "max_size": 128, "max_steps": 1000}}}
SLOW_JOB = {"prompt": "still running when the second stack starts", "model": "fake-steps", "steps": 400}  # 20 s
QUICK_JOB = {"prompt": "a quick one", "model": "fake-steps", "steps": 10}


def sessions_alive(sids: set) -> list:
    """(pid, session id, command) of every live process in one of these sessions."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        state, sid = fields[0], int(fields[3])
        if sid in sids and state != "Z":
            found.append((int(entry.name), sid, stat[stat.index("(") + 1:stat.rindex(")")]))
    return found


class Served:
    """One `python scripts/serve.py` with its own ports, sharing `shared` (REDIS_URL, DATABASE_URL...)."""

    def __init__(self, tmp: Path, name: str, shared: dict, env: dict | None = None):
        self.port, self.flower_port = free_port(), free_port()
        self.log_path = tmp / f"serve-{name}.log"
        self.log = open(self.log_path, "wb")
        self.env = {**os.environ, **shared, "HOST": "127.0.0.1", "PORT": str(self.port),
                    "FLOWER_PORT": str(self.flower_port), "READY_TIMEOUT": "150", "OMP_NUM_THREADS": "1",
                    **(env or {})}
        self.env.pop("FLOWER_BASIC_AUTH", None)
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "serve.py")], cwd=ROOT, env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def child_pids(self) -> dict:
        return {tag: int(pid) for tag, pid in re.findall(r"started (\w+) \(pid (\d+)\)", self.output())}

    def wait_ready(self) -> None:
        wait_for(lambda: "Press Ctrl-C" in self.output(), 180, "serve.py's banner", [self])

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def name(self) -> str:
        return f"serve.py:{self.port}"

    def tail(self) -> str:
        return self.output()[-4000:]

    def close(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        sids = set(self.child_pids().values())
        for pid, _, _ in sessions_alive(sids):  # never leave a stack behind a failed test
            os.kill(pid, signal.SIGKILL)
        if not self.log.closed:
            self.log.close()


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
        served.proc.wait(timeout=45)
        stack = set(served.child_pids().values())
        wait_for(lambda: not sessions_alive(stack), 15, f"the stack to stop: {sessions_alive(stack)}")
        assert "SIGTERM: stopping" in served.output(), served.tail()
    finally:
        served.close()
