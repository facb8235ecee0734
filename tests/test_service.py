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
from tests.conftest import http

SMALL = {"num_frames": 8, "width": 64, "height": 64, "steps": 3}
TERMINAL = {"generation_complete", "generation_failed", "cancelled"}


# ---------------------------------------------------------------- client helpers
def session_cookie(svc) -> str:
    """A fresh Django session, as a browser gets from GET /."""
    status, headers, _ = http("GET", svc["base"] + "/")
    assert status == 200
    cookies = [v for k, v in headers.items() if k.lower() == "set-cookie"]
    raw = ";".join(cookies)
    for part in raw.replace(",", ";").split(";"):
        part = part.strip()
        if part.startswith("sessionid="):
            return part
    raise AssertionError(f"no session cookie in {headers}")


class Client:
    def __init__(self, svc, cookie: str | None = None):
        self.svc, self.cookie = svc, cookie
        self.ws = None
        self.seen: list = []

    async def __aenter__(self):
        headers = {"Cookie": self.cookie} if self.cookie else None
        self.ws = await websockets.connect(self.svc["ws"], origin=self.svc["origin"], additional_headers=headers,
                                           max_size=None, open_timeout=10)
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()

    async def send(self, msg) -> None:
        await self.ws.send(msg if isinstance(msg, (str, bytes)) else json.dumps(msg))

    async def recv(self, timeout: float = 30.0) -> dict:
        msg = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.seen.append(msg)
        return msg

    async def until(self, pred, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; seen: {[m.get('type') for m in self.seen][-20:]}")
            msg = await self.recv(left)
            if pred(msg):
                return msg

    async def submit(self, **fields) -> dict:
        rid = uuid.uuid4().hex
        await self.send({"type": "generate", "request_id": rid, **fields})
        return await self.until(lambda m: m.get("request_id") == rid and m["type"] in ("queued", "error"), 30)

    async def events_for(self, job_id: str, timeout: float = 90.0) -> list:
        """Every event of one job up to its terminal one."""
        await self.until(lambda m: m.get("job_id") == job_id and m["type"] in TERMINAL, timeout)
        return [m for m in self.seen if m.get("job_id") == job_id]

    async def ping_ok(self) -> None:
        await self.send({"type": "ping", "request_id": "p"})
        msg = await self.until(lambda m: m["type"] in ("pong", "error") and m.get("request_id") == "p", 10)
        assert msg["type"] == "pong", msg


def run(coro):
    return asyncio.run(coro)


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
            preview = Image.open(io.BytesIO(base64.b64decode(prog[0]["preview"])))
            assert preview.format == "JPEG" and preview.height <= 96
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
            status, headers, body = http("GET", live_service["base"] + done["url"])
            assert status == 200 and body == video and headers["Content-Type"] == "video/mp4"
    run(scenario())
