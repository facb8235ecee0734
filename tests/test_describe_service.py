"""Describe jobs and the `evaluate` option through the real service (redis-server, a Celery worker
consuming the builtin and describe queues, Daphne): websocket and HTTP."""
from __future__ import annotations

import base64
import json
import uuid

import numpy as np

from generator.builtin import world
from generator.encode import encode_video
from tests.support.client import Client, run, session_cookie
from tests.support.stack import http
from tests.support.video_bombs import mp4_declaring
from tests.test_service import SMALL

DESCRIBE_TERMINAL = {"description_complete", "description_failed", "cancelled"}


async def describe_events(client: Client, job_id: str, timeout: float = 60.0) -> list:
    await client.until(lambda m: m.get("job_id") == job_id and m["type"] in DESCRIBE_TERMINAL, timeout)
    return [m for m in client.seen if m.get("job_id") == job_id]


async def describe(client: Client, **fields) -> dict:
    rid = uuid.uuid4().hex
    await client.send({"type": "describe", "request_id": rid, **fields})
    return await client.until(lambda m: m.get("request_id") == rid and m["type"] in ("queued", "error"), 30)


def test_describe_a_finished_builtin_job_agrees_with_its_prompt_and_evaluate_attaches_metrics(live_service):
    prompt = "a yellow square moving to the right"
    async def scenario():
        async with Client(live_service) as client:
            queued = await client.submit(prompt=prompt, seed=5, evaluate=True,
                                         **(SMALL | {"steps": 12, "num_frames": 12}))
            assert queued["type"] == "queued", queued
            assert queued["params"]["evaluate"] is True
            done = (await client.events_for(queued["job_id"], timeout=120))[-1]
            assert done["type"] == "generation_complete", done
            evaluation = done["evaluation"]
            metrics = evaluation["metrics"]
            assert 0.5 < metrics["temporal_consistency"] <= 1.0 and 0.9 < metrics["motion_smoothness"] <= 1.0
            assert metrics["dynamic"] is True and 0 < metrics["subject_consistency"] <= 1.0
            assert evaluation["agreement"]["attributes"]["colour"] == 1.0, evaluation
            assert evaluation["agreement"]["attributes"]["direction"] == 1.0, evaluation

            asked = await describe(client, job_id=queued["job_id"])
            assert asked["type"] == "queued" and asked["kind"] == "describe", asked
            assert asked["source_job_id"] == queued["job_id"] and asked["model"] == "builtin"
            events = await describe_events(client, asked["job_id"])
            kinds = [m["type"] for m in events]
            assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "description_complete", kinds
            assert "progress" in kinds
            described = events[-1]
            assert described["caption"] == evaluation["caption"]  # same describer, same video
            attributes = described["agreement"]["attributes"]
            assert attributes["colour"] == 1.0 and attributes["direction"] == 1.0, described
            assert described["agreement"]["semantic"] > 0.6
            assert described["answer"] is None

            question = await describe(client, job_id=queued["job_id"], question="what colour is it?")
            answered = (await describe_events(client, question["job_id"]))[-1]
            assert answered["type"] == "description_complete" and answered["answer"] == "yellow", answered

            # the job rows keep it: metrics on the generation, caption on the describe job
            base = live_service.base
            row = json.loads(http("GET", f"{base}/api/jobs/{queued['job_id']}")[2])["job"]
            assert row["result"]["metrics"] == metrics
            row = json.loads(http("GET", f"{base}/api/jobs/{asked['job_id']}")[2])["job"]
            assert row["kind"] == "describe" and row["result"]["caption"] == described["caption"]
    run(scenario())


def clip_b64(colour="magenta", shape="circle", direction="up") -> str:
    motion = world.ShapeMotion(colour, shape, direction, 8, 32.0, 48.0, 1.5)
    video = world.render([[motion]], 12, 64)[0]
    frames = ((video.permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    return base64.b64encode(encode_video(frames, 8)).decode("ascii")


def test_http_describe_of_an_uploaded_video_answers_a_question(live_service):
    base = live_service.base
    me = {"Cookie": session_cookie(live_service.base)}
    status, _, body = http("POST", f"{base}/api/describe", {"video": "data:video/mp4;base64," + clip_b64(),
                                                            "question": "which direction does it move?"}, me)
    assert status == 201, body
    job = live_service.wait_job(json.loads(body)["job"]["id"], headers=me)
    assert job["status"] == "succeeded", job
    assert job["result"]["caption"] == "a magenta circle moving up" and job["result"]["answer"] == "up"
    assert "agreement" not in job["result"]  # no prompt to agree with


def test_describe_refuses_bad_input_clearly(live_service):
    base = live_service.base
    cases = [
        ({"video": base64.b64encode(b"definitely not an mp4" * 20).decode()}, 400, "video_invalid"),
        ({"video": "%%% not base64"}, 400, "video_invalid"),
        ({"job_id": str(uuid.uuid4())}, 404, "not_found"),
        ({}, 400, "missing_field"),
        ({"video": clip_b64(), "model": "gpt-vision"}, 400, "unknown_model"),
        ({"video": clip_b64(), "colour": "red"}, 400, "unknown_field"),
    ]
    for fields, status, code in cases:
        got, _, body = http("POST", f"{base}/api/describe", fields)
        assert (got, json.loads(body)["code"]) == (status, code), (fields, body)

    async def scenario():
        async with Client(live_service) as client:
            refused = await describe(client, job_id=str(uuid.uuid4()))
            assert refused["type"] == "error" and refused["code"] == "not_found", refused
            refused = await describe(client, video=clip_b64(), model="nope")
            assert refused["code"] == "unknown_model" and "builtin" in refused["message"], refused
            await client.ping_ok()
    run(scenario())


def test_a_small_video_declaring_huge_frames_is_refused_as_too_large(live_service):
    """A 1.5 KB MP4 declaring 8192x8192 frames (decoding it took the worker past 100 GB, or an OOM
    kill and "worker was lost"): refused at submission, from its stated size."""
    bomb = base64.b64encode(mp4_declaring(8192, 8192)).decode()
    for path, fields in (("/api/describe", {"video": bomb}),
                         ("/api/jobs", {"prompt": "a red circle", "model": "builtin", "video": bomb})):
        status, _, body = http("POST", live_service.base + path, fields)
        answer = json.loads(body)
        assert (status, answer["code"], answer["field"]) == (400, "too_large", "video"), (path, body)
        assert "8192x8192" in answer["message"] and "16777216 pixels" in answer["message"], answer


def test_a_queued_describe_job_can_be_cancelled(live_service):
    async def scenario():
        async with Client(live_service) as client:
            # the one worker process is busy with this generation, so the describe job waits
            busy = await client.submit(prompt="a red circle moving left", **(SMALL | {"steps": 40}))
            await client.until(lambda m: m.get("job_id") == busy["job_id"] and m["type"] == "started", 60)
            queued = await describe(client, video=clip_b64())
            assert queued["type"] == "queued", queued
            await client.send({"type": "cancel", "job_id": queued["job_id"]})
            events = await describe_events(client, queued["job_id"], timeout=30)
            assert events[-1]["type"] == "cancelled", events
            await client.send({"type": "cancel", "job_id": busy["job_id"]})  # done with it: 40 steps is ~5 s of CPU
            await client.events_for(busy["job_id"], timeout=120)
            row = live_service.wait_job(queued["job_id"])
            assert row["status"] == "cancelled" and row["result"] is None, row
    run(scenario())
