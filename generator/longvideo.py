"""Long videos and post-processing on every backend, through the common interface.

Three strategies (MISSION.md, "Further capabilities"), composed by `run_job`:

1. `extend`: autoregressive extension. Chunk i > 0 is conditioned on the last frames of chunk
   i-1 (`GenerationRequest.start_frames`; a backend with only image-to-video gets the last frame
   as `image`), so its first `n` frames re-create the previous chunk's last `n`; those are blended
   with the ramp w(f) = (f - f_start) / n, x = w x_new + (1 - w) x_old.
   A text-only backend cannot be conditioned: its chunks are independent and the overlap is a
   cross-fade (the seams show; the service should prefer a model with image-to-video).
2. `interpolate`: key frames + optical flow. Between each pair of frames, k - 1 frames
   x_t = (1 - t) Warp(x0, F_t->0) + t Warp(x1, F_t->1), with OpenCV's dense DIS flow both ways
   and cv2.remap; pairs run in parallel on a thread pool (OpenCV releases the GIL).
3. `hierarchical`: a low-res, low-fps base generation, then per-frame super-resolution
   (bicubic + unsharp mask, generator.postprocess.resize_frames, frame-parallel; or the model's
   latent upsampler, below), then `interpolate`.

Options multiply the request: the request's num_frames/width/height/fps describe one base chunk,
`upscale` multiplies the size and `interpolate` the fps (frames: (T - 1) * k + 1); the caps on
these options and that arithmetic are in generator/shape.py (no OpenCV: the web tier validates with it).

Model-native versions. A backend may offer, as optional attributes (checked with getattr; the
diffusers backend sets them when its configuration allows, see docs/models.md):

- `continuation_frames(overlap, num_frames) -> int`: it continues a clip natively from that many
  trailing frames of the previous chunk (given as `start_frames`; 0: not for these numbers). Used by
  `extend` instead of `max_start_frames` (LTX / LTX-2 condition pipelines: whole latent frames, 8k+1;
  Wan VACE: kept frames under a mask).
- `generate_long(request, num_chunks, shared, progress, should_cancel) -> GenerationResult`: it
  makes the whole extended video itself, chunk after chunk sharing `shared` frames (SkyReels-V2's
  diffusion forcing). `extend` hands the job over and blends nothing.
- `upscale_video(frames, factor, should_cancel) -> frames` for the factors in
  `latent_upscale_factors`: super-resolution in latent space (LTX's latent upsampler), used by
  `run_job` (and so `hierarchical`) instead of the pixel-space `upscale_frames`, on the whole
  video at once (one VAE pass: its batches would not join seamlessly).
- `generate_refined(request, upscale, interpolate, progress, should_cancel) -> GenerationResult | None`
  for the factors in `native_factors` ({"upscale": [...], "interpolate": [...]}; 1: not asked): the one
  clip made at `upscale` x its size and `interpolate` x its fps by the model itself (LTX-2.5's second pass
  and temporal refine rounds after its DFR pass), used by `run_job` for a one-chunk job instead of those
  post-steps; None when this request's task cannot (the post-steps follow).

A sound track (GenerationResult.audio) follows the video: chunks' tracks are cross-faded over the
shared frames; upscaling and interpolation keep the duration, so they keep the track.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable, Optional

import cv2
import numpy as np

from generator.interface import (Backend, Cancelled, CancelCheck, GenerationRequest, GenerationResult,
                                 ProgressCallback)
from generator.postprocess import resize_frames
from generator.shape import MAX_CHUNKS, LongVideoOptions, chunks_for_duration

FramesCallback = Callable[[np.ndarray], None]  # final frames of a video, in order, as they are ready

# our parallelism is one pair (or frame) per thread; OpenCV's own pool on top would oversubscribe
cv2.setNumThreads(1)

FLOW_MAX_SIDE = 512  # flow is computed at most this large, then scaled up


def _workers(workers: Optional[int]) -> int:
    return max(1, workers or os.cpu_count() or 1)


# ------------------------------------------------------------------ 1. extension
def blend_weights(overlap: int) -> np.ndarray:
    """w(f) = (f - f_start) / f_overlap for the overlap's frames f_start .. f_start + overlap - 1."""
    return np.arange(overlap, dtype=np.float32) / float(overlap)


def blend_overlap(old: np.ndarray, new: np.ndarray, overlap: int) -> np.ndarray:
    """Append `new` to `old`, whose last `overlap` frames and new's first `overlap` show the same instants."""
    if overlap <= 0:
        return np.concatenate([old, new])
    w = blend_weights(overlap).reshape(-1, 1, 1, 1)
    mixed = w * new[:overlap].astype(np.float32) + (1.0 - w) * old[-overlap:].astype(np.float32)
    mixed = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return np.concatenate([old[:-overlap], mixed, new[overlap:]])


def blend_audio(old: np.ndarray, new: np.ndarray, overlap: int) -> np.ndarray:
    """Append the track `new` to `old` (samples x channels), cross-fading their `overlap` shared samples."""
    overlap = min(overlap, len(old), len(new))
    if overlap <= 0:
        return np.concatenate([old, new])
    w = blend_weights(overlap)[:, None]
    mixed = w * new[:overlap] + (1.0 - w) * old[-overlap:]
    return np.concatenate([old[:len(old) - overlap], mixed.astype(old.dtype), new[overlap:]])


def conditioned_frames(backend: Backend, overlap: int, num_frames: Optional[int] = None) -> int:
    """How many previous frames a chunk can be conditioned on (0: the backend is text-to-video only).
    A backend's native `continuation_frames` decides when it has one (it may share more than `overlap`)."""
    native = getattr(backend, "continuation_frames", None)
    if native is not None and num_frames is not None:
        k = int(native(overlap, num_frames))
        if k:
            return k
    if not backend.info.supports_image:
        return 0
    return max(1, min(overlap, int(getattr(backend, "max_start_frames", 1))))


def effective_overlap(backend: Backend, overlap: int, num_frames: Optional[int] = None) -> int:
    """Frames shared by consecutive chunks: the conditioned ones, or `overlap` cross-faded ones."""
    k = conditioned_frames(backend, overlap, num_frames)
    return k if k else overlap


def extend(backend: Backend, request: GenerationRequest, num_chunks: Optional[int] = None, overlap: int = 4,
           progress: Optional[ProgressCallback] = None, should_cancel: Optional[CancelCheck] = None,
           duration_s: Optional[float] = None, on_frames: Optional[FramesCallback] = None) -> GenerationResult:
    """Generate `num_chunks` chunks (or enough for `duration_s` seconds, trimmed to it) as one video.

    Progress reports (step, total) over all chunks; cancel is checked between chunks and, by the
    backend, between steps. Chunk i uses seed + i. `on_frames` gets the frames no later chunk can
    change, as soon as they are: after each chunk all but the ones the next chunk blends. A backend
    with `generate_long` makes the whole video itself (then on_frames gets it at once).
    """
    req = backend.fill_defaults(request)
    frames_per_chunk = req.num_frames
    if not 1 <= overlap < frames_per_chunk:
        raise ValueError(f"overlap must be between 1 and {frames_per_chunk - 1} (num_frames - 1)")
    cond = conditioned_frames(backend, overlap, frames_per_chunk)
    shared = cond if cond else overlap
    if duration_s is not None:  # a native continuation may share more frames than asked: chunks stay capped
        num_chunks = min(MAX_CHUNKS, chunks_for_duration(duration_s, req.fps, frames_per_chunk, shared))
    num_chunks = int(num_chunks or 1)
    if num_chunks < 1:
        raise ValueError("num_chunks must be at least 1")
    length = math.ceil(duration_s * req.fps - 1e-9) if duration_s is not None else None
    long = getattr(backend, "generate_long", None)
    if long is not None and num_chunks > 1:
        if should_cancel is not None and should_cancel():
            raise Cancelled()
        result = long(req, num_chunks, shared, progress=progress, should_cancel=should_cancel)
        video = result.frames[:max(1, length)] if length is not None else result.frames
        if on_frames is not None:
            on_frames(video)
        return _with_audio(replace(result, frames=video, seed=req.seed), result.audio)

    total = num_chunks * req.steps
    done = [0]  # steps finished in earlier chunks
    video, first, emitted, audio = None, None, 0, None
    for i in range(num_chunks):
        if should_cancel is not None and should_cancel():
            raise Cancelled()
        chunk_req = replace(req, seed=(req.seed + i) % (2 ** 31))
        if i > 0:
            if cond:
                tail = np.ascontiguousarray(video[-cond:])
                chunk_req = replace(chunk_req, start_frames=tail, image=tail[-1])
            else:
                chunk_req = replace(chunk_req, start_frames=None, image=None)

        def on_step(step, _total, preview, _offset=done[0]):
            if progress is not None:
                progress(_offset + step, total, preview)

        result = backend.generate(chunk_req, progress=on_step, should_cancel=should_cancel)
        done[0] += req.steps
        frames = result.frames
        if first is None:
            first, video, audio = result, frames, result.audio
        else:
            video = blend_overlap(video, frames, shared)
            if audio is not None and result.audio is not None:
                audio = blend_audio(audio, result.audio, round(shared / req.fps * first.audio_sample_rate))
        final = len(video) if i == num_chunks - 1 else len(video) - shared
        if length is not None:
            final = min(final, max(1, length))
        if on_frames is not None and final > emitted:
            on_frames(video[emitted:final])
            emitted = final
    if length is not None:
        video = video[:max(1, length)]
    return _with_audio(GenerationResult(frames=video, fps=first.fps, seed=req.seed, native_size=first.native_size,
                                        audio_sample_rate=first.audio_sample_rate), audio)


def _with_audio(result: GenerationResult, audio: Optional[np.ndarray]) -> GenerationResult:
    """The result with `audio` cut to its frames' duration (or without sound)."""
    if audio is None or result.audio_sample_rate is None:
        return replace(result, audio=None, audio_sample_rate=None)
    return replace(result, audio=audio[:round(len(result.frames) / result.fps * result.audio_sample_rate)])


def seam_positions(num_chunks: int, num_frames: int, overlap: int) -> list:
    """(first frame of the blended overlap, overlap) for each seam of an extended video."""
    return [(i * (num_frames - overlap), overlap) for i in range(1, num_chunks)]


def seam_metrics(frames: np.ndarray, seams: list) -> dict:
    """How much the video changes at its seams vs inside its chunks.

    A seam's window holds the frame-to-frame differences from the frame before the overlap to the
    first unblended new frame; its value is the largest of them (a hard cut shows as one big jump,
    a blend spreads it). mad: mean absolute difference (0-255 levels), boundary = mean over seams,
    inside = mean over the differences outside every window, ratio = boundary / inside.
    tc: temporal consistency (cosine similarity of consecutive frame embeddings, as in
    generator.evaluate), the lowest in each window vs the mean inside.
    """
    from generator.evaluate import frame_embeddings

    f = frames.astype(np.float32)
    diffs = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))
    e = frame_embeddings(frames)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    cos = np.sum(e[1:] * e[:-1], axis=1)
    windows = [list(range(max(0, s - 1), min(s + n, len(diffs)))) for s, n in seams]
    in_seam = {i for w in windows for i in w}
    inside = [i for i in range(len(diffs)) if i not in in_seam] or list(range(len(diffs)))
    out = {
        "boundary_mad": float(np.mean([diffs[w].max() for w in windows])) if windows else 0.0,
        "inside_mad": float(diffs[inside].mean()),
        "boundary_tc": float(np.mean([cos[w].min() for w in windows])) if windows else 1.0,
        "inside_tc": float(cos[inside].mean()),
    }
    out["mad_ratio"] = out["boundary_mad"] / max(out["inside_mad"], 1e-6)
    return out


# ------------------------------------------------------------------ 2. flow interpolation
def _flow_both_ways(a: np.ndarray, b: np.ndarray, max_side: int = FLOW_MAX_SIDE) -> tuple:
    """Dense flow a->b and b->a (H x W x 2, pixels), computed at most max_side large."""
    h, w = a.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    ga, gb = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        ga, gb = cv2.resize(ga, size, interpolation=cv2.INTER_AREA), cv2.resize(gb, size, interpolation=cv2.INTER_AREA)
    # a DIS instance per call: instances keep state and are not meant to be shared between threads
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    f_ab = dis.calc(ga, gb, None)
    f_ba = dis.calc(gb, ga, None)
    if scale < 1.0:
        f_ab = cv2.resize(f_ab, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(w / ga.shape[1])
        f_ba = cv2.resize(f_ba, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(w / ga.shape[1])
    return f_ab, f_ba


def _warp(image: np.ndarray, flow: np.ndarray, grid: tuple) -> np.ndarray:
    """Backward warp: out(p) = image(p + flow(p)), bilinear, edges replicated."""
    map_x = grid[0] + flow[..., 0]
    map_y = grid[1] + flow[..., 1]
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def interpolate_pair(x0: np.ndarray, x1: np.ndarray, factor: int, max_side: int = FLOW_MAX_SIDE) -> list:
    """The factor - 1 frames between x0 and x1 (t = j / factor), warped from both sides.

    Flows to the intermediate instant follow Super SloMo's linear-motion approximation:
    F_t->0 = -(1-t) t F_0->1 + t^2 F_1->0,  F_t->1 = (1-t)^2 F_0->1 - t (1-t) F_1->0.
    """
    f01, f10 = _flow_both_ways(x0, x1, max_side)
    h, w = x0.shape[:2]
    grid = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    a, b = x0.astype(np.float32), x1.astype(np.float32)
    out = []
    for j in range(1, factor):
        t = j / factor
        ft0 = -(1 - t) * t * f01 + t * t * f10
        ft1 = (1 - t) ** 2 * f01 - t * (1 - t) * f10
        mid = (1 - t) * _warp(a, ft0, grid) + t * _warp(b, ft1, grid)
        out.append(np.clip(np.rint(mid), 0, 255).astype(np.uint8))
    return out


def blend_pair(x0: np.ndarray, x1: np.ndarray, factor: int) -> list:
    """The baseline: plain cross-fades (1 - t) x0 + t x1."""
    a, b = x0.astype(np.float32), x1.astype(np.float32)
    return [np.clip(np.rint((1 - j / factor) * a + j / factor * b), 0, 255).astype(np.uint8)
            for j in range(1, factor)]


def interpolate(frames: np.ndarray, factor: int, workers: Optional[int] = None, method: str = "flow",
                should_cancel: Optional[CancelCheck] = None) -> np.ndarray:
    """T x H x W x 3 -> ((T - 1) * factor + 1) x H x W x 3; the fps multiplies by factor.

    Pairs run in parallel (`workers` threads, default every core); workers=1 is the serial reference.
    """
    factor = int(factor)
    if factor < 1:
        raise ValueError("interpolation factor must be at least 1")
    if factor == 1 or len(frames) < 2:
        return frames
    pair = interpolate_pair if method == "flow" else blend_pair

    def one(i):
        if should_cancel is not None and should_cancel():
            raise Cancelled()
        return pair(frames[i], frames[i + 1], factor)

    n = _workers(workers)
    if n == 1:
        middles = [one(i) for i in range(len(frames) - 1)]
    else:
        with ThreadPoolExecutor(max_workers=n) as pool:
            middles = list(pool.map(one, range(len(frames) - 1)))
    out = np.empty(((len(frames) - 1) * factor + 1,) + frames.shape[1:], np.uint8)
    for i, mids in enumerate(middles):
        out[i * factor] = frames[i]
        for j, m in enumerate(mids, 1):
            out[i * factor + j] = m
    out[-1] = frames[-1]
    return out


# ------------------------------------------------------------------ 3. super-resolution + hierarchical
def upscale_frames(frames: np.ndarray, factor: int, workers: Optional[int] = None) -> np.ndarray:
    """Per-frame super-resolution by `factor`: bicubic + unsharp mask, one frame per thread."""
    if factor == 1:
        return frames
    h, w = frames.shape[1:3]
    return resize_frames(frames, (h * factor, w * factor), sharpen=True, workers=_workers(workers))


def hierarchical(backend: Backend, request: GenerationRequest, upscale: int = 2, interpolate_factor: int = 4,
                 progress: Optional[ProgressCallback] = None, should_cancel: Optional[CancelCheck] = None,
                 workers: Optional[int] = None) -> GenerationResult:
    """Low-res, low-fps base clip (the request as given) -> super-resolution x upscale -> interpolation."""
    return run_job(backend, request, LongVideoOptions(upscale=upscale, interpolate=interpolate_factor),
                   progress, should_cancel, workers)


# ------------------------------------------------------------------ 4. the worker's entry point
class _Finisher:
    """Upscaling and interpolation of final frames batch by batch, as they stream: per-frame
    upscaling, and interpolation of each new pair (the first pair of a batch bridges it with the
    previous batch's last frame), so the batches add up to the whole video's post-processing. A
    backend's latent upsampler instead gets the whole video at close()."""

    def __init__(self, options: LongVideoOptions, workers: Optional[int], should_cancel: Optional[CancelCheck],
                 sink: FramesCallback, backend: Optional[Backend] = None):
        self.options, self.workers, self.should_cancel, self.sink = options, workers, should_cancel, sink
        self.last = None  # the previous batch's last frame, after upscaling
        # the model's latent upsampler takes the whole video in one VAE pass: batches wait for close()
        self.native = backend if options.upscale in getattr(backend, "latent_upscale_factors", ()) else None
        self.waiting = []

    def close(self) -> None:
        if self.native is not None and self.waiting:
            frames, self.waiting = np.concatenate(self.waiting), []
            if self.should_cancel is not None and self.should_cancel():
                raise Cancelled()
            self._finish(self.native.upscale_video(frames, self.options.upscale, self.should_cancel))

    def __call__(self, frames: np.ndarray) -> None:
        if self.native is not None:
            self.waiting.append(frames)
        elif self.options.upscale > 1:
            if self.should_cancel is not None and self.should_cancel():
                raise Cancelled()
            self._finish(upscale_frames(frames, self.options.upscale, self.workers))
        else:
            self._finish(frames)

    def _finish(self, frames: np.ndarray) -> None:
        options = self.options
        if options.interpolate > 1:
            if self.should_cancel is not None and self.should_cancel():
                raise Cancelled()
            bridged = frames if self.last is None else np.concatenate([self.last[None], frames])
            out = interpolate(bridged, options.interpolate, self.workers, should_cancel=self.should_cancel)
            self.last = frames[-1]
            frames = out if bridged is frames else out[1:]  # (the bridge frame went out with the last batch)
        self.sink(frames)


def run_job(backend: Backend, request: GenerationRequest, options: Optional[LongVideoOptions] = None,
            progress: Optional[ProgressCallback] = None, should_cancel: Optional[CancelCheck] = None,
            workers: Optional[int] = None, on_frames: Optional[FramesCallback] = None) -> GenerationResult:
    """Generate (extended over chunks when asked), then upscale, then interpolate.

    Progress counts denoising steps over all chunks; cancel is honoured between chunks, steps and
    post-processing stages (and interpolation pairs). The result's fps is the request's x interpolate.
    `on_frames` receives the final video's frames in order, batch by batch as soon as no later
    chunk can change them (streaming); the batches add up to the result's frames.
    """
    options = options or LongVideoOptions()
    req = backend.fill_defaults(request)
    batches = []

    def keep(frames):
        batches.append(frames)
        if on_frames is not None:
            on_frames(frames)
    extending = options.num_chunks > 1 or options.duration_s is not None
    native = None
    factors = getattr(backend, "native_factors", {})
    upscale = options.upscale if options.upscale in factors.get("upscale", ()) else 1
    interpolate = options.interpolate if options.interpolate in factors.get("interpolate", ()) else 1
    if not extending and (upscale, interpolate) != (1, 1):
        native = backend.generate_refined(req, upscale, interpolate, progress, should_cancel)
    if native is not None:  # what the model made itself is not done again
        options = replace(options, upscale=options.upscale // upscale, interpolate=options.interpolate // interpolate)
    finish = _Finisher(options, workers, should_cancel, keep, backend)
    if native is not None:
        result = native
        finish(result.frames)
    elif extending:
        result = extend(backend, req, num_chunks=options.num_chunks, overlap=options.overlap_for(req.num_frames),
                        progress=progress, should_cancel=should_cancel, duration_s=options.duration_s,
                        on_frames=finish)
    else:
        result = backend.generate(req, progress=progress, should_cancel=should_cancel)
        finish(result.frames)
    finish.close()
    return GenerationResult(frames=np.concatenate(batches), fps=result.fps * options.interpolate, seed=result.seed,
                            native_size=result.native_size, audio=result.audio,
                            audio_sample_rate=result.audio_sample_rate,
                            # the HDR master is the model's one clip, as made: not extended, upscaled or interpolated
                            hdr_frames=None if options.active else result.hdr_frames)
