"""Previews of a video being denoised: the model's current estimate as a tiny looping MP4.

Every frame of the estimate, at most PREVIEW_HEIGHT pixels high, H.264 `ultrafast` at a low
quality: ~12 ms for 16 frames of 64x64 on one core (an animated WebP of the same frames took
~130 ms, a GIF ~100 ms), so a preview twice a second costs the denoising loop little. Fragmented
(`empty_moov`): it needs no seekable file and plays as soon as a browser has it.
"""
from __future__ import annotations

import base64
import io
from fractions import Fraction
from typing import Optional

import av
import numpy as np
from PIL import Image

PREVIEW_HEIGHT = 96
PREVIEW_MIME = "video/mp4"


def _fit(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    if frame.shape[:2] == (height, width):
        return frame
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))


def preview_mp4(frames: Optional[np.ndarray], fps: float = 8.0) -> Optional[str]:
    """Base64 of a small looping MP4 of every frame (T x H x W x 3, or one H x W x 3 frame)."""
    if frames is None:
        return None
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[0] == 0:
        return None
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    h, w = frames.shape[1:3]
    th = min(PREVIEW_HEIGHT, h)
    tw = max(2, round(w * th / h))
    th, tw = th - th % 2, tw - tw % 2  # yuv420p
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = tw, th, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "30", "tune": "zerolatency"}
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(_fit(frame[..., :3], th, tw)), format="rgb24")
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return base64.b64encode(buf.getvalue()).decode("ascii")
