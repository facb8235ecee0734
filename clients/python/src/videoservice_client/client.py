"""A client of the video generation service: plain clips, their streams, and live videos.

    client = Client("http://127.0.0.1:8000")                  # token="..." where the service wants one
    job = client.generate("a red circle moving right", num_frames=16)
    frames = job.frames()                                        # T x H x W x 3 uint8

    live = client.live("a red circle moving right")           # endless, until stop()
    for i, frame in zip(range(48), live.frames()):              # decoded as the video grows
        if i == 16:
            live.steer("a red circle moving up")                 # from its next chunk on
    job = live.stop()                                            # the whole video, with its timeline

Requests go over the websocket lobby (/ws/lobby/); downloads and streams over HTTP. Without a
token the client takes a session like a browser does (GET /), so its private jobs are its own
over both.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Union

import av
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from .messages import (
    ErrorEvent,
    GenerateRequest,
    LiveStatusEvent,
    SteeredEvent,
    SteeringEvent,
    TimelineEntry,
)

TERMINAL = ("generation_complete", "generation_failed", "cancelled")
# what generate() and live() take besides the prompt: the fields of the contract's `generate` message
GENERATE_FIELDS = frozenset(GenerateRequest.__annotations__) - {"type", "prompt", "request_id", "live"}
ACK_TIMEOUT_S = 30.0


class VideoServiceError(Exception):
    """The service refused a request: `code` is one of docs/protocol.md's error codes, `field` the
    request field it is about (when it is about one)."""

    def __init__(self, code: str, message: str, field: Optional[str] = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.field = code, message, field

    @classmethod
    def of(cls, event: ErrorEvent) -> "VideoServiceError":
        return cls(event["code"], event["message"], event.get("field"))


class JobFailed(VideoServiceError):
    """A job that ended without a video (generation_failed or cancelled); `job` tells which."""

    def __init__(self, job: "Job"):
        super().__init__(job.status, job.error or job.status)
        self.job = job


@dataclass
class Job:
    """A job as the service reports it; `download()` / `frames()` give its video once it succeeded."""
    id: str
    status: str  # queued, running, succeeded, failed, cancelled
    prompt: str = ""
    url: Optional[str] = None  # the MP4 (absolute)
    num_frames: Optional[int] = None
    fps: Optional[float] = None
    width: Optional[int] = None
    height: Optional[int] = None
    seed: Optional[int] = None
    error: Optional[str] = None
    timeline: list[TimelineEntry] = field(default_factory=list)  # live jobs: the prompt from each frame on
    raw: dict = field(default_factory=dict, repr=False)  # the message or record it was made from
    _client: Optional["Client"] = field(default=None, repr=False, compare=False)
    _video: Optional[bytes] = field(default=None, repr=False, compare=False)

    def download(self) -> bytes:
        """The MP4 (from the completion when the service inlined it, else over HTTP)."""
        if self._video is None:
            if self.status != "succeeded" or not self.url:
                raise VideoServiceError("no_video", f"job {self.id} is {self.status}")
            self._video = self._client._get(self.url)
        return self._video

    def frames(self) -> np.ndarray:
        """Every frame of the video, T x H x W x 3 uint8 RGB."""
        return decode(self.download())


def decode(mp4: bytes) -> np.ndarray:
    with av.open(io.BytesIO(mp4)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8000", token: Optional[str] = None, timeout: float = 600.0):
        """`url`: the service's address; `token`: an API token (Authorization: Bearer); `timeout`:
        seconds generate() waits for a job, and HTTP reads wait for data."""
        self.url = url.rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be http(s)://host[:port], not {url!r}")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.ws_url = ("wss" if parts.scheme == "https" else "ws") + f"://{parts.netloc}{parts.path}/ws/lobby/"
        self.token = token
        self.timeout = timeout
        self._cookie: Optional[str] = None

    # ------------------------------------------------------------------ HTTP
    def _headers(self) -> dict:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self._cookie is None:  # a session of our own, as a browser gets from GET /
            with urllib.request.urlopen(self.url + "/", timeout=30) as resp:
                for header in resp.headers.get_all("Set-Cookie") or []:
                    if header.startswith("sessionid="):
                        self._cookie = header.split(";", 1)[0]
            if self._cookie is None:
                raise VideoServiceError("no_session", f"{self.url}/ gave no session cookie")
        return {"Cookie": self._cookie}

    def _open(self, url: str, method: str = "GET", body: Optional[dict] = None):
        data = None if body is None else json.dumps(body).encode()
        headers = {**self._headers(), "Origin": self.origin, "Accept": "application/json, video/mp4"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(urllib.parse.urljoin(self.url + "/", url), data=data, method=method,
                                         headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())
            except ValueError:
                error = {}
            raise VideoServiceError(error.get("code", f"http_{exc.code}"), error.get("message", str(exc)),
                                    error.get("field")) from None

    def _get(self, url: str) -> bytes:
        with self._open(url) as resp:
            return resp.read()

    def job(self, job_id: str) -> Job:
        """Where a job stands (GET /api/jobs/<id>)."""
        with self._open(f"/api/jobs/{urllib.parse.quote(job_id)}") as resp:
            record = json.loads(resp.read())["job"]
        return self._job(record["id"], record["status"], record)

    def stream(self, job: Union[Job, str]) -> Iterator[bytes]:
        """The job's video while it is made: the pieces of its fragmented MP4 in order as they come
        (GET /api/jobs/<id>/stream; joined, they are a playable MP4 of every frame so far)."""
        job_id = job.id if isinstance(job, Job) else job
        with self._open(f"/api/jobs/{urllib.parse.quote(job_id)}/stream") as resp:
            while piece := resp.read1(1 << 16):
                yield piece

    # ------------------------------------------------------------------ websocket
    def _connect(self) -> ClientConnection:
        return connect(self.ws_url, origin=self.origin, additional_headers=self._headers(), max_size=None,
                       open_timeout=30)

    def _job(self, job_id: str, status: str, msg: dict) -> Job:
        url = msg.get("url")
        video = msg.get("video")
        return Job(id=job_id, status=status, prompt=msg.get("prompt") or "",
                   url=urllib.parse.urljoin(self.url + "/", url) if url else None,
                   num_frames=msg.get("num_frames"), fps=msg.get("fps"), width=msg.get("width"),
                   height=msg.get("height"), seed=msg.get("seed"), error=msg.get("error"),
                   timeline=list(msg.get("timeline") or []), raw=msg, _client=self,
                   _video=base64.b64decode(video) if video else None)

    def _ended(self, msg: dict) -> Job:
        """The Job of a terminal event; JobFailed unless it succeeded."""
        if msg["type"] == "generation_complete":
            return self._job(msg["job_id"], "succeeded", msg)
        job = self._job(msg["job_id"], "failed" if msg["type"] == "generation_failed" else "cancelled", msg)
        raise JobFailed(job)

    @staticmethod
    def _generate_message(prompt: str, fields: dict, live: bool) -> dict:
        unknown = sorted(set(fields) - GENERATE_FIELDS)
        if unknown:
            raise TypeError(f"unknown field(s) {', '.join(unknown)}; a generate request takes "
                            f"{', '.join(sorted(GENERATE_FIELDS))}")
        message: GenerateRequest = {"type": "generate", "prompt": prompt, "request_id": uuid.uuid4().hex, **fields}
        if live:
            message["live"] = True
        return message

    @staticmethod
    def _receive(ws: ClientConnection, timeout: float) -> dict:
        """The next message; VideoServiceError for an `error` not about another request (the
        service says why before it closes a connection, e.g. auth_required) or a closed connection."""
        try:
            msg = json.loads(ws.recv(timeout=timeout))
        except ConnectionClosed as exc:
            raise VideoServiceError("closed", f"the service closed the connection ({exc})") from None
        if msg.get("type") == "error" and msg.get("request_id") is None:
            raise VideoServiceError.of(msg)
        return msg

    def _submit(self, ws: ClientConnection, message: dict) -> dict:
        """Send a request; its `queued` answer (VideoServiceError for its `error`)."""
        try:
            ws.send(json.dumps(message))
        except ConnectionClosed:
            pass  # closed on us: what the service said before that is read below
        while True:
            msg = self._receive(ws, ACK_TIMEOUT_S)
            if msg.get("request_id") == message["request_id"]:
                if msg["type"] == "error":
                    raise VideoServiceError.of(msg)
                return msg

    def generate(self, prompt: str, **fields: Any) -> Job:
        """Make a clip and wait for it (`fields`: the `generate` message's, e.g. num_frames, width,
        height, steps, seed, model, fps). JobFailed when it fails or is cancelled."""
        message = self._generate_message(prompt, fields, live=False)
        with self._connect() as ws:
            job_id = self._submit(ws, message)["job_id"]
            while True:
                msg = self._receive(ws, self.timeout)
                if msg.get("job_id") == job_id and msg["type"] in TERMINAL:
                    return self._ended(msg)

    def live(self, prompt: str, **fields: Any) -> "LiveSession":
        """Start a live video (endless, until stop(), max_duration_s or a cancel) and return its
        session once it is queued (`fields` as for generate(), e.g. max_duration_s, width, fps)."""
        message = self._generate_message(prompt, fields, live=True)
        connection = contextlib.ExitStack()  # the session's websocket stays open until close()
        ws = connection.enter_context(self._connect())
        try:
            queued = self._submit(ws, message)
        except BaseException:
            connection.close()
            raise
        return LiveSession(self, ws, connection, queued["job_id"], prompt)


class _Pieces:
    """A file-like object over the fMP4 pieces of a live video as they arrive, for PyAV's demuxer:
    read() waits for the next piece, and returns b"" once the video has ended."""

    def __init__(self, pieces: "queue.Queue[Optional[bytes]]"):
        self._pieces, self._buffer, self._ended = pieces, b"", False

    def read(self, size: int = -1) -> bytes:
        while not self._buffer and not self._ended:
            piece = self._pieces.get()
            if piece is None:
                self._ended = True
            else:
                self._buffer = piece
        size = len(self._buffer) if size < 0 else size
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


class LiveSession:
    """A live video of this client's: its frames as they are made, steer(), stop().

    A thread reads the session's websocket: chunks queue up for frames(), `steered` events extend
    `timeline`, `live_status` updates `status`."""

    def __init__(self, client: Client, ws: ClientConnection, connection: contextlib.ExitStack, job_id: str,
                 prompt: str):
        self.client, self.job_id = client, job_id
        self.timeline: list[TimelineEntry] = [{"from_frame": 0, "prompt": prompt}]
        self.steered: list[SteeredEvent] = []
        self.status: Optional[LiveStatusEvent] = None  # the latest pace report
        self.frames_streamed = 0
        self._ws, self._connection = ws, connection
        self._pieces: "queue.Queue[Optional[bytes]]" = queue.Queue()
        self._answers: dict = {}  # request_id -> [threading.Event, its answer]
        self._lock = threading.Lock()
        self._next_seq = 0
        self._final: Optional[dict] = None
        self._lost: Optional[str] = None
        self._ended = threading.Event()
        self._frames_taken = False
        self._reader = threading.Thread(target=self._read, name=f"live-{job_id}", daemon=True)
        self._reader.start()

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, *exc) -> None:
        try:
            if not self._ended.is_set():
                self.stop()
        except (VideoServiceError, TimeoutError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Leave the session's websocket (a live job nobody watches ends after LIVE_IDLE_S)."""
        self._connection.close()
        self._reader.join(timeout=10)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    # ------------------------------------------------------------------ the reader thread
    def _read(self) -> None:
        try:
            for text in self._ws:
                msg = json.loads(text)
                with self._lock:
                    waiting = self._answers.get(msg.get("request_id"))
                if waiting is not None:
                    waiting[1] = msg
                    waiting[0].set()
                if msg.get("job_id") == self.job_id and self._event(msg):
                    return
        except ConnectionClosed as exc:
            self._lost = f"the connection closed: {exc}"
        finally:
            self._pieces.put(None)
            self._ended.set()
            with self._lock:
                for waiting in self._answers.values():
                    waiting[0].set()

    def _event(self, msg: dict) -> bool:
        """Take one of the job's events; True at its end."""
        kind = msg["type"]
        if kind == "video_chunk":
            if msg["seq"] != self._next_seq:  # events of one job arrive in order: a gap means a lost one
                self._lost = f"chunk {self._next_seq} never came (got {msg['seq']})"
                return True
            self._next_seq += 1
            if msg.get("init"):
                self._pieces.put(base64.b64decode(msg["init"]))
            self._pieces.put(base64.b64decode(msg["data"]))
            self.frames_streamed = msg["first_frame"] + msg["num_frames"]
        elif kind == "steered":
            self.steered.append(msg)
            self.timeline = [e for e in self.timeline if e["from_frame"] < msg["from_frame"]]
            self.timeline.append({"from_frame": msg["from_frame"], "prompt": msg["prompt"]})
        elif kind == "live_status":
            self.status = msg
        elif kind in TERMINAL:
            self._final = msg
            if msg.get("timeline"):
                self.timeline = list(msg["timeline"])
            return True
        return False

    def _request(self, message: dict, timeout: float = ACK_TIMEOUT_S) -> dict:
        """Send a request on the session's websocket; its answer (VideoServiceError for `error`)."""
        rid = uuid.uuid4().hex
        waiting = [threading.Event(), None]
        with self._lock:
            self._answers[rid] = waiting
        try:
            if self._ended.is_set():
                raise VideoServiceError("ended", f"live job {self.job_id} has ended")
            self._ws.send(json.dumps({**message, "job_id": self.job_id, "request_id": rid}))
            if not waiting[0].wait(timeout):
                raise TimeoutError(f"no answer to {message['type']} in {timeout:.0f} s")
        finally:
            with self._lock:
                self._answers.pop(rid, None)
        answer = waiting[1]
        if answer is None:
            raise VideoServiceError("ended", f"live job {self.job_id} ended before the {message['type']} was answered")
        if answer["type"] == "error":
            raise VideoServiceError.of(answer)
        return answer

    # ------------------------------------------------------------------ what a user calls
    def frames(self) -> Iterator[np.ndarray]:
        """The video's frames (H x W x 3 uint8 RGB) as they are streamed, decoded from the growing
        fragmented MP4; ends when the job ends. One iterator per session."""
        if self._frames_taken:
            raise RuntimeError("frames() of a live session can be iterated once")
        self._frames_taken = True
        # no probing beyond the init segment: frames come out as their fragments arrive
        try:
            container = av.open(_Pieces(self._pieces), mode="r", format="mp4",
                                options={"probesize": "32", "analyzeduration": "0"})
        except av.FFmpegError:
            if self._next_seq == 0:  # it ended before its first chunk: say why (JobFailed, lost)
                self.result()
            raise
        with container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")

    def steer(self, prompt: str) -> SteeringEvent:
        """A new prompt from the next chunk not yet started; `steered` (in `self.steered` and the
        timeline) follows when its first frame streams."""
        return self._request({"type": "steer", "prompt": prompt})

    def stop(self, timeout: Optional[float] = None) -> Job:
        """End the video after its current chunk; the whole video as a Job (with its timeline)."""
        if not self._ended.is_set():
            self._request({"type": "stop"})
        if not self._ended.wait(self.client.timeout if timeout is None else timeout):
            raise TimeoutError(f"live job {self.job_id} did not end")
        self.close()
        return self.result()

    def cancel(self, timeout: Optional[float] = None) -> None:
        """End the video and discard it (stop() keeps it)."""
        # answered by `cancelling` while it runs, by its `cancelled` alone while queued, `error` if refused
        rid = uuid.uuid4().hex
        waiting = [threading.Event(), None]
        with self._lock:
            self._answers[rid] = waiting
        try:
            if not self._ended.is_set():
                self._ws.send(json.dumps({"type": "cancel", "job_id": self.job_id, "request_id": rid}))
            deadline = time.monotonic() + (self.client.timeout if timeout is None else timeout)
            while not self._ended.wait(0.1):
                if waiting[1] is not None and waiting[1]["type"] == "error":
                    raise VideoServiceError.of(waiting[1])
                if time.monotonic() > deadline:
                    raise TimeoutError(f"live job {self.job_id} did not end")
        finally:
            with self._lock:
                self._answers.pop(rid, None)
        self.close()

    def result(self) -> Job:
        """The ended job (JobFailed if it failed or was cancelled)."""
        if self._final is None:
            raise VideoServiceError("lost", f"live job {self.job_id}: {self._lost or 'not ended'}")
        return self.client._ended(self._final)
