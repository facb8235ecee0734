"""Live video on this machine: the built-in model v2 and v3 side by side in one run (issue 27).

    python -m bench.bench_live_models [--seconds 8] [--rounds 2] [--drift-minutes 5]

Each model makes an endless 256x256 video at 8 fps through `generator.live.LiveVideo` (v3: its
native `live_chunks`; v2: continuation from its last frames) for `--seconds` of video, rounds
alternating between the models. Printed per model (median over rounds):
  * first frame: seconds from the start until the first frames come;
  * frame rate: frames made per second of wall time, and that over the playback rate;
  * stalls: a viewer who starts playing at the first frame, at 8 fps, waits this often;
  * the default clip (16 frames, `generate`), seconds;
  * steer: a prompt change ("now the red circle moves up") issued before chunk 2; frames from the
    first frame made under it until the circle's motion reads "up" frame to frame.
Also v3's tokenizer: compression ratio, PSNR and edge sharpness against the renderer at 256x256
(held-out scenes, `train_tokenizer.quality`), and streaming decode milliseconds per frame.
With --drift-minutes (v3 only): that long a live video, a window of 16 frames every 10 s read by
the evaluator (`track_colours`): the share of windows holding exactly the asked objects in the
asked colours and shapes.
"""
from __future__ import annotations

import argparse
import statistics
import time

import generator  # noqa: F401  (first: the OpenMP wait policy the service runs with)
import numpy as np

from generator.evaluate import foreground, track_colours
from generator.interface import GenerationRequest

PROMPT = "a red circle moving right and a blue square moving down"
STEER = "now the red circle moves up"
FPS = 8.0


def live_frames(backend, request, prompt_at):
    """Chunks of final frames, as a live job gets them."""
    from generator.live import LiveVideo

    for chunk in LiveVideo(backend, request, prompt_at):
        yield chunk.frames


def stalls(arrivals: list, fps: float) -> tuple:
    """(count, seconds) a viewer waits who plays from the first frame: arrivals = [(time, frames)]."""
    clock, played, count, waited = arrivals[0][0], 0, 0, 0.0
    for when, frames in arrivals:
        due = clock + played / fps
        if when > due + 1e-3 and played:
            count += 1
            waited += when - due
            clock += when - due
        played += frames
    return count, waited


def red_centres(frames: np.ndarray) -> list:
    out = []
    for frame in frames:
        red = foreground(frame) & (frame[..., 0] > 150) & (frame[..., 2] < 120) & (frame[..., 1] < 120)
        ys, xs = np.nonzero(red)
        out.append((xs.mean(), ys.mean()) if len(xs) > 20 else None)
    return out


def steer_delay(frames: np.ndarray, first: int) -> int | None:
    """Frames from `first` until the red shape moves up (two consecutive steps up more than sideways)."""
    centres = red_centres(frames)
    ups = 0
    for i in range(first + 1, len(centres)):
        a, b = centres[i - 1], centres[i]
        ups = ups + 1 if a and b and (a[1] - b[1]) > max(0.5, abs(b[0] - a[0])) else 0
        if ups == 2:
            return i - 1 - first
    return None


def run_live(backend, seconds: float, seed: int, steer_chunk: int = 2) -> dict:
    wanted = int(seconds * FPS)
    started = time.perf_counter()
    arrivals, made, steer_first, chunks = [], [], None, 0

    def prompt_at(index: int) -> str:
        return PROMPT if index < steer_chunk else STEER

    for frames in live_frames(backend, GenerationRequest(prompt=PROMPT, seed=seed), prompt_at):
        if chunks == steer_chunk:
            steer_first = sum(len(f) for f in made)
        arrivals.append((time.perf_counter() - started, len(frames)))
        made.append(frames)
        chunks += 1
        if sum(len(f) for f in made) >= wanted:
            break
    total = time.perf_counter() - started
    count, waited = stalls(arrivals, FPS)
    video = np.concatenate(made)
    return {"first_frame_s": arrivals[0][0], "fps": len(video) / total, "stalls": count, "stall_s": waited,
            "steer_frames": steer_delay(video, steer_first) if steer_first is not None else None,
            "chunk_frames": arrivals[0][1]}


def drift(backend, minutes: float, seed: int) -> float:
    prompt = "a red circle moving right, a blue square moving down and a green triangle moving left"
    wanted = {"red": "circle", "blue": "square", "green": "triangle"}
    window, every = 16, int(10 * FPS)
    buffer, good, total, made = [], 0, 0, 0
    for frames in live_frames(backend, GenerationRequest(prompt=prompt, seed=seed), lambda i: prompt):
        for frame in frames:
            if made % every < window:
                buffer.append(frame)
            made += 1
            if len(buffer) == window:
                tracks = track_colours(np.stack(buffer))
                good += set(tracks) == set(wanted) and all(tracks[c]["shape"] == s and tracks[c]["objects"] == 1
                                                           for c, s in wanted.items())
                total += 1
                buffer = []
        if made >= minutes * 60 * FPS:
            break
    return good / max(total, 1)


def tokenizer_figures(tokenizer, frames: int = 16) -> dict:
    import torch

    from generator.builtin.tokenizer import DecoderCache
    from generator.builtin.train_tokenizer import quality

    measured = quality(tokenizer, seed=777, count=16, num_frames=8)
    latents = torch.zeros(1, tokenizer.config.latent_channels, frames, 16, 16)
    with torch.no_grad():
        cache = DecoderCache()
        tokenizer.decode(latents[:, :, :1], cache)  # warm-up
        started = time.perf_counter()
        for i in range(frames):
            tokenizer.decode(latents[:, :, i:i + 1], cache)
        per_frame = (time.perf_counter() - started) / frames
    return measured | {"compression": tokenizer.compression_ratio(), "decode_ms_per_frame": per_frame * 1000}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of video per live run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clips", type=int, default=3, help="default clips timed per model")
    parser.add_argument("--drift-minutes", type=float, default=0.0)
    parser.add_argument("--v2-path", help="a v2 pipeline folder (default: the shipped weights)")
    parser.add_argument("--v3-path", help="a v3 pipeline folder (default: the shipped weights)")
    args = parser.parse_args(argv)
    from generator.builtin.backend import BuiltinBackend
    from generator.builtin.backend_v3 import BuiltinV3Backend

    backends = {"v2": BuiltinBackend(args.v2_path), "v3": BuiltinV3Backend(args.v3_path)}
    for backend in backends.values():
        backend.load()
        backend.generate(GenerationRequest(prompt=PROMPT, seed=0))  # warm-up
    rows = {name: [] for name in backends}
    clip_seconds = {name: [] for name in backends}
    for round_ in range(args.rounds):
        for name, backend in backends.items():
            rows[name].append(run_live(backend, args.seconds, seed=round_))
    for _ in range(args.clips):
        for name, backend in backends.items():
            started = time.perf_counter()
            backend.generate(GenerationRequest(prompt=PROMPT, seed=7))
            clip_seconds[name].append(time.perf_counter() - started)

    def median(name, key):
        values = [r[key] for r in rows[name] if r[key] is not None]
        return statistics.median(values) if values else float("nan")

    print(f"| metric ({args.seconds:g} s of 256x256 video, {args.rounds} rounds, median) | v2 | v3 | v3 / v2 |")
    print("|---|---|---|---|")
    for key, label in (("first_frame_s", "first frames after (s)"), ("fps", "frames made per second"),
                       ("stalls", "stalls (viewer from the first frame)"), ("stall_s", "seconds stalled"),
                       ("steer_frames", "steer shows after (frames)"), ("chunk_frames", "frames per chunk")):
        v2, v3 = median("v2", key), median("v3", key)
        ratio = v3 / v2 if v2 and v2 == v2 else float("nan")
        print(f"| {label} | {v2:.3g} | {v3:.3g} | {ratio:.3g} |")
    v2, v3 = statistics.median(clip_seconds["v2"]), statistics.median(clip_seconds["v3"])
    print(f"| default clip, 16 frames 256x256 (s, p50 of {args.clips}) | {v2:.3f} | {v3:.3f} | {v3 / v2:.3f} |")
    print(f"| real-time factor (frames made per second / {FPS:g}) | {median('v2', 'fps') / FPS:.2f} | "
          f"{median('v3', 'fps') / FPS:.2f} | |")
    figures = tokenizer_figures(backends["v3"].pipe.tokenizer)
    print(f"\nv3 tokenizer: compression {figures['compression']:.0f}x (uint8 RGB 256x256 over the latent's bits), "
          f"PSNR {figures['psnr']:.2f} dB, edge sharpness {figures['sharpness_ratio']:.2f}x the renderer's at 256, "
          f"streaming decode {figures['decode_ms_per_frame']:.1f} ms/frame")
    if args.drift_minutes:
        share = drift(backends["v3"], args.drift_minutes, seed=11)
        print(f"\nv3, {args.drift_minutes:g} min live: windows with exactly the asked objects {share:.3f}")


if __name__ == "__main__":
    main()
