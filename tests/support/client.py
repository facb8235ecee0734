"""The one websocket client of the test suites: a lobby connection that records everything it receives.

    async with Client(stack) as c:                       # anonymous, Origin = the service's own
        queued = await c.submit(prompt="a red circle", num_frames=8)
        done = await c.terminal(queued["job_id"])

Options: `cookie` (a browser session), `token` (`?token=`), `headers` (e.g. Authorization),
`url` (another endpoint), `reconnect` (reconnect when the server closes the socket, as the web
UI does, counting the reconnections in `closes`).
"""
from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import uuid

import websockets

from tests.support.stack import http

TERMINAL = {"generation_complete", "generation_failed", "cancelled", "description_complete", "description_failed"}


def run(coro):
    return asyncio.run(coro)


def session_cookie(base: str) -> str:
    """A fresh Django session, as a browser gets from GET /."""
    status, headers, _ = http("GET", base + "/")
    assert status == 200
    for part in ";".join(headers.get_all("Set-Cookie") or []).split(";"):
        part = part.strip()
        if part.startswith("sessionid="):
            return part
    raise AssertionError(f"no session cookie in {headers}")


class Client:
    def __init__(self, svc, cookie: str | None = None, token: str | None = None, headers: dict | None = None,
                 url: str | None = None, origin: str | None = None, reconnect: bool = False):
        self.url = url or svc.ws
        if token:
            self.url += ("&" if "?" in self.url else "?") + "token=" + urllib.parse.quote(token)
        self.origin = origin or svc.origin
        self.headers = dict(headers or {})
        if cookie:
            self.headers["Cookie"] = cookie
        self.reconnect = reconnect
        self.ws = None
        self.seen: list = []
        self.closes = 0

    async def __aenter__(self):
        await self._connect()
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()

    async def _connect(self, timeout: float = 10) -> None:
        # max_queue=None: a client that reads one job's events at a time must not stall (and miss
        # keepalive pongs) behind a full buffer of other jobs' progress
        self.ws = await websockets.connect(self.url, origin=self.origin, additional_headers=self.headers or None,
                                           max_size=None, max_queue=None, open_timeout=timeout)

    async def send(self, msg) -> None:
        await self.ws.send(msg if isinstance(msg, (str, bytes)) else json.dumps(msg))

    async def recv(self, timeout: float = 30.0) -> dict:
        while True:
            try:
                msg = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
                self.seen.append(msg)
                return msg
            except websockets.ConnectionClosed:
                if not self.reconnect:
                    raise
                self.closes += 1
                self.seen.append({"type": "_closed"})
                deadline = time.monotonic() + 60
                while True:  # back off until the server accepts us again
                    try:
                        await self._connect(timeout=5)
                        self.seen.append({"type": "_reconnected"})
                        return self.seen[-1]
                    except (OSError, websockets.InvalidHandshake, asyncio.TimeoutError):
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.5)

    async def until(self, pred, timeout: float = 60.0, since: int | None = None) -> dict:
        """The next message that matches; with `since`, the first from that index of `seen` on
        (already received or still to come)."""
        if since is not None:
            for msg in self.seen[since:]:
                if pred(msg):
                    return msg
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; seen: {[m.get('type') for m in self.seen][-30:]}")
            msg = await self.recv(left)
            if pred(msg):
                return msg

    async def request(self, kind: str, **fields) -> dict:
        """Send a message with a fresh request_id; its answer (the `queued` or `error` echoing it)."""
        rid = uuid.uuid4().hex
        await self.send({"type": kind, "request_id": rid, **fields})
        return await self.until(lambda m: m.get("request_id") == rid and m["type"] in ("queued", "error"), 30)

    async def submit(self, **fields) -> dict:
        return await self.request("generate", **fields)

    async def terminal(self, job_id: str, timeout: float = 90.0) -> dict:
        return await self.until(lambda m: m.get("job_id") == job_id and m["type"] in TERMINAL, timeout, since=0)

    async def events_for(self, job_id: str, timeout: float = 90.0) -> list:
        """Every event of one job up to its terminal one."""
        await self.terminal(job_id, timeout)
        return [m for m in self.seen if m.get("job_id") == job_id]

    def events(self, job_id: str) -> list:
        return [m["type"] for m in self.seen if m.get("job_id") == job_id]

    async def ping_ok(self) -> None:
        await self.send({"type": "ping", "request_id": "p"})
        msg = await self.until(lambda m: m["type"] in ("pong", "error") and m.get("request_id") == "p", 10)
        assert msg["type"] == "pong", msg
