"""Does a video follow its prompt? Frame analysis for the built-in shapes world, plus metrics.

`analyse(frames)` reads colour, shape and direction of motion straight off decoded
frames (no model); `evaluate` generates videos for held-out phrasings and seeds, encodes
them to MP4, decodes them back and scores them:

    python -m generator.evaluate --prompts 105 --out runs/eval

`noise_probe` (`--noise-probe`) asks where along the noise schedule a model loses shapes:
the shape of the clean clip it predicts from noised training clips, per timestep (seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time

import numpy as np

from generator.builtin import world

FOREGROUND_LEVEL = 70  # max channel above this (0..255) is a shape, the background is ~15-25


def foreground(frame: np.ndarray) -> np.ndarray:
    return frame.max(axis=-1) > FOREGROUND_LEVEL


def classify_colour(pixels: np.ndarray) -> str:
    """Nearest palette colour to the mean of saturated shape pixels (N x 3 uint8)."""
    mean = pixels.reshape(-1, 3).astype(np.float32).mean(0) / 255.0
    mean = mean / max(mean.max(), 1e-6)  # brightness-free: compare hues
    palette = {name: np.array(rgb) / max(rgb) for name, rgb in world.COLOURS.items()}
    return min(palette, key=lambda name: float(np.sum((palette[name] - mean) ** 2)))


def classify_shape(mask: np.ndarray) -> str:
    """Fill ratio of the bounding box: square ~1.0, circle ~0.79, triangle ~0.5."""
    ys, xs = np.nonzero(mask)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = len(ys) / box
    return "square" if fill > 0.88 else "circle" if fill > 0.64 else "triangle"


def blobs(mask: np.ndarray, min_area: float) -> list:
    """Masks of the connected foreground blobs of at least `min_area` pixels, largest first."""
    import cv2

    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    return [labels == label + 1 for label in np.argsort(-areas) if areas[label] >= min_area]


def analyse(frames: np.ndarray) -> dict:
    """Colour, shape, direction and speed of the (single) shape in T x H x W x 3 uint8 frames.

    The shape is read off the largest blob of each frame; `objects` is the median count of
    separate blobs per frame, so a prompt for one shape drawn twice scores its shape and shows
    up as objects == 2 (`single_object_rate` in `evaluate`).
    """
    t, h, w, _ = frames.shape
    min_area = 0.002 * h * w
    centres, shapes, colour_pixels, counts = [], [], [], []
    for i, frame in enumerate(frames):
        mask = foreground(frame)
        if mask.sum() < min_area:
            continue
        found = blobs(mask, min_area)
        counts.append(len(found))
        ys, xs = np.nonzero(mask)
        centres.append((i, xs.mean(), ys.mean()))
        shapes.append(classify_shape(found[0] if found else mask))
        core = frame[mask]
        colour_pixels.append(core[core.max(axis=-1) > 0.6 * core.max()])
    if len(centres) < 2:
        return {"colour": None, "shape": None, "direction": None, "speed": 0.0, "visible_frames": len(centres),
                "objects": 0}
    index, cx, cy = np.array(centres).T
    vx, vy = np.polyfit(index, cx, 1)[0], np.polyfit(index, cy, 1)[0]
    if abs(vx) >= abs(vy):
        direction = "right" if vx > 0 else "left"
    else:
        direction = "down" if vy > 0 else "up"
    scale = 64.0 / min(h, w)
    return {
        "colour": classify_colour(np.concatenate(colour_pixels)),
        "shape": max(set(shapes), key=shapes.count),
        "direction": direction,
        "speed": float(np.hypot(vx, vy) * scale),  # pixels per frame on the 64-pixel canvas
        "visible_frames": len(centres),
        "objects": int(np.median(counts)),
    }


def frame_embeddings(frames: np.ndarray, size: int = 16) -> np.ndarray:
    """Default offline embedder: a small mean-pooled thumbnail of each frame, centred."""
    t, h, w, c = frames.shape
    fh, fw = h // size, w // size
    pooled = frames[:, : fh * size, : fw * size].reshape(t, size, fh, size, fw, c).mean(axis=(2, 4))
    vectors = pooled.reshape(t, -1).astype(np.float64) / 255.0
    return vectors - vectors.mean(axis=1, keepdims=True)


def temporal_consistency(frames: np.ndarray, embed=frame_embeddings) -> float:
    """Mean cosine similarity of consecutive frames' embeddings (identical frames give 1.0)."""
    e = embed(frames)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    if len(e) < 2:
        return 1.0
    return float(np.mean(np.sum(e[1:] * e[:-1], axis=1)))


def evaluation_prompts(n: int, seed: int) -> list:
    """n single-shape scenes covering every colour x shape x direction, in held-out phrasings."""
    rng = random.Random(seed)
    combos = [(c, s, d) for c in world.COLOURS for s in world.SHAPES for d in world.DIRECTIONS]
    rng.shuffle(combos)
    out = []
    for i in range(n):
        colour, shape, direction = combos[i % len(combos)]
        motion = world.ShapeMotion(colour, shape, direction, 8, 32, 32, 1.5)
        out.append({"prompt": world.caption([motion], rng, held_out=True), "colour": colour,
                    "shape": shape, "direction": direction, "seed": 10_000 + seed * 1000 + i})
    return out


def evaluate(backend, n: int = 105, seed: int = 1, out_dir: str | None = None, via_mp4: bool = True,
             **generate_kwargs) -> dict:
    from generator.interface import GenerationRequest

    rows, seconds = [], []
    for item in evaluation_prompts(n, seed):
        started = time.perf_counter()
        result = backend.generate(GenerationRequest(prompt=item["prompt"], seed=item["seed"], **generate_kwargs))
        seconds.append(time.perf_counter() - started)
        frames = result.frames
        if via_mp4:  # measure what users get: the H.264 file decoded back
            from generator.encode import decode_video, encode_video

            frames, _ = decode_video(encode_video(result.frames, result.fps))
        found = analyse(frames)
        rows.append(item | {"found": found, "consistency": temporal_consistency(frames),
                            "ok": {k: found[k] == item[k] for k in ("colour", "shape", "direction")}
                            | {"one_object": found["objects"] == 1}})
    def rate(key):
        return float(np.mean([r["ok"][key] for r in rows]))

    summary = {
        "prompts": n,
        "colour_accuracy": rate("colour"),
        "shape_accuracy": rate("shape"),
        "direction_accuracy": rate("direction"),
        "single_object_rate": rate("one_object"),
        "all_correct_rate": float(np.mean([all(r["ok"].values()) for r in rows])),
        "temporal_consistency": float(np.mean([r["consistency"] for r in rows])),
        "seconds_per_clip_p50": float(np.median(seconds)),
    }
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "eval.json"), "w") as fh:
            json.dump({"summary": summary, "rows": rows}, fh, indent=1)
    return summary | {"rows": rows}


def noise_probe(pipe, timesteps=(100, 300, 500, 600, 700, 800, 900), seed: int = 0) -> dict:
    """{(shape, t): share of predicted frames classified as that shape} for one clip per colour."""
    import torch

    from generator.builtin.sample import to_uint8_frames

    rng, noise_seed = random.Random(seed), torch.Generator().manual_seed(seed)
    device, scores = pipe.unet.device, {}
    for shape in world.SHAPES:
        scenes = [[world.ShapeMotion(colour, shape, "right", 8, 20, 32, 1.5)] for colour in world.COLOURS]
        clips = world.render(scenes, 16, 64)
        text = [x.to(device) for x in pipe.text_encoder([world.caption(scene, rng) for scene in scenes])]
        for t in timesteps:
            timestep = torch.tensor([t])
            noisy = pipe.scheduler.add_noise(clips, torch.randn(clips.shape, generator=noise_seed), timestep)
            with torch.no_grad():
                x0 = pipe.unet(noisy.to(device), timestep, *text).clamp(-1, 1).cpu()
            frames = [f for clip in x0 for f in to_uint8_frames(clip) if foreground(f).sum() > 8]
            scores[(shape, t)] = float(np.mean([classify_shape(foreground(f)) == shape for f in frames] or [0.0]))
    return scores


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=105)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model-path", help="a built-in pipeline folder (default: the shipped weights)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--out", default="runs/eval")
    parser.add_argument("--device", default="cpu", help="where the U-Net runs, e.g. cuda")
    parser.add_argument("--frames-only", action="store_true",
                        help="analyse generated frames without the MP4 round trip (hosts without PyAV); "
                             "the figures we report come from MP4s")
    parser.add_argument("--noise-probe", action="store_true",
                        help="instead: per timestep, how often the x0 predicted from noised training clips "
                             "keeps its shape")
    args = parser.parse_args(argv)
    from generator.builtin.backend import BuiltinBackend

    backend = BuiltinBackend(args.model_path)
    backend.load()
    backend.pipe.unet.to(args.device)
    if args.noise_probe:
        scores = noise_probe(backend.pipe, seed=args.seed)
        timesteps = sorted({t for _, t in scores})
        print("| shape | " + " | ".join(f"t={t}" for t in timesteps) + " |\n|---|" + "---|" * len(timesteps))
        for shape in world.SHAPES:
            print(f"| {shape} | " + " | ".join(f"{scores[(shape, t)]:.2f}" for t in timesteps) + " |")
        return
    result = evaluate(backend, args.prompts, args.seed, args.out, via_mp4=not args.frames_only,
                      steps=args.steps, guidance_scale=args.guidance)
    misses = [r for r in result.pop("rows") if not all(r["ok"].values())]
    for r in misses[:15]:
        print(f"miss: {r['prompt']!r} -> {r['found']}")
    print("| metric | value | bar |\n|---|---|---|")
    bars = {"colour_accuracy": ">= 0.95", "shape_accuracy": ">= 0.85", "direction_accuracy": ">= 0.90"}
    for key, value in result.items():
        print(f"| {key} | {value:.3f} | {bars.get(key, '')} |" if isinstance(value, float) else f"| {key} | {value} | |")


if __name__ == "__main__":
    main()
