"""Live jobs in-process (no stack): the request rules of a live job, steer and stop, the schemas that
describe them, and generator.live.LiveVideo's continuation on a fake backend (fast: the real model
runs in tests/test_live.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from generator.interface import GenerationRequest, GenerationResult, ModelInfo
from generator.live import LiveVideo
from videoservice.contract import (GenerateRequest, RequestError, SteerBody, SteerRequest, StopRequest, parse,
                                   websocket_schema)

RIGHT = "a red circle moving right"
JOB = "6f1c1f70-8f3e-4a4f-9a5e-0b7e2b1c3d4e"


def refusal(model, **fields) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse(model, fields)
    return caught.value


def test_a_live_request_takes_its_defaults_and_refuses_a_clips_options(settings):
    params = parse(GenerateRequest, {"prompt": RIGHT, "live": True}).params
    assert params.live and params.max_duration_s == settings.LIVE_DEFAULT_DURATION_S
    assert params.total_steps == params.steps  # one chunk's: a live job's length is not known
    assert parse(GenerateRequest, {"prompt": RIGHT, "live": True, "max_duration_s": 12}).params.max_duration_s == 12
    assert "live" not in parse(GenerateRequest, {"prompt": RIGHT}).params.stored()
    for field, value in (("num_chunks", 2), ("duration_s", 4), ("overlap", 2), ("interpolate", 2), ("upscale", 2),
                         ("evaluate", True)):
        err = refusal(GenerateRequest, prompt=RIGHT, live=True, **{field: value})
        assert (err.code, err.field) == ("invalid_field", field)
    assert refusal(GenerateRequest, prompt=RIGHT, max_duration_s=5).field == "max_duration_s"
    assert refusal(GenerateRequest, prompt=RIGHT, live=True, max_duration_s=settings.LIVE_MAX_DURATION_S + 1).field \
        == "max_duration_s"
    assert refusal(GenerateRequest, prompt=RIGHT, live="yes").field == "live"


def test_steer_and_stop_requests():
    steer = parse(SteerRequest, {"type": "steer", "job_id": JOB, "prompt": "  a red circle moving up "})
    assert steer.prompt == "a red circle moving up" and steer.job_id == JOB
    assert refusal(SteerRequest, type="steer", prompt="x").code == "missing_field"
    assert refusal(SteerRequest, type="steer", job_id=JOB, prompt=" ").field == "prompt"
    assert refusal(SteerRequest, type="steer", job_id="not-a-job", prompt="x").code == "not_found"
    assert refusal(SteerBody, prompt="x", job_id=JOB).code == "unknown_field"  # the HTTP body: the path names it
    assert parse(StopRequest, {"type": "stop", "job_id": JOB}).job_id == JOB
    assert refusal(StopRequest, type="stop").code == "missing_field"


def test_the_websocket_schema_describes_live_messages():
    schema = websocket_schema()
    client = {ref["$ref"].rsplit("/", 1)[-1] for ref in schema["$defs"]["clientMessage"]["oneOf"]}
    server = {ref["$ref"].rsplit("/", 1)[-1] for ref in schema["$defs"]["serverMessage"]["oneOf"]}
    assert {"SteerRequest", "StopRequest"} <= client
    assert {"SteeringEvent", "SteeredEvent", "StoppingEvent", "LiveStatusEvent"} <= server
    assert {"live", "max_duration_s"} <= set(schema["$defs"]["GenerateRequest"]["properties"])
    assert "timeline" in schema["$defs"]["GenerationCompleteEvent"]["properties"]


@dataclass
class FakeBackend:
    """Frames whose brightness encodes (chunk seed, frame); the given start frames come back as the
    first frames, as a model continuing them would draw them."""
    info: ModelInfo
    max_start_frames: int = 6

    def fill_defaults(self, req: GenerationRequest) -> GenerationRequest:
        req.num_frames, req.width, req.height, req.fps, req.seed = req.num_frames or 8, 8, 8, 8.0, req.seed or 0
        return req

    def generate(self, req, progress=None, should_cancel=None) -> GenerationResult:
        self.calls.append((req.prompt, None if req.start_frames is None else len(req.start_frames)))
        frames = np.stack([np.full((8, 8, 3), (req.seed * 10 + t) % 256, np.uint8) for t in range(req.num_frames)])
        if req.start_frames is not None:
            frames[:len(req.start_frames)] = req.start_frames
        return GenerationResult(frames=frames, fps=8.0, seed=req.seed, native_size=(8, 8))


def test_live_video_continues_from_the_last_frames_under_the_prompt_in_force():
    backend = FakeBackend(ModelInfo("fake", "fake"))
    backend.calls = []
    prompts = [RIGHT, RIGHT, "a red circle moving up", "a red circle moving up"]
    video = LiveVideo(backend, GenerationRequest("x", seed=1), lambda i: prompts[i], overlap=2)
    chunks = [chunk for _, chunk in zip(range(4), video)]
    assert [c.prompt for c in chunks] == prompts and [c.index for c in chunks] == [0, 1, 2, 3]
    assert [c.first_frame for c in chunks] == [0, 6, 12, 18] and all(len(c.frames) == 6 for c in chunks)
    assert backend.calls == [(RIGHT, None), (RIGHT, 2), ("a red circle moving up", 2), ("a red circle moving up", 2)]
    # chunk 1 re-drew chunk 0's last two frames exactly, so the blend keeps them: no seam
    whole = np.concatenate([c.frames for c in chunks] + [video.tail()])
    assert len(whole) == 26 and video.tail() is None
    assert list(whole[:8, 0, 0, 0]) == [10, 11, 12, 13, 14, 15, 16, 17]


def test_a_text_only_backend_cross_fades_its_chunks():
    backend = FakeBackend(ModelInfo("fake", "fake", supports_image=False))
    backend.calls = []
    video = LiveVideo(backend, GenerationRequest("x", seed=1), lambda i: RIGHT, overlap=2)
    chunks = [chunk for _, chunk in zip(range(2), video)]
    assert backend.calls == [(RIGHT, None), (RIGHT, None)]
    # frames 6, 7 mix chunk 0's (16, 17) and chunk 1's (20, 21) with weights 0 and 1/2
    assert list(chunks[1].frames[:2, 0, 0, 0]) == [16, 19]
