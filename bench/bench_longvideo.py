"""Long videos, measured: seams of extended videos, flow interpolation vs blending, post-processing speed.

    .venv/bin/python -m bench.bench_longvideo [--steps 6] [--chunks 3] [--workers N] [--quick]
    .venv/bin/python -m bench.bench_longvideo --model ltx-video --frames 17 --size 512   # a configured model

1. Seams: the built-in model (or --model, one of VIDEO_MODELS_CONFIG's, e.g. a conditioning family)
   extended over --chunks chunks (8 frames each at 64x64, overlap 3), blended vs a hard cut (no
   blend: new frames replace the overlap); frame-to-frame mean abs difference at the seams vs
   inside the chunks and the temporal-consistency metric (generator.longvideo.seam_metrics). The
   seams sit where the backend shares frames (generator.longvideo.effective_overlap: a model that
   continues natively may share more than the overlap asked). Skipped without built-in weights.
2. Interpolation: clips with known constant-speed motion (generator.builtin.world.render);
   keep every k-th frame, rebuild the rest; PSNR of the rebuilt frames vs the true ones, DIS-flow
   warping vs plain frame blending.
3. Time per added frame for interpolation (x4) and upscaling (x4, bicubic + unsharp), serial
   (workers=1) vs parallel (--workers, default every core); the ratio is serial / parallel.
"""
from __future__ import annotations

import argparse
import os
import random
import time
from typing import Optional

import numpy as np

from generator import longvideo as lv
from generator.builtin import world
from generator.interface import GenerationRequest

PROMPTS = ["a red square moving right", "a blue circle moving down", "a yellow triangle moving left",
           "a green square moving up"]


def clip(seed: int, num_frames: int, size: int = 64) -> np.ndarray:
    scene = world.sample_scene(random.Random(seed), num_frames, two_shapes_prob=0.0)
    video = world.render([scene], num_frames, size)[0]
    return ((video.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def seam_check(backend, prompts, chunks: int, frames: int, overlap: int, steps: int, size: int,
               guidance: Optional[float] = None) -> list:
    """(label, metrics averaged over prompts, seconds) for a blended and a hard-cut extension on `backend`."""
    shared = lv.effective_overlap(backend, overlap, frames)
    out = []
    for label, weights in (("blended", lv.blend_weights), ("hard cut", lambda n: np.ones(n, np.float32))):
        saved, lv.blend_weights = lv.blend_weights, weights
        try:
            metrics = []
            t0 = time.perf_counter()
            for i, prompt in enumerate(prompts):
                req = GenerationRequest(prompt=prompt, num_frames=frames, width=size, height=size, steps=steps,
                                        seed=100 + i, guidance_scale=guidance)
                video = lv.extend(backend, req, num_chunks=chunks, overlap=overlap).frames
                metrics.append(lv.seam_metrics(video, lv.seam_positions(chunks, frames, shared)))
            dt = time.perf_counter() - t0
        finally:
            lv.blend_weights = saved
        out.append((label, {k: float(np.mean([x[k] for x in metrics])) for k in metrics[0]}, dt))
    return out


def seams(args, rows):
    if args.model:
        from generator.interface import get_backend
        from generator.registry_setup import register_models

        register_models()
        backend, name = get_backend(args.model), args.model
    else:
        from generator.builtin.backend import WEIGHTS, BuiltinBackend

        if not os.path.exists(os.path.join(WEIGHTS, "unet", "config.json")):
            print("(no built-in weights: seam rows skipped)")
            return
        backend, name = BuiltinBackend(), "built-in"
        backend.load()
    frames, overlap = args.frames, 3
    shared = lv.effective_overlap(backend, overlap, frames)
    for label, m, dt in seam_check(backend, PROMPTS[:args.prompts], args.chunks, frames, overlap, args.steps,
                                   args.size, guidance=None if args.model else 4.0):
        rows.append((f"seams, {name} {label}",
                     f"MAD boundary {m['boundary_mad']:.2f} / inside {m['inside_mad']:.2f} = {m['mad_ratio']:.2f}x; "
                     f"TC boundary {m['boundary_tc']:.3f} / inside {m['inside_tc']:.3f}",
                     f"{args.prompts} videos x {args.chunks} chunks x {frames} f, overlap {overlap} "
                     f"({shared} shared), {args.steps} steps, {dt:.1f} s"))


def interpolation_quality(args, rows):
    for k in (2, 4):
        flow, blend = [], []
        for seed in range(args.clips):
            truth = clip(seed, 4 * k + 1)
            keys = truth[::k]
            mid = np.ones(len(truth), bool)
            mid[::k] = False
            flow.append(psnr(lv.interpolate(keys, k, workers=1)[mid], truth[mid]))
            blend.append(psnr(lv.interpolate(keys, k, workers=1, method="blend")[mid], truth[mid]))
        rows.append((f"interpolation x{k} PSNR", f"flow {np.mean(flow):.1f} dB vs blend {np.mean(blend):.1f} dB "
                     f"(+{np.mean(flow) - np.mean(blend):.1f})", f"{args.clips} synthetic clips, 64x64"))


def timed(fn, repeat=2):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def speed(args, rows):
    workers = args.workers or os.cpu_count() or 1
    for size in args.sizes:
        frames = np.stack([np.asarray(f) for f in clip(3, 9, 64)])
        frames = lv.upscale_frames(frames, size // 64, workers=1) if size > 64 else frames
        k = 4
        added = (len(frames) - 1) * (k - 1)
        s = timed(lambda: lv.interpolate(frames, k, workers=1))
        p = timed(lambda: lv.interpolate(frames, k, workers=workers))
        rows.append((f"interpolate x{k} at {size}x{size}", f"{1e3 * s / added:.2f} ms/added frame serial, "
                     f"{1e3 * p / added:.2f} parallel = {s / p:.2f}x", f"{len(frames)} -> {len(frames) + added} "
                     f"frames, {workers} workers"))
        up = 4
        s = timed(lambda: lv.upscale_frames(frames, up, workers=1))
        p = timed(lambda: lv.upscale_frames(frames, up, workers=workers))
        rows.append((f"upscale x{up} from {size}x{size}", f"{1e3 * s / len(frames):.2f} ms/frame serial, "
                     f"{1e3 * p / len(frames):.2f} parallel = {s / p:.2f}x",
                     f"{len(frames)} frames -> {size * up}x{size * up}, {workers} workers"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--model", default=None, help="seam rows on this configured model instead of the built-in one")
    ap.add_argument("--frames", type=int, default=8, help="frames per chunk for the seam rows")
    ap.add_argument("--size", type=int, default=64, help="width and height for the seam rows")
    ap.add_argument("--chunks", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the model (seam rows)")
    ap.add_argument("--skip-seams", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    if not args.skip_seams:
        seams(args, rows)
    interpolation_quality(args, rows)
    speed(args, rows)
    w = [max(len(r[i]) for r in rows) for i in range(2)]
    print(f"\n{'measure':<{w[0]}} | {'result':<{w[1]}} | setting")
    print(f"{'-' * w[0]}-|-{'-' * w[1]}-|--------")
    for name, result, setting in rows:
        print(f"{name:<{w[0]}} | {result:<{w[1]}} | {setting}")
    print(f"\n{os.cpu_count()} CPUs visible; OpenCV threads {__import__('cv2').getNumThreads()} "
          f"(parallelism is per pair / per frame)")


if __name__ == "__main__":
    main()
