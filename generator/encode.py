"""Video files with PyAV: streamed H.264 MP4 (faststart) or VP9 WebM out, frames in."""
from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction
from typing import Iterable, Optional, Union

import av
import numpy as np

FORMATS = {
    # name: (container format, codec, pixel format, mime, stream options)
    "mp4": ("mp4", "libx264", "yuv420p", "video/mp4", {"crf": "18", "preset": "veryfast"}),
    "webm": ("webm", "libvpx-vp9", "yuv420p", "video/webm", {"crf": "30", "b": "0", "deadline": "realtime"}),
}


def mime_type(fmt: str = "mp4") -> str:
    return FORMATS[fmt][3]


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: crop the odd last row/column."""
    h, w = frame.shape[:2]
    return frame[: h - h % 2, : w - w % 2]


def encode_video(frames: Union[np.ndarray, Iterable[np.ndarray]], fps: float,
                 output: Optional[str] = None, fmt: str = "mp4") -> bytes:
    """Encode uint8 RGB frames (T x H x W x 3 array or an iterable of H x W x 3).

    Frames are streamed one at a time. Writes to `output` (a temporary file when None)
    and returns the file's bytes.
    """
    if output is None:  # faststart rewrites the file after muxing, so it needs a real file
        with tempfile.TemporaryDirectory() as tmp:
            return encode_video(frames, fps, os.path.join(tmp, f"video.{fmt}"), fmt)
    container_fmt, codec, pix_fmt, _, options = FORMATS[fmt]
    container_options = {"movflags": "+faststart"} if container_fmt == "mp4" else {}
    with av.open(output, mode="w", format=container_fmt, options=container_options) as container:
        stream = None
        for frame in frames:
            frame = _even(np.ascontiguousarray(frame, dtype=np.uint8))
            if stream is None:
                if frame.shape[0] < 2 or frame.shape[1] < 2:
                    raise ValueError(f"frame too small to encode: {frame.shape}")
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = pix_fmt
                stream.options = dict(options)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise ValueError("no frames to encode")
        for packet in stream.encode():
            container.mux(packet)
    with open(output, "rb") as fh:
        return fh.read()


def decode_video(source: Union[str, bytes], size: Optional[tuple] = None,
                 max_frames: Optional[int] = None) -> tuple:
    """Decode a video file or bytes into (T x H x W x 3 uint8 array, fps).

    `size` = (height, width) resizes every frame (used by the training data loader).
    """
    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    frames = []
    with av.open(src) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 8.0
        for frame in container.decode(stream):
            if size is not None:
                frame = frame.reformat(width=size[1], height=size[0])
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError("the video holds no frames")
    return np.stack(frames), fps
