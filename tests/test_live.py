"""Live jobs on real parts (redis-server, a Celery worker process, Daphne, websocket clients, PyAV):
endless video streamed chunk by chunk while it is made, steered by its owner, watched by others,
ended by stop, by its duration cap, by no one watching, or by the loss of its worker; plus the
generator side (generator/live.py) in process."""
from __future__ import annotations

import base64
import io
import json
import time

import av
import numpy as np
import pytest

from tests.support.client import Client, run, session_cookie
from tests.support.stack import Stack, http

RIGHT, UP = "a red circle moving right", "a red circle moving up"
SMALL = {"width": 64, "height": 64, "seed": 5}
ENV = {"LIVE_IDLE_S": "4", "LIVE_MAX_LEAD_S": "1", "LIVE_STATUS_EVERY": "1", "LIVE_MAX_PER_OWNER": "2",
       "JOB_HEARTBEAT_TIMEOUT_S": "6", "JOB_REAPER_INTERVAL_S": "2"}


def decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


def red_centre(frame: np.ndarray):
    """(x, y) of the red object's pixels, or None."""
    f = frame.astype(int)
    mask = (f[..., 0] > 120) & (f[..., 0] - f[..., 1] > 60) & (f[..., 0] - f[..., 2] > 60)
    ys, xs = np.nonzero(mask)
    return (xs.mean(), ys.mean()) if len(xs) >= 3 else None


def streamed_frames(events: list) -> np.ndarray:
    chunks = [m for m in events if m["type"] == "video_chunk"]
    assert [m["seq"] for m in chunks] == list(range(len(chunks)))
    data = base64.b64decode(chunks[0]["init"]) + b"".join(base64.b64decode(m["data"]) for m in chunks)
    return decode(data)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("live"), env=ENV) as s:
        s.start(worker_queues="builtin", worker_name="live1")
        yield s


# ------------------------------------------------------------------ in process (generator/live.py)
def test_live_video_continues_each_chunk_and_takes_a_new_prompt_at_the_next_chunk():
    from generator.interface import GenerationRequest, get_backend
    from generator.live import LiveVideo

    backend = get_backend("builtin")
    asked = []

    def prompt_at(index):
        asked.append(index)
        return RIGHT if index < 2 else UP

    video = LiveVideo(backend, GenerationRequest("unused", num_frames=8, steps=3, **SMALL), prompt_at)
    chunks = []
    for chunk in video:
        chunks.append(chunk)
        if len(chunks) == 3:
            break
    assert asked == [0, 1, 2] and [c.prompt for c in chunks] == [RIGHT, RIGHT, UP]
    assert [c.first_frame for c in chunks] == [0, 6, 12] and all(len(c.frames) == 6 for c in chunks)
    frames = np.concatenate([c.frames for c in chunks] + [video.tail()])
    assert frames.shape == (20, 64, 64, 3)
    # no seam jumps more than the motion inside a chunk does
    steps = np.abs(np.diff(frames.astype(int), axis=0)).mean(axis=(1, 2, 3))
    assert steps[[5, 11]].max() < 3 * np.median(steps) + 2


# ------------------------------------------------------------------ through the service
def test_a_live_job_streams_is_steered_watched_and_stopped(stack):
    """The owner starts a live job, a second client watches it, the owner steers it from moving
    right to moving up, a third party's steer is refused, then the owner stops it: the final MP4 is
    every streamed frame, with the prompt timeline."""
    cookie = session_cookie(stack.base)

    async def scenario():
        async with Client(stack, cookie=cookie) as owner, Client(stack) as viewer, Client(stack) as stranger:
            queued = await owner.submit(prompt=RIGHT, live=True, **SMALL)
            assert queued["type"] == "queued", queued
            job_id = queued["job_id"]
            is_chunk = lambda m: m.get("job_id") == job_id and m["type"] == "video_chunk"  # noqa: E731
            await owner.until(is_chunk, 120)
            await viewer.until(is_chunk, 30)
            metrics = http("GET", stack.base + "/metrics")[2].decode()
            assert 'videoservice_live_jobs{model="builtin"} 1.0' in metrics, [
                line for line in metrics.splitlines() if "live" in line]
            assert f'videoservice_live_realtime_factor{{job_id="{job_id}",model="builtin"}}' in metrics
            # (steered at once: the world's objects cross the canvas in about two seconds)
            refused = await stranger.request("steer", job_id=job_id, prompt="a blue square")
            assert refused["type"] == "error" and refused["code"] == "forbidden", refused
            rid = "s1"
            sent_at = time.monotonic()
            await owner.send({"type": "steer", "job_id": job_id, "prompt": UP, "request_id": rid})
            ack = await owner.until(lambda m: m.get("request_id") == rid, 30)
            assert ack["type"] == "steering" and ack["prompt"] == UP, ack
            steered = await owner.until(lambda m: m.get("job_id") == job_id and m["type"] == "steered", 60)
            latency = time.monotonic() - sent_at
            while max(m["first_frame"] + m["num_frames"] for m in owner.seen if is_chunk(m)) \
                    < max(steered["from_frame"] + 12, 36):  # at least three chunks of 14 new frames
                await owner.until(is_chunk, 30)
            await owner.send({"type": "stop", "job_id": job_id, "request_id": "x"})
            stopping = await owner.until(lambda m: m.get("request_id") == "x", 30)
            assert stopping["type"] == "stopping", stopping
            done = await owner.terminal(job_id, 60)
            await viewer.terminal(job_id, 30)
            # live_status names the prompt of the frames streamed: the new one only after its `steered`
            mine = [m for m in viewer.seen if m.get("job_id") == job_id and m["type"] in ("live_status", "steered")]
            told = next(i for i, m in enumerate(mine) if m["type"] == "steered")
            assert all(m["prompt"] == RIGHT for m in mine[:told] if m["type"] == "live_status"), mine
            assert any(m["prompt"] == UP for m in mine[told:] if m["type"] == "live_status"), mine
            return job_id, steered, latency, done, viewer

    job_id, steered, latency, done, viewer = run(scenario())
    assert done["type"] == "generation_complete", done
    assert done["timeline"] == [{"from_frame": 0, "prompt": RIGHT}, {"from_frame": steered["from_frame"], "prompt": UP}]
    assert steered["prompt"] == UP and latency < 30
    final = decode(base64.b64decode(done["video"]))
    # the watcher got the same session, chunk for chunk
    streamed = streamed_frames([m for m in viewer.seen if m.get("job_id") == job_id])
    assert final.shape == streamed.shape and final.shape[0] == done["num_frames"] >= steered["from_frame"] + 12
    assert np.abs(final.astype(int) - streamed.astype(int)).mean() < 1
    # the motion follows the prompt in force: right before the steer, up after it
    f0 = steered["from_frame"]
    before = [red_centre(f) for f in final[max(0, f0 - 6):f0]]
    after = [red_centre(f) for f in final[f0 + 2:f0 + 8]]
    assert all(c is not None for c in before + after), (before, after)
    assert before[-1][0] - before[0][0] > 3 and abs(before[-1][1] - before[0][1]) < 3, before
    assert after[0][1] - after[-1][1] > 3 and abs(after[-1][0] - after[0][0]) < abs(after[0][1] - after[-1][1]), after
    # and does not jump at the seam: the object moves a few pixels a frame
    seam = [red_centre(f) for f in final[f0 - 1:f0 + 1]]
    assert np.hypot(seam[1][0] - seam[0][0], seam[1][1] - seam[0][1]) < 6, seam
    status, _, body = http("GET", f"{stack.base}/api/jobs/{job_id}")
    assert status == 200
    job = json.loads(body)["job"]
    assert job["live"] and job["timeline"] == done["timeline"] and job["status"] == "succeeded"


def test_the_duration_cap_ends_a_live_job_and_live_status_reports_its_pace(stack):
    async def scenario():
        async with Client(stack) as c:
            queued = await c.submit(prompt=RIGHT, live=True, max_duration_s=3, **SMALL)
            return await c.events_for(queued["job_id"], 180)

    events = run(scenario())
    done = events[-1]
    assert done["type"] == "generation_complete", done
    assert done["num_frames"] == 24 and decode(base64.b64decode(done["video"])).shape[0] == 24
    statuses = [m for m in events if m["type"] == "live_status"]
    assert statuses and all(m["realtime_factor"] > 0 and m["prompt"] == RIGHT for m in statuses)


def test_a_live_job_nobody_watches_ends_by_itself(stack):
    status, _, body = http("POST", stack.base + "/api/jobs", {"prompt": RIGHT, "live": True, **SMALL})
    assert status == 201, body
    job_id = json.loads(body)["job"]["id"]

    started = time.monotonic()
    job = stack.wait_job(job_id, timeout=120)
    # ended by LIVE_IDLE_S (4 s) without a viewer, far before its default max_duration_s (300 s)
    assert job["status"] == "succeeded" and 0 < job["num_frames"] < 300 * 8 and time.monotonic() - started < 100


def test_steer_and_stop_refusals(stack):
    me = {"Cookie": session_cookie(stack.base)}
    status, _, body = http("POST", stack.base + "/api/jobs", {"prompt": RIGHT, **SMALL, "num_frames": 8, "steps": 1},
                           headers=me)
    clip = json.loads(body)["job"]["id"]
    status, _, body = http("POST", f"{stack.base}/api/jobs/{clip}/steer", {"prompt": UP}, headers=me)
    assert status == 409 and json.loads(body)["code"] == "not_live"
    status, _, body = http("POST", f"{stack.base}/api/jobs/{clip}/stop", headers=me)
    assert status == 409 and json.loads(body)["code"] == "not_live"
    status, _, body = http("POST", f"{stack.base}/api/jobs/{clip}/steer", {"prompt": UP})  # someone else
    assert status == 403 and json.loads(body)["code"] == "forbidden"
    for bad in ({"prompt": ""}, {"prompt": UP, "extra": 1}, {}):
        status, _, body = http("POST", f"{stack.base}/api/jobs/{clip}/steer", bad, headers=me)
        assert status == 400, (bad, body)
    # each live job holds a worker: LIVE_MAX_PER_OWNER (2 here) per owner
    lives = [http("POST", stack.base + "/api/jobs", {"prompt": RIGHT, "live": True, **SMALL}, headers=me)
             for _ in range(3)]
    assert [status for status, _, _ in lives] == [201, 201, 429]
    assert json.loads(lives[2][2])["code"] == "queue_full"
    for _, _, body in lives[:2]:
        status, _, answer = http("POST", f"{stack.base}/api/jobs/{json.loads(body)['job']['id']}/stop", headers=me)
        assert status in (200, 202) and json.loads(answer)["state"] in ("cancelled", "stopping")
    status, _, body = http("POST", stack.base + "/api/jobs", {"prompt": RIGHT, "live": True, "num_chunks": 2})
    assert status == 400 and json.loads(body)["field"] == "num_chunks"
    status, _, body = http("POST", stack.base + "/api/jobs", {"prompt": RIGHT, "max_duration_s": 5})
    assert status == 400 and json.loads(body)["field"] == "max_duration_s"
    status, _, body = http("POST", stack.base + "/api/jobs", {"prompt": RIGHT, "live": True, "max_duration_s": 1e6})
    assert status == 400 and json.loads(body)["field"] == "max_duration_s"


def test_the_npm_phoenix_client_starts_steers_and_stops_a_live_job(stack, tmp_path):
    import shutil
    import subprocess

    from tests.support.stack import ROOT

    node, client = shutil.which("node"), ROOT / "tests" / "phoenix"
    if node is None or not (client / "node_modules" / "phoenix").exists():
        pytest.fail("node and tests/phoenix/node_modules are needed (scripts/test.sh installs them)")
    done = subprocess.run([node, "live.mjs", stack.base, str(tmp_path)], cwd=client, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["start"]["status"] == "ok" and result["start"]["response"]["params"]["live"] is True
    assert result["steer"] == {"status": "ok", "response": {
        "type": "steering", "job_id": result["start"]["response"]["job_id"], "prompt": "a red circle moving up",
        "request_id": None}}
    assert result["stop"]["status"] == "ok" and result["stop"]["response"]["type"] == "stopping"
    timeline = result["complete"]["timeline"]
    assert [e["prompt"] for e in timeline] == ["a red circle moving right", "a red circle moving up"]
    assert timeline[1]["from_frame"] == result["steered"]["from_frame"] > 0
    assert decode((tmp_path / "live.mp4").read_bytes()).shape[0] == result["complete"]["num_frames"]


def test_a_steer_while_queued_changes_the_prompt_and_a_killed_worker_keeps_what_was_streamed(stack):
    """A live job whose worker is SIGKILLed ends with the frames it streamed (a re-run would be a
    new video); nothing hangs."""
    cookie = session_cookie(stack.base)
    stack.stop_worker("live1")

    async def scenario():
        async with Client(stack, cookie=cookie) as c:
            queued = await c.submit(prompt=RIGHT, live=True, **SMALL)
            job_id = queued["job_id"]
            await c.send({"type": "steer", "job_id": job_id, "prompt": UP, "request_id": "q"})
            ack = await c.until(lambda m: m.get("request_id") == "q", 30)
            assert ack["type"] == "steering", ack
            stack.start_worker("live1", "builtin")
            for _ in range(2):
                await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "video_chunk", 120)
            stack.kill_worker("live1")
            stack.start_worker("live2", "builtin", wait=False)  # its reaper settles the lost job at start-up
            return job_id, await c.terminal(job_id, 120)

    job_id, done = run(scenario())
    assert done["type"] == "generation_complete", done
    assert done["num_frames"] >= 2 and decode(base64.b64decode(done["video"])).shape[0] == done["num_frames"]
    job = json.loads(http("GET", f"{stack.base}/api/jobs/{job_id}")[2])["job"]
    assert job["prompt"] == UP and job["status"] == "succeeded" and "ended early" in job["error"]
