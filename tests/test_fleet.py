"""A fleet on one machine: two worker "hosts" that share only Redis, PostgreSQL and an S3 bucket.

What docs/deploy.md ("A fleet") tells operators to run, run for real: redis-server, a PostgreSQL
server (tests/support/postgres.py), moto's S3-API server process standing in for MinIO / AWS S3
(tests/support/s3.py; the one fake here, since no MinIO binary can be installed), Daphne and Celery
workers. Host A runs the web tier and a worker; host B runs a worker in its own UTS and PID
namespaces (`unshare`: its own hostname, pids that host A cannot check), its own working
directory and media folder. Nothing is shared on disk: videos and start images go through the bucket.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from http.client import HTTPConnection

import pytest
from PIL import Image

from generator.encode import decode_video
from tests.support.postgres import new_database_url
from tests.support.s3 import S3Server
from tests.support.served import Served
from tests.support.stack import ROOT, Stack, http, wait_for

BUCKET = "fleet-videos"
FAKE_QUEUE = "fleet-steps"
MODELS = {"fake-steps": {"backend": "tests.fault_backends:fake_faults", "pipeline": "ltx", "queue": FAKE_QUEUE,
                         "defaults": {"steps": 4, "width": 64, "height": 64, "frames": 9, "fps": 8},
                         "limits": {"min_size": 32, "max_size": 128, "max_frames": 25, "max_steps": 1000}}}
# host A's reaper cannot see host B's pids: a vanished B is noticed by its silence
FLEET_ENV = {"JOB_HEARTBEAT_S": "0.5", "JOB_HEARTBEAT_TIMEOUT_S": "5", "JOB_REAPER_INTERVAL_S": "1",
             "SUBMISSIONS_PER_MINUTE": "1000", "WORKER_QUEUES": f"builtin,{FAKE_QUEUE}"}


def other_host(hostname: str) -> tuple:
    """The launcher that puts a process on another "host": new UTS + PID namespaces (needs root)."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is missing")
    probe = subprocess.run(["unshare", "--uts", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.fail(f"unshare --uts --pid is not permitted here ({probe.stderr.decode()[:200]}); "
                    "the fleet suite needs root")
    return ("unshare", "--uts", "--pid", "--fork", "--mount-proc", "--", "sh", "-c",
            f'hostname {hostname} && exec "$@"', "sh")


def files_under(folder) -> list:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def worker_node(served: Served) -> str:
    return re.search(r"^  Worker +(\S+)", served.output(), re.M).group(1)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """The recipe of docs/deploy.md ("A fleet"): Redis, PostgreSQL and a bucket; host A runs
    `SERVE_ROLE=web scripts/serve.py`, host B `SERVE_ROLE=worker scripts/serve.py`, each with the
    same shared settings and a media folder of its own that must stay empty."""
    tmp = tmp_path_factory.mktemp("fleet")
    s3 = S3Server(tmp, env=dict(os.environ))
    stack = Stack(tmp, models=MODELS, database_url=new_database_url())
    served = []
    try:
        stack.start_redis()
        stack.shared = {key: stack.env[key] for key in ("REDIS_URL", "DATABASE_URL", "VIDEO_MODELS_CONFIG")}
        stack.shared.update({**s3.create_bucket(BUCKET), **FLEET_ENV})
        stack.s3, stack.hosts, stack.served = s3, {}, served
        for host in ("host-a", "host-b"):
            stack.hosts[host] = tmp / host
            (tmp / host / "media").mkdir(parents=True)
        stack.host_web = Served(tmp, "host-a-web", stack.shared, {"SERVE_ROLE": "web", "MEDIA_ROOT": str(
            tmp / "host-a" / "media")}, cwd=tmp / "host-a")
        stack.host_b = Served(tmp, "host-b-worker", stack.shared, {"SERVE_ROLE": "worker", "MEDIA_ROOT": str(
            tmp / "host-b" / "media")}, launcher=other_host("host-b"), cwd=tmp / "host-b")
        served += [stack.host_web, stack.host_b]
        stack.host_web.wait_ready()
        stack.host_b.wait_ready()
        # the same bucket, with downloads redirected to presigned URLs instead of proxied
        stack.start_web("redirect", env={**stack.shared, "S3_DOWNLOADS": "redirect",
                                         "MEDIA_ROOT": str(tmp / "host-a" / "media")})
        stack.wait_healthy(web="redirect")
        yield stack
    finally:
        for one in reversed(served):
            one.close()
        stack.stop()
        s3.stop()


def wait_job(base: str, job_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = json.loads(http("GET", f"{base}/api/jobs/{job_id}")[2])["job"]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout:.0f} s"
        time.sleep(0.25)


def start_image() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 160, 60)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def submit(base: str, **fields) -> dict:
    status, _, body = http("POST", f"{base}/api/jobs", fields)
    assert status == 201, body
    return json.loads(body)["job"]


def test_video_made_on_host_b_is_served_with_range_by_host_a(fleet):
    web = fleet.host_web.base
    job = submit(web, prompt="a green square moving right", seed=3, image=start_image(),
                 num_frames=8, width=64, height=64, steps=3)
    done = wait_job(web, job["id"], timeout=180)
    assert done["status"] == "succeeded", done
    assert fleet.row(job["id"])["worker"] == worker_node(fleet.host_b) and "@host-b" in worker_node(fleet.host_b)

    # the bucket holds the start image and the video; neither host's media folder holds anything
    keys = fleet.s3.keys(BUCKET)
    month = time.strftime("%Y/%m", time.gmtime())
    assert keys[f"videos/{month}/{job['id']}.mp4"] == done["size_bytes"], keys
    assert f"inputs/{month}/{job['id']}.png" in keys, keys
    assert [files_under(folder / "media") for folder in fleet.hosts.values()] == [[], []]

    # host A's web tier serves it, whole and in ranges, from the bucket
    status, headers, whole = http("GET", web + done["url"])
    assert status == 200 and len(whole) == done["size_bytes"] and headers["Accept-Ranges"] == "bytes"
    assert decode_video(whole)[0].shape == (8, 64, 64, 3)
    size = len(whole)
    parts = []
    for start in range(0, size, 4096):
        status, headers, part = http("GET", web + done["url"],
                                     headers={"Range": f"bytes={start}-{min(start + 4095, size - 1)}"})
        assert status == 206 and headers["Content-Range"] == f"bytes {start}-{start + len(part) - 1}/{size}"
        parts.append(part)
    assert b"".join(parts) == whole
    status, _, tail = http("GET", web + done["url"], headers={"Range": "bytes=-100"})
    assert status == 206 and tail == whole[-100:]
    assert http("GET", web + done["url"], headers={"Range": f"bytes={size}-"})[0] == 416
    assert files_under(fleet.hosts["host-a"] / "media") == []

    # S3_DOWNLOADS=redirect: a presigned URL of the object, on which the bucket honours Range itself
    conn = HTTPConnection("127.0.0.1", fleet.webs["redirect"][1], timeout=10)
    conn.request("GET", done["url"])
    redirect = conn.getresponse()
    location = redirect.getheader("Location") or ""
    conn.close()
    assert redirect.status == 302 and location.startswith(fleet.s3.endpoint + f"/{BUCKET}/videos/"), location
    with urllib.request.urlopen(urllib.request.Request(location, headers={"Range": "bytes=0-99"}), timeout=10) as resp:
        assert resp.status == 206 and resp.read() == whole[:100]


def test_host_b_killed_mid_job_the_job_reruns_on_host_a(fleet):
    """SIGKILL of host B's serve.py takes its whole PID namespace down (a host losing power): no
    acknowledgement, no pid host A could check; host A's worker takes the job over once B's heartbeat
    has been silent for JOB_HEARTBEAT_TIMEOUT_S, and its video lands in the bucket as well."""
    web = fleet.host_web.base
    job = submit(web, model="fake-steps", prompt="a long one", steps=200, num_frames=9, width=64, height=64)
    wait_for(lambda: fleet.row(job["id"])["step"] >= 5, 90, "host B running the job", [fleet.host_b])
    host_b_node = worker_node(fleet.host_b)
    assert fleet.row(job["id"])["worker"] == host_b_node
    host_a_worker = Served(fleet.tmp, "host-a-worker", fleet.shared, {
        "SERVE_ROLE": "worker", "WORKER_WARMUP": "0", "MEDIA_ROOT": str(fleet.hosts["host-a"] / "media")},
        cwd=fleet.hosts["host-a"])
    fleet.served.append(host_a_worker)
    host_a_worker.wait_ready()
    assert fleet.row(job["id"])["worker"] == host_b_node  # a new worker takes no job from a live host

    killed_at = time.monotonic()
    fleet.host_b.kill()
    done = wait_job(web, job["id"], timeout=120)
    took = time.monotonic() - killed_at
    row = fleet.row(job["id"])
    assert done["status"] == "succeeded", done
    assert row["worker"] == worker_node(host_a_worker) and row["attempts"] == 2, row
    print(f"host B killed mid-job: the job finished on host A {took:.1f} s later")
    status, _, video = http("GET", web + done["url"], headers={"Range": "bytes=0-"})
    assert status == 206 and decode_video(video)[0].shape[0] == 9
    assert f"videos/{time.strftime('%Y/%m', time.gmtime())}/{job['id']}.mp4" in fleet.s3.keys(BUCKET)
    assert [files_under(folder / "media") for folder in fleet.hosts.values()] == [[], []]


RACER = """
import json, os, time
from videoservice.models import Job
time.sleep(max(0.0, float(os.environ["RACE_START_AT"]) - time.time()))  # all racers start claiming together
taken = []
while (job := Job.objects.claim_next("race", "racer", os.getpid(), "race-host")) is not None:
    taken.append(str(job.pk))
    job.succeed()  # (a claimed job left running without a heartbeat is re-queued by the fleet's reapers)
print(json.dumps(taken))
"""


def test_racing_claims_on_postgresql_take_each_job_exactly_once(fleet):
    """Four processes claim from one queue at the same moment: row locks (SELECT ... FOR UPDATE SKIP
    LOCKED) and the conditional UPDATE give every job to exactly one of them."""
    fleet.manage("shell", "-c", "from videoservice.models import Job\n"
                 "Job.objects.bulk_create([Job(owner=f's:race{i % 5}', prompt='race', model='builtin', queue='race')"
                 " for i in range(80)])")
    start_at = time.time() + 8
    racers = [subprocess.Popen([sys.executable, "manage.py", "shell", "-c", RACER], cwd=ROOT, text=True,
                               env={**fleet.env, "RACE_START_AT": str(start_at)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    taken = [job for result in results for job in result]
    assert len(taken) == len(set(taken)) == 80, [len(r) for r in results]
    assert sum(1 for result in results if result) >= 2, [len(r) for r in results]  # they did race
