"""The Python client (clients/python, installed in the test venv from requirements-test.txt) against
the real stack (redis-server, Daphne, a Celery worker): a plain clip with generate(), a live video
whose frames arrive as numpy arrays while it is made, steered and stopped, and stream() of the same
job over HTTP; its message types are the ones the service's JSON Schema generates."""
from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from videoservice_client import Client, JobFailed, VideoServiceError, decode, messages

from tests.support.stack import ROOT
from tests.test_live import red_centre

RIGHT, UP = "a red circle moving right", "a red circle moving up"
SMALL = {"width": 64, "height": 64, "seed": 5}


@pytest.fixture(scope="module")
def stack(live_service):
    return live_service  # the shared stack (tests/conftest.py: LIVE_MAX_LEAD_S 1, LIVE_STATUS_EVERY 1)


def test_the_message_types_are_generated_from_the_websocket_schema():
    client = ROOT / "clients" / "python"
    generated = subprocess.run([sys.executable, str(client / "generate_messages.py"),
                                str(ROOT / "docs" / "websocket.schema.json")],
                               check=True, capture_output=True, text=True).stdout
    assert generated == (client / "src" / "videoservice_client" / "messages.py").read_text(), \
        "regenerate clients/python/src/videoservice_client/messages.py (see its generate_messages.py)"
    assert messages.LiveStatusEvent.__required_keys__ == {"job_id", "realtime_factor", "lead_s", "frames", "prompt"}
    assert messages.GenerateRequest.__required_keys__ == {"prompt"}


def test_generate_a_clip_download_it_and_read_its_frames(stack):
    client = Client(stack.base)
    job = client.generate(RIGHT, num_frames=8, steps=2, **SMALL)
    assert job.status == "succeeded" and job.num_frames == 8 and job.timeline == []
    frames = job.frames()
    assert frames.shape == (8, 64, 64, 3) and frames.dtype == np.uint8
    assert red_centre(frames[-1])[0] > red_centre(frames[0])[0]  # it is the clip asked for
    again = client.job(job.id)  # the record, downloaded over HTTP (Range-capable URL)
    assert again.status == "succeeded" and again.download() == job.download()

    with pytest.raises(TypeError, match="unknown field"):
        client.generate(RIGHT, frames=8)
    with pytest.raises(VideoServiceError) as refused:
        client.generate(RIGHT, width=-64)
    assert refused.value.code == "invalid_field" and refused.value.field == "width"


def test_a_live_session_streams_numpy_frames_is_steered_and_stopped(stack):
    client = Client(stack.base)
    session = client.live(RIGHT, steps=4, **SMALL)
    streamed: list = []
    reader = threading.Thread(target=lambda: streamed.extend(client.stream(session.job_id)))
    reader.start()  # stream(): the same video over HTTP, piece by piece

    frames, steered_at, ended_while_reading = [], None, False
    for frame in session.frames():
        frames.append(frame)
        ended_while_reading |= session.ended
        if len(frames) == 10:
            assert session.steer(UP)["type"] == "steering"
        if session.steered and steered_at is None:
            steered_at = session.steered[0]["from_frame"]
        if steered_at is not None and len(frames) >= steered_at + 12:
            break
    assert not ended_while_reading, "the frames came only once the job had ended"
    assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert session.status is not None and session.status["realtime_factor"] > 0

    job = session.stop()
    reader.join(timeout=60)
    assert job.status == "succeeded"
    assert job.timeline == [{"from_frame": 0, "prompt": RIGHT}, {"from_frame": steered_at, "prompt": UP}]
    final = job.frames()
    assert final.shape[0] == job.num_frames >= len(frames)
    # what was decoded live is the start of the final video, frame for frame
    assert np.abs(final[:len(frames)].astype(int) - np.stack(frames).astype(int)).mean() < 1
    # and it follows the steer: up after from_frame
    after = [red_centre(f) for f in final[steered_at + 2:steered_at + 8]]
    assert all(after) and after[0][1] - after[-1][1] > 3, after
    assert decode(b"".join(streamed)).shape == final.shape

    with pytest.raises(VideoServiceError) as late:
        session.steer(RIGHT)
    assert late.value.code == "ended"
    session.close()


def test_the_readme_example_runs_as_written(stack):
    """README.md's Python client example, with the stack's address in place of the default one."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Python client"):]
    example = section[section.index("```python\n") + 10:section.index("\n```", section.index("```python"))]
    assert len(example.splitlines()) <= 8, example
    names: dict = {}
    exec(compile(example.replace("http://127.0.0.1:8000", stack.base), "README.md", "exec"), names)
    assert names["clip"].ndim == 4 and names["clip"].dtype == np.uint8
    assert [e["prompt"] for e in names["live"].timeline] == [RIGHT, UP]
    assert decode(names["video"]).shape[0] >= 48


def test_a_token_clients_private_clip_is_its_own(stack):
    token = stack.manage("create_api_token", "client-user", "--create-user").strip().splitlines()[-1]
    owner = Client(stack.base, token=token)
    job = owner.generate(RIGHT, num_frames=8, steps=1, private=True, **SMALL)
    assert owner.job(job.id).download() == job.download()  # over HTTP with the token
    with pytest.raises(VideoServiceError) as hidden:
        Client(stack.base).job(job.id)  # anyone else: no such job
    assert hidden.value.code == "not_found"
    with pytest.raises(VideoServiceError) as refused:
        Client(stack.base, token="vs_not-a-token").generate(RIGHT)
    assert refused.value.code == "auth_required", refused.value


def test_a_cancelled_live_session_says_so(stack):
    """Cancelled before its first chunk (a slow one: 60 steps): frames() raises JobFailed rather than
    a demuxer error, and nothing hangs."""
    session = Client(stack.base).live(RIGHT, steps=60, **SMALL)
    session.cancel(timeout=60)
    with pytest.raises(JobFailed) as failed:
        next(session.frames())
    assert failed.value.job.status == "cancelled" and failed.value.job.id == session.job_id
