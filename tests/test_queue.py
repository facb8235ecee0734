"""Running the queue, on real processes (redis-server with append-only persistence, Celery workers,
Daphne; a stand-in model that sleeps 50 ms a step, tests/fault_backends.py): fair share between
owners, priorities, pause and resume across a worker SIGKILL and a Redis restart, retry, move to
the front, webhooks to a real HTTP receiver (signed, in order, retried), /metrics read with
prometheus-client's parser, and JSON logs with the job's fields. On SQLite and on PostgreSQL (the
`database_url` fixture): the queue's order and turns are database work."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socketserver
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from tests.support.client import Client, run
from tests.support.stack import Stack, http, wait_for

FAKE = {"backend": "tests.fault_backends:fake_faults", "pipeline": "ltx", "queue": "fakes",
        "defaults": {"steps": 4, "width": 64, "height": 64, "frames": 9, "fps": 8},
        "limits": {"min_size": 32, "max_size": 128, "max_steps": 1000}}
ENV = {"WEBHOOK_ALLOW_PRIVATE": "1", "WEBHOOK_TIMEOUT_S": "2", "LOG_FORMAT": "json", "JOB_HEARTBEAT_S": "0.5",
       "JOB_HEARTBEAT_TIMEOUT_S": "4", "JOB_REAPER_INTERVAL_S": "1", "MAX_QUEUED_PER_OWNER": "50",
       "MAX_QUEUED_PER_ADDRESS": "100",
       "SUBMISSIONS_PER_MINUTE": "1000"}
@pytest.fixture(scope="module")
def queue(tmp_path_factory, database_url):
    with Stack(tmp_path_factory.mktemp("queue"), env=ENV, models={"fake-steps": FAKE, "fake-nan": FAKE},
               persist_redis=True, database_url=database_url) as stack:
        stack.start_redis()
        stack.migrate()
        stack.tokens = stack.issue_tokens("ann", "ben", "cat", "ops", staff=("ops",))
        stack.start_web()
        stack.start_worker("w1", "fakes")
        stack.start_worker("hooks", "webhooks", concurrency=2, pool="threads")
        stack.wait_healthy()
        yield stack


def auth(stack, user: str) -> dict:
    return {"Authorization": f"Bearer {stack.tokens[user]}"}


def submit(stack, user: str, **fields) -> dict:
    status, _, body = http("POST", stack.base + "/api/jobs", {"prompt": "a job", "model": "fake-steps", **fields},
                           headers=auth(stack, user))
    assert status == 201, body
    return json.loads(body)["job"]


def call(stack, method: str, path: str, user: str = "ops", body=None) -> tuple:
    status, _, raw = http(method, stack.base + path, body if body is not None else ({} if method == "POST" else None),
                          headers=auth(stack, user))
    return status, json.loads(raw) if raw else None


def starts(stack, ids) -> list:
    """The jobs' ids in the order they started (all must have)."""
    rows = [stack.job(i, headers=auth(stack, "ops")) for i in ids]
    assert all(r["started_at"] for r in rows), [r["status"] for r in rows]
    return [r["id"] for r in sorted(rows, key=lambda r: r["started_at"])]


def wait_all(stack, ids, timeout=120) -> list:
    return [stack.wait_job(i, timeout=timeout, headers=auth(stack, "ops")) for i in ids]


def test_one_owners_many_jobs_do_not_hold_back_another_owners_one(queue):
    """ann queues 10, then ben 1: ben's starts within the next two starts after it was submitted."""
    mine = [submit(queue, "ann", steps=8)["id"] for _ in range(10)]
    time.sleep(0.3)
    started_before = {j for j in mine if queue.job(j, headers=auth(queue, "ops"))["started_at"]}
    bens = submit(queue, "ben", steps=8)["id"]
    wait_all(queue, mine + [bens])
    order = [j for j in starts(queue, mine + [bens]) if j not in started_before]
    assert order.index(bens) <= 1, order


def test_priority_order_holds_and_raising_it_is_for_staff(queue):
    status, body = call(queue, "POST", "/api/jobs", "cat", {"prompt": "x", "model": "fake-steps", "priority": 1})
    assert status == 403 and body["code"] == "forbidden" and body["field"] == "priority"
    assert call(queue, "POST", "/api/dispatch/pause", "ops", {"model": "fake-steps"})[0] == 200
    low = submit(queue, "cat", priority=-1)["id"]
    plain = [submit(queue, "cat")["id"] for _ in range(2)]
    high = submit(queue, "ops", priority=5)["id"]
    status, body = call(queue, "GET", f"/api/jobs/{high}")
    assert body["job"]["priority"] == 5
    assert call(queue, "POST", "/api/dispatch/resume", "ops", {"model": "fake-steps"})[0] == 200
    wait_all(queue, [low, high, *plain])
    assert starts(queue, [low, high, *plain]) == [high, *plain, low]


def test_pause_holds_jobs_through_a_worker_kill_and_a_redis_restart_then_resume_runs_them(queue):
    status, body = call(queue, "POST", "/api/dispatch/pause", "ops", {"model": "*"})
    assert status == 200 and body["paused"] == ["*"]
    assert call(queue, "POST", "/api/dispatch/pause", "ann", {})[0] == 403  # staff only
    waiting = [submit(queue, "ann")["id"] for _ in range(3)]
    front = submit(queue, "ben")["id"]
    status, body = call(queue, "POST", f"/api/jobs/{front}/front")
    assert status == 200 and body["position"] == 0, body
    time.sleep(2)
    assert {queue.job(j)["status"] for j in waiting + [front]} == {"queued"}  # nothing dispatched
    queue.kill_worker("w1")
    queue.kill_redis()
    queue.start_redis()
    queue.start_worker("w1", "fakes")
    time.sleep(2)
    assert {queue.job(j)["status"] for j in waiting + [front]} == {"queued"}  # still paused, still there
    status, body = call(queue, "POST", "/api/dispatch/resume", "ops", {"model": "*"})
    assert status == 200 and body["paused"] == [] and body["turns_sent"] >= 4
    done = wait_all(queue, waiting + [front])
    assert {d["status"] for d in done} == {"succeeded"}
    assert starts(queue, waiting + [front])[0] == front  # moved to the front while paused


def test_a_cancelled_job_is_retried_as_a_new_linked_job_that_succeeds(queue):
    call(queue, "POST", "/api/dispatch/pause", "ops", {"model": "fake-steps"})
    try:
        job = submit(queue, "ann")["id"]
        status, body = call(queue, "POST", f"/api/jobs/{job}/cancel", "ann")
        assert body["state"] == "cancelled"
        assert call(queue, "POST", f"/api/jobs/{job}/retry", "ben")[0] == 403  # not ben's
        status, body = call(queue, "POST", f"/api/jobs/{job}/retry", "ann")
        assert status == 201 and body["job"]["retry_of"] == job and body["job"]["id"] != job
        again = body["job"]["id"]
    finally:
        call(queue, "POST", "/api/dispatch/resume", "ops", {"model": "fake-steps"})
    assert queue.wait_job(again, headers=auth(queue, "ann"))["status"] == "succeeded"
    assert call(queue, "POST", f"/api/jobs/{again}/retry", "ann")[0] == 409  # a success is not retried


class Receiver:
    """A real HTTP server on loopback that records webhook POSTs; answers 500 to the first one."""

    def __init__(self):
        self.posts, self.answered = [], 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.answered += 1
                status = 500 if receiver.answered == 1 else 200
                receiver.posts.append((status, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_webhooks_are_signed_ordered_and_retried(queue):
    receiver = Receiver()
    try:
        job = submit(queue, "ann", steps=6, webhook=receiver.url,
                     webhook_events=["start", "progress", "completed", "failed", "cancelled"])
        queue.wait_job(job["id"], headers=auth(queue, "ann"))
        wait_for(lambda: any(json.loads(b)["event"] == "completed" for s, _, b in receiver.posts if s == 200), 60,
                 "the completed webhook")
    finally:
        receiver.server.shutdown()
    secret = queue.manage("webhook_secret", "ann").strip()
    status, body = call(queue, "GET", "/api/account/webhook-secret", "ann")
    assert body["secret"] == secret
    accepted = []
    for status, headers, body in receiver.posts:
        stamp, digest = (part.split("=", 1)[1] for part in headers["X-Videoservice-Signature"].split(","))
        expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(digest, expected) and abs(time.time() - int(stamp)) < 300
        # the Standard Webhooks headers, checked by its reference verifier (secret: whsec_ + base64)
        verified = Webhook("whsec_" + base64.b64encode(secret.encode()).decode()).verify(body, headers)
        assert verified == json.loads(body) and headers["webhook-id"] == headers["X-Videoservice-Delivery"]
        if status == 200:
            accepted.append((headers["X-Videoservice-Delivery"], json.loads(body)))
    first_status, first_headers, first_body = receiver.posts[0]
    assert first_status == 500 and receiver.posts[1][1]["X-Videoservice-Delivery"] == \
        first_headers["X-Videoservice-Delivery"] and receiver.posts[1][2] == first_body  # the same event, again
    events = [payload["event"] for _, payload in accepted]
    assert events[0] == "start" and events[-1] == "completed" and set(events[1:-1]) <= {"progress"}, events
    assert accepted[-1][1]["job"]["status"] == "succeeded" and accepted[-1][1]["job_id"] == job["id"]
    assert "video" not in accepted[-1][1]["data"]


class Recorder(BaseHTTPRequestHandler):
    """An "internal" server that records every request it gets (none must come)."""
    seen: list = []

    def do_GET(self):
        Recorder.seen.append(("GET", self.path, dict(self.headers)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


class Redirector(BaseHTTPRequestHandler):
    """A receiver on an allowed address that bounces every POST to the internal one."""
    target = ""
    posts: list = []

    def do_POST(self):
        Redirector.posts.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(302)
        self.send_header("Location", Redirector.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Dribbler(socketserver.BaseRequestHandler):
    """Reads the request, then sends the status line and one header byte every 0.3 s, for a minute."""
    def handle(self):
        self.request.recv(65536)
        try:
            self.request.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(200):
                time.sleep(0.3)
                self.request.sendall(b"a")
        except OSError:
            pass


def serve(server) -> str:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def deliveries(stack, *job_ids) -> dict:
    """job id -> [attempts, last error, delivered] of its one delivery (absent: not written yet)."""
    rows = stack.select(f"SELECT job_id, attempts, last_error, delivered_at FROM videoservice_webhookdelivery "
                        f"WHERE job_id IN ({', '.join('?' * len(job_ids))})", tuple(map(uuid.UUID, job_ids)))
    return {row["job_id"]: [row["attempts"], row["last_error"], row["delivered_at"] is not None] for row in rows}


def test_a_webhook_redirect_is_not_followed_and_a_dribbling_receiver_is_cut_off(queue):
    """The signed POST is never bounced to an internal address by a 302 (urllib followed it, as a GET
    with the signature headers, and counted it delivered); a receiver that sends its headers a byte at
    a time cannot hold a delivery past WEBHOOK_TIMEOUT_S (2 s here; urllib's time-out was per read)."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Recorder), ThreadingHTTPServer(("127.0.0.1", 0), Redirector),
               socketserver.ThreadingTCPServer(("127.0.0.1", 0), Dribbler)]
    internal, redirector, dribbler = (serve(server) for server in servers)
    Redirector.target = internal + "/latest/meta-data/"
    try:
        bounced = submit(queue, "ann", webhook=redirector + "/hook", webhook_events=["completed"])
        slow = submit(queue, "ann", webhook=dribbler + "/hook", webhook_events=["completed"])
        for job in (bounced, slow):
            queue.wait_job(job["id"], headers=auth(queue, "ann"))
        ids = [job["id"].replace("-", "") for job in (bounced, slow)]
        tried = {}
        wait_for(lambda: len(tried.update(deliveries(queue, *ids)) or tried) == 2
                 and all(attempts >= 1 for attempts, _, _ in tried.values()), 60, "the first tries of both webhooks")
        attempts, error, delivered = tried[ids[0]]
        assert not delivered and error == "HTTP 302 (redirects are not followed)", (attempts, error)
        attempts, error, delivered = tried[ids[1]]
        assert not delivered and error == "TimeoutError: no answer within 2 s", (attempts, error)
        assert Recorder.seen == []  # nothing reached the internal address
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_webhook_to_a_private_address_is_refused(live_service):
    for url in ("http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://[::1]/x", "ftp://example.org/x"):
        status, _, body = http("POST", live_service.base + "/api/jobs",
                               {"prompt": "x", "webhook": url, "num_frames": 8, "width": 64, "height": 64})
        refusal = json.loads(body)
        assert status == 400 and refusal["field"] == "webhook", refusal
    assert "private or local address" in refusal["message"] or "http" in refusal["message"]
    status, _, body = http("POST", live_service.base + "/api/jobs",
                           {"prompt": "x", "webhook": "http://127.0.0.1:9/hook"})
    assert "WEBHOOK_ALLOW_PRIVATE" in json.loads(body)["message"]


def test_metrics_show_the_jobs_and_connections(queue):
    from prometheus_client.parser import text_string_to_metric_families

    # Its own job and webhooks: under --dist load the other tests of this file may run elsewhere.
    receiver = Receiver()
    try:
        job = submit(queue, "cat", steps=2, webhook=receiver.url, webhook_events=["start", "completed"])
        queue.wait_job(job["id"], headers=auth(queue, "cat"))
        wait_for(lambda: sum(1 for s, _, _ in receiver.posts if s == 200) >= 2, 60, "two delivered webhooks")
    finally:
        receiver.server.shutdown()

    async def scenario():
        async with Client(queue):
            status, headers, body = http("GET", queue.base + "/metrics")
            return status, headers, body.decode()
    status, headers, text = run(scenario())
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    jobs = {(s.labels["status"], s.labels["model"]): s.value for s in families["videoservice_jobs"].samples}
    status, body = call(queue, "GET", "/api/jobs?limit=200&status=succeeded")
    made = sum(1 for j in body["jobs"] if j["model"] == "fake-steps")
    assert jobs[("succeeded", "fake-steps")] == made > 0
    counts = [s for s in families["videoservice_job_duration_seconds"].samples if s.name.endswith("_count")]
    assert any(s.labels["model"] == "fake-steps" and s.value == made for s in counts)
    assert families["videoservice_websocket_connections"].samples[0].value >= 1
    assert families["videoservice_workers"].samples[0].value >= 2
    assert "videoservice_queue_depth" in families and "videoservice_step_duration_seconds" in families
    deliveries = {s.labels["state"]: s.value for s in families["videoservice_webhook_deliveries"].samples}
    assert deliveries.get("delivered", 0) >= 2


def test_json_logs_carry_the_jobs_fields(queue):
    job = submit(queue, "cat", model="fake-nan")["id"]  # fails: the worker logs about it
    queue.wait_job(job, headers=auth(queue, "cat"))
    lines = [json.loads(line) for line in Path(queue.workers["w1"].log_path).read_text().splitlines()
             if line.startswith("{")]
    mine = [line for line in lines if line.get("job_id") == job]
    assert mine and all(line["model"] == "fake-nan" and line["worker"] for line in mine), lines[-5:]


ORPHAN = """
from videoservice.models import Job
model = Job.objects.get(pk="{source}")
orphan = Job.objects.create(owner=model.owner, user=model.user, prompt="a row without a turn", model=model.model,
                            params=model.params, queue=model.queue, total_steps=model.total_steps, seed=model.seed)
print(orphan.pk)
"""


def test_a_queued_row_without_a_turn_runs_on_an_idle_worker(queue):
    """A lost turn (a Redis restart between the row and its turn, or a row left by a failed
    submission) on an idle worker: the queue's Redis list does not exist then, and the reaper's
    top-up (every 1 s here) must still see "no turn waiting" and give the row one."""
    source = submit(queue, "cat")["id"]
    assert queue.wait_job(source, headers=auth(queue, "cat"))["status"] == "succeeded"  # the worker is idle
    orphan = queue.manage("shell", "-c", ORPHAN.format(source=source)).strip().splitlines()[-1]
    assert queue.wait_job(orphan, timeout=30, headers=auth(queue, "cat"))["status"] == "succeeded"
    assert "reaper failed" not in queue.workers["w1"].tail(10**7)
