"""Load benchmark: N websocket clients submitting jobs against 1 and 2 Celery workers.

    .venv/bin/python bench/bench_load.py            # rows for 10, 50, 100 clients x 1 and 2 workers

    options: [--clients 10,50,100] [--workers 1,2] [--jobs-per-client 2] [--frames 8 --size 64 --steps 2]
             [--public] [--json out.json]

Starts its own redis-server (append-only), Daphne and Celery workers (prefork, 1 process each, the
built-in model on CPU) on free ports with the database and media in a temporary folder. For each
worker count it first runs the reference design's "10 parallel requests" baseline (10 clients, one
job each, all sent at once), then each N: N clients connect, each submits `--jobs-per-client` jobs
back to back (waiting for each `queued`) and waits for their `generation_complete`. Per row:

  * jobs/min: completed jobs / (last completion - first submission) x 60;
  * queued p50/p95: submission -> `queued` (the job is saved and on the Redis queue);
  * done p50/p95: submission -> `generation_complete` on the submitting connection;
  * refused: submissions never queued (websocket handshake failed, or an `error` answer);
  * lost: jobs answered `queued` that did not end `succeeded` with their event received (must be 0).

Jobs are private by default (each client watches its own jobs, as scripts do); `--public` sends
every event to the lobby, so every client receives every job's progress and base64 video (the
fan-out cost grows with N x jobs). Everything shares this machine's cores: the table measures the
whole service on one host, not a GPU farm.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.stack import BIN, WS_MAX_MESSAGE_BYTES, Proc, free_port  # noqa: E402

TERMINAL = {"generation_complete", "generation_failed", "cancelled"}


def pct(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class Service:
    def __init__(self, tmp: Path):
        import os
        import subprocess

        self.tmp = tmp
        redis_port, web_port = free_port(), free_port()
        (tmp / "redis").mkdir()
        self.env = dict(os.environ, DJANGO_SETTINGS_MODULE="videoservice.settings",
                        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", DATABASE_URL=f"sqlite:///{tmp}/db.sqlite3",
                        MEDIA_ROOT=str(tmp / "media"), PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING",
                        OMP_NUM_THREADS="1", WEBSOCKET_MAX_MESSAGE_BYTES=str(WS_MAX_MESSAGE_BYTES),
                        MAX_QUEUED_JOBS="5000", MAX_QUEUED_PER_OWNER="1000", SUBMISSIONS_PER_MINUTE="100000",
                        WS_MESSAGES_PER_MINUTE="100000", CHANNEL_CAPACITY="5000")
        self.env.pop("DEBUG", None)
        self.base = f"http://127.0.0.1:{web_port}"
        self.ws = f"ws://127.0.0.1:{web_port}/ws/lobby/"
        self.workers: list = []
        self.redis = Proc("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir",
                                    str(tmp / "redis"), "--appendonly", "yes", "--save", ""], self.env, tmp)
        time.sleep(0.5)
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=self.env,
                       check=True)
        self.web = Proc("web", [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(web_port),
                                "--websocket-max-message-size", str(WS_MAX_MESSAGE_BYTES),
                                "--websocket-max-frame-size", str(WS_MAX_MESSAGE_BYTES),
                                "videoservice.asgi:application"], self.env, tmp)

    def add_worker(self) -> None:
        n = len(self.workers) + 1
        self.workers.append(Proc(f"worker{n}", [
            str(BIN / "celery"), "-A", "worker", "worker", "-P", "prefork", "-c", "1", "-Q", "builtin", "-E",
            "-n", f"bench{n}@%h", "--without-mingle", "--without-gossip", "--loglevel", "WARNING"], self.env, self.tmp))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if len(get_json(self.base + "/healthz?timeout=1")["workers"]) >= len(self.workers):
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise SystemExit(f"worker {n} did not come up; logs in {self.tmp}")

    def statuses(self, job_ids: list) -> dict:
        """Each job's status from the database (private jobs are not visible to an anonymous HTTP GET)."""
        import sqlite3

        with sqlite3.connect(self.tmp / "db.sqlite3", timeout=30) as db:
            rows = dict(db.execute("SELECT id, status FROM videoservice_job").fetchall())
        return {j: rows.get(uuid.UUID(j).hex) for j in job_ids}

    def stop(self) -> None:
        for proc in [*reversed(self.workers), self.web, self.redis]:
            proc.stop(grace=20)


async def client(svc: Service, n_jobs: int, params: dict, private: bool, go: asyncio.Event, records: list):
    async with websockets.connect(svc.ws, origin=svc.base, max_size=None, max_queue=None, open_timeout=60) as ws:
        await go.wait()
        mine = {}
        pending_rid = {}
        for i in range(n_jobs):
            rid = uuid.uuid4().hex
            rec = {"submit": time.monotonic(), "queued": None, "done": None, "status": None, "job_id": None}
            pending_rid[rid] = rec
            await ws.send(json.dumps({"type": "generate", "request_id": rid, "prompt": f"a red square moving right {i}",
                                      "private": private, **params}))
            while rec["queued"] is None and rec["status"] is None:  # back to back: each waits for its `queued`
                await handle(json.loads(await asyncio.wait_for(ws.recv(), 300)), pending_rid, mine)
            records.append(rec)
        while any(r["status"] is None for r in mine.values()):
            await handle(json.loads(await asyncio.wait_for(ws.recv(), 600)), pending_rid, mine)


async def handle(msg: dict, pending_rid: dict, mine: dict) -> None:
    now = time.monotonic()
    kind = msg.get("type")
    if kind in ("queued", "error") and msg.get("request_id") in pending_rid:
        rec = pending_rid.pop(msg["request_id"])
        if kind == "queued":
            rec["queued"], rec["job_id"] = now, msg["job_id"]
            mine[msg["job_id"]] = rec
        else:
            rec["status"] = "error:" + str(msg.get("code"))
    elif kind in TERMINAL and msg.get("job_id") in mine:
        rec = mine[msg["job_id"]]
        rec["done"], rec["status"] = now, kind


async def run_row(svc: Service, n_clients: int, n_jobs: int, params: dict, private: bool) -> dict:
    go = asyncio.Event()
    records: list = []
    tasks = [asyncio.create_task(client(svc, n_jobs, params, private, go, records)) for _ in range(n_clients)]
    await asyncio.sleep(0.2 + n_clients * 0.01)  # let every client connect before the starting gun
    t0 = time.monotonic()
    go.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    done = [r for r in records if r["status"] == "generation_complete"]
    statuses = svc.statuses([r["job_id"] for r in records if r["job_id"]])
    submitted = n_clients * n_jobs
    accepted = [r for r in records if r["job_id"]]  # answered `queued`: the service owes them a video
    lost = len(accepted) - sum(1 for r in done if statuses.get(r["job_id"]) == "succeeded")
    span = (max(r["done"] for r in done) - t0) if done else float("nan")
    return {
        "clients": n_clients, "jobs": submitted, "completed": len(done), "lost": lost,
        "refused": submitted - len(accepted),  # never queued: connection refused or `error` answered
        "client_errors": [repr(e)[:200] for e in errors],
        "jobs_per_min": len(done) / span * 60 if done else 0.0, "span_s": span,
        "queued_p50_ms": pct([(r["queued"] - r["submit"]) * 1e3 for r in records if r["queued"]], 50),
        "queued_p95_ms": pct([(r["queued"] - r["submit"]) * 1e3 for r in records if r["queued"]], 95),
        "done_p50_s": pct([r["done"] - r["submit"] for r in done], 50),
        "done_p95_s": pct([r["done"] - r["submit"] for r in done], 95),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="10,50,100")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--jobs-per-client", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--public", action="store_true", help="lobby jobs: every client receives every event")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    params = {"num_frames": args.frames, "width": args.size, "height": args.size, "steps": args.steps, "seed": 1}
    worker_counts = sorted(int(w) for w in args.workers.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    svc = Service(tmp)
    rows = []
    try:
        for n_workers in worker_counts:
            while len(svc.workers) < n_workers:
                svc.add_worker()
            asyncio.run(run_row(svc, 2 * n_workers, 1, params, True))  # warm-up: each worker loads the model
            plan = [("10 parallel requests (baseline)", 10, 1)]
            plan += [(f"{n} clients x {args.jobs_per_client} jobs", n, args.jobs_per_client)
                     for n in (int(c) for c in args.clients.split(","))]
            for label, n_clients, n_jobs in plan:
                row = asyncio.run(run_row(svc, n_clients, n_jobs, params, not args.public))
                row.update(label=label, workers=n_workers)
                rows.append(row)
                print(f"  {n_workers} worker(s), {label}: {row['completed']}/{row['jobs']} in {row['span_s']:.1f} s,"
                      f" lost {row['lost']}", file=sys.stderr, flush=True)
    finally:
        svc.stop()
    print(f"\njobs: {args.frames} frames {args.size}x{args.size}, {args.steps} steps, built-in model on CPU; "
          f"{'public (lobby)' if args.public else 'private'} jobs; workers: prefork -c 1 each\n")
    print("| workers | load | completed | jobs/min | queued p50 ms | queued p95 ms | done p50 s | done p95 s "
          "| refused | lost |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['label']} | {r['completed']}/{r['jobs']} | {r['jobs_per_min']:.0f} | "
              f"{r['queued_p50_ms']:.0f} | {r['queued_p95_ms']:.0f} | {r['done_p50_s']:.2f} | {r['done_p95_s']:.2f} | "
              f"{r['refused']} | {r['lost']} |")
    errors = [e for r in rows for e in r["client_errors"]]
    if errors:
        print("\nclient errors:", *errors[:5], sep="\n  ")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if any(r["lost"] or r["refused"] for r in rows):
        raise SystemExit(f"jobs were lost or refused; logs kept in {tmp}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
