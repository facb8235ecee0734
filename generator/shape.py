"""The shape of a long video: the caps on its options and the arithmetic that turns a request's
base chunk into the final video (chunks, frames, size, fps). Numbers only: the web tier imports
this to validate requests without loading OpenCV or torch (generator/longvideo.py does the work)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

MAX_CHUNKS = 8
MAX_OVERLAP = 8
INTERPOLATE_FACTORS = (1, 2, 3, 4, 6)
UPSCALE_FACTORS = (1, 2, 4)
MAX_DURATION_S = 120.0
MAX_FINAL_FRAMES = 1024
MAX_FINAL_SIDE = 2048


@dataclass
class LongVideoOptions:
    num_chunks: int = 1  # chunks generated one after another (ignored when duration_s is set)
    duration_s: Optional[float] = None  # seconds of video wanted: chunks as needed, trimmed to it
    overlap: Optional[int] = None  # frames shared by consecutive chunks (None: min(4, num_frames - 1))
    interpolate: int = 1  # flow-interpolation factor k: fps x k, frames (T - 1) k + 1
    upscale: int = 1  # per-frame super-resolution factor

    def overlap_for(self, num_frames: int) -> int:
        return self.overlap if self.overlap is not None else min(4, num_frames - 1)

    @property
    def active(self) -> bool:
        return self.num_chunks > 1 or self.duration_s is not None or self.interpolate > 1 or self.upscale > 1


def chunks_for_duration(duration_s: float, fps: float, num_frames: int, overlap: int) -> int:
    """Chunks of num_frames (sharing `overlap` frames) needed for at least duration_s seconds."""
    needed = math.ceil(duration_s * fps - 1e-9)
    if needed <= num_frames:
        return 1
    return 1 + math.ceil((needed - num_frames) / (num_frames - overlap))


def extended_length(num_chunks: int, num_frames: int, overlap: int) -> int:
    return num_chunks * num_frames - (num_chunks - 1) * overlap


def final_shape(options: LongVideoOptions, num_frames: int, width: int, height: int, fps: float,
                overlap: Optional[int] = None) -> dict:
    """The video run_job makes from a request of num_frames/width/height/fps (an upper bound on the
    frame count when the backend shares fewer frames than `overlap`: image-to-video shares one)."""
    ov = overlap if overlap is not None else options.overlap_for(num_frames)
    chunks = options.num_chunks
    if options.duration_s is not None and fps:
        chunks = chunks_for_duration(options.duration_s, fps, num_frames, ov)
    frames = extended_length(chunks, num_frames, ov)
    if options.duration_s is not None and fps:
        frames = min(frames, math.ceil(options.duration_s * fps - 1e-9))
    return {"num_chunks": chunks, "num_frames": (frames - 1) * options.interpolate + 1,
            "width": width * options.upscale, "height": height * options.upscale, "fps": fps * options.interpolate}
