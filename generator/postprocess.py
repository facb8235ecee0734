"""Frame-parallel post-processing: every frame is resized / sharpened on its own thread.

Pillow releases the GIL inside resize and filter, so a thread pool keeps every core busy;
`workers=1` runs the same per-frame function serially (the tests compare the two).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageFilter

from generator.understanding.base import DescribeError, sample_frames

FrameFn = Callable[[np.ndarray], np.ndarray]


def map_frames(fn: FrameFn, frames: np.ndarray, workers: Optional[int] = None) -> np.ndarray:
    """Apply `fn` to each frame of T x H x W x C, in parallel; each result lands in its own slot."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(frames) == 1:
        return np.stack([fn(f) for f in frames])
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.stack(list(pool.map(fn, frames)))


def resize_frame(frame: np.ndarray, size: tuple, sharpen: bool = True) -> np.ndarray:
    """Bicubic resize to (height, width); an unsharp mask restores edges softened by upscaling."""
    image = Image.fromarray(frame)
    if image.size != (size[1], size[0]):
        upscaling = size[0] > frame.shape[0] or size[1] > frame.shape[1]
        image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
        if sharpen and upscaling:
            image = image.filter(ImageFilter.UnsharpMask(radius=2, percent=80, threshold=2))
    return np.asarray(image)


def sharpen_frame(frame: np.ndarray, radius: float = 2.0, percent: int = 100) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).filter(ImageFilter.UnsharpMask(radius, percent, 2)))


def resize_frames(frames: np.ndarray, size: tuple, sharpen: bool = True,
                  workers: Optional[int] = None) -> np.ndarray:
    if frames.shape[1:3] == tuple(size):
        return frames
    return map_frames(lambda f: resize_frame(f, size, sharpen), frames, workers)


def sharpen_frames(frames: np.ndarray, workers: Optional[int] = None, **kwargs) -> np.ndarray:
    return map_frames(lambda f: sharpen_frame(f, **kwargs), frames, workers)


def source_clip(data: bytes, num_frames: int, size: tuple, max_frame_pixels: Optional[int] = None,
                max_total_pixels: Optional[int] = None) -> np.ndarray:
    """A video file's bytes as `num_frames` evenly spaced frames at (height, width): the source of a
    video-to-video generation (GenerationRequest.video). A shorter source repeats frames. Frames are
    scaled while decoding, never held at the file's size (caps: understanding.sample_frames).
    Raises ValueError when the file cannot be read or exceeds the caps."""
    try:
        frames = sample_frames(data, num_frames, size=size, max_frame_pixels=max_frame_pixels,
                               max_total_pixels=max_total_pixels)
    except DescribeError as exc:
        raise ValueError(str(exc)) from None
    picks = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
    return frames[picks]
