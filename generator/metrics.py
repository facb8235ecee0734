"""Video quality metrics that run offline: temporal consistency, FVD and VBench-style dimensions.

Every function takes decoded clips (T x H x W x 3 uint8 arrays, e.g. from
`generator.encode.decode_video`) and returns plain floats.

- `temporal_consistency(frames, embed)`: mean cosine similarity of consecutive frames'
  embeddings; identical frames give 1.0. `embed` is pluggable: `default_embedder()` is a local
  CLIP when env `VIDEO_METRICS_CLIP_PATH` names a CLIP folder (loaded with transformers from that
  folder only), else small pooled thumbnails (no model, no download).
- `fvd(videos_a, videos_b, features)`: Frechet distance between the Gaussian fits (mean,
  covariance) of two sets' video features. The published FVD uses an I3D network (a download);
  the offline default feature extractor `video_features` describes appearance and motion with
  pooled thumbnails, so its numbers compare runs of this project, not papers.
- VBench-style dimensions without their networks (VBench uses DINO, CLIP, AMT and RAFT):
  `motion_smoothness` (how well each frame is predicted by interpolating its neighbours),
  `dynamic_degree` (how much of the picture moves), `subject_consistency` (the foreground
  object's look across frames) and `background_consistency` (the rest of the picture).

CLI: python -m generator.metrics a.mp4 [b.mp4 ...] [--reference-dir DIR] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np

from generator.encode import decode_video
from generator.evaluate import frame_embeddings, temporal_consistency as _temporal_consistency

CLIP_PATH_ENV = "VIDEO_METRICS_CLIP_PATH"
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi")
CHANGE_LEVEL = 12.0  # a pixel "moves" when a channel changes by more than this (0..255): above codec noise
DYNAMIC_THRESHOLD = 0.002  # clips whose moving fraction exceeds this count as dynamic
SUBJECT_LEVEL = 40.0  # foreground: a pixel this far (max over channels) from the border colour
METRICS_MAX_SIDE = 256  # video_metrics averages larger frames down to this (memory: 121 frames of 768x512)

Embedder = Callable[[np.ndarray], np.ndarray]  # T x H x W x 3 uint8 -> T x D


# ------------------------------------------------------------------ embedders
class ClipEmbedder:
    """CLIP image features from a local folder (CLIPModel + CLIPImageProcessor; no network)."""

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 16):
        import torch
        from transformers import CLIPImageProcessor, CLIPModel

        if not os.path.isdir(path):
            raise FileNotFoundError(f"{CLIP_PATH_ENV}: {path!r} is not a folder holding a CLIP checkpoint")
        self.torch, self.device, self.batch_size = torch, device, batch_size
        self.processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
        self.model = CLIPModel.from_pretrained(path, local_files_only=True).eval().to(device)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = []
        with self.torch.no_grad():
            for start in range(0, len(frames), self.batch_size):
                batch = self.processor(images=list(frames[start:start + self.batch_size]), return_tensors="pt")
                features = self.model.get_image_features(pixel_values=batch["pixel_values"].to(self.device))
                if not isinstance(features, self.torch.Tensor):  # transformers 5 may return a model output
                    features = features.pooler_output
                out.append(features.float().cpu().numpy())
        return np.concatenate(out)


@lru_cache(maxsize=1)
def _clip_embedder(path: str) -> ClipEmbedder:
    return ClipEmbedder(path)


def default_embedder() -> Embedder:
    """The configured CLIP (env VIDEO_METRICS_CLIP_PATH) or the model-free thumbnail embedder."""
    path = os.environ.get(CLIP_PATH_ENV)
    return _clip_embedder(path) if path else frame_embeddings


def temporal_consistency(frames: np.ndarray, embed: Embedder | None = None) -> float:
    """Mean cosine similarity of consecutive frames' embeddings (1.0 for identical frames)."""
    return _temporal_consistency(_check(frames), embed or default_embedder())


# ------------------------------------------------------------------ FVD
def video_features(frames: np.ndarray) -> np.ndarray:
    """Offline per-video feature: the mean 4x4 thumbnail (appearance), the mean absolute change
    between consecutive 4x4 thumbnails (where it moves) and the mean/std of the frame-to-frame
    motion of the thumbnails' centre of brightness (how it moves). 99 numbers in about [0, 1]."""
    frames = _check(frames).astype(np.float32) / 255.0
    thumbs = _pool(frames, 4)  # T x 4 x 4 x 3
    change = np.abs(np.diff(thumbs, axis=0)).mean(0) if len(thumbs) > 1 else np.zeros_like(thumbs[0])
    centres = _centre_of_brightness(frames)
    velocity = np.diff(centres, axis=0) if len(centres) > 1 else np.zeros((1, 2))
    return np.concatenate([thumbs.mean(0).ravel(), change.ravel(), velocity.mean(0), velocity.std(0),
                           [np.abs(velocity).mean()]])


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + tr(A + B - 2 (A B)^1/2), with tr (A B)^1/2 from the symmetric form
    A^1/2 B A^1/2 (real eigenvalues, no scipy)."""
    values, vectors = np.linalg.eigh(cov_a)
    sqrt_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    distance = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)
    return max(distance, 0.0)  # rounding can leave -1e-15 for equal sets


def feature_statistics(videos: Iterable[np.ndarray], features: Callable = video_features) -> tuple:
    rows = np.stack([np.asarray(features(v), dtype=np.float64).ravel() for v in videos])
    if len(rows) < 2:
        raise ValueError("FVD needs at least two videos per set (a covariance)")
    return rows.mean(0), np.cov(rows, rowvar=False)


def fvd(videos_a: Sequence[np.ndarray], videos_b: Sequence[np.ndarray], features: Callable = video_features) -> float:
    """Frechet (video) distance between two sets of clips under the `features` extractor."""
    return frechet_distance(*feature_statistics(videos_a, features), *feature_statistics(videos_b, features))


# ------------------------------------------------------------------ VBench-style dimensions
def motion_smoothness(frames: np.ndarray) -> float:
    """1 - mean |frame_k - (frame_k-1 + frame_k+1) / 2| / 255 over the inner frames (VBench
    interpolates with a network; linear blending on a blurred copy stands in for it). A still clip
    scores 1.0; jerky or flickering motion scores lower than steady motion."""
    frames = _blur(_check(frames).astype(np.float32))
    if len(frames) < 3:
        return 1.0
    predicted = (frames[:-2] + frames[2:]) / 2
    return float(1.0 - np.abs(frames[1:-1] - predicted).mean() / 255.0)


def dynamic_degree(frames: np.ndarray) -> float:
    """Mean fraction of pixels that change (by more than CHANGE_LEVEL) between consecutive frames:
    0 for a still clip. `is_dynamic` applies VBench's yes/no reading with DYNAMIC_THRESHOLD."""
    frames = _check(frames).astype(np.float32)
    if len(frames) < 2:
        return 0.0
    return float((np.abs(np.diff(frames, axis=0)).max(axis=-1) > CHANGE_LEVEL).mean())


def is_dynamic(frames: np.ndarray) -> bool:
    return dynamic_degree(frames) > DYNAMIC_THRESHOLD


def _pairwise_consistency(vectors: np.ndarray) -> float:
    """VBench's reading: each frame's cosine to the first frame and to the previous one, averaged."""
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if len(vectors) < 2:
        return 1.0
    to_first = vectors[1:] @ vectors[0]
    to_previous = np.sum(vectors[1:] * vectors[:-1], axis=1)
    return float(np.mean((to_first + to_previous) / 2))


def subject_consistency(frames: np.ndarray, embed: Embedder | None = None) -> float:
    """Does the foreground object keep its look? Each frame's subject is the bounding box of the
    pixels that differ from the border colour, resized to 16x16 (position-free); compared as
    VBench does (to the first and the previous frame). With `embed` (e.g. a CLIP) the crops are
    embedded first."""
    frames = _check(frames)
    crops = np.stack([_subject_crop(frame) for frame in frames])
    vectors = embed(crops) if embed else crops.reshape(len(crops), -1).astype(np.float64) / 255.0
    return _pairwise_consistency(np.asarray(vectors, dtype=np.float64))


def background_consistency(frames: np.ndarray, embed: Embedder | None = None) -> float:
    """Does the rest of the picture hold still? The subject's pixels are painted with the border
    colour, then the 16x16 thumbnails are compared like `subject_consistency`."""
    frames = _check(frames)
    backgrounds = np.stack([_without_subject(frame) for frame in frames])
    if embed:
        vectors = embed(backgrounds)
    else:
        vectors = _pool(backgrounds.astype(np.float32) / 255.0, 16).reshape(len(frames), -1)
    return _pairwise_consistency(np.asarray(vectors, dtype=np.float64))


def video_metrics(frames: np.ndarray, embed: Embedder | None = None) -> dict:
    """Every single-video metric of this module, rounded for messages and tables; frames larger
    than METRICS_MAX_SIDE are averaged down by an integer factor first."""
    frames = _downscale(_check(frames), METRICS_MAX_SIDE)
    values = {
        "temporal_consistency": temporal_consistency(frames, embed),
        "motion_smoothness": motion_smoothness(frames),
        "dynamic_degree": dynamic_degree(frames),
        "subject_consistency": subject_consistency(frames),
        "background_consistency": background_consistency(frames),
    }
    out = {name: round(value, 4) for name, value in values.items()}
    out["dynamic"] = values["dynamic_degree"] > DYNAMIC_THRESHOLD
    return out


# ------------------------------------------------------------------ helpers
def _check(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"expected frames T x H x W x 3, got shape {frames.shape}")
    return frames


def _downscale(frames: np.ndarray, max_side: int) -> np.ndarray:
    t, h, w, c = frames.shape
    factor = -(-max(h, w) // max_side)
    if factor <= 1:
        return frames
    h, w = h // factor, w // factor
    out = np.empty((t, h, w, c), dtype=np.uint8)
    for i, frame in enumerate(frames):  # one frame at a time: float copies of a whole long video are large
        block = frame[: h * factor, : w * factor].reshape(h, factor, w, factor, c).astype(np.float32)
        out[i] = block.mean(axis=(1, 3)).round().astype(np.uint8)
    return out


def _pool(frames: np.ndarray, size: int) -> np.ndarray:
    """Average-pool T x H x W x C down to T x size x size x C (crops the remainder)."""
    t, h, w, c = frames.shape
    fh, fw = max(h // size, 1), max(w // size, 1)
    size_h, size_w = min(size, h), min(size, w)
    return frames[:, : fh * size_h, : fw * size_w].reshape(t, size_h, fh, size_w, fw, c).mean(axis=(2, 4))


def _blur(frames: np.ndarray, radius: int = 2) -> np.ndarray:
    """Box blur in space (separable, edge-padded), so small displacements blend like motion."""
    for axis in (1, 2):
        padded = np.pad(frames, [(radius, radius) if a == axis else (0, 0) for a in range(4)], mode="edge")
        cumulative = np.cumsum(padded, axis=axis, dtype=np.float64)
        cumulative = np.insert(cumulative, 0, 0.0, axis=axis)
        n = frames.shape[axis]
        upper = np.take(cumulative, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
        lower = np.take(cumulative, np.arange(0, n), axis=axis)
        frames = ((upper - lower) / (2 * radius + 1)).astype(np.float32)
    return frames


def _centre_of_brightness(frames: np.ndarray) -> np.ndarray:
    """T x 2 (x, y in 0..1) weighted by each pixel's distance from the frame's median colour."""
    t, h, w, _ = frames.shape
    weight = np.abs(frames - np.median(frames, axis=(1, 2), keepdims=True)).max(-1) + 1e-6
    ys, xs = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
    total = weight.sum(axis=(1, 2))
    return np.stack([(weight.sum(1) * xs).sum(1) / total, (weight.sum(2) * ys).sum(1) / total], axis=1)


def _border_colour(frame: np.ndarray) -> np.ndarray:
    border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
    return np.median(border, axis=0)


def _subject_mask(frame: np.ndarray) -> np.ndarray:
    return np.abs(frame.astype(np.float32) - _border_colour(frame)).max(-1) > SUBJECT_LEVEL


def _subject_crop(frame: np.ndarray, size: int = 16) -> np.ndarray:
    mask = _subject_mask(frame)
    if mask.sum() == 0:  # no subject: the whole frame stands for it
        crop = frame
    else:
        ys, xs = np.nonzero(mask)
        crop = frame[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    rows = np.linspace(0, crop.shape[0] - 1, size).round().astype(int)
    cols = np.linspace(0, crop.shape[1] - 1, size).round().astype(int)
    return crop[rows][:, cols]


def _without_subject(frame: np.ndarray) -> np.ndarray:
    out = frame.copy()
    out[_subject_mask(frame)] = _border_colour(frame).astype(frame.dtype)
    return out


# ------------------------------------------------------------------ CLI
def _video_files(folder: str) -> list:
    if not os.path.isdir(folder):
        raise SystemExit(f"--reference-dir {folder!r} is not a folder")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(VIDEO_SUFFIXES))
    if not names:
        raise SystemExit(f"--reference-dir {folder!r} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    return [os.path.join(folder, n) for n in names]


def _decode(path: str) -> np.ndarray:
    try:
        return decode_video(path)[0]
    except Exception as exc:  # PyAV raises several error classes for non-videos
        raise SystemExit(f"{path}: not a readable video ({exc})") from None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+", help="video files to score")
    parser.add_argument("--reference-dir", help="a folder of reference videos: also print FVD(videos, reference)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    clips = {path: _decode(path) for path in args.videos}
    rows = {path: video_metrics(frames) for path, frames in clips.items()}
    report = {"videos": rows}
    if args.reference_dir:
        reference = [_decode(p) for p in _video_files(args.reference_dir)]
        try:
            report["fvd"] = round(fvd(list(clips.values()), reference), 4)
        except ValueError as exc:
            raise SystemExit(f"FVD: {exc}") from None
        report["reference_videos"] = len(reference)
    if args.json:
        print(json.dumps(report, indent=1))
        return report
    columns = list(next(iter(rows.values())))
    print("| video | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for path, row in rows.items():
        print(f"| {os.path.basename(path)} | " + " | ".join(str(row[c]) for c in columns) + " |")
    if "fvd" in report:
        print(f"\nFVD ({len(clips)} videos vs {report['reference_videos']} in {args.reference_dir}): {report['fvd']}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
