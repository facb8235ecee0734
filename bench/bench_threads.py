"""Why the generator sets OMP_WAIT_POLICY=PASSIVE: the built-in model with and without a
competing CPU-bound process, OpenMP threads spinning (libgomp's default) or sleeping.

    python -m bench.bench_threads [--clips N] [--threads T]

Each cell runs in a fresh process (the policy is read when torch starts its OpenMP threads);
"unset" is libgomp's default (spin a while, then sleep), ACTIVE spins for ever (a core stays
busy even between jobs), PASSIVE sleeps at once;
the competitor is one `nice -n 19` busy loop, the kind of load a web server or a second job
puts next to a worker on a small machine. Prints a markdown table of seconds per clip (p50)
and the slowdown against the idle machine with the same policy.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(clips: int, threads: int) -> None:
    import torch

    # start the OpenMP pool under this process's policy before `generator` (which sets a default) loads
    torch.set_num_threads(threads)
    torch.ones(512, 512).matmul(torch.ones(512, 512))

    from generator.builtin.backend import BuiltinBackend
    from generator.interface import GenerationRequest
    backend = BuiltinBackend()
    backend.generate(GenerationRequest(prompt="a red circle moving to the left", seed=0))  # warm-up
    seconds = []
    for seed in range(clips):
        started = time.perf_counter()
        backend.generate(GenerationRequest(prompt="a blue square going up", seed=seed))
        seconds.append(time.perf_counter() - started)
    print(json.dumps(statistics.median(seconds)))


def measure(policy: str, busy: bool, clips: int, threads: int) -> float:
    competitor = None
    if busy:
        competitor = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"],
                                      start_new_session=True)
        time.sleep(1.0)
    try:
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy != "unset":
            env["OMP_WAIT_POLICY"] = policy
        command = [sys.executable, "-m", "bench.bench_threads", "--child", "--clips", str(clips),
                   "--threads", str(threads)]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.clips, args.threads)
    print(f"# OpenMP wait policy under contention ({os.cpu_count()} cores, {args.threads} torch threads, "
          f"default built-in clip, p50 of {args.clips})\n")
    print("| OMP_WAIT_POLICY | idle machine s/clip | one busy process s/clip | slowdown |")
    print("|---|---|---|---|")
    for policy in ("unset", "ACTIVE", "PASSIVE"):
        idle = measure(policy, False, args.clips, args.threads)
        busy = measure(policy, True, args.clips, args.threads)
        print(f"| {policy} | {idle:.2f} | {busy:.2f} | {busy / idle:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
