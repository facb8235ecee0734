"""Load benchmark: N websocket clients submitting jobs against 1 and 2 Celery workers.

    .venv/bin/python -m bench.bench_load            # rows for 10, 50, 100 clients x 1 and 2 workers

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

from tests.support.stack import Stack

TERMINAL = {"generation_complete", "generation_failed", "cancelled"}


def pct(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class Service(Stack):
    """The stack (tests/support/stack.py) with limits opened for the load, and workers added one by one."""

    def __init__(self, tmp: Path, env: dict | None = None):
        super().__init__(tmp, env={"LOG_LEVEL": "WARNING", "MAX_QUEUED_JOBS": "5000", "MAX_QUEUED_PER_OWNER": "1000",
                                   "MAX_QUEUED_PER_ADDRESS": "5000", "SUBMISSIONS_PER_MINUTE": "100000",
                                   "WS_MESSAGES_PER_MINUTE": "100000", "CHANNEL_CAPACITY": "5000", **(env or {})},
                         persist_redis=True)
        self.start_redis()
        self.migrate()
        self.start_web()

    def add_worker(self) -> None:
        n = len(self.workers) + 1
        self.start_worker(f"bench{n}", "builtin", wait=False)
        self.wait_healthy(workers=[w.node for w in self.workers.values()], timeout=180)

    def statuses(self, job_ids: list) -> dict:
        """Each job's status from the database (private jobs are not visible to an anonymous HTTP GET)."""
        return {j: self.row(j)["status"] for j in job_ids}


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


async def fair_share_row(svc: Service, heavy_jobs: int, light_owners: int, params: dict) -> dict:
    """One heavy owner queues `heavy_jobs` back to back, then `light_owners` owners one job each:
    how long the light owners' jobs waited (queued -> started), from the database."""
    async def owner(n_jobs: int, go: asyncio.Event, ids: list):
        async with websockets.connect(svc.ws, origin=svc.base, max_size=None, max_queue=None) as ws:
            await go.wait()
            for i in range(n_jobs):
                await ws.send(json.dumps({"type": "generate", "prompt": f"a blue circle moving up {i}", "private": True,
                                          "request_id": str(i), **params}))
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 300))
                    if msg.get("request_id") == str(i):
                        ids.append(msg["job_id"])
                        break
            while True:  # until this owner's jobs are done
                if all(svc.row(j)["status"] in ("succeeded", "failed", "cancelled") for j in ids):
                    return
                await asyncio.sleep(0.5)

    heavy, light = [], []
    go_heavy, go_light = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(owner(heavy_jobs, go_heavy, heavy))]
    tasks += [asyncio.create_task(owner(1, go_light, light)) for _ in range(light_owners)]
    await asyncio.sleep(0.5)
    go_heavy.set()
    while len(heavy) < heavy_jobs:
        await asyncio.sleep(0.05)
    go_light.set()
    await asyncio.gather(*tasks)

    def waits(ids):
        from datetime import datetime

        rows = [svc.row(j) for j in ids]
        return [(datetime.fromisoformat(str(r["started_at"])) - datetime.fromisoformat(str(r["created_at"])))
                .total_seconds() for r in rows]
    light_waits, heavy_waits = waits(light), waits(heavy)
    return {"light_p95_s": pct(light_waits, 95), "light_mean_s": sum(light_waits) / len(light_waits),
            "heavy_p95_s": pct(heavy_waits, 95)}


def fair_share(args, params: dict) -> None:
    rows = {}
    for order in ("fifo", "fair"):
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-fair-{order}-"))
        svc = Service(tmp, env={"DISPATCH_ORDER": order})
        try:
            svc.add_worker()
            asyncio.run(run_row(svc, 2, 1, params, True))  # warm-up
            rows[order] = asyncio.run(fair_share_row(svc, args.heavy_jobs, args.light_owners, params))
        finally:
            svc.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n### Fair share: one owner queues {args.heavy_jobs} jobs, then {args.light_owners} owners one each "
          f"(1 worker; {args.frames} frames {args.size}x{args.size}, {args.steps} steps)\n")
    print("| order | light owners' wait p95 s | light mean s | heavy owner's wait p95 s |\n|---|---:|---:|---:|")
    for order, r in rows.items():
        print(f"| {order} | {r['light_p95_s']:.2f} | {r['light_mean_s']:.2f} | {r['heavy_p95_s']:.2f} |")
    print(f"| ratio fair / fifo (light p95) | {rows['fair']['light_p95_s'] / rows['fifo']['light_p95_s']:.2f} | | |")


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
    ap.add_argument("--fair-share", action="store_true", help="only the fair-share row (FIFO vs fair, side by side)")
    ap.add_argument("--heavy-jobs", type=int, default=20)
    ap.add_argument("--light-owners", type=int, default=5)
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    params = {"num_frames": args.frames, "width": args.size, "height": args.size, "steps": args.steps, "seed": 1}
    if args.fair_share:
        fair_share(args, params)
        return
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
