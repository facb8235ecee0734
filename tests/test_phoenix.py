"""The reference design's client against the real Daphne: the unchanged npm `phoenix` library (pinned
in tests/phoenix/package.json, installed by scripts/test.sh with Debian's nodejs/npm) run under node
with the `ws` package as its transport, on /socket/websocket. Two sockets join video:lobby, one
pushes `generate`, both receive generation_complete with an MP4 that decodes; a bad push gets an
error reply with our code; heartbeats keep the sockets open; after leave no more events arrive;
job:<id> gets only that job's events; a wrong token is refused. The lobby's limits hold there too
(raw V2 frames from Python)."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import pytest
import websockets

from generator.encode import decode_video
from tests.support.client import run
from tests.support.stack import ROOT

CLIENT = ROOT / "tests" / "phoenix"


def test_the_npm_phoenix_client_works_unchanged(live_service, tmp_path):
    node = shutil.which("node")
    if node is None or not (CLIENT / "node_modules" / "phoenix").exists():
        pytest.fail("node and tests/phoenix/node_modules are needed (scripts/test.sh installs them)")
    done = subprocess.run([node, "scenario.mjs", live_service.base, str(tmp_path)], cwd=CLIENT, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["generate_reply"]["status"] == "ok" and result["generate_reply"]["response"]["position"] >= 0
    complete = result["complete"]
    assert complete["prompt"] == "a red circle moving to the right" and complete["same_video"]
    assert {"started", "progress"} <= set(complete["kinds_a"])
    for name in ("a.mp4", "b.mp4"):
        frames, _ = decode_video(str(tmp_path / name))
        assert frames.shape == (complete["num_frames"], 64, 64, 3)
    bad = result["bad_reply"]
    assert bad["status"] == "error"
    assert bad["response"]["code"] == "invalid_field" and bad["response"]["field"] == "prompt"
    assert result["unknown_reply"]["response"]["code"] == "unknown_type"
    assert result["heartbeats"]["connected"] and result["heartbeats"]["replies"] >= 4
    job_topic = result["job_topic"]
    assert job_topic["job_ids"] == [job_topic["expected"]] and "generation_complete" in job_topic["events"]
    assert result["after_leave"] == []
    assert result["join_missing"] == {"reason": "not_found"}
    assert result["wrong_token"] == "refused"


class PhoenixFrames:
    """A raw V2 JSON client (no library), joined to video:lobby: for the limits."""

    def __init__(self, base: str, origin: str, token: str | None = None):
        query = "vsn=2.0.0" + (f"&token={token}" if token else "")
        self.url, self.origin, self.ref = base.replace("http", "ws") + f"/socket/websocket?{query}", origin, 0

    async def __aenter__(self):
        self.ws = await websockets.connect(self.url, origin=self.origin, max_size=None)
        assert (await self.call("video:lobby", "phx_join", {}))["status"] == "ok"
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()

    async def call(self, topic, event, payload) -> dict:
        self.ref += 1
        ref = str(self.ref)
        await self.ws.send(json.dumps(["1", ref, topic, event, payload]))
        while True:
            _, got, _, kind, answer = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if kind == "phx_reply" and got == ref:
                return answer


def test_the_lobbys_limits_hold_on_the_phoenix_endpoint(live_service, strict_service):
    """Message cap (live), pixel budget and message rate (the strict server: MAX_VIDEO_PIXELS=40000,
    WS_MESSAGES_PER_MINUTE=40), and anonymous sockets refused where auth is required. (Per-owner
    queue caps: tests/test_queue_caps.py.)"""
    async def scenario():
        async with PhoenixFrames(live_service.base, live_service.origin) as c:
            huge = await c.call("video:lobby", "generate", {"prompt": "\u20ac" * 4_500_000})
            assert huge["status"] == "error" and huge["response"]["code"] == "too_large"
            unjoined = await c.call("job:nope", "generate", {"prompt": "x"})
            assert unjoined == {"status": "error", "response": {"reason": "unmatched topic"}}
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(PhoenixFrames(strict_service.base, strict_service.origin).url,
                                     origin=strict_service.origin)
        async with PhoenixFrames(strict_service.base, strict_service.origin, strict_service.tokens["bob"]) as c:
            big = await c.call("video:lobby", "generate", {"prompt": "x", "num_frames": 16, "width": 128,
                                                           "height": 128, "steps": 1})
            assert big["status"] == "error" and big["response"]["code"] == "invalid_field"
            answers = [await c.call("phoenix", "heartbeat", {}) for _ in range(45)]
            limited = [a for a in answers if a["status"] == "error"]
            assert limited and all(a["response"]["code"] == "rate_limited" for a in limited)
    run(scenario())
