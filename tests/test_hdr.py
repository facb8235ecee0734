"""The HDR10 master of an HDR model's linear frames (generator/hdr.py), decoded back with PyAV."""
from __future__ import annotations

import io

import av
import numpy as np
import pytest

from generator.hdr import REFERENCE_WHITE_NITS, encode_hdr10, pq_decode, pq_encode


def decoded_hdr10(data: bytes) -> tuple:
    """(the stream's codec context, Y planes T x H x W as 10-bit codes, each frame's side data types)."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        planes, side_data = [], []
        for frame in container.decode(stream):
            assert frame.format.name == "yuv420p10le"
            rows = np.frombuffer(memoryview(frame.planes[0]), dtype="<u2").reshape(frame.height, -1)
            planes.append(rows[:, : frame.width].copy())
            side_data.append({str(sd.type) for sd in frame.side_data})
        return stream.codec_context, stream.codec_tag, np.stack(planes), side_data


def test_pq_round_trips_and_puts_reference_white_where_bt2408_does():
    nits = np.array([0.0, 0.005, 100.0, 203.0, 1000.0, 10000.0])
    assert np.allclose(pq_decode(pq_encode(nits)), nits, rtol=1e-6, atol=1e-6)
    assert abs(pq_encode(np.array(203.0)) - 0.58) < 0.005  # BT.2408: 203 cd/m2 at 58% PQ
    assert pq_encode(np.array(10000.0)) == pytest.approx(1.0)


def test_the_hdr10_master_keeps_what_lies_above_white_that_the_sdr_view_clips():
    video = np.zeros((6, 32, 64, 3), np.float32)
    for column, level in enumerate((1.0, 4.0, 0.18, 40.0)):  # white, highlights, mid grey, a bright light
        video[:, :, 16 * column:16 * (column + 1)] = level
    ctx, tag, luma, side_data = decoded_hdr10(encode_hdr10(video, 8.0))
    assert (ctx.name, ctx.pix_fmt, tag) == ("hevc", "yuv420p10le", "hvc1")
    assert (ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range) == (9, 16, 9, 1)  # BT.2020, PQ
    assert luma.shape == (6, 32, 64)
    levels = pq_decode((luma[:, 8:24, [8, 24, 40, 56]].astype(float) - 64) / 876) / REFERENCE_WHITE_NITS
    assert np.allclose(levels, [1.0, 4.0, 0.18, 40.0], rtol=0.03)  # grey linear light: Y carries it whole
    assert all({"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"} <= {t.split(".")[-1] for t in types}
               for types in side_data[:1])


def test_sides_the_encoder_cannot_take_are_refused_not_crashed_on():
    with pytest.raises(ValueError, match="multiples of 32"):
        encode_hdr10(np.ones((2, 32, 48, 3), np.float32), 8.0)  # libx265 here aborts the process on 48
