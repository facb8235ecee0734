"""Benchmark of the built-in model and of video encoding on this machine.

    python -m bench.bench_builtin [--clips N] [--threads T]
    python -m bench.bench_builtin --folder-training 40 1000

Prints markdown tables:
  * seconds per clip at default settings (p50 over N clips, after one warm-up clip),
    seconds per denoising step, FLOPs per U-Net forward (classifier-free guidance: batch 2)
    and per whole clip (guided steps batch 2, the rest batch 1) counted with
    torch.utils.flop_counter.FlopCounterMode, the machine's measured float32 matmul rate, and
    how far a forward and a clip are from that floor;
  * PyAV (`generator.encode.encode_video`) against `diffusers.utils.export_to_video`
    (imageio-ffmpeg) for the same frames: the default clip and a synthetic 768x512x121 one;
  * with --folder-training: training runs (`train --data`) on folders of N generated clips of
    240 frames: peak memory of the whole process tree (PSS: the loader workers' shared pages
    counted once), seconds from launch to the first step, steps/s, and the loader's clips/s alone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import generator  # noqa: F401  (first: the OpenMP wait policy the service runs with)
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

from generator.builtin.sample import GUIDANCE_MIN_TIMESTEP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROMPT = "a red circle moving to the left"
TWO_OBJECT_PROMPT = "a red circle moving to the left and a blue square moving up"


def _count_cpu_attention() -> None:
    """FlopCounterMode knows the CUDA SDPA kernels only; count the CPU one the same way."""
    aten = torch.ops.aten
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(aten, name, None)
        if op is None:
            continue
        try:
            register_flop_formula(op)(lambda q, k, v, *args, out_shape=None, **kw: sdpa_flop_count(q, k, v))
        except RuntimeError:  # already registered by a newer torch
            pass


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_rate(n: int = 1024, repeats: int = 8) -> float:
    """float32 FLOP/s of an n^3 matmul (best of `repeats`, after a warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * n**3 / min(times)


def unet_inputs(pipe, frames: int, height: int, width: int):
    sample = torch.randn(2, 3, frames, height, width)
    return (sample, torch.tensor([500]), *pipe.text_encoder([PROMPT, ""], objects=True))


@torch.no_grad()
def unet_flops(pipe, inputs) -> int:
    with FlopCounterMode(display=False) as counter:
        pipe.unet(*inputs)
    return counter.get_total_flops()


@torch.no_grad()
def clip_flops(backend, request) -> int:
    """Every counted op of one generation: the U-Net passes and the text encoder."""
    with FlopCounterMode(display=False) as counter:
        backend.generate(request)
    return counter.get_total_flops()


@torch.no_grad()
def unet_forward_seconds(pipe, inputs, repeats: int = 5) -> float:
    pipe.unet(*inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        pipe.unet(*inputs)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@torch.no_grad()
def guidance_interval_seconds(pipe, info, clips: int) -> tuple:
    """p50 seconds of the U-Net sampling loop, guided at t >= GUIDANCE_MIN_TIMESTEP vs at every
    step, timed alternately so both see the same machine load."""
    interval, every_step = [], []
    for i in range(clips):
        for min_timestep, times in ((GUIDANCE_MIN_TIMESTEP, interval), (0, every_step)):
            started = time.perf_counter()
            pipe(PROMPT, num_frames=info.default_frames, steps=info.default_steps,
                 guidance_scale=info.default_guidance, generator=torch.Generator().manual_seed(i),
                 guidance_min_timestep=min_timestep)
            times.append(time.perf_counter() - started)
    return statistics.median(interval), statistics.median(every_step)


def bench_model(clips: int, path: str | None = None) -> dict:
    from generator.builtin.backend import BuiltinBackend
    from generator.interface import GenerationRequest

    backend = BuiltinBackend(path)
    started = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - started
    info = backend.info
    request = dict(prompt=PROMPT)  # everything else: the model's defaults

    backend.generate(GenerationRequest(seed=999, **request))  # warm-up (allocator, caches)
    clip_times, step_times, result = [], [], None
    for i in range(clips):
        marks = []
        started = time.perf_counter()
        result = backend.generate(GenerationRequest(seed=i, **request),
                                  progress=lambda step, total, _p: marks.append(time.perf_counter()))
        clip_times.append(time.perf_counter() - started)
        step_times += list(np.diff([started] + marks)[1:])  # the first interval also holds text encoding
    native_h, native_w = result.native_size
    inputs = unet_inputs(backend.pipe, info.default_frames, native_h, native_w)
    return {
        "backend": backend, "result": result, "load_s": load_s,
        "clip_s": statistics.median(clip_times), "clip_all": clip_times,
        "step_s": statistics.mean(step_times),
        "forward_s": unet_forward_seconds(backend.pipe, inputs),
        "flops": unet_flops(backend.pipe, inputs),
        "clip_flops": clip_flops(backend, GenerationRequest(seed=0, **request)),
        "sampling_s": guidance_interval_seconds(backend.pipe, info, clips),
        "params": sum(p.numel() for p in backend.pipe.unet.parameters()),
        "info": info,
    }


@torch.no_grad()
def alternating_clip_seconds(paths: list, clips: int, steps: list) -> list:
    """[(p50 seconds of a default one-object clip, of a two-object clip)] per pipeline folder,
    sampled at its entry of `steps` (None: the model's default): everything the backend does
    (text, sampling in one layer per object, upscaling), the folders' clips timed in turn so all
    see the same machine load."""
    from generator.builtin.backend import BuiltinBackend
    from generator.interface import GenerationRequest

    backends = [BuiltinBackend(path) for path in paths]
    times = [([], []) for _ in paths]
    for backend in backends:
        backend.load()
        backend.generate(GenerationRequest(prompt=PROMPT, seed=999))  # warm-up
    for i in range(clips):
        for backend, spent, folder_steps in zip(backends, times, steps):
            for prompt, into in zip((PROMPT, TWO_OBJECT_PROMPT), spent):
                started = time.perf_counter()
                backend.generate(GenerationRequest(prompt=prompt, seed=i, steps=folder_steps))
                into.append(time.perf_counter() - started)
    return [(statistics.median(one), statistics.median(two)) for one, two in times]


# ------------------------------------------------------------------ encoding
def moov_before_mdat(path: str) -> bool:
    with open(path, "rb") as fh:
        data = fh.read()
    offset, boxes = 0, []
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        boxes.append(kind)
        offset += max(size, 8)
    return b"moov" in boxes and b"mdat" in boxes and boxes.index(b"moov") < boxes.index(b"mdat")


def synthetic_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """Moving gradients and a moving square: enough texture and motion to make the encoder work."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        r = 128 + 100 * np.sin((xs + 4 * t) / 37.0)
        g = 128 + 100 * np.cos((ys - 3 * t) / 29.0)
        b = 128 + 60 * np.sin((xs + ys + 5 * t) / 53.0)
        frame = np.stack([r, g, b], -1)
        x0, y0 = (20 + 5 * t) % (width - 80), (30 + 2 * t) % (height - 80)
        frame[y0:y0 + 80, x0:x0 + 80] = (250, 250, 40)
        out[t] = frame.clip(0, 255)
    return out


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_encode(frames: np.ndarray, fps: float, repeats: int, folder: str) -> dict:
    from diffusers.utils import export_to_video

    from generator.encode import encode_video

    pyav_path = os.path.join(folder, "pyav.mp4")
    imageio_path = os.path.join(folder, "export_to_video.mp4")
    float_frames = [f.astype(np.float32) / 255.0 for f in frames]  # what a diffusers pipeline returns
    pyav_s = _median_time(lambda: encode_video(frames, fps, pyav_path), repeats)
    imageio_s = _median_time(lambda: export_to_video(float_frames, imageio_path, fps=int(fps)), repeats)
    return {"pyav_s": pyav_s, "imageio_s": imageio_s,
            "pyav_bytes": os.path.getsize(pyav_path), "imageio_bytes": os.path.getsize(imageio_path),
            "pyav_faststart": moov_before_mdat(pyav_path), "imageio_faststart": moov_before_mdat(imageio_path)}


# ------------------------------------------------------------------ training from a folder
def write_clips(folder: str, count: int, scenes_per_clip: int = 15, size: int = 128) -> int:
    """`count` MP4s of the built-in world, each `scenes_per_clip` 16-frame scenes in a row, with a
    caption file beside each; returns the bytes written."""
    import random

    from generator.builtin import world
    from generator.encode import encode_video

    rng, total = random.Random(0), 0
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        scenes = [world.sample_scene(rng, 16) for _ in range(scenes_per_clip)]
        video = world.render(scenes, 16, size)  # scenes x 3 x 16 x H x W
        frames = np.concatenate([world.to_uint8_frames(clip) for clip in video])
        path = os.path.join(folder, f"clip_{i:05d}.mp4")
        total += len(encode_video(frames, 24.0, path))
        with open(os.path.join(folder, f"clip_{i:05d}.txt"), "w") as fh:
            fh.write(world.caption(scenes[0], rng))
    return total


def tree_pss_kib(root: int) -> int:
    """Proportional set size of `root` and all its descendants (KiB), from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grew = bool(found)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total


def folder_training_run(folder: str, steps: int, threads: int) -> dict:
    """One `train --data` run in its own process, its memory sampled every 0.1 s."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "generator.builtin.train", "--data", folder, "--out", out,
                   "--steps", str(steps), "--ckpt-every", str(10 * steps), "--workers", "2", "--device", "cpu"]
        if threads:
            command += ["--threads", str(threads)]
        log = os.path.join(out, "log.txt")
        launched = time.perf_counter()
        with open(log, "w") as sink:
            process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.DEVNULL)
        peak, first_step = 0, None
        while process.poll() is None:
            peak = max(peak, tree_pss_kib(process.pid))
            if first_step is None and "first step starts" in open(log).read():
                first_step = time.perf_counter() - launched
            time.sleep(0.1)
        output = open(log).read()
        if process.returncode:
            raise RuntimeError(f"training failed ({process.returncode}): {output[-2000:]}")
        with open(os.path.join(out, "training.json")) as fh:
            step_seconds = json.load(fh)["seconds"]  # inside the steps, saving excluded
    return {"peak_mib": peak / 1024, "first_step_s": first_step, "steps_per_s": steps / step_seconds,
            "in_train": float(output.split("first step starts ")[1].split(" s")[0])}


def loader_clips_per_second(folder: str, batches: int = 20, batch_size: int = 8) -> float:
    from generator.builtin.train import VideoFolderClips

    data = iter(VideoFolderClips(folder, num_frames=16, size=64, seed=0, workers=2).batches(batch_size, 0))
    next(data)  # the workers' start
    started = time.perf_counter()
    for _ in range(batches):
        next(data)
    return batches * batch_size / (time.perf_counter() - started)


def bench_folder_training(counts: list, steps: int, threads: int) -> None:
    print("## Training from a folder of generated clips (`train --data`, streaming loader, 2 workers)\n")
    print("| clips | MP4 bytes | peak PSS, whole tree | launch -> first step | train() -> first step "
          "| steps/s | loader alone, clips/s |\n|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for count in counts:
            folder = os.path.join(root, str(count))
            size = write_clips(folder, count)
            run = folder_training_run(folder, steps, threads)
            rate = loader_clips_per_second(folder)
            steps_per_s = run["steps_per_s"]
            print(f"| {count} | {size / 1e6:.1f} MB | {run['peak_mib']:.0f} MiB | {run['first_step_s']:.2f} s "
                  f"| {run['in_train']:.2f} s | {steps_per_s:.2f} (batch 8: {8 * steps_per_s:.1f} clips/s) "
                  f"| {rate:.1f} |", flush=True)


# ------------------------------------------------------------------ report
def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=5, help="clips to time (p50 is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-encode", action="store_true", help="only the model benchmark")
    parser.add_argument("--model-path", help="the pipeline folder to measure (default: the shipped weights)")
    parser.add_argument("--compare", nargs="+", metavar="PATH",
                        help="also time default clips of these pipeline folders, alternating with --model-path's")
    parser.add_argument("--compare-steps", type=int,
                        help="sample the --compare folders at this many steps (the previous release's default: 20)")
    parser.add_argument("--folder-training", type=int, nargs="+", metavar="CLIPS",
                        help="instead: train from folders of this many generated clips (e.g. 40 1000)")
    parser.add_argument("--training-steps", type=int, default=30)
    args = parser.parse_args(argv)
    if args.folder_training:
        bench_folder_training(args.folder_training, args.training_steps, args.threads)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    _count_cpu_attention()

    import diffusers

    print(f"# built-in model benchmark\n\n{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), diffusers {diffusers.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}\n", flush=True)

    rate = matmul_rate()
    m = bench_model(args.clips, args.model_path)
    info, result = m["info"], m["result"]
    t, h, w = result.frames.shape[:3]
    nh, nw = result.native_size
    floor_s, clip_floor_s = m["flops"] / rate, m["clip_flops"] / rate
    rows = [
        ("default request", f"{t} frames, {w}x{h} out (native {nw}x{nh}), {info.default_steps} steps, "
                            f"guidance {info.default_guidance:g} at t >= {GUIDANCE_MIN_TIMESTEP} (CFG batch 2)"),
        ("U-Net parameters", f"{m['params'] / 1e6:.2f} M"),
        ("model load (U-Net + text encoder)", f"{m['load_s']:.2f} s"),
        (f"seconds per clip, p50 of {args.clips}", f"{m['clip_s']:.2f} s "
                                                  f"(all: {', '.join(f'{x:.2f}' for x in m['clip_all'])})"),
        ("seconds per denoising step, mean", f"{m['step_s'] * 1000:.1f} ms"),
        ("U-Net forward alone (batch 2), p50", f"{m['forward_s'] * 1000:.1f} ms"),
        ("FLOPs per U-Net forward (batch 2)", _si(m["flops"], "FLOP")),
        ("float32 matmul rate (1024^3, best of 8)", _si(rate, "FLOP/s")),
        ("forward floor: FLOPs / matmul rate", f"{floor_s * 1000:.1f} ms"),
        ("forward time / floor", f"{m['forward_s'] / floor_s:.1f}x"),
        ("U-Net achieved rate", _si(m["flops"] / m["forward_s"], "FLOP/s")),
        ("FLOPs per clip (U-Net passes + text encoder)", _si(m["clip_flops"], "FLOP")),
        ("clip floor: FLOPs / matmul rate", f"{clip_floor_s:.2f} s"),
        ("clip time / floor", f"{m['clip_s'] / clip_floor_s:.1f}x"),
        (f"sampling loop, guidance at t >= {GUIDANCE_MIN_TIMESTEP} / at every step (p50)",
         f"{m['sampling_s'][0]:.2f} s / {m['sampling_s'][1]:.2f} s = {m['sampling_s'][0] / m['sampling_s'][1]:.2f}"),
    ]
    print(f"## Model ({args.model_path or 'shipped weights'})\n\n| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(flush=True)
    if args.compare:
        paths = [args.model_path] + args.compare
        steps = [info.default_steps] + [args.compare_steps or info.default_steps] * len(args.compare)
        print(f"## Default clips timed alternately (p50 of {args.clips})\n\n"
              f"| pipeline | steps | one object: {PROMPT!r} | two objects: {TWO_OBJECT_PROMPT!r} "
              f"| one object / first row's |"
              f"\n|---|---|---|---|---|")
        timed = alternating_clip_seconds(paths, args.clips, steps)
        for path, folder_steps, (one, two) in zip(paths, steps, timed):
            print(f"| {path or 'shipped weights'} | {folder_steps} | {one:.2f} s | {two:.2f} s "
                  f"| {one / timed[0][0]:.2f}x |")
        print(flush=True)

    if args.skip_encode:
        return
    print("## Encoding: PyAV vs diffusers.utils.export_to_video\n")
    print("PyAV: libx264 crf 18 preset veryfast, +faststart, frames streamed. export_to_video: imageio-ffmpeg "
          "defaults (quality 5), float frames in [0, 1] as pipelines return them.\n")
    print("| clip | PyAV s | export_to_video s | time ratio (export / PyAV) | PyAV size | export size "
          "| size ratio | faststart PyAV / export |\n|---|---|---|---|---|---|---|---|")
    cases = [(f"default clip {w}x{h}x{t}", result.frames, result.fps, 3),
             ("synthetic 768x512x121", synthetic_frames(121, 512, 768), 24.0, 2)]
    with tempfile.TemporaryDirectory() as folder:
        for label, frames, fps, repeats in cases:
            e = bench_encode(frames, fps, repeats, folder)
            yes = lambda flag: "yes" if flag else "no"  # noqa: E731
            print(f"| {label} | {e['pyav_s']:.3f} | {e['imageio_s']:.3f} | {e['imageio_s'] / e['pyav_s']:.2f} "
                  f"| {e['pyav_bytes'] / 1024:.0f} KiB | {e['imageio_bytes'] / 1024:.0f} KiB "
                  f"| {e['imageio_bytes'] / e['pyav_bytes']:.2f} "
                  f"| {yes(e['pyav_faststart'])} / {yes(e['imageio_faststart'])} |", flush=True)


if __name__ == "__main__":
    main()
