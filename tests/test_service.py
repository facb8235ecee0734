"""The service end to end on real parts: redis-server, a Celery worker process, Daphne, and real
websocket / HTTP clients (fixtures in conftest.py). Jobs are small (64x64, 8 frames, few steps)."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import uuid

import numpy as np
import pytest
import websockets
from PIL import Image

from generator.encode import decode_video
from tests.support.client import TERMINAL, Client, run, session_cookie
from tests.support.stack import http

SMALL = {"num_frames": 8, "width": 64, "height": 64, "steps": 3}


# ---------------------------------------------------------------- the happy path
def test_submit_progress_complete_and_second_subscriber(live_service):
    async def scenario():
        async with Client(live_service) as a, Client(live_service) as b:
            queued = await a.submit(prompt="a red circle moving to the right", seed=3, fps=10, **SMALL)
            assert queued["type"] == "queued", queued
            assert isinstance(queued["position"], int)
            job_id = queued["job_id"]
            events = await a.events_for(job_id)
            kinds = [m["type"] for m in events]
            assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "generation_complete", kinds
            assert "progress" in kinds
            started = events[1]
            assert started["worker"].startswith("test-builtin@")
            prog = [m for m in events if m["type"] == "progress"]
            assert prog[-1]["step"] == prog[-1]["total_steps"] == 3
            assert prog[-1]["percent"] == 100
            assert all(m["eta_s"] >= 0 for m in prog)
            preview, _ = decode_video(base64.b64decode(prog[0]["preview"]))  # every frame of the estimate
            assert prog[0]["preview_mime"] == "video/mp4" and preview.shape[0] == 8 and preview.shape[1] <= 96
            done = events[-1]
            video = base64.b64decode(done["video"])
            frames, fps = decode_video(video)
            assert frames.shape == (8, 64, 64, 3)
            assert fps == pytest.approx(10)
            assert (done["num_frames"], done["width"], done["height"], done["seed"]) == (8, 64, 64, 3)
            assert done["prompt"] == "a red circle moving to the right" and done["mime"] == "video/mp4"
            assert done["elapsed_s"] > 0
            # the second subscriber got the same completion
            other = await b.until(lambda m: m.get("job_id") == job_id and m["type"] == "generation_complete")
            assert other["video"] == done["video"]
            # the stored file is the same video
            status, headers, body = http("GET", live_service.base + done["url"])
            assert status == 200 and body == video and headers["Content-Type"] == "video/mp4"
    run(scenario())


def png_b64(size=(64, 64), fmt="PNG") -> str:
    img = np.zeros((size[1], size[0], 3), np.uint8)
    img[16:40, 8:32] = (230, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def test_private_job_reaches_only_its_owner(live_service):
    cookie = session_cookie(live_service.base)

    async def scenario():
        async with Client(live_service, cookie) as mine, Client(live_service, cookie) as mine2, \
                Client(live_service) as stranger, Client(live_service, session_cookie(live_service.base)) as other:
            queued = await mine.submit(prompt="a green square moving up", private=True, image=png_b64(), **SMALL)
            assert queued["type"] == "queued", queued
            job_id = queued["job_id"]
            events = await mine.events_for(job_id)
            assert [m["type"] for m in events][-1] == "generation_complete"
            frames, _ = decode_video(base64.b64decode(events[-1]["video"]))
            assert frames.shape == (8, 64, 64, 3)
            # the same session's other connection sees it too
            await mine2.until(lambda m: m.get("job_id") == job_id and m["type"] == "generation_complete")
            for c in (stranger, other):
                await c.ping_ok()  # anything sent to them before now has arrived
                assert not [m for m in c.seen if m.get("job_id") == job_id], c.seen
            return job_id, events[-1]["url"]

    job_id, url = run(scenario())
    base = live_service.base
    assert http("GET", f"{base}/api/jobs/{job_id}")[0] == 404
    assert http("GET", base + url)[0] == 404
    status, _, body = http("GET", f"{base}/api/jobs/{job_id}", headers={"Cookie": cookie})
    assert status == 200 and json.loads(body)["job"]["private"] is True
    listed = json.loads(http("GET", f"{base}/api/jobs")[2])["jobs"]
    assert job_id not in [j["id"] for j in listed]
    assert http("GET", base + url, headers={"Cookie": cookie})[0] == 200


def test_ten_clients_at_once_all_complete(live_service):
    n = 10

    async def one(i, watchers_ready):
        async with Client(live_service) as c:
            await watchers_ready.wait()
            queued = await c.submit(prompt=f"a blue circle moving {['left', 'right'][i % 2]}", seed=i,
                                    **{**SMALL, "steps": 2})
            assert queued["type"] == "queued", queued
            done = await c.until(lambda m: m.get("job_id") == queued["job_id"] and m["type"] in TERMINAL, 150)
            assert done["type"] == "generation_complete", done
            # everyone in the lobby sees every completion: keep listening until all n arrived
            seen = lambda: {m["job_id"] for m in c.seen if m["type"] == "generation_complete"}  # noqa: E731
            if len(seen()) < n:
                await c.until(lambda m: len(seen()) >= n, 150)
            return queued["job_id"], done, seen()

    async def scenario():
        ready = asyncio.Event()
        tasks = [asyncio.create_task(one(i, ready)) for i in range(n)]
        await asyncio.sleep(0.5)
        ready.set()
        return await asyncio.gather(*tasks)

    t0 = time.monotonic()
    results = run(scenario())
    print(f"{n} parallel jobs done in {time.monotonic() - t0:.1f} s")
    ids = {job_id for job_id, _, _ in results}
    assert len(ids) == n
    for _, _, seen in results:
        assert seen == ids  # each client received all 10 completions, nothing lost
    for job_id, done, _ in results:
        frames, _ = decode_video(base64.b64decode(done["video"]))
        assert frames.shape == (8, 64, 64, 3)
    # nothing lost: every job is succeeded in the database
    jobs = {j["id"]: j for j in json.loads(http("GET", live_service.base + "/api/jobs?limit=200")[2])["jobs"]}
    assert all(jobs[i]["status"] == "succeeded" for i in ids)


def test_cancel_queued_and_running(live_service):
    async def scenario():
        async with Client(live_service) as c, Client(live_service) as watcher:
            long = await c.submit(prompt="a yellow triangle moving down", **{**SMALL, "steps": 100})
            await c.until(lambda m: m.get("job_id") == long["job_id"] and m["type"] == "progress", 60)
            waiting = await c.submit(prompt="a red square moving left", **SMALL)
            assert waiting["position"] >= 1
            # cancel while queued: immediate, broadcast to the lobby
            await c.send({"type": "cancel", "job_id": waiting["job_id"], "request_id": "c1"})
            await c.until(lambda m: m.get("job_id") == waiting["job_id"] and m["type"] == "cancelled", 10)
            await watcher.until(lambda m: m.get("job_id") == waiting["job_id"] and m["type"] == "cancelled", 10)
            # cancel while running: the worker stops between two steps
            t0 = time.monotonic()
            await c.send({"type": "cancel", "job_id": long["job_id"], "request_id": "c2"})
            ack = await c.until(lambda m: m.get("request_id") == "c2", 10)
            assert ack["type"] == "cancelling", ack
            events = await c.events_for(long["job_id"], 30)
            assert events[-1]["type"] == "cancelled"
            assert time.monotonic() - t0 < 10
            steps = [m["step"] for m in events if m["type"] == "progress"]
            print(f"running job cancelled at step {max(steps or [0])}/100")
            assert steps and max(steps) < 100
            # cancelling again: the job is over
            await c.send({"type": "cancel", "job_id": long["job_id"], "request_id": "c3"})
            err = await c.until(lambda m: m.get("request_id") == "c3", 10)
            assert (err["type"], err["code"]) == ("error", "not_cancellable")
            # the worker is free again and the cancelled queued job never starts
            after = await c.submit(prompt="a blue square moving right", **{**SMALL, "steps": 2})
            done = await c.events_for(after["job_id"])
            assert done[-1]["type"] == "generation_complete"
            assert not [m for m in c.seen if m.get("job_id") == waiting["job_id"] and m["type"] == "started"]
            return long["job_id"], waiting["job_id"]

    long_id, waiting_id = run(scenario())
    base = live_service.base
    for job_id, error in ((long_id, "cancelled while running"), (waiting_id, "cancelled while queued")):
        job = json.loads(http("GET", f"{base}/api/jobs/{job_id}")[2])["job"]
        assert job["status"] == "cancelled" and job["error"] == error
        assert job["url"] is None
    assert json.loads(http("GET", f"{base}/api/jobs/{waiting_id}")[2])["job"]["started_at"] is None


# ---------------------------------------------------------------- long videos
def test_long_video_job_chunks_and_interpolation(live_service):
    """Two chunks (the second continues the first's last 2 frames) then x2 flow interpolation:
    the MP4 holds final_shape's frames at double fps, and progress counts both chunks' steps."""
    from generator.shape import LongVideoOptions, final_shape

    tiny = {**SMALL, "steps": 2, "fps": 8}
    expected = final_shape(LongVideoOptions(num_chunks=2, overlap=2, interpolate=2), 8, 64, 64, 8.0)
    assert expected["num_frames"] == (2 * 8 - 2 - 1) * 2 + 1

    async def scenario():
        async with Client(live_service) as c:
            queued = await c.submit(prompt="a red circle moving to the right", seed=4, num_chunks=2, overlap=2,
                                    interpolate=2, **tiny)
            assert queued["type"] == "queued", queued
            p = queued["params"]
            assert (p["num_chunks"], p["overlap"], p["interpolate"]) == (2, 2, 2)
            assert "upscale" not in p and "duration_s" not in p
            events = await c.events_for(queued["job_id"], 180)
            kinds = [m["type"] for m in events]
            assert kinds[-1] == "generation_complete", events[-1]
            prog = [m for m in events if m["type"] == "progress"]
            assert prog[-1]["step"] == prog[-1]["total_steps"] == 2 * 2
            done = events[-1]
            frames, fps = decode_video(base64.b64decode(done["video"]))
            assert frames.shape == (expected["num_frames"], 64, 64, 3)
            assert fps == pytest.approx(16)
            assert (done["num_frames"], done["fps"], done["width"], done["height"]) == \
                (expected["num_frames"], expected["fps"], 64, 64)
            return queued["job_id"]

    job_id = run(scenario())
    job = json.loads(http("GET", f"{live_service.base}/api/jobs/{job_id}")[2])["job"]
    assert job["status"] == "succeeded" and job["total_steps"] == 4 and job["step"] == 4


def test_long_video_invalid_options_are_refused(live_service):
    async def scenario():
        async with Client(live_service) as c:
            for fields, field in (({"interpolate": 5}, "interpolate"), ({"num_chunks": 9}, "num_chunks"),
                                  ({"upscale": 3}, "upscale"), ({"overlap": 8}, "overlap"),
                                  ({"duration_s": 2, "num_chunks": 2}, "duration_s")):
                reply = await c.submit(prompt="a red circle moving left", **SMALL, **fields)
                assert (reply["type"], reply["code"], reply["field"]) == ("error", "invalid_field", field), reply
                assert reply["message"]
            await c.ping_ok()
    run(scenario())
    status, _, body = http("POST", f"{live_service.base}/api/jobs",
                           {"prompt": "a red circle moving left", "interpolate": 5, **SMALL})
    assert status == 400 and json.loads(body)["code"] == "invalid_field" and json.loads(body)["field"] == "interpolate"


BIG = "A" * (13 * 1024 * 1024)
BAD_INPUTS = [
    # (raw message or object, expected code)
    ("hello", "invalid_json"),
    (b"\x00\x01binary", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    ('{"type": "generate", "prompt": "x", "guidance_scale": NaN, "request_id": "r"}', "invalid_json"),
    ('{"type": "generate", "prompt": "x", "fps": Infinity, "request_id": "r"}', "invalid_json"),
    ({"prompt": "no type"}, "missing_field"),
    ({"type": "dance"}, "unknown_type"),
    ({"type": 5}, "unknown_type"),
    ({"type": "generate"}, "missing_field"),
    ({"type": "generate", "prompt": 5}, "invalid_field"),
    ({"type": "generate", "prompt": "   "}, "invalid_field"),
    ({"type": "generate", "prompt": "x" * 1001}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "num_frames": True}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "num_frames": "8"}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "num_frames": 8.5}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "num_frames": 1000}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "width": 65}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "height": 4096}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "steps": 0}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "guidance_scale": "high"}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "seed": -1}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "fps": 0}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "private": "yes"}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "request_id": {"a": 1}}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "colour": "red"}, "unknown_field"),
    ({"type": "generate", "prompt": "x", "model": "no-such-model"}, "unknown_model"),
    ({"type": "generate", "prompt": "x", "model": 3}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "image": 12}, "invalid_field"),
    ({"type": "generate", "prompt": "x", "image": "not base64 !!"}, "image_invalid"),
    ({"type": "generate", "prompt": "x", "image": base64.b64encode(b"hello world").decode()}, "image_invalid"),
    ({"type": "generate", "prompt": "x", "image": png_b64(fmt="GIF")}, "image_invalid"),
    ({"type": "generate", "prompt": "x", "image": png_b64(size=(4, 4))}, "image_invalid"),
    ({"type": "generate", "prompt": "x", "image": "A" * (11 * 1024 * 1024 + 512 * 1024)}, "too_large"),
    ('{"type": "generate", "prompt": "' + BIG + '"}', "too_large"),
    ({"type": "cancel"}, "missing_field"),
    ({"type": "cancel", "job_id": "abc"}, "not_found"),
    ({"type": "cancel", "job_id": str(uuid.uuid4())}, "not_found"),
    ({"type": "cancel", "job_id": 7}, "invalid_field"),
    ({"type": "ping", "extra": 1}, "unknown_field"),
]


def test_bad_inputs_get_errors_and_the_connection_stays_usable(live_service):
    async def scenario():
        async with Client(live_service) as c:
            failures = []
            for i, (msg, code) in enumerate(BAD_INPUTS):
                if isinstance(msg, dict):
                    msg = {**msg, "request_id": msg.get("request_id", f"bad-{i}")}
                await c.send(msg)
                reply = await c.recv(15)
                if reply.get("type") != "error" or reply.get("code") != code:
                    failures.append((str(msg)[:80], code, reply))
                    continue
                assert reply["message"]
                if isinstance(msg, dict) and isinstance(msg["request_id"], str):
                    assert reply["request_id"] == msg["request_id"]
                await c.ping_ok()
            assert not failures, failures
            # a well-formed request still works on the same connection
            queued = await c.submit(prompt="a red circle moving up", **{**SMALL, "steps": 2})
            assert queued["type"] == "queued"
            assert (await c.events_for(queued["job_id"]))[-1]["type"] == "generation_complete"
    run(scenario())


def test_connection_without_allowed_origin_is_refused(live_service):
    async def scenario():
        with pytest.raises(websockets.exceptions.InvalidStatus):
            await websockets.connect(live_service.ws, origin="http://evil.example")
    run(scenario())


# ---------------------------------------------------------------- HTTP API
def test_http_api(live_service):
    base = live_service.base
    cookie = session_cookie(live_service.base)
    me = {"Cookie": cookie}

    status, _, body = http("GET", f"{base}/healthz")
    health = json.loads(body)
    assert status == 200 and health["database"] == "ok" and health["redis"] == "ok"
    assert any(w.startswith("test-builtin@") for w in health["workers"])

    models = json.loads(http("GET", f"{base}/api/models")[2])["models"]
    builtin = next(m for m in models if m["name"] == "builtin")
    assert builtin["max_frames"] >= 8 and builtin["size_multiple"] and "frame_rule" in builtin

    start = "data:image/jpeg;base64," + png_b64(size=(80, 48), fmt="JPEG")  # any size: the model resizes it
    status, _, body = http("POST", f"{base}/api/jobs", {"prompt": "a green circle moving left", "seed": 11,
                                                       "request_id": "h1", "image": start, **SMALL}, headers=me)
    assert status == 201, body
    created = json.loads(body)
    job = created["job"]
    assert job["status"] in ("queued", "running") and created["request_id"] == "h1"
    assert job["params"]["steps"] == 3 and job["params"]["seed"] == 11 and job["mine"] is True
    assert job["params"]["image"] is True
    done = live_service.wait_job(job["id"], headers=me)
    assert done["status"] == "succeeded" and done["num_frames"] == 8 and done["url"]

    listed = json.loads(http("GET", f"{base}/api/jobs?status=succeeded", headers=me)[2])["jobs"]
    assert job["id"] in [j["id"] for j in listed] and all(j["status"] == "succeeded" for j in listed)
    assert http("GET", f"{base}/api/jobs?status=bogus")[0] == 400

    # the video, whole and in ranges
    status, headers, whole = http("GET", base + done["url"])
    assert status == 200 and headers["Accept-Ranges"] == "bytes" and len(whole) == done["size_bytes"]
    assert decode_video(whole)[0].shape == (8, 64, 64, 3)
    size = len(whole)
    for rng, start, end in (("bytes=0-99", 0, 99), ("bytes=100-", 100, size - 1), ("bytes=-50", size - 50, size - 1)):
        status, headers, part = http("GET", base + done["url"], headers={"Range": rng})
        assert status == 206, (rng, status)
        assert headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert part == whole[start:end + 1]
    assert http("GET", base + done["url"], headers={"Range": f"bytes={size}-"})[0] == 416

    # cancel: someone else's job is forbidden, a finished one is not cancellable
    status, _, body = http("POST", f"{base}/api/jobs/{job['id']}/cancel", b"{}")
    assert status == 403 and json.loads(body)["code"] == "forbidden"
    status, _, body = http("POST", f"{base}/api/jobs/{job['id']}/cancel", b"{}", headers=me)
    assert status == 409 and json.loads(body)["code"] == "not_cancellable"
    status, _, body = http("POST", f"{base}/api/jobs", {"prompt": "a red square moving down",
                                                       **{**SMALL, "steps": 100}}, headers=me)
    running = json.loads(body)["job"]["id"]
    status, _, body = http("POST", f"{base}/api/jobs/{running}/cancel", b"{}", headers=me)
    assert status in (200, 202), body
    assert live_service.wait_job(running, headers=me)["status"] == "cancelled"

    # errors
    for payload, code in (({"prompt": "x", "width": 63}, "invalid_field"), ({}, "missing_field"),
                          ({"prompt": "x", "model": "nope"}, "unknown_model"), (b"{nope", "invalid_json")):
        status, _, body = http("POST", f"{base}/api/jobs", payload)
        assert status == 400 and json.loads(body)["code"] == code, body
    status, _, body = http("POST", f"{base}/api/jobs", b"prompt=x", headers={"Content-Type": "text/plain"})
    assert status == 415
    assert http("GET", f"{base}/api/jobs/{uuid.uuid4()}")[0] == 404
    assert http("GET", f"{base}/api/jobs/not-a-uuid")[0] == 404

    # the page and its static files (served by Daphne with DEBUG off)
    status, _, page = http("GET", base + "/")
    assert status == 200 and b"<html" in page.lower()
    assert http("GET", base + "/static/videoservice/app.js")[0] == 200
    assert http("GET", base + "/admin/login/")[0] == 200


def pool_children(pid: int) -> list:
    import subprocess

    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_job_survives_a_lost_worker_process(live_service):
    """SIGKILL the pool process mid-job: acks_late + reject_on_worker_lost put the job back on the
    queue, the restarted pool process runs it again, and the client still gets its video."""
    import os
    import signal

    worker = live_service.workers["test-builtin"].proc

    async def scenario():
        async with Client(live_service) as c:
            queued = await c.submit(prompt="a green triangle moving left", **{**SMALL, "steps": 30})
            job_id = queued["job_id"]
            await c.until(lambda m: m.get("job_id") == job_id and m["type"] == "progress", 60)
            children = pool_children(worker.pid)
            assert len(children) == 1, children
            os.kill(children[0], signal.SIGKILL)
            events = await c.events_for(job_id, 120)
            kinds = [m["type"] for m in events]
            assert kinds.count("started") == 2, kinds
            assert kinds[-1] == "generation_complete", kinds
            return job_id

    job_id = run(scenario())
    job = json.loads(http("GET", f"{live_service.base}/api/jobs/{job_id}")[2])["job"]
    assert job["status"] == "succeeded"
