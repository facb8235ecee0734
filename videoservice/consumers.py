"""The websocket lobby (`/ws/lobby/`): submit, describe, cancel, ping; relays job events to subscribers.

Every connection joins the group "lobby" (public jobs) and one group per owner (its private
jobs). The owner is the signed-in user, else the Django session (cookie), else the connection.
Messages are read through the typed contract (videoservice/contract/); jobs change state
through their model (videoservice/models.py). Protocol: docs/protocol.md.
"""
from __future__ import annotations

import json
import logging
import uuid
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from videoservice import bus, fanout, limits, metrics
from videoservice.auth import auth_required, owner_key
from videoservice.contract import (AUTH_REQUIRED, INTERNAL_ERROR, INVALID_JSON, MISSING_FIELD, RATE_LIMITED,
                                   TOO_LARGE, UNAVAILABLE, UNKNOWN_TYPE, CancellingEvent, CancelledEvent, CancelRequest,
                                   DescribeRequest, ErrorEvent, GenerateRequest, PingRequest, PongEvent,
                                   RequestError, SteeringEvent, SteerRequest, StoppingEvent, StopRequest, parse,
                                   parse_json, request_id_of)
from videoservice.models import LOBBY_GROUP, TRANSIENT_DB_ERRORS, Job, Submitter, owner_group

log = logging.getLogger(__name__)

CLOSE_AUTH_REQUIRED = 4401  # websocket close code after an `auth_required` error
MESSAGE_TYPES = ("generate", "describe", "cancel", "steer", "stop", "ping")


def owner_of(scope) -> str:
    """The connection's owner key (videoservice/auth.py), or one of its own without a session."""
    session = scope.get("session")
    key = getattr(session, "session_key", None) if session is not None else None
    return owner_key(scope.get("user"), key) or f"c:{uuid.uuid4().hex}"


def over_byte_cap(text: str, cap: int) -> bool:
    """Whether the message was more than `cap` bytes on the wire (UTF-8), not characters."""
    if len(text) > cap or len(text) * 4 <= cap:  # a character is 1 to 4 bytes: no need to encode
        return len(text) > cap
    return len(text.encode("utf-8", "surrogatepass")) > cap


def read_client_message(bucket, text_data, binary_refusal: str):
    """A client's websocket frame parsed as JSON, after the checks every endpoint makes: the
    connection's message rate, text frames only (`binary_refusal` says what to send instead),
    the byte cap. Raises RequestError."""
    if not bucket.take():
        raise RequestError(RATE_LIMITED, f"more than {settings.WS_MESSAGES_PER_MINUTE} messages a minute "
                                         "on this connection; slow down")
    if text_data is None:
        raise RequestError(INVALID_JSON, binary_refusal)
    if over_byte_cap(text_data, settings.WS_MAX_CLIENT_MESSAGE_BYTES):
        raise RequestError(TOO_LARGE, f"message larger than {settings.WS_MAX_CLIENT_MESSAGE_BYTES} bytes")
    return parse_json(text_data)


def submit(kind: str, data: dict, submitter: Submitter) -> dict:
    """Validate a generate / describe message, submit its job and answer `queued` (runs off the
    event loop: it decodes images and videos and writes the database)."""
    if kind == "generate":
        req = parse(GenerateRequest, data)
        job = Job.objects.submit_generate(req, submitter)
    else:
        req = parse(DescribeRequest, data)
        job = Job.objects.submit_describe(req, submitter)
    return job.queued_event(req.request_id).payload()


def cancel(job_id: str, submitter: Submitter) -> tuple:
    job = Job.objects.get_visible(job_id, submitter.owner, submitter.staff)
    return job, job.request_cancel(submitter.owner, submitter.staff)


def steer(req: SteerRequest, submitter: Submitter) -> dict:
    """A live job's new prompt: acknowledged to the steering connection (`steered` follows to the
    audience with the first frame made under it)."""
    job = Job.objects.get_visible(req.job_id, submitter.owner, submitter.staff)
    job.request_steer(req.prompt, submitter.owner, submitter.staff)
    return SteeringEvent(job_id=req.job_id, prompt=req.prompt, request_id=req.request_id).payload()


def stop(req: StopRequest, submitter: Submitter) -> dict:
    """End a live job gracefully (`generation_complete` follows); a queued one is cancelled."""
    job = Job.objects.get_visible(req.job_id, submitter.owner, submitter.staff)
    if job.request_stop(submitter.owner, submitter.staff) == "cancelled":
        return CancelledEvent(job_id=req.job_id).payload()
    return StoppingEvent(job_id=req.job_id, request_id=req.request_id).payload()


class LobbyConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        authenticated = bool(user is not None and getattr(user, "is_authenticated", False))
        refusal = self.scope.get("auth_error")
        if refusal is None and not authenticated and auth_required(self.scope.get("server")):
            refusal = "log in, or connect with ?token=<API token> or an Authorization: Bearer header"
        if refusal:  # accept, so that the client can read why, then close
            await self.accept()
            await self.send_error(RequestError(AUTH_REQUIRED, refusal))
            await self.close(code=CLOSE_AUTH_REQUIRED)
            return
        self.bucket = limits.MessageBucket()
        self.binary = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("binary") == ["1"]
        client = self.scope.get("client") or (None, None)
        self.submitter = Submitter.of(owner_of(self.scope), user, client[0], self.scope.get("api_token"))
        self.groups_joined = [LOBBY_GROUP, owner_group(self.submitter.owner)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await metrics.connection_opened(+1)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "groups_joined"):
            await metrics.connection_opened(-1)
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def send_json(self, content: dict) -> None:
        await self.send(text_data=json.dumps(content, separators=(",", ":")))

    async def send_error(self, err: RequestError, request_id=None) -> None:
        await self.send_json(ErrorEvent(request_id=request_id, **err.as_dict()).payload())

    async def receive(self, text_data=None, bytes_data=None):
        data = None
        bucket = getattr(self, "bucket", None)
        if bucket is None:  # refused at connect
            return
        try:
            data = read_client_message(bucket, text_data, "binary frames are not accepted; send JSON text")
            await self.handle(data)
        except RequestError as err:
            await self.send_error(err, request_id_of(data))
        except TRANSIENT_DB_ERRORS as exc:  # locked, or a broken connection: worth a retry
            log.warning("lobby message hit a busy database: %s", exc)
            await self.send_error(RequestError(UNAVAILABLE, "the database is busy; try again shortly",
                                               retry_after=5), request_id_of(data))
        except Exception:
            log.exception("lobby message failed")
            await self.send_error(RequestError(INTERNAL_ERROR, "the server failed to handle this message"),
                                  request_id_of(data))

    async def handle(self, data) -> None:
        if not isinstance(data, dict):
            raise RequestError(INVALID_JSON, "each message must be a JSON object with a \"type\"")
        kind = data.get("type")
        if kind is None:
            raise RequestError(MISSING_FIELD, "message has no \"type\"", "type")
        if kind not in MESSAGE_TYPES:
            shown = kind[:50] if isinstance(kind, str) else kind
            raise RequestError(UNKNOWN_TYPE, f"unknown message type {shown!r} ({', '.join(MESSAGE_TYPES)})", "type")
        if kind == "ping":
            ping = parse(PingRequest, data)
            await self.send_json(PongEvent(request_id=ping.request_id).payload())
        elif kind == "steer":
            await self.send_json(await database_sync_to_async(steer)(parse(SteerRequest, data), self.submitter))
        elif kind == "stop":
            await self.send_json(await database_sync_to_async(stop)(parse(StopRequest, data), self.submitter))
        elif kind == "cancel":
            req = parse(CancelRequest, data)
            job, state = await database_sync_to_async(cancel)(req.job_id, self.submitter)
            if state == "cancelling":  # the worker confirms with a `cancelled` event between two steps
                await self.send_json(CancellingEvent(job_id=req.job_id, request_id=req.request_id).payload())
            elif job.audience() != LOBBY_GROUP and job.owner != self.submitter.owner:
                await self.send_json(CancelledEvent(job_id=req.job_id).payload())  # (staff: not in the audience)
        else:
            # answered only once the job row exists and its task is on the queue
            await self.send_json(await database_sync_to_async(submit)(kind, data, self.submitter))

    async def job_event(self, message):
        """A job event from the channel layer (worker or another consumer): pass it on, as the text
        every subscriber of this process shares, or as a binary frame to clients that asked."""
        text = await fanout.text_of(message)
        if text is None:  # a large event that expired before this consumer got to it
            return
        if message.get("watched"):  # a live job's chunk reaches a client: the job has a viewer
            await bus.note_watched(message["job_id"], message["watched"])
        frame = await fanout.binary_frame(message, text) if self.binary else None
        await fanout.drained(self)  # (outside the shared slots below: a client that does not read waits alone)
        if frame is None and len(text) < fanout.BIG_MESSAGE_BYTES:
            await self.send(text_data=text)
            return
        async with fanout.big_sends():  # a few large messages in flight per process, not one per subscriber
            await self.send(bytes_data=frame) if frame is not None else await self.send(text_data=text)
