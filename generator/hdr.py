"""HDR frames (linear light, [0, inf), 1.0 = diffuse white, BT.709/sRGB primaries, as LTX2HDRPipeline
returns them): the SDR view every job's MP4 shows, and an HDR10 master that keeps what lies above
white.

HDR10: HEVC Main 10 (yuv420p10le, limited range), BT.2020 primaries and matrix, SMPTE ST 2084 (PQ)
transfer. Diffuse white goes to 203 cd/m2, the reference white of ITU-R BT.2408, so the SDR part
of a picture looks as it does in SDR and highlights keep up to 10,000 cd/m2 (49x white).
"""
from __future__ import annotations

import os
import tempfile
from fractions import Fraction

import av
import numpy as np

REFERENCE_WHITE_NITS = 203.0
PEAK_NITS = 10000.0
# the libx265 that PyAV's wheels carry corrupts the heap on some widths that are not (40, 48: the
# process aborts); every multiple of 32 from 32 to 768 encodes cleanly, and LTX-2's sizes are those
SIDE_MULTIPLE = 32
# linear BT.709 RGB -> linear BT.2020 RGB (ITU-R BT.2087)
BT709_TO_BT2020 = np.array([[0.6274, 0.3293, 0.0433],
                            [0.0691, 0.9195, 0.0114],
                            [0.0164, 0.0880, 0.8956]])
BT2020_LUMA = (0.2627, 0.6780, 0.0593)  # Kr, Kg, Kb
# SMPTE ST 2084 constants m1, m2, c1, c2, c3
PQ_M1, PQ_M2, PQ_C1, PQ_C2, PQ_C3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
# the stream's and every frame's colour tags: BT.2020 primaries, PQ transfer, BT.2020 NCL matrix, limited range
COLOUR_TAGS = {"color_primaries": 9, "color_trc": 16, "colorspace": 9, "color_range": 1}


def to_display(video: np.ndarray) -> np.ndarray:
    """Linear HDR frames -> sRGB-encoded [0, 1] for an SDR MP4: clipped at 1.0, then the sRGB OETF
    (what diffusers' encode_hdr_tensor_to_mp4 writes by default)."""
    linear = np.clip(video, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1.0 / 2.4) - 0.055)


def pq_encode(nits: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 inverse EOTF: cd/m2 -> [0, 1] signal."""
    y = np.power(np.clip(nits / PEAK_NITS, 0.0, 1.0), PQ_M1)
    return np.power((PQ_C1 + PQ_C2 * y) / (1 + PQ_C3 * y), PQ_M2)


def pq_decode(signal: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 EOTF: [0, 1] signal -> cd/m2."""
    e = np.power(np.clip(signal, 0.0, 1.0), 1 / PQ_M2)
    return PEAK_NITS * np.power(np.maximum(e - PQ_C1, 0.0) / (PQ_C2 - PQ_C3 * e), 1 / PQ_M1)


def hdr10_planes(frame: np.ndarray) -> tuple:
    """One linear frame (H x W x 3, even sides) -> 10-bit limited-range Y, Cb, Cr planes (uint16; chroma
    at half size, the mean of each 2x2 block) in BT.2020 non-constant luminance."""
    rgb = np.clip(frame.astype(np.float64), 0.0, None) @ BT709_TO_BT2020.T
    signal = pq_encode(rgb * REFERENCE_WHITE_NITS)
    kr, _, kb = BT2020_LUMA
    y = signal @ np.array(BT2020_LUMA)
    cb = (signal[..., 2] - y) / (2 * (1 - kb))
    cr = (signal[..., 0] - y) / (2 * (1 - kr))
    h, w = y.shape

    def half(plane):
        return plane.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    def code(value, scale, offset):
        return np.clip(np.round(value * scale + offset), 0, 1023).astype(np.uint16)

    return code(y, 876, 64), code(half(cb), 896, 512), code(half(cr), 896, 512)


def encode_hdr10(video: np.ndarray, fps: float) -> bytes:
    """Linear HDR frames (T x H x W x 3) -> an HDR10 MP4 (HEVC Main 10, PQ, BT.2020), with its
    content light level (MaxCLL / MaxFALL) measured from the frames."""
    video = np.asarray(video, dtype=np.float32)
    t, h, w = video.shape[:3]
    if h % SIDE_MULTIPLE or w % SIDE_MULTIPLE or not t:
        raise ValueError(f"an HDR10 master needs frames with sides that are multiples of {SIDE_MULTIPLE}, "
                         f"got {t} x {h} x {w}")
    nits = np.clip(video, 0.0, None).max(axis=-1) * REFERENCE_WHITE_NITS
    max_cll = int(min(PEAK_NITS, np.ceil(nits.max())))
    max_fall = int(min(PEAK_NITS, np.ceil(nits.mean(axis=(1, 2)).max())))
    with tempfile.TemporaryDirectory() as tmp:  # faststart rewrites the file after muxing: a real file
        path = os.path.join(tmp, "hdr10.mp4")
        _write_hdr10(path, video, fps, max_cll, max_fall)
        with open(path, "rb") as fh:
            return fh.read()


def _write_hdr10(path: str, video: np.ndarray, fps: float, max_cll: int, max_fall: int) -> None:
    h, w = video.shape[1:3]
    with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream("libx265", rate=rate, options={
            "crf": "16", "preset": "fast",
            "x265-params": ("log-level=error:hdr10=1:hdr10-opt=1:repeat-headers=1:colorprim=bt2020:"
                            "transfer=smpte2084:colormatrix=bt2020nc:range=limited:"
                            # BT.2020 primaries and D65 white (0.00002 units), 1000-0.0001 cd/m2 mastering
                            "master-display=G(8500,39850)B(6550,2300)R(35400,14600)WP(15635,16450)L(10000000,1):"
                            f"max-cll={max_cll},{max_fall}")})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p10le"
        stream.codec_tag = "hvc1"  # what Apple's players need to open HEVC in MP4
        for name, value in COLOUR_TAGS.items():
            setattr(stream.codec_context, name, value)
        for frame in video:
            out = av.VideoFrame(w, h, "yuv420p10le")
            for plane, data in zip(out.planes, hdr10_planes(frame)):
                rows = np.zeros((plane.buffer_size // plane.line_size, plane.line_size // 2), dtype="<u2")
                rows[: data.shape[0], : data.shape[1]] = data
                plane.update(rows.tobytes())
            for name, value in COLOUR_TAGS.items():
                setattr(out, name, value)
            for packet in stream.encode(out):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
