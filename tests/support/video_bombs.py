"""Video files that declare more than they hold: a few KB that would need gigabytes to decode.

`mp4_declaring(8192, 8192)` is a ~1.5 KB MP4 whose H.264 sequence parameter set states 8192x8192
frames: it is encoded at 16x16 (fast) and its SPS rewritten bit by bit (baseline profile: no
chroma fields; emulation-prevention bytes removed and put back), then remuxed into MP4 without
decoding. What a service must do with it: refuse it from the stated size, before any decode.
"""
from __future__ import annotations

import io

import av
import numpy as np


def _unescape(data: bytes) -> bytes:
    return data.replace(b"\x00\x00\x03", b"\x00\x00")


def _escape(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class _Bits:
    def __init__(self, data: bytes):
        self.bits, self.pos = "".join(f"{b:08b}" for b in data), 0

    def u(self, n: int) -> str:
        self.pos += n
        return self.bits[self.pos - n:self.pos]

    def ue(self) -> int:
        zeros = 0
        while self.bits[self.pos + zeros] == "0":
            zeros += 1
        code = self.u(2 * zeros + 1)
        return int(code, 2) - 1


def _ue(value: int) -> str:
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def _sps_with_size(nal: bytes, mb_width: int, mb_height: int) -> bytes:
    """A baseline-profile SPS NAL (header byte first) with its frame size in macroblocks replaced."""
    rbsp = _unescape(nal[1:])
    assert rbsp[0] == 66, "baseline profile expected"
    r = _Bits(rbsp[3:])
    head = ""
    for _ in range(2):  # seq_parameter_set_id, log2_max_frame_num_minus4
        head += _ue(r.ue())
    poc_type = r.ue()
    head += _ue(poc_type)
    if poc_type == 0:
        head += _ue(r.ue())
    assert poc_type in (0, 2)
    head += _ue(r.ue()) + r.u(1)  # max_num_ref_frames, gaps_in_frame_num_value_allowed_flag
    r.ue(), r.ue()
    head += _ue(mb_width - 1) + _ue(mb_height - 1)
    bits = (head + r.bits[r.pos:]).rstrip("0")  # ends with the rbsp stop bit
    bits += "0" * (-len(bits) % 8)
    body = bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))
    return nal[:1] + _escape(rbsp[:3] + body)


def mp4_declaring(width: int, height: int, frames: int = 2) -> bytes:
    """A tiny MP4 whose H.264 stream declares width x height frames (multiples of 16): encoded at
    16x16, its sequence parameter set then rewritten (decoding it would need the declared size)."""
    raw = io.BytesIO()
    with av.open(raw, "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "profile": "baseline"}
        for n in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 40 * n, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = raw.getvalue()
    start = data.index(b"\x00\x00\x00\x01\x67") + 4
    end = data.index(b"\x00\x00\x01", start)
    data = data[:start] + _sps_with_size(data[start:end], width // 16, height // 16) + data[end:]
    mp4 = io.BytesIO()
    with av.open(io.BytesIO(data), format="h264") as src, av.open(mp4, "w", format="mp4") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None and packet.size == 0:
                continue
            packet.stream = stream
            out.mux(packet)
    return mp4.getvalue()
