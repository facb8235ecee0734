"""Live benchmark: a live job on the built-in model against today's long-video path, side by side.

    python -m bench.bench_live [--seconds 60] [--soak-minutes 10] [--size 256] [--chunks 8]
                               [--only live,overhead,soak]

Builds its own services on the shared harness (tests/support/stack.py) and prints markdown tables:

  * live vs long video (one websocket client, as a viewer who starts playing at the first chunk):
    submit -> first streamed frame; real-time factor (seconds of video made per wall-clock second)
    over `--seconds` with pacing off (what the model and the service can make) and the stalls and
    stalled seconds a viewer sees with the default pacing (LIVE_MAX_LEAD_S); steer latency: from the
    `steer` message to the first streamed frame made under it, in seconds and in frames the viewer
    plays meanwhile. Beside it, an N-chunk long video of the same clip: first chunk, real-time
    factor, stalls (it cannot be steered).
  * overhead per chunk: the same chunks made in this process by generator.live.LiveVideo (the
    model alone) against the service's chunk interval with pacing off, measured what a warm
    websocket client sees (the time between consecutive video_chunk arrivals); alternated for
    `--rounds` rounds so that a change in the machine's load hits both. Both sides run torch with
    `--threads` threads (default: one per core, as `./scripts/serve.sh` does): the test harness's
    OMP_NUM_THREADS=1 made the worker's model 1.3x slower than the same model here.
  * soak: the RSS of the worker (main + pool process) and of Daphne at 1, 5 and 10 minutes of one
    paced live session (no growth per chunk).

Everything shares this machine's cores; compare the ratios. The models alone, the built-in v2 and
v3 side by side (first frame, frame rate, stalls, steer, drift over minutes): bench/bench_live_models.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import websockets

from bench.bench_service import rss_kib, stalls
from generator.builtin.info import INFO  # (torch-free)
from tests.support.stack import Stack

PROMPT, STEERED = "a red circle moving right", "a red circle moving up"
ROOMY = {"MAX_QUEUED_PER_OWNER": "1000", "SUBMISSIONS_PER_MINUTE": "0", "WS_MESSAGES_PER_MINUTE": "0",
         "LOG_LEVEL": "WARNING", "LIVE_IDLE_S": "120", "LIVE_MAX_PER_OWNER": "10"}


class Viewer:
    """One warm websocket connection: every message with its arrival time."""

    def __init__(self, stack: Stack):
        self.stack, self.seen = stack, []

    async def __aenter__(self):
        self.ws = await websockets.connect(self.stack.ws, origin=self.stack.origin, max_size=None)
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc):
        self.reader.cancel()
        await self.ws.close()

    async def _read(self):
        async for text in self.ws:
            self.seen.append((time.perf_counter(), json.loads(text)))

    async def send(self, msg: dict) -> float:
        t = time.perf_counter()
        await self.ws.send(json.dumps(msg))
        return t

    async def until(self, pred, timeout: float = 600):
        deadline = time.monotonic() + timeout
        start = 0
        while time.monotonic() < deadline:
            for i in range(start, len(self.seen)):
                if pred(self.seen[i][1]):
                    return self.seen[i]
            start = len(self.seen)
            await asyncio.sleep(0.02)
        raise SystemExit(f"timed out; last: {[m['type'] for _, m in self.seen[-10:]]}")

    def chunks(self, job_id: str) -> list:
        return [(t, m) for t, m in self.seen if m.get("job_id") == job_id and m["type"] == "video_chunk"]


async def live_run(stack: Stack, clip: dict, seconds: float, steer_at: float | None) -> dict:
    """A live job watched for `seconds` after its first chunk (steered `steer_at` s after it), then stopped."""
    async with Viewer(stack) as v:
        t0 = await v.send({"type": "generate", "prompt": PROMPT, "live": True, "seed": 1, **clip})
        queued = (await v.until(lambda m: m["type"] in ("queued", "error")))[1]
        if queued["type"] != "queued":
            raise SystemExit(f"refused: {queued}")
        job_id = queued["job_id"]
        first_at, _ = await v.until(lambda m: m.get("job_id") == job_id and m["type"] == "video_chunk")
        out = {"first": first_at - t0}
        if steer_at is not None:
            await asyncio.sleep(steer_at)
            sent = await v.send({"type": "steer", "job_id": job_id, "prompt": STEERED})
            steered_at, steered = await v.until(lambda m: m.get("job_id") == job_id and m["type"] == "steered")
            out["steer_s"] = steered_at - sent
            out["steer_from"], out["steer_sent"] = steered["from_frame"], sent
        await asyncio.sleep(max(0.0, first_at + seconds - time.perf_counter()))
        await v.send({"type": "stop", "job_id": job_id})
        await v.until(lambda m: m.get("job_id") == job_id and m["type"] in ("generation_complete", "generation_failed"))
        chunks = v.chunks(job_id)
        fps = clip["fps"]
        made = chunks[-1][1]["first_frame"] + chunks[-1][1]["num_frames"]
        out["rate"] = made / fps / (chunks[-1][0] - t0)
        arrivals = [(t, m["num_frames"]) for t, m in chunks]
        out["stalls"], out["stalled"], _ = stalls(arrivals, fps)
        out["intervals"] = [b[0] - a[0] for a, b in zip(chunks, chunks[1:]) if b[1]["first_frame"] > 0]
        out["worker_chunk_s"] = [m["chunk_s"] for _, m in v.seen if m.get("job_id") == job_id
                                 and m["type"] == "live_status" and m["frames"] > clip["num_frames"]]
        if steer_at is not None:  # frames the viewer plays between the steer and the steered frame
            out["steer_frames"] = out["steer_from"] - played_by(arrivals, fps, out["steer_sent"])
        return out


def played_by(arrivals: list, fps: float, when: float) -> float:
    """Frames a viewer who starts at the first chunk (and waits out each stall) has played at `when`."""
    due, played = arrivals[0][0], 0
    for arrival, frames in arrivals:
        due = max(due, arrival)
        if when < due:
            break
        played += min(frames, (when - due) * fps)
        due += frames / fps
    return played


async def warm_up(stack: Stack, clip: dict) -> None:
    """One short clip, so that the worker has loaded the model before anything is timed."""
    async with Viewer(stack) as v:
        await v.send({"type": "generate", "prompt": PROMPT, **clip, "steps": 1})
        job_id = (await v.until(lambda m: m["type"] == "queued"))[1]["job_id"]
        await v.until(lambda m: m.get("job_id") == job_id and m["type"] == "generation_complete")


async def long_run(stack: Stack, clip: dict, chunks: int) -> dict:
    async with Viewer(stack) as v:
        t0 = await v.send({"type": "generate", "prompt": PROMPT, "seed": 1, "num_chunks": chunks, **clip})
        job_id = (await v.until(lambda m: m["type"] == "queued"))[1]["job_id"]
        done_at, done = await v.until(lambda m: m.get("job_id") == job_id and m["type"] == "generation_complete")
        got = v.chunks(job_id)
        count, stalled, _ = stalls([(t, m["num_frames"]) for t, m in got], clip["fps"])
        return {"first": got[0][0] - t0, "rate": done["num_frames"] / clip["fps"] / (done_at - t0), "stalls": count,
                "stalled": stalled}


def bare_chunk_times(clip: dict, chunks: int, threads: int) -> list:
    """The model alone, in this process: seconds per chunk of generator.live.LiveVideo."""
    import torch

    from generator.interface import GenerationRequest, get_backend
    from generator.live import LiveVideo
    from generator.registry_setup import register_models

    register_models()
    torch.set_num_threads(threads)
    req = GenerationRequest(PROMPT, seed=1, **{k: v for k, v in clip.items()})
    video = LiveVideo(get_backend("builtin"), req, prompt_at=lambda i: PROMPT)
    times, t = [], time.perf_counter()
    for chunk in video:
        now = time.perf_counter()
        times.append(now - t)
        t = now
        if chunk.index == chunks:
            break
    return times[1:]  # the first includes loading the model


def worker_rss_mib(stack: Stack, name: str) -> float:
    main = stack.workers[name].pid
    pool = subprocess.run(["ps", "-o", "pid=", "--ppid", str(main)], capture_output=True, text=True).stdout.split()
    return sum(rss_kib(int(p))["VmRSS"] for p in [main, *pool]) / 1024


async def soak(stack: Stack, clip: dict, minutes: float, marks: list) -> list:
    rows = []
    async with Viewer(stack) as v:
        await v.send({"type": "generate", "prompt": PROMPT, "live": True, "seed": 1,
                      "max_duration_s": minutes * 60 + 600, **clip})
        job_id = (await v.until(lambda m: m["type"] == "queued"))[1]["job_id"]
        first, _ = await v.until(lambda m: m.get("job_id") == job_id and m["type"] == "video_chunk")
        for mark in marks:
            await asyncio.sleep(max(0.0, first + mark * 60 - time.perf_counter()))
            chunks = v.chunks(job_id)
            frames = chunks[-1][1]["first_frame"] + chunks[-1][1]["num_frames"]
            rows.append((mark, frames, worker_rss_mib(stack, "w1"), rss_kib(stack.web("web").pid)["VmRSS"] / 1024))
            print(f"| {mark:g} | {frames} | {rows[-1][2]:.0f} | {rows[-1][3]:.0f} |", flush=True)
        await v.send({"type": "stop", "job_id": job_id})
        await v.until(lambda m: m.get("job_id") == job_id and m["type"] == "generation_complete")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--soak-minutes", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=INFO.default_width)
    ap.add_argument("--chunks", type=int, default=8, help="long video: chunks; overhead: chunks timed")
    ap.add_argument("--only", default="live,overhead,soak")
    ap.add_argument("--rounds", type=int, default=3, help="overhead: rounds of model alone / service, alternated")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, here and in the worker")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed")
    clip = {"num_frames": INFO.default_frames, "width": args.size, "height": args.size, "steps": INFO.default_steps,
            "fps": INFO.default_fps}
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    stacks = []
    try:
        roomy = {**ROOMY, "OMP_NUM_THREADS": str(args.threads)}
        unpaced = Stack(tmp / "unpaced", env={**roomy, "LIVE_MAX_LEAD_S": "100000", "LIVE_STATUS_EVERY": "1"})
        paced = Stack(tmp / "paced", env=roomy)
        for stack in (unpaced, paced):
            stacks.append(stack)
            stack.start(worker_queues="builtin")
            asyncio.run(warm_up(stack, clip))
        title = (f"{clip['num_frames']}-frame chunks, {args.size}x{args.size}, {clip['steps']} steps, "
                 f"{clip['fps']:g} fps, built-in model, {os.cpu_count()} cores")
        if "live" in parts:
            fast = asyncio.run(live_run(unpaced, clip, args.seconds, steer_at=None))
            watched = asyncio.run(live_run(paced, clip, args.seconds, steer_at=args.seconds / 3))
            long = asyncio.run(long_run(paced, clip, args.chunks))
            print(f"\n### Live job vs long video ({title}; live: {args.seconds:g} s after the first chunk)\n")
            print("| measure | live | long video (" f"{args.chunks} chunks) | live / long |\n|---|---:|---:|---:|")
            print(f"| submit -> first streamed frame, s | {watched['first']:.2f} | {long['first']:.2f} | "
                  f"{watched['first'] / long['first']:.2f} |")
            print(f"| real-time factor, pacing off (video s per wall s) | {fast['rate']:.2f} | {long['rate']:.2f} | "
                  f"{fast['rate'] / long['rate']:.2f} |")
            print(f"| real-time factor, paced (LIVE_MAX_LEAD_S=2) | {watched['rate']:.2f} | | |")
            print(f"| stalls for a viewer from the first chunk (paced) | {watched['stalls']} "
                  f"({watched['stalled']:.2f} s) | {long['stalls']} ({long['stalled']:.2f} s) | |")
            print(f"| steer -> first frame made under it, s | {watched['steer_s']:.2f} | cannot steer | |")
            print(f"| steer -> that frame, frames the viewer plays meanwhile | {watched['steer_frames']:.0f} | | |",
                  flush=True)
        if "overhead" in parts:
            os.environ.update({k: unpaced.env[k] for k in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "DATABASE_URL")})
            bare, intervals, in_worker = [], [], []
            for _ in range(args.rounds):
                bare += bare_chunk_times(clip, args.chunks, args.threads)
                served = asyncio.run(live_run(unpaced, clip, args.chunks * statistics.median(bare) * 1.2, None))
                intervals += served["intervals"]
                in_worker += served["worker_chunk_s"]
            b, s, w = statistics.median(bare), statistics.median(intervals), statistics.median(in_worker)
            print(f"\n### Overhead per live chunk ({title}, {args.threads} torch threads; median of {len(bare)} / "
                  f"{len(intervals)} chunks in {args.rounds} alternated rounds)\n")
            print("| path | s per chunk | ratio |\n|---|---:|---:|")
            print(f"| model alone (generator.live.LiveVideo in this process) | {b:.3f} | 1.00 |")
            print(f"| model inside the worker (live_status chunk_s) | {w:.3f} | {w / b:.3f} |")
            print(f"| service, a warm websocket client's chunk interval | {s:.3f} | {s / b:.3f} |", flush=True)
        if "soak" in parts and args.soak_minutes > 0:
            print(f"\n### One paced live session for {args.soak_minutes:g} minutes ({title})\n")
            print("| minutes | frames streamed | worker RSS MiB (main + pool) | Daphne RSS MiB |\n"
                  "|---:|---:|---:|---:|")
            marks = [m for m in (1, 5, 10) if m <= args.soak_minutes] or [args.soak_minutes]
            rows = asyncio.run(soak(paced, clip, args.soak_minutes, marks))
            if len(rows) > 1:
                (m0, f0, w0, d0), (m1, f1, w1, d1) = rows[0], rows[-1]
                per_frame = (w1 - w0) * 1024 / max(f1 - f0, 1)
                print(f"| growth {m0:g} -> {m1:g} min | {f1 - f0} | {w1 - w0:+.0f} ({per_frame:.1f} KiB/frame) "
                      f"| {d1 - d0:+.0f} |")
    finally:
        for stack in stacks:
            stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
