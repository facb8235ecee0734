"""Everything that leaves a process through Redis: jobs to the workers (Celery) and job events to
their subscribers (the Channels layer). Light on imports: the Celery app is loaded from here.

Tasks: the web tier never imports the worker's code. It names the task (`worker.tasks.run_next`,
a turn on a queue: videoservice/dispatch.py says why turns rather than jobs) and the queue. The
same app object, configured from the CELERY_* settings, is what
`celery -A worker` runs (worker/celery.py). A generation goes to its model's queue (its
configuration entry's `queue`, by default the model's name: GPU hosts run `-Q ltx-video`, CPU
hosts `-Q builtin`); describe jobs go to the `describe` queue.

Events: `{"type": ..., "job_id": ..., ...}` (videoservice/contract/events.py defines each), carried on the layer as
`{"type": "job.event", "text": "<its JSON>", ...}` (or, when large, the key of that text stored
once in Redis: videoservice/fanout.py) to the job's audience group (the lobby, or the owner's
group for a private job); every consumer in that group passes it on. Sync code (the worker, the
HTTP views, the reaper) publishes through one event loop thread per process, which keeps the
layer's Redis connections between events:
- `publish` delivers in order and waits for it (a completion must not be lost);
- `publish_progress` never waits: while an earlier event of the job is still on its way (Redis
  slow or frozen) only the newest progress is kept, so generation never stalls on Redis.
Async code (consumers) awaits `layer.group_send(group, envelope(event))`.

Video streams: the fragmented MP4 of a running job (init segment, then fragments) is appended to
a Redis stream (`stream_append`), which `GET /api/jobs/<id>/stream` reads from the start while more
arrives (`stream_read`); it is kept STREAM_TTL_S after the job's end.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import uuid
from collections import deque

from celery import Celery
from channels.layers import get_channel_layer

from generator.interface import get_info, list_models
from videoservice import fanout, redis_clients

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- jobs -> workers
app = Celery("videoservice")
app.config_from_object("django.conf:settings", namespace="CELERY")

TURN_TASK = "worker.tasks.run_next"  # a turn on a queue: run its next job (videoservice/dispatch.py)
DESCRIBE_QUEUE = "describe"


def queue_of_model(model: str) -> str:
    info = get_info(model)
    return (info.extra.get("queue") if info is not None else None) or model


def models_of_queue(queue: str) -> list:
    """The models a worker consuming `queue` serves."""
    return [info.name for info in list_models() if (info.extra.get("queue") or info.name) == queue]


def send_turns(queue: str, count: int = 1) -> None:
    """Put `count` turns on a queue. Raises when the broker does not take them. Nobody waits for a
    turn's result (the job's row and events say how it went), so the sender does not subscribe."""
    for _ in range(count):
        app.send_task(TURN_TASK, args=[queue], queue=queue, ignore_result=True)


def turns_waiting(queue: str) -> int:
    """Turns on the broker for this queue, not yet taken by a worker. Redis keeps no empty list, so
    kombu answers NOT_FOUND for a queue with no message: that is 0 turns (exactly the case the
    reaper's top-up is for), not a failure."""
    from kombu.exceptions import ChannelError

    with app.connection_for_write() as connection:
        try:
            return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
        except ChannelError as exc:
            if "NOT_FOUND" not in str(exc):
                raise
            return 0


def ping_workers(timeout: float) -> list:
    """Node names of the workers that answer a ping within `timeout` seconds (asked twice when the
    pooled connection broke: Redis was restarted)."""
    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception:  # (a broken pooled connection is dropped by the failure; the next one is new)
        replies = app.control.ping(timeout=timeout) or []
    return sorted(name for reply in replies for name in reply)


# ---------------------------------------------------------------- video streams (Redis streams)
STREAM_TTL_S = 600


def _stream_key(job_id: str) -> str:
    return f"videoservice:stream:{job_id}"


STREAM_RETRY_S = 20.0  # a piece waits this long for Redis to come back (a restart) before it is dropped
STREAM_READ_SLICE_S = 5.0  # one blocking read; the socket time-out is longer, so a frozen Redis cannot hold a reader


def stream_append(job_id: str, data: bytes = b"", end: bool = False) -> None:
    """Append a piece of a job's fMP4 (or its end) to the job's stream, in order with the job's
    events, without waiting (a slow Redis never holds the generation up). While Redis is away (a
    restart) the piece is retried for STREAM_RETRY_S, and the job's later sends wait behind it."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def send():
        loop = asyncio.get_running_loop()
        client = redis_clients.for_loop()
        key = _stream_key(job_id)
        give_up = loop.time() + STREAM_RETRY_S
        while True:
            try:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.xadd(key, {"end": b"1"} if end else {"data": data})
                    pipe.expire(key, STREAM_TTL_S)
                    await pipe.execute()
                return
            except (RedisConnectionError, OSError):
                if loop.time() > give_up:
                    raise
                await asyncio.sleep(0.5)
    _outbox.put(job_id, send, wait=False)


async def stream_read(job_id: str, idle_timeout: float = 120.0):
    """The pieces of a job's fMP4 stream from its start, as they arrive; stops at its end, or when
    nothing came for `idle_timeout` seconds (a worker lost mid-job), whatever Redis does meanwhile.

    A Redis restart is survived: the reader reconnects and resumes after the last entry it read. What
    Redis lost cannot be resumed: a stream whose first entry changed (recreated after a restart
    without persistence) ends the read, logged, rather than splice fragments of two streams."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    loop = asyncio.get_running_loop()
    key, last, first = _stream_key(job_id), "0", None
    client = None
    deadline = loop.time() + idle_timeout
    try:
        while loop.time() < deadline:
            try:
                if client is None:
                    client = redis_clients.new_async(socket_timeout=STREAM_READ_SLICE_S + 5)
                    if first is not None and [entry_id for entry_id, _ in await client.xrange(key, count=1)] != [first]:
                        log.warning("the stream of job %s was lost by Redis after %s; ending its /stream", job_id, last)
                        return
                block = min(STREAM_READ_SLICE_S, max(deadline - loop.time(), 0.001))
                answer = await client.xread({key: last}, block=int(block * 1000), count=64)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.info("reading the stream of job %s: %s; reconnecting", job_id, exc)
                await client.aclose()
                client = None
                await asyncio.sleep(0.5)
                continue
            for entry_id, fields in answer[0][1] if answer else ():
                first, last = first or entry_id, entry_id
                if b"end" in fields:
                    return
                deadline = loop.time() + idle_timeout
                yield fields[b"data"]
        log.warning("the stream of job %s sent nothing for %.0f s; ending its /stream", job_id, idle_timeout)
    finally:
        if client is not None:
            await client.aclose()


def stream_collect(job_id: str) -> bytes:
    """Everything a job's stream holds now (init segment and fragments, in order): the video so far
    of a live job whose worker vanished."""
    entries = _sync_client().xrange(_stream_key(job_id))
    return b"".join(fields.get(b"data", b"") for _, fields in entries)




# ---------------------------------------------------------------- who watches a live job
# A live job ends when nobody has received its chunks for LIVE_IDLE_S (worker/live.py): every web
# process that relays one of its chunks to a client (or serves its /stream) renews a key that
# expires after that long (longer when the model takes longer than that per chunk: the worker says
# how long with each chunk), at most once a second per process.
_WATCH_RENEW_S = 1.0
_watch_renewed: dict = {}  # job id -> monotonic time this process last renewed its key


def _watch_key(job_id: str) -> str:
    return f"videoservice:watched:{job_id}"


async def note_watched(job_id: str, ttl_s: float) -> None:
    """Someone received a chunk of the live job: it counts as watched for `ttl_s` seconds."""
    import time

    now = time.monotonic()
    if now - _watch_renewed.get(job_id, -1e9) < _WATCH_RENEW_S:
        return
    _watch_renewed[job_id] = now
    if len(_watch_renewed) > 10000:  # jobs long gone
        _watch_renewed.clear()
    client = redis_clients.for_loop()
    try:
        await client.set(_watch_key(job_id), b"1", px=int(ttl_s * 1000))
    except Exception as exc:  # Redis away: the job may end as unwatched, it is not lost
        log.warning("could not note that live job %s is watched: %s", job_id, exc)


def _sync_client():
    return redis_clients.shared()


def start_watching(job_id: str) -> None:
    """A live job starts: it counts as watched for LIVE_IDLE_S (its first chunk is yet to come)."""
    from django.conf import settings

    _sync_client().set(_watch_key(job_id), b"1", px=int(settings.LIVE_IDLE_S * 1000))


def is_watched(job_id: str) -> bool:
    """Whether a subscriber received one of the live job's chunks within LIVE_IDLE_S (True when
    Redis cannot tell: a Redis restart must not end every live job)."""
    try:
        return bool(_sync_client().exists(_watch_key(job_id)))
    except Exception as exc:
        log.warning("could not tell whether live job %s is watched: %s", job_id, exc)
        return True


# ---------------------------------------------------------------- events -> subscribers
SEND_TIMEOUT_S = 30.0


def envelope(event) -> dict:
    """The channel-layer message a consumer relays to its client (an Event model or its dict): the
    event's JSON text, serialized once here for every subscriber (videoservice/fanout.py)."""
    payload = event if isinstance(event, dict) else event.payload()
    return {"type": "job.event", "id": uuid.uuid4().hex, "event_type": payload["type"],
            "job_id": payload.get("job_id"), "text": json.dumps(payload, separators=(",", ":"))}


async def _shared(message: dict) -> dict:
    """A large event goes into Redis once; the layer carries its key (fanout.text_of reads it)."""
    if len(message["text"]) <= fanout.SHARED_MIN_BYTES:
        return message
    key = await fanout.store(message["text"])
    return {k: v for k, v in message.items() if k != "text"} | {"shared": key}


class _Outbox:
    """One event loop thread per process; per job, a queue of sends (events, stream pieces) done one
    after another, in the order they were put."""

    def __init__(self):
        self.lock = threading.Lock()
        self.loop = None
        self.thread = None
        self.queues: dict = {}  # job id -> deque of [send (an async callable), is_progress, future or None]

    def _ensure_loop(self):
        if self.loop is None or not self.thread.is_alive():
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(target=self.loop.run_forever, name="channel-layer", daemon=True)
            self.thread.start()
        return self.loop

    def put(self, key: str, send, progress: bool = False, wait: bool = True):
        """Queue one send; a concurrent Future to wait on when `wait`. An unsent progress is replaced
        by a newer one."""
        done = concurrent.futures.Future() if wait else None
        with self.lock:
            loop = self._ensure_loop()
            queue = self.queues.get(key)
            start = queue is None
            if start:
                queue = self.queues[key] = deque()
            if progress and queue and queue[-1][1]:
                queue[-1][0] = send
            else:
                queue.append([send, progress, done])
        if start:
            asyncio.run_coroutine_threadsafe(self._drain(key), loop)
        return done

    async def _drain(self, key: str) -> None:
        while True:
            with self.lock:
                queue = self.queues[key]
                if not queue:
                    del self.queues[key]
                    return
                send, _, done = queue.popleft()
            try:
                await asyncio.wait_for(send(), SEND_TIMEOUT_S)
            except Exception as exc:  # a lost event must not fail the job; the DB row stays authoritative
                log.warning("could not send an event of job %s: %s", key, exc)
                if done is not None:
                    done.set_exception(exc)
                continue
            if done is not None:
                done.set_result(None)


_outbox = _Outbox()


def _group_send(group: str, message: dict):
    async def send():
        await get_channel_layer().group_send(group, await _shared(message))
    return send


def publish(group: str, event, wait: bool = True, watched: float = 0.0) -> bool:
    """Send one event after the job's earlier ones; with `wait`, until the layer took it (False if it
    could not be sent: logged). Without, it is only queued (a video chunk: the job's completion,
    sent after it, waits for both). `watched`: consumers that relay it note the job as watched for
    that many seconds."""
    message = envelope(event)
    if watched:
        message["watched"] = watched
    done = _outbox.put(str(message["job_id"] or group), _group_send(group, message), wait=wait)
    if done is None:
        return True
    try:
        done.result(SEND_TIMEOUT_S + 5)
        return True
    except Exception:
        return False


def publish_progress(group: str, event) -> None:
    """Send a progress event without waiting; a newer one replaces it while it waits its turn."""
    message = envelope(event)
    _outbox.put(str(message["job_id"]), _group_send(group, message), progress=True, wait=False)
