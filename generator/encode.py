"""Video files with PyAV: streamed H.264 MP4 (faststart) or VP9 WebM out, with an optional sound
track (AAC in MP4, Opus in WebM) as long as the video; frames and sound back in."""
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
AUDIO_CODECS = {"mp4": ("aac", "128k"), "webm": ("libopus", "96k")}  # format -> (codec, bit rate)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def mime_type(fmt: str = "mp4") -> str:
    return FORMATS[fmt][3]


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: crop the odd last row/column."""
    h, w = frame.shape[:2]
    return frame[: h - h % 2, : w - w % 2]


def _audio_track(audio, sample_rate) -> np.ndarray:
    """samples x channels float32 in [-1, 1] (a 1-D array is mono); 1 or 2 channels."""
    track = np.asarray(audio, dtype=np.float32)
    if track.ndim == 1:
        track = track[:, None]
    if track.ndim != 2 or track.shape[1] not in (1, 2) or not len(track):
        raise ValueError(f"audio must be samples x channels (1 or 2), got shape {track.shape}")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"audio needs a positive integer sample_rate, got {sample_rate!r}")
    return np.clip(np.nan_to_num(track), -1.0, 1.0)


class _AudioWriter:
    """Feeds the track to its stream in step with the video: after video frame i, the samples up to
    (i + 1) / fps seconds, silence past the track's end, so the track ends with the last frame."""

    def __init__(self, container, fmt: str, track: np.ndarray, sample_rate: int, fps: float):
        codec, bit_rate = AUDIO_CODECS[fmt]
        rate = sample_rate
        if codec == "libopus" and rate not in OPUS_RATES:
            raise ValueError(f"Opus (WebM) takes sample rates {OPUS_RATES}, not {rate}; use mp4")
        self.stream = container.add_stream(codec, rate=rate)
        self.stream.layout = "stereo" if track.shape[1] == 2 else "mono"
        self.stream.bit_rate = int(bit_rate.rstrip("k")) * 1000
        self.container, self.track, self.rate, self.fps = container, track, rate, Fraction(fps)
        self.done = 0  # samples written

    def until(self, frames: int) -> None:
        end = round(frames / self.fps * self.rate)
        if end <= self.done:
            return
        chunk = self.track[self.done:end]
        if len(chunk) < end - self.done:
            chunk = np.concatenate([chunk, np.zeros((end - self.done - len(chunk), chunk.shape[1]), np.float32)])
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.T), format="fltp", layout=self.stream.layout)
        frame.sample_rate, frame.pts = self.rate, self.done
        self.done = end
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)


def encode_video(frames: Union[np.ndarray, Iterable[np.ndarray]], fps: float,
                 output: Optional[str] = None, fmt: str = "mp4", audio: Optional[np.ndarray] = None,
                 sample_rate: Optional[int] = None) -> bytes:
    """Encode uint8 RGB frames (T x H x W x 3 array or an iterable of H x W x 3).

    Frames are streamed one at a time. `audio` (samples x channels float32 in [-1, 1], at
    `sample_rate` Hz) becomes an AAC (MP4) / Opus (WebM) track exactly as long as the video: cut
    at the last frame, or padded with silence up to it. Writes to `output` (a temporary file when
    None) and returns the file's bytes.
    """
    if output is None:  # faststart rewrites the file after muxing, so it needs a real file
        with tempfile.TemporaryDirectory() as tmp:
            return encode_video(frames, fps, os.path.join(tmp, f"video.{fmt}"), fmt, audio, sample_rate)
    container_fmt, codec, pix_fmt, _, options = FORMATS[fmt]
    track = None if audio is None else _audio_track(audio, sample_rate)
    container_options = {"movflags": "+faststart"} if container_fmt == "mp4" else {}
    with av.open(output, mode="w", format=container_fmt, options=container_options) as container:
        stream, sound, count = None, None, 0
        for frame in frames:
            frame = _even(np.ascontiguousarray(frame, dtype=np.uint8))
            if stream is None:
                if frame.shape[0] < 2 or frame.shape[1] < 2:
                    raise ValueError(f"frame too small to encode: {frame.shape}")
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = pix_fmt
                stream.options = dict(options)
                if track is not None:
                    sound = _AudioWriter(container, fmt, track, int(sample_rate), stream.codec_context.rate)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            count += 1
            if sound is not None:
                sound.until(count)
        if stream is None:
            raise ValueError("no frames to encode")
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            sound.close()
    with open(output, "rb") as fh:
        return fh.read()


def decode_audio(source: Union[str, bytes]) -> Optional[tuple]:
    """The file's first sound track as (samples x channels float32, sample rate), or None without one."""
    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with av.open(src) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]  # planar: channels x samples
        rate = stream.rate
    track = np.concatenate(chunks, axis=1) if chunks else np.zeros((stream.channels, 0), np.float32)
    return np.ascontiguousarray(track.T.astype(np.float32)), int(rate)


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
