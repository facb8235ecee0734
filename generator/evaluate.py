"""Does a video follow its prompt? Frame analysis for the built-in shapes world, plus metrics.

`analyse(frames)` reads colour, shape, direction of motion and the count of blobs straight
off decoded frames (no model), `track_colours` does it per palette colour (two-object scenes)
and `edge_sharpness` measures how steep the objects' outlines are; `evaluate` generates
videos for held-out phrasings and seeds of one- and two-object scenes, encodes them to MP4,
decodes them back and scores them against the bars of the built-in model (BARS), sharpness
as a ratio to the world's renderer drawing the same objects at the same size:

    python -m generator.evaluate --prompts 105 --two-object-prompts 50 --out runs/eval

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
from generator.encode import decode_video, encode_video
from generator.interface import GenerationRequest

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


def analyse(frames: np.ndarray, whole_share: float = 0.0) -> dict:
    """Colour, shape, direction and speed of the (single) shape in T x H x W x 3 uint8 frames.

    The shape is read off the largest blob of each frame (of the frames where that blob has at
    least `whole_share` of its largest area: another shape passing over it cuts its outline);
    `objects` is the median count of separate blobs per frame, so a prompt for one shape drawn
    twice scores its shape and shows up as objects == 2 (`single_object_rate` in `evaluate`).
    """
    t, h, w, _ = frames.shape
    min_area = 0.002 * h * w
    centres, shapes, areas, colour_pixels, counts = [], [], [], [], []
    for i, frame in enumerate(frames):
        mask = foreground(frame)
        if mask.sum() < min_area:
            continue
        found = blobs(mask, min_area)
        counts.append(len(found))
        ys, xs = np.nonzero(mask)
        centres.append((i, xs.mean(), ys.mean()))
        shapes.append(classify_shape(found[0] if found else mask))
        areas.append((found[0] if found else mask).sum())
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
    shapes = [s for s, area in zip(shapes, areas) if area >= whole_share * max(areas)]
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


def two_object_prompts(n: int, seed: int) -> list:
    """n two-shape scenes (two different colours, shapes and directions drawn independently) in
    held-out phrasings and joiners; seeds disjoint from `evaluation_prompts`."""
    rng = random.Random(seed + 7919)
    out = []
    for i in range(n):
        first, second = rng.sample(list(world.COLOURS), 2)
        objects = [{"colour": c, "shape": rng.choice(world.SHAPES), "direction": rng.choice(list(world.DIRECTIONS))}
                   for c in (first, second)]
        motions = [world.ShapeMotion(o["colour"], o["shape"], o["direction"], 8, 32, 32, 1.5) for o in objects]
        out.append({"prompt": world.caption(motions, rng, held_out=True), "objects": objects,
                    "seed": 50_000 + seed * 1000 + i})
    return out


def prompt_file_items(path: str, seed: int) -> list:
    """Prompts with what they ask, one per line: `prompt<TAB>colour shape direction | ...` ('#' lines are
    comments); seeds disjoint from the generated prompt sets. One object: an item as
    `evaluation_prompts` makes; more: as `two_object_prompts` makes (scored per colour)."""
    items = []
    with open(path, encoding="utf-8") as fh:
        lines = [line.rstrip("\n") for line in fh if line.strip() and not line.startswith("#")]
    for i, line in enumerate(lines):
        prompt, asked = line.split("\t")
        objects = [dict(zip(("colour", "shape", "direction"), part.split())) for part in asked.split("|")]
        item = {"prompt": prompt, "seed": 90_000 + seed * 1000 + i}
        items.append(item | objects[0] if len(objects) == 1 else item | {"objects": objects})
    return items


PALETTE = np.array([np.array(rgb) / max(rgb) for rgb in world.COLOURS.values()])
# a colour with less than this share of the most drawn colour's pixels is the mixed edge of two
# shapes (red over cyan reads white after H.264's chroma blur); the smallest triangle of the world
# has 0.22 of the largest square's area
MIN_COLOUR_SHARE = 0.12
WHOLE_SHARE = 0.9


def track_colours(frames: np.ndarray) -> dict:
    """{colour: analyse() of that colour's pixels alone} for every palette colour that shows in at
    least two frames: each object of a scene has its own colour, so its count, shape and direction
    are read off its own pixels even while another object crosses it (the shape from the frames
    where it shows whole)."""
    mask = np.stack([foreground(f) for f in frames])
    pixels = frames[mask].astype(np.float32)
    hues = pixels / np.maximum(pixels.max(axis=1, keepdims=True), 1e-6)
    labels = np.full(mask.shape, -1)
    labels[mask] = np.argmin(((hues[:, None, :] - PALETTE[None]) ** 2).sum(-1), axis=1)
    areas = np.bincount(labels[mask], minlength=len(PALETTE))
    tracks = {}
    for index, name in enumerate(world.COLOURS):
        mine = labels == index
        if areas[index] and areas[index] >= MIN_COLOUR_SHARE * areas.max():
            found = analyse(np.where(mine[..., None], frames, 0).astype(np.uint8), WHOLE_SHARE)
            if found["shape"] is not None:
                tracks[name] = found
    return tracks


def score_two_objects(item: dict, tracks: dict) -> dict:
    """Per asked object: its colour shows, its shape and direction are right, it is drawn once;
    `nothing_else`: no other colour shows."""
    objects = []
    for wanted in item["objects"]:
        found = tracks.get(wanted["colour"])
        objects.append({"colour": found is not None,
                        "shape": found is not None and found["shape"] == wanted["shape"],
                        "direction": found is not None and found["direction"] == wanted["direction"],
                        "once": found is not None and found["objects"] == 1})
    asked = {o["colour"] for o in item["objects"]}
    return {"objects": objects, "nothing_else": set(tracks) <= asked}


def edge_sharpness(frames: np.ndarray) -> float:
    """Mean gradient magnitude (0..255 per pixel) along the objects' outlines: at each outline
    pixel of the foreground mask, the steepest central-difference gradient of the brightest
    channel within 2 pixels (where a soft edge is steepest). A 1-pixel anti-aliased edge of a
    bright shape reads ~100, the same edge upscaled 4x bicubic about half of that."""
    import cv2

    value = frames.max(axis=-1).astype(np.float32)
    gy, gx = np.gradient(value, axis=(1, 2))
    kernel = np.ones((5, 5), np.uint8)
    found = []
    for magnitude, frame_value in zip(np.hypot(gx, gy), value):
        mask = (frame_value > FOREGROUND_LEVEL).astype(np.uint8)
        outline = mask.astype(bool) & ~cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)
        found.append(cv2.dilate(magnitude, kernel)[outline])
    found = np.concatenate(found)
    return float(found.mean()) if len(found) else 0.0


def reference_clip(objects: list, seed: int, num_frames: int, size: int) -> np.ndarray:
    """The world's renderer drawing the asked objects (random places, sizes, speeds) at `size`."""

    rng = random.Random(seed)
    scene = [world.sample_shape(rng, num_frames, colour=o["colour"], shape=o["shape"], direction=o["direction"])
             for o in objects]
    return world.to_uint8_frames(world.render([scene], num_frames, size)[0])


def evaluate(backend, n: int = 105, seed: int = 1, out_dir: str | None = None, via_mp4: bool = True,
             two_objects: int = 0, prompt_file: str | None = None, **generate_kwargs) -> dict:
    """Scores `n` one-object and `two_objects` two-object held-out prompts. Edge sharpness is
    compared with the renderer drawing the same objects at the output size (square clips),
    through the same MP4 round trip; `renderer_*` rates score those reference clips (how far the
    reader itself can be trusted). `prompt_file` (`prompt_file_items`) adds its prompts: one-object
    lines count with the one-object prompts, the others with the two-object ones (three-object
    lines also as `three_all_right_rate`)."""
    def through_file(frames, fps):
        if not via_mp4:
            return frames
        return decode_video(encode_video(frames, fps))[0]  # measure what users get: H.264 decoded back

    items = [(item, [{k: item[k] for k in ("colour", "shape", "direction")}]) for item in evaluation_prompts(n, seed)]
    items += [(item, item["objects"]) for item in two_object_prompts(two_objects, seed)]
    if prompt_file:
        items += [(item, item.get("objects") or [{k: item[k] for k in ("colour", "shape", "direction")}])
                  for item in prompt_file_items(prompt_file, seed)]
    rows, seconds = [], []
    for item, objects in items:
        started = time.perf_counter()
        result = backend.generate(GenerationRequest(prompt=item["prompt"], seed=item["seed"], **generate_kwargs))
        seconds.append(time.perf_counter() - started)
        frames = through_file(result.frames, result.fps)
        t, h, w = result.frames.shape[:3]
        reference = through_file(reference_clip(objects, item["seed"], t, min(h, w)), result.fps)
        score = _score_one if len(objects) == 1 else _score_two
        found, ok = score(item, frames)
        rows.append(item | {"found": found, "ok": ok, "reference_ok": _all_right(score(item, reference)[1]),
                            "consistency": temporal_consistency(frames), "sharpness": edge_sharpness(frames),
                            "reference_sharpness": edge_sharpness(reference)})
    one = [r for r in rows if "objects" not in r]
    two = [r for r in rows if "objects" in r]

    def rate(key):
        return float(np.mean([r["ok"][key] for r in one]))

    summary = {"prompts": n}
    if one:
        summary |= {
            "colour_accuracy": rate("colour"),
            "shape_accuracy": rate("shape"),
            "direction_accuracy": rate("direction"),
            "single_object_rate": rate("one_object"),
            "all_correct_rate": float(np.mean([_all_right(r["ok"]) for r in one])),
            "renderer_all_correct_rate": float(np.mean([r["reference_ok"] for r in one])),
        }
    if two:
        per_object = [o for r in two for o in r["ok"]["objects"]]
        summary |= {"two_object_prompts": len(two)}
        summary |= {f"two_{key}_rate": float(np.mean([o[key] for o in per_object]))
                    for key in ("colour", "shape", "direction", "once")}
        summary |= {
            "two_object_right_rate": float(np.mean([all(o.values()) for o in per_object])),
            "two_nothing_else_rate": float(np.mean([r["ok"]["nothing_else"] for r in two])),
            "two_all_right_rate": float(np.mean([_all_right(r["ok"]) for r in two])),
            "renderer_two_all_right_rate": float(np.mean([r["reference_ok"] for r in two])),
        }
        three = [r for r in two if len(r["objects"]) == 3]
        if three:
            summary |= {"three_object_prompts": len(three),
                        "three_all_right_rate": float(np.mean([_all_right(r["ok"]) for r in three])),
                        "two_only_all_right_rate": float(np.mean([_all_right(r["ok"]) for r in two
                                                                  if len(r["objects"]) == 2]))}
    summary |= {
        "temporal_consistency": float(np.mean([r["consistency"] for r in rows])),
        "edge_sharpness": float(np.mean([r["sharpness"] for r in rows])),
        "renderer_edge_sharpness": float(np.mean([r["reference_sharpness"] for r in rows])),
        "seconds_per_clip_p50": float(np.median(seconds)),
    }
    summary["sharpness_ratio"] = summary["edge_sharpness"] / max(summary["renderer_edge_sharpness"], 1e-9)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "eval.json"), "w") as fh:
            json.dump({"summary": summary, "rows": rows}, fh, indent=1)
    return summary | {"rows": rows}


def _score_one(item: dict, frames: np.ndarray) -> tuple:
    found = analyse(frames)
    return found, {k: found[k] == item[k] for k in ("colour", "shape", "direction")} | {
        "one_object": found["objects"] == 1}


def _score_two(item: dict, frames: np.ndarray) -> tuple:
    tracks = track_colours(frames)
    return tracks, score_two_objects(item, tracks)


def _all_right(ok: dict) -> bool:
    """One object: all four right. Two: every asked object right (colour, shape, direction,
    drawn once) and nothing else drawn."""
    if "objects" not in ok:
        return all(ok.values())
    return ok["nothing_else"] and all(all(o.values()) for o in ok["objects"])


BARS = {"colour_accuracy": ">= 0.98", "shape_accuracy": ">= 0.95", "direction_accuracy": ">= 0.97",
        "single_object_rate": ">= 0.97", "two_all_right_rate": ">= 0.80", "temporal_consistency": ">= 0.95",
        "sharpness_ratio": ">= 0.80"}


def noise_probe(pipe, timesteps=(100, 300, 500, 600, 700, 800, 900), seed: int = 0) -> dict:
    """{(shape, t): share of predicted frames classified as that shape} for one clip per colour."""
    import torch


    rng, noise_seed = random.Random(seed), torch.Generator().manual_seed(seed)
    device, scores = pipe.unet.device, {}
    for shape in world.SHAPES:
        scenes = [[world.ShapeMotion(colour, shape, "right", 8, 20, 32, 1.5)] for colour in world.COLOURS]
        clips = world.render(scenes, 16, 64)
        text = [x.to(device) for x in pipe.text_encoder([world.caption(scene, rng) for scene in scenes], objects=True)]
        for t in timesteps:
            timestep = torch.tensor([t])
            noisy = pipe.scheduler.add_noise(clips, torch.randn(clips.shape, generator=noise_seed), timestep)
            with torch.no_grad():
                x0 = pipe.unet(noisy.to(device), timestep, *text).clamp(-1, 1).cpu()
            frames = [f for clip in x0 for f in world.to_uint8_frames(clip) if foreground(f).sum() > 8]
            scores[(shape, t)] = float(np.mean([classify_shape(foreground(f)) == shape for f in frames] or [0.0]))
    return scores


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=105, help="one-object prompts")
    parser.add_argument("--two-object-prompts", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--prompt-file", help="more prompts with what they ask (see prompt_file_items), e.g. "
                                              "tests/data/heldout_phrasings.txt")
    parser.add_argument("--model", default="builtin", choices=("builtin", "builtin-v3"))
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
    if args.model == "builtin-v3":
        from generator.builtin.backend_v3 import BuiltinV3Backend

        backend = BuiltinV3Backend(args.model_path)
        backend.load()
        backend.pipe.denoiser.to(args.device)
        backend.pipe.tokenizer.to(args.device)
    else:
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
                      two_objects=args.two_object_prompts, prompt_file=args.prompt_file, steps=args.steps,
                      guidance_scale=args.guidance)
    misses = [r for r in result.pop("rows") if not _all_right(r["ok"])]
    for r in misses[:15]:
        print(f"miss: {r['prompt']!r} -> {r['found']}")
    print("| metric | value | bar |\n|---|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value:.3f} | {BARS.get(key, '')} |" if isinstance(value, float)
              else f"| {key} | {value} | |")


if __name__ == "__main__":
    main()
