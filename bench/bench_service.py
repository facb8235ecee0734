"""Service benchmark: what the queue + broadcast path costs on top of the model, streaming, and fan-out.

    python -m bench.bench_service [--jobs 10] [--subscribers 1,10,100] [--video-mb 2]
                                  [--memory-subscribers 200 --memory-video-mb 5] [--chunks 8] [--rounds 3]
                                  [--only overhead,streaming,fanout,memory]

Builds its own service on the shared harness (tests/support/stack.py: redis-server, Celery worker,
Daphne on free ports, everything in a temporary folder) and prints markdown tables:

  * overhead: the same generation called directly in this process (generate + encode) vs submitted
    over one warm websocket connection, as a client sees it (`queued`, `started`,
    `generation_complete`), interleaved, one job at a time;
  * streaming: an N-chunk long video on the built-in model (default settings) on a streaming stack
    and on a stack with STREAM_VIDEO=0, interleaved: time to the first `video_chunk` against the
    time of a 1-chunk job, total time, and the stalls a viewer playing the chunks as they arrive at
    the video's fps would see;
  * fan-out: one completion with a ~2 MB video (random bytes, base64) to N websocket subscribers, two
    ways side by side: "shared" (videoservice/bus.py: serialized once, stored once in Redis, fetched
    once per Daphne process) and "per subscriber" (the event inline in the channel-layer message, so
    every subscriber receives and serializes its own copy: the message format before fanout.py),
    and shared to subscribers that asked for binary frames (?binary=1: the video as raw bytes);
  * memory: Daphne's peak resident memory growth while M subscribers receive a 5 MB completion, for
    each way, each on a fresh Daphne.

Everything shares this machine's cores; compare the ratios.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import websockets

from generator.builtin.info import INFO  # (torch-free)
from tests.support.stack import Stack

# the built-in model's default clip, spelled out so every job of a comparison asks for the same
DEFAULT_CLIP = {"num_frames": INFO.default_frames, "width": INFO.default_width, "height": INFO.default_height,
                "steps": INFO.default_steps, "fps": INFO.default_fps}


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def stalls(arrivals: list, fps: float) -> tuple:
    """(number of stalls, seconds stalled, start-up buffer) for a viewer who starts at the first
    chunk's arrival and plays each chunk's frames at `fps`, pausing whenever the next chunk is not
    there yet; the buffer is how long after the first chunk a viewer must wait before playing to
    see no stall at all. `arrivals`: (arrival time, frames in the chunk) in order."""
    t0 = arrivals[0][0]
    due, stalled, count = t0, 0.0, 0  # when the next chunk's first frame is due
    buffer, played = 0.0, 0
    for arrival, frames in arrivals:
        if arrival > due + 1e-3:
            count += 1
            stalled += arrival - due
            due = arrival
        due += frames / fps
        buffer = max(buffer, arrival - t0 - played / fps)
        played += frames
    return count, stalled, buffer


async def timed_job(ws_url: str, origin: str, fields: dict) -> dict:
    """Submit one job; submission -> first video_chunk, -> completion, and the chunks' arrivals."""
    async with websockets.connect(ws_url, origin=origin, max_size=None) as ws:
        t = time.perf_counter()
        await ws.send(json.dumps({"type": "generate", "prompt": "a red circle moving to the right", "seed": 1,
                                  **fields}))
        out = {"chunks": []}
        while True:
            m = json.loads(await ws.recv())
            now = time.perf_counter() - t
            if m["type"] == "video_chunk":
                out["chunks"].append((now, m["num_frames"]))
            elif m["type"] in ("generation_complete", "generation_failed", "error"):
                if m["type"] != "generation_complete":
                    raise SystemExit(f"job failed: {m}")
                out["total"] = now
                out["fps"] = m["fps"]
                return out


async def overhead_times(stack, args):
    """Direct and service runs interleaved (direct, service, direct, ...) so background load hits both.
    The service is measured as a client sees it: one warm websocket connection (opened once, as the
    web UI's), the time from sending `generate` to `queued`, `started` and `generation_complete`."""
    import torch

    from generator.encode import encode_video
    from generator.interface import GenerationRequest, get_backend

    torch.set_num_threads(args.threads)  # as many as the worker's (OMP_NUM_THREADS below)
    clip = {"num_frames": 16, "width": 128, "height": 128, "steps": 10, "fps": 8}
    backend = get_backend("builtin")
    req = GenerationRequest(prompt="a red circle moving to the right", seed=1, **clip)
    rows = {"direct": [], "queued": [], "started": [], "complete": []}
    async with websockets.connect(stack.ws, origin=stack.origin, max_size=None) as ws:
        for i in range(args.jobs + 1):  # round 0 warms both up
            t = time.perf_counter()
            result = backend.generate(req, progress=lambda *a: None, should_cancel=lambda: False)
            encode_video(result.frames, result.fps)
            direct = time.perf_counter() - t
            t = time.perf_counter()
            await ws.send(json.dumps({"type": "generate", "prompt": req.prompt, "seed": 1, **clip}))
            seen = {}
            while "complete" not in seen:
                m = json.loads(await ws.recv())
                key = {"queued": "queued", "started": "started", "generation_complete": "complete"}.get(m["type"])
                if key and key not in seen:
                    seen[key] = time.perf_counter() - t
                if m["type"] in ("generation_failed", "error"):
                    raise SystemExit(f"job failed: {m}")
            if i:
                rows["direct"].append(direct)
                for key, value in seen.items():
                    rows[key].append(value)
    return rows


async def streaming_rows(streaming: Stack, plain: Stack, args):
    long = {**DEFAULT_CLIP, "num_chunks": args.chunks}
    rows = {"one": [], "first": [], "stream_total": [], "plain_total": [], "stalls": [], "stalled": [], "buffer": []}
    await timed_job(streaming.ws, streaming.origin, DEFAULT_CLIP)  # warm-up
    await timed_job(plain.ws, plain.origin, DEFAULT_CLIP)
    for _ in range(args.rounds):
        rows["one"].append((await timed_job(streaming.ws, streaming.origin, DEFAULT_CLIP))["total"])
        run = await timed_job(streaming.ws, streaming.origin, long)
        rows["first"].append(run["chunks"][0][0])
        rows["stream_total"].append(run["total"])
        count, stalled, buffer = stalls(run["chunks"], run["fps"])
        rows["stalls"].append(count)
        rows["stalled"].append(stalled)
        rows["buffer"].append(buffer)
        rows["plain_total"].append((await timed_job(plain.ws, plain.origin, long))["total"])
    return {k: statistics.median(v) for k, v in rows.items()}


async def fanout(stack, web: str, n_subs: int, video_bytes: int, way: str, rounds: int = 3) -> tuple:
    from channels.layers import get_channel_layer

    from videoservice import bus

    payload = base64.b64encode(os.urandom(video_bytes)).decode()
    url = stack.ws_url(web) + ("?binary=1" if way == "binary" else "")
    conns = [await websockets.connect(url, origin=stack.url(web), max_size=None, max_queue=None)
             for _ in range(n_subs)]
    firsts, lasts = [], []
    try:
        await asyncio.sleep(0.5)
        for r in range(rounds):
            job_id = f"bench-{uuid.uuid4().hex}"
            event = {"type": "generation_complete", "job_id": job_id, "prompt": "bench", "video": payload,
                     "mime": "video/mp4"}
            done = []

            marker = f'"job_id":"{job_id}"'.encode()

            async def wait(ws):
                # the time the whole message has arrived; what a subscriber then does with 2.8 MB of
                # JSON is the client's cost, not the fan-out's (the ids sit ahead of the video)
                while True:
                    raw = await ws.recv(decode=False)
                    if marker in raw[:400].replace(b" ", b""):
                        done.append(time.perf_counter())
                        return

            waiters = [asyncio.create_task(wait(ws)) for ws in conns]
            t = time.perf_counter()
            if way in ("shared", "binary"):
                await asyncio.get_running_loop().run_in_executor(None, bus.publish, "lobby", event)
            else:
                await get_channel_layer().group_send("lobby", {"type": "job.event", "event": event})
            await asyncio.wait_for(asyncio.gather(*waiters), 300)
            firsts.append(min(done) - t)
            lasts.append(max(done) - t)
    finally:
        for ws in conns:
            await ws.close()
    return statistics.median(firsts), statistics.median(lasts)


def rss_kib(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--subscribers", default="1,10,100")
    ap.add_argument("--video-mb", type=float, default=2.0)
    ap.add_argument("--memory-subscribers", type=int, default=200)
    ap.add_argument("--memory-video-mb", type=float, default=5.0)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="overhead,streaming,fanout,memory")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch threads, in the direct runs and in the worker (the test harness uses 1)")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed")

    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    roomy = {"MAX_QUEUED_PER_OWNER": "1000", "MAX_QUEUED_PER_ADDRESS": "1000", "SUBMISSIONS_PER_MINUTE": "0",
             "WS_MESSAGES_PER_MINUTE": "0", "LOG_LEVEL": "WARNING", "CHANNEL_CAPACITY": "5000",
             "OMP_NUM_THREADS": str(args.threads)}
    stack = Stack(tmp / "a", env=roomy)
    plain = None
    try:
        stack.start(worker_queues="builtin")
        for key in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "DATABASE_URL", "MEDIA_ROOT"):
            os.environ[key] = stack.env[key]  # this process talks to the same Redis (channel layer, bus)
        import django
        django.setup()

        if "overhead" in parts:
            rows = asyncio.run(overhead_times(stack, args))
            d50 = pct(rows["direct"], 50) * 1e3
            print(f"\n### Service overhead ({args.jobs} jobs, 128x128, 16 frames, 10 steps, builtin, interleaved; "
                  "a warm websocket client)\n")
            print("| path | p50 ms | p95 ms | p50 / direct |\n|---|---:|---:|---:|")
            print(f"| direct (generate + encode in one process) | {d50:.0f} | {pct(rows['direct'], 95) * 1e3:.0f} "
                  "| 1.00 |")
            for key, what in (("queued", "`generate` -> `queued`"), ("started", "`generate` -> `started`"),
                              ("complete", "`generate` -> `generation_complete` (decoded base64 MP4)")):
                p50 = pct(rows[key], 50) * 1e3
                print(f"| service: {what} | {p50:.0f} | {pct(rows[key], 95) * 1e3:.0f} | {p50 / d50:.2f} |",
                      flush=True)

        if "streaming" in parts:
            plain = Stack(tmp / "b", env={**roomy, "STREAM_VIDEO": "0"})
            plain.start(worker_queues="builtin")
            r = asyncio.run(streaming_rows(stack, plain, args))
            print(f"\n### Streaming: {args.chunks}-chunk long video, default clip ({DEFAULT_CLIP['num_frames']} frames "
                  f"{DEFAULT_CLIP['width']}x{DEFAULT_CLIP['height']}, {DEFAULT_CLIP['steps']} steps, "
                  f"{DEFAULT_CLIP['fps']:g} fps), builtin, median of {args.rounds}, interleaved\n")
            print("| measure | s | ratio |\n|---|---:|---:|")
            print(f"| 1-chunk job, submission -> complete | {r['one']:.2f} | 1.00 |")
            print(f"| {args.chunks}-chunk job, submission -> first video_chunk | {r['first']:.2f} | "
                  f"{r['first'] / r['one']:.2f} x the 1-chunk job |")
            print(f"| {args.chunks}-chunk job, total, streaming | {r['stream_total']:.2f} | "
                  f"{r['stream_total'] / r['plain_total']:.3f} x without streaming |")
            print(f"| {args.chunks}-chunk job, total, STREAM_VIDEO=0 | {r['plain_total']:.2f} | 1.000 |")
            print(f"| stalls a viewer sees at the video's fps | {r['stalls']:.0f} stalls, {r['stalled']:.2f} s | |")
            print(f"| wait after the first chunk that plays without a stall | {r['buffer']:.2f} | "
                  f"{r['buffer'] / r['stream_total']:.2f} x the total |", flush=True)
            plain.stop()

        size = int(args.video_mb * 1024 * 1024)
        if "fanout" in parts:
            print(f"\n### Fan-out of one completion with a {args.video_mb:g} MB video "
                  f"({len(base64.b64encode(bytes(size))) / 1e6:.1f} MB base64), median of 3\n")
            print("| subscribers | shared: first ms | shared: last ms | per subscriber: first ms | "
                  "per subscriber: last ms | last, per subscriber / shared | shared, binary frames (?binary=1): "
                  "last ms |\n|---:|---:|---:|---:|---:|---:|---:|")
            for n in [int(x) for x in args.subscribers.split(",") if x]:
                s_first, s_last = asyncio.run(fanout(stack, "web", n, size, "shared"))
                p_first, p_last = asyncio.run(fanout(stack, "web", n, size, "per-subscriber"))
                _, b_last = asyncio.run(fanout(stack, "web", n, size, "binary"))
                print(f"| {n} | {s_first * 1e3:.0f} | {s_last * 1e3:.0f} | {p_first * 1e3:.0f} | {p_last * 1e3:.0f} | "
                      f"{p_last / s_last:.1f} | {b_last * 1e3:.0f} |", flush=True)

        if "memory" in parts:
            big = int(args.memory_video_mb * 1024 * 1024)
            print(f"\n### Daphne's memory while {args.memory_subscribers} subscribers receive one completion with "
                  f"a {args.memory_video_mb:g} MB video (a fresh Daphne each)\n")
            print("| way | RSS before MiB | peak MiB | growth MiB |\n|---|---:|---:|---:|")
            growth = {}
            for way in ("shared", "per-subscriber"):
                name = f"mem-{way}"
                web = stack.start_web(name)
                stack.wait_healthy(web=name, workers=[])
                before = rss_kib(web.pid)["VmRSS"]
                asyncio.run(fanout(stack, name, args.memory_subscribers, big, way, rounds=1))
                peak = rss_kib(web.pid)["VmHWM"]
                growth[way] = (peak - before) / 1024
                print(f"| {way} | {before / 1024:.0f} | {peak / 1024:.0f} | {growth[way]:.0f} |", flush=True)
                web.stop()
            print(f"| ratio shared / per subscriber | | | {growth['shared'] / growth['per-subscriber']:.2f} |")
    finally:
        if plain is not None:
            plain.stop()
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
