"""Video that streams while it is generated, on real parts: final frames handed out chunk by chunk by
the long-video pipeline, fragmented MP4 from one encoder, `video_chunk` events that a websocket
client reassembles into exactly the final MP4's frames, `GET /api/jobs/<id>/stream` read by PyAV
while the job still runs, and previews that are small MP4s of every frame."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import threading
import time

import av
import numpy as np
import pytest
import websockets

from generator.encode import decode_video
from tests.support.client import Client, run

LONG = {"num_frames": 8, "width": 64, "height": 64, "steps": 3, "num_chunks": 4, "overlap": 2}


def decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


@pytest.fixture(scope="module")
def builtin():
    from generator.interface import get_backend

    return get_backend("builtin")


@pytest.mark.parametrize("options", [{"num_chunks": 3, "overlap": 2}, {"num_chunks": 3, "overlap": 2, "interpolate": 2,
                                                                         "upscale": 2}])
def test_final_frames_come_chunk_by_chunk_and_add_up_to_the_video(builtin, options):
    from generator.interface import GenerationRequest
    from generator.longvideo import LongVideoOptions, run_job

    request = GenerationRequest(prompt="a red square moving right", num_frames=8, width=64, height=64, steps=2, seed=4)
    batches, steps_at = [], []
    seen = {"step": 0}
    result = run_job(builtin, request, LongVideoOptions(**options),
                     progress=lambda step, total, preview: seen.update(step=step),
                     on_frames=lambda frames: (batches.append(frames.copy()), steps_at.append(seen["step"])))
    assert np.array_equal(np.concatenate(batches), result.frames)
    assert len(batches) == 3 and steps_at == [2, 4, 6]  # each batch right after its chunk, not at the end
    k = options.get("interpolate", 1)
    assert len(batches[0]) == (8 - 2 - 1) * k + 1  # all but the frames the next chunk blends
    whole = run_job(builtin, request, LongVideoOptions(**options))
    assert np.array_equal(whole.frames, result.frames)


def test_fragments_decode_to_exactly_the_final_mp4s_frames():
    from generator.stream import FragmentedMP4

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (21, 48, 64, 3), dtype=np.uint8)
    encoder = FragmentedMP4(8.0)
    pieces = [encoder.add(frames[:6]), encoder.add(frames[6:15]), encoder.add(frames[15:]), encoder.close()]
    assert pieces[0].init.startswith(b"\x00\x00\x00") and pieces[0].init[4:8] == b"ftyp"
    assert [p.first_frame for p in pieces] == [0, 5, 14, 20] and sum(p.num_frames for p in pieces) == 21
    assert 'codecs="avc1.' in encoder.mime
    streamed = decode(pieces[0].init + b"".join(p.data for p in pieces))
    final = encoder.final_mp4()
    assert final[4:8] == b"ftyp" and final.find(b"moov") < final.find(b"mdat")  # faststart
    assert np.array_equal(streamed, decode(final)) and streamed.shape == (21, 48, 64, 3)
    assert decode(pieces[0].init + pieces[0].data).shape[0] == 5  # playable from the first piece


def test_a_websocket_client_reassembles_the_stream_into_the_final_video(live_service):
    async def scenario():
        async with Client(live_service) as c:
            queued = await c.submit(prompt="a green circle moving up", seed=3, **LONG)
            events = await c.events_for(queued["job_id"], timeout=120)
            return queued, events
    queued, events = run(scenario())
    kinds = [m["type"] for m in events]
    chunks = [m for m in events if m["type"] == "video_chunk"]
    assert kinds[-1] == "generation_complete" and len(chunks) >= 4, kinds
    first_chunk = kinds.index("video_chunk")
    assert "progress" in kinds[first_chunk:], "the first chunk came before the last denoising step"
    assert [m["seq"] for m in chunks] == list(range(len(chunks)))
    assert chunks[0]["init"] and all(m.get("init") is None for m in chunks[1:])
    assert chunks[0]["mime"].startswith('video/mp4; codecs="avc1.')
    stream = base64.b64decode(chunks[0]["init"]) + b"".join(base64.b64decode(m["data"]) for m in chunks)
    final = base64.b64decode(events[-1]["video"])
    streamed, (frames, _) = decode(stream), decode_video(final)
    assert np.array_equal(streamed, frames) and len(frames) == events[-1]["num_frames"] == 8 * 4 - 3 * 2
    assert sum(m["num_frames"] for m in chunks) == len(frames)


def test_pyav_plays_the_stream_url_before_the_job_ends(live_service):
    """av.open(url) on /api/jobs/<id>/stream while the job runs: the first frame is decoded before
    generation_complete arrives; the whole stream is the final video."""
    slow = {**LONG, "num_chunks": 6, "steps": 8}
    times = {}

    def read(url):
        with av.open(url, timeout=60) as container:
            frames = []
            for frame in container.decode(container.streams.video[0]):
                times.setdefault("first_frame", time.monotonic())
                frames.append(frame.to_ndarray(format="rgb24"))
            times["frames"] = np.stack(frames)

    async def scenario():
        async with Client(live_service) as c:
            queued = await c.submit(prompt="a blue triangle moving left", seed=8, **slow)
            await c.until(lambda m: m.get("job_id") == queued["job_id"] and m["type"] == "started", 60)
            reader = threading.Thread(target=read, args=(f"{live_service.base}/api/jobs/{queued['job_id']}/stream",))
            reader.start()
            done = await c.terminal(queued["job_id"], 180)
            times["complete"] = time.monotonic()
            return reader, done
    reader, done = run(scenario())
    reader.join(60)
    assert done["type"] == "generation_complete"
    assert times["first_frame"] < times["complete"], "no frame before the job ended"
    frames, _ = decode_video(base64.b64decode(done["video"]))
    assert np.array_equal(times["frames"], frames)
    # a finished job's stream is its whole file
    import urllib.request
    with urllib.request.urlopen(f"{live_service.base}/api/jobs/{done['job_id']}/stream", timeout=10) as resp:
        assert resp.read() == base64.b64decode(done["video"])


def test_previews_are_small_mp4s_of_every_frame(live_service):
    async def scenario():
        async with Client(live_service) as c:
            queued = await c.submit(prompt="a yellow square moving down", num_frames=12, width=64, height=64, steps=3)
            return await c.events_for(queued["job_id"])
    events = run(scenario())
    previews = [m for m in events if m["type"] == "progress" and m.get("preview")]
    assert previews and all(m["preview_mime"] == "video/mp4" for m in previews)
    clip = decode(base64.b64decode(previews[-1]["preview"]))
    assert clip.shape[0] == 12 and clip.shape[1] <= 96


def test_binary_frames_carry_chunks_and_the_video_without_base64(live_service):
    """A client that connects with ?binary=1 gets video_chunk and generation_complete as binary
    frames: a 4-byte length, the event's JSON header naming the binary fields, then their bytes."""
    def split(frame: bytes) -> tuple:
        size = struct.unpack(">I", frame[:4])[0]
        header = json.loads(frame[4:4 + size])
        body, parts, pos = frame[4 + size:], {}, 0
        for part in header["binary"]:
            parts[part["field"]] = body[pos:pos + part["bytes"]]
            pos += part["bytes"]
        assert pos == len(body)
        return header, parts

    async def scenario():
        async with websockets.connect(live_service.ws + "?binary=1", origin=live_service.origin, max_size=None) as ws:
            await ws.send(json.dumps({"type": "generate", "prompt": "a red circle moving up", "request_id": "b",
                                      **{**LONG, "num_chunks": 3}}))
            job_id, stream, text_types = None, b"", []
            while True:
                frame = await asyncio.wait_for(ws.recv(), 120)
                if isinstance(frame, str):
                    msg = json.loads(frame)
                    text_types.append(msg["type"])
                    job_id = job_id or msg.get("job_id")
                    assert msg["type"] not in ("video_chunk", "generation_complete")
                    continue
                header, parts = split(frame)
                if header["type"] == "video_chunk":
                    assert "data" not in header and header["job_id"] == job_id
                    stream += parts.get("init", b"") + parts["data"]
                else:
                    assert header["type"] == "generation_complete" and "video" not in header
                    return text_types, stream, parts["video"], header
    text_types, stream, video, header = run(scenario())
    assert "queued" in text_types and "progress" in text_types
    assert np.array_equal(decode(stream), decode(video)) and header["num_frames"] == 8 * 3 - 2 * 2
