"""Service benchmark: what the queue + broadcast path costs on top of the model, and fan-out.

    python bench/bench_service.py [--jobs 20] [--width 128 --height 128 --frames 16 --steps 10]
                                  [--subscribers 1,10,100] [--video-mb 2]

Starts its own redis-server, Celery worker (prefork, 1 process) and Daphne on free ports, with
the database and media in a temporary folder, and prints markdown tables:

  * overhead: the same generation (same prompt, settings, seed) called directly in this process
    (`get_backend().generate` + PyAV encode) vs submitted over the websocket and received as
    `generation_complete` (base64 MP4 included), interleaved with the direct runs, one job at a time; p50 / p95 in ms, the
    ratio and the difference;
  * fan-out: a `generation_complete` event carrying a ~2 MB video (random bytes, base64) sent
    once to the lobby group through the channel layer; time until the first and the last of N
    websocket subscribers has received it (p50 over a few rounds).

Both tiers share this machine's cores, so the overhead includes their competition for CPU.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
MAX_MSG = 64 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


class Service:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        redis_port, web_port = free_port(), free_port()
        self.env = dict(os.environ, DJANGO_SETTINGS_MODULE="videoservice.settings",
                        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", DATABASE_URL=f"sqlite:///{tmp}/db.sqlite3",
                        MEDIA_ROOT=str(tmp / "media"), PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING",
                        WEBSOCKET_MAX_MESSAGE_BYTES=str(MAX_MSG), MAX_QUEUED_PER_OWNER="1000")
        self.base = f"http://127.0.0.1:{web_port}"
        self.ws = f"ws://127.0.0.1:{web_port}/ws/lobby/"
        self.procs = []
        self._start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"])
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=self.env, check=True)
        self._start("worker", [str(BIN / "celery"), "-A", "worker", "worker", "-P", "prefork", "-c", "1", "-Q",
                               "builtin", "-E", "-n", "bench@%h", "--without-mingle", "--without-gossip"])
        self._start("web", [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(web_port),
                            "--websocket-max-message-size", str(MAX_MSG), "--websocket-max-frame-size", str(MAX_MSG),
                            "videoservice.asgi:application"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/healthz?timeout=1", timeout=5) as r:
                    if json.loads(r.read())["workers"]:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit("service did not become ready; logs in " + str(tmp))

    def _start(self, name, argv):
        log = open(self.tmp / f"{name}.log", "wb")
        self.procs.append(subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


async def overhead_times(svc, args, n):
    """Direct and service runs interleaved (direct, service, direct, ...) so background load hits both."""
    import websockets
    from generator.encode import encode_video
    from generator.interface import GenerationRequest, get_backend

    backend = get_backend("builtin")
    req = GenerationRequest(prompt=args.prompt, num_frames=args.frames, width=args.width, height=args.height,
                            steps=args.steps, seed=1, fps=8.0)
    msg = {"type": "generate", "prompt": args.prompt, "num_frames": args.frames, "width": args.width,
           "height": args.height, "steps": args.steps, "seed": 1, "fps": 8.0}
    direct, service = [], []
    async with websockets.connect(svc.ws, origin=svc.base, max_size=None) as ws:
        for i in range(n + 1):  # round 0 warms both up
            t = time.perf_counter()
            result = backend.generate(req, progress=lambda *a: None, should_cancel=lambda: False)
            encode_video(result.frames, result.fps)
            d = time.perf_counter() - t
            t = time.perf_counter()
            await ws.send(json.dumps(msg))
            while True:
                m = json.loads(await ws.recv())
                if m["type"] in ("generation_complete", "generation_failed", "error"):
                    break
            if m["type"] != "generation_complete":
                raise SystemExit(f"job failed: {m}")
            if i:
                direct.append(d)
                service.append(time.perf_counter() - t)
    return direct, service


async def fanout(svc, n_subs, video_bytes, rounds=3):
    import websockets
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    payload = base64.b64encode(os.urandom(video_bytes)).decode()
    conns = [await websockets.connect(svc.ws, origin=svc.base, max_size=None) for _ in range(n_subs)]
    firsts, lasts = [], []
    try:
        await asyncio.sleep(0.5)
        for r in range(rounds):
            job_id = f"bench-{n_subs}-{r}"
            done = []

            async def wait(ws):
                while True:
                    m = json.loads(await ws.recv())
                    if m.get("job_id") == job_id:
                        done.append(time.perf_counter())
                        return

            waiters = [asyncio.create_task(wait(ws)) for ws in conns]
            t = time.perf_counter()
            await layer.group_send("lobby", {"type": "job.event", "event": {
                "type": "generation_complete", "job_id": job_id, "prompt": "bench", "video": payload,
                "mime": "video/mp4"}})
            await asyncio.wait_for(asyncio.gather(*waiters), 120)
            firsts.append(min(done) - t)
            lasts.append(max(done) - t)
    finally:
        for ws in conns:
            await ws.close()
    return statistics.median(firsts), statistics.median(lasts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--prompt", default="a red circle moving to the right")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--subscribers", default="1,10,100")
    ap.add_argument("--video-mb", type=float, default=2.0)
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed")

    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    svc = Service(tmp)
    try:
        for key, value in svc.env.items():  # this process talks to the same Redis (channel layer)
            if key in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "DATABASE_URL", "MEDIA_ROOT"):
                os.environ[key] = value
        import django
        django.setup()

        direct, service = asyncio.run(overhead_times(svc, args, args.jobs))
        d50, d95 = pct(direct, 50) * 1e3, pct(direct, 95) * 1e3
        s50, s95 = pct(service, 50) * 1e3, pct(service, 95) * 1e3
        print(f"\n### Service overhead ({args.jobs} jobs, {args.width}x{args.height}, {args.frames} frames, "
              f"{args.steps} steps, builtin, interleaved, one at a time)\n")
        print("| path | p50 ms | p95 ms |\n|---|---:|---:|")
        print(f"| direct (generate + encode in one process) | {d50:.0f} | {d95:.0f} |")
        print(f"| service (websocket -> Celery -> worker -> broadcast) | {s50:.0f} | {s95:.0f} |")
        print(f"| ratio service / direct | {s50 / d50:.2f} | {s95 / d95:.2f} |")
        print(f"| difference | {s50 - d50:.0f} | {s95 - d95:.0f} |")

        size = int(args.video_mb * 1024 * 1024)
        print(f"\n### Fan-out of one completion with a {args.video_mb:g} MB video "
              f"({len(base64.b64encode(bytes(size))) / 1e6:.1f} MB base64), median of 3\n")
        print("| subscribers | first received ms | last received ms |\n|---:|---:|---:|")
        for n in [int(x) for x in args.subscribers.split(",") if x]:
            first, last = asyncio.run(fanout(svc, n, size))
            print(f"| {n} | {first * 1e3:.0f} | {last * 1e3:.0f} |", flush=True)
    finally:
        svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
