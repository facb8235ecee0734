"""A video that streams while it is generated: fragmented MP4 (fMP4) out of one H.264 encoder.

`FragmentedMP4` takes frames as they become final (any number at a time) and hands back what the
muxer wrote since the last call as whole top-level boxes: first the init segment (`ftyp` +
`moov`, with no samples: `empty_moov`), then one `moof` + `mdat` pair per frame
(`frag_every_frame`, `default_base_moof`). The init segment followed by every fragment, in order,
is a valid MP4 (browsers' Media Source Extensions and FFmpeg play it as it grows); `final_mp4()`
remuxes the same packets into a faststart MP4 without encoding again, so the streamed frames are
exactly the final video's.

The muxer writes a frame's fragment when the next packet arrives: a call returns every frame
before the last one given, and `close()` the rest.
"""
from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import av
import numpy as np

from generator.encode import _audio_track, _AudioWriter  # (the writer encode_video uses)

MOVFLAGS = "frag_every_frame+empty_moov+default_base_moof"


@dataclass
class Fragment:
    first_frame: int
    num_frames: int
    data: bytes  # moof + mdat boxes
    init: Optional[bytes] = None  # ftyp + moov, with the first fragment only


class _Sink(io.RawIOBase):
    """A write-only, non-seekable file: what the muxer writes, in order."""

    def __init__(self):
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.buffer += data
        return len(data)


def _boxes(data: bytes, start: int = 0):
    """(type, start, end) of each complete top-level ISO BMFF box from `start`."""
    pos = start
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = bytes(data[pos + 4:pos + 8]).decode("latin-1")
        if size == 1:  # 64-bit size
            if pos + 16 > len(data):
                return
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        if size < 8 or pos + size > len(data):
            return
        yield kind, pos, pos + size
        pos += size


def avc_codecs(init: bytes) -> str:
    """The RFC 6381 codecs string of the H.264 stream (avc1.PPCCLL) from the init segment's avcC."""
    at = init.find(b"avcC")
    if at < 0 or at + 8 > len(init):
        return "avc1.42E01E"
    profile, compat, level = init[at + 5], init[at + 6], init[at + 7]
    return f"avc1.{profile:02X}{compat:02X}{level:02X}"


class FragmentedMP4:
    """One job's H.264 encoder writing fragmented MP4 as frames arrive."""

    def __init__(self, fps: float, crf: int = 18, preset: str = "veryfast"):
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf, self.preset = crf, preset
        self.sink = _Sink()
        self.container = self.stream = None
        self.sent = 0  # bytes of the sink handed out
        self.frames_in = 0  # frames encoded
        self.frames_out = 0  # frames whose fragments were handed out
        self.init: Optional[bytes] = None
        self.closed = False

    @property
    def mime(self) -> str:
        return f'video/mp4; codecs="{avc_codecs(self.init or b"")}"'

    def _open(self, height: int, width: int) -> None:
        self.container = av.open(self.sink, mode="w", format="mp4", options={"movflags": MOVFLAGS})
        self.stream = self.container.add_stream("libx264", rate=self.fps)
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"
        # no B-frames and no lookahead: a frame's packet comes out when it goes in
        self.stream.options = {"crf": str(self.crf), "preset": self.preset, "tune": "zerolatency",
                               "g": str(max(1, round(float(self.fps))))}  # a key frame a second: seeking

    def add(self, frames: np.ndarray) -> Optional[Fragment]:
        """Encode T x H x W x 3 uint8 frames; the fragments the muxer wrote since the last call."""
        if len(frames) == 0:
            return None
        if self.container is None:
            self._open(*frames.shape[1:3])
        h, w = self.stream.height, self.stream.width
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w, :3]), format="rgb24")
            for packet in self.stream.encode(picture):
                self.container.mux(packet)
            self.frames_in += 1
        return self._take()

    def close(self) -> Optional[Fragment]:
        """Flush the encoder and the muxer: the last fragments."""
        if self.closed:
            return None
        self.closed = True
        if self.container is None:
            return None
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
        return self._take()

    def _take(self) -> Optional[Fragment]:
        """Whole moof + mdat pairs written since the last call (with the init segment the first time)."""
        data = self.sink.buffer
        init = None
        start = self.sent
        if self.init is None:
            start = next((s for kind, s, _ in _boxes(data) if kind == "moof"), None)
            if start is None:
                return None  # the init segment is written with the first fragment
            self.init = init = bytes(data[:start])
        end, frames = start, 0
        for kind, _, box_end in _boxes(data, start):
            if kind == "mdat":  # a frame's samples, after its moof
                end, frames = box_end, frames + 1
            elif kind != "moof":  # (the trailer close() writes: not part of the stream)
                break
        if frames == 0 and init is None:
            return None
        self.sent = end
        first = self.frames_out
        self.frames_out += frames
        return Fragment(first_frame=first, num_frames=frames, data=bytes(data[start:end]), init=init)

    def final_mp4(self, audio: Optional[np.ndarray] = None, sample_rate: Optional[int] = None) -> bytes:
        """The whole stream as a faststart MP4 (the same packets, remuxed; no second encode), with
        `audio` (samples x channels float32, for models that make sound) as an AAC track as long as
        the video, muxed in step with it (generator.encode's writer)."""
        if not self.closed:
            self.close()
        return faststart_mp4(bytes(self.sink.buffer), audio, sample_rate, self.fps)[0]


def faststart_mp4(stream: bytes, audio: Optional[np.ndarray] = None, sample_rate: Optional[int] = None,
                  fps: Optional[Fraction] = None) -> tuple:
    """(a faststart MP4, its frame count) of a fragmented MP4 stream (the init segment and every
    fragment, or a prefix of them: a stream cut short keeps its whole frames), remuxed without
    encoding again; `audio` becomes an AAC track as long as the video."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "video.mp4")
        with av.open(io.BytesIO(stream)) as src, \
                av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as dst:
            source = src.streams.video[0]
            target = dst.add_stream_from_template(source)
            fps = fps or source.average_rate or source.guessed_rate
            track = None if audio is None else _audio_track(audio, sample_rate)
            sound = None if track is None else _AudioWriter(dst, "mp4", track, int(sample_rate), fps)
            frames = 0
            for packet in src.demux(source):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.stream = target
                dst.mux(packet)
                frames += 1
                if sound is not None:
                    sound.until(frames)
            if sound is not None:
                sound.close()
        with open(path, "rb") as fh:
            return fh.read(), frames
