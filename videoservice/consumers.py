"""The websocket lobby (`/ws/lobby/`): submit, cancel, ping; relays job events to subscribers.

Every connection joins the group "lobby" (public jobs) and one group per owner (its private
jobs). The owner is the Django session (cookie) when the client has one, else the connection.
Protocol: docs/protocol.md.
"""
from __future__ import annotations

import json
import logging
import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from videoservice import jobs, limits
from videoservice.auth import auth_required
from videoservice.describe import create_describe_job, queued_event, validate_describe
from videoservice.models import LOBBY_GROUP, owner_group
from videoservice.validation import (AUTH_REQUIRED, CANCEL_FIELDS, INVALID_JSON, MISSING_FIELD, PING_FIELDS,
                                     RATE_LIMITED, TOO_LARGE, UNKNOWN_TYPE, RequestError, check_fields, parse_json,
                                     request_id_of, validate_generate, validate_job_id)

log = logging.getLogger(__name__)


CLOSE_AUTH_REQUIRED = 4401  # websocket close code after an `auth_required` error


def owner_of(scope) -> str:
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        return f"u:{user.pk}"  # every session and token of this user
    session = scope.get("session")
    key = getattr(session, "session_key", None) if session is not None else None
    return f"s:{key}" if key else f"c:{uuid.uuid4().hex}"


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
        self.owner = owner_of(self.scope)
        self.groups_joined = [LOBBY_GROUP, owner_group(self.owner)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def send_json(self, content: dict) -> None:
        await self.send(text_data=json.dumps(content, separators=(",", ":")))

    async def send_error(self, err: RequestError, request_id=None) -> None:
        await self.send_json({"type": "error", "request_id": request_id, **err.as_dict()})

    async def receive(self, text_data=None, bytes_data=None):
        data = None
        bucket = getattr(self, "bucket", None)
        if bucket is None:  # refused at connect
            return
        try:
            if not bucket.take():
                raise RequestError(RATE_LIMITED, f"more than {settings.WS_MESSAGES_PER_MINUTE} messages a minute "
                                                 "on this connection; slow down")
            if text_data is None:
                raise RequestError(INVALID_JSON, "binary frames are not accepted; send JSON text")
            if len(text_data) > settings.WS_MAX_CLIENT_MESSAGE_BYTES:
                raise RequestError(TOO_LARGE, f"message larger than {settings.WS_MAX_CLIENT_MESSAGE_BYTES} bytes")
            data = parse_json(text_data)
            if not isinstance(data, dict):
                raise RequestError(INVALID_JSON, "each message must be a JSON object with a \"type\"")
            kind = data.get("type")
            if kind is None:
                raise RequestError(MISSING_FIELD, "message has no \"type\"", "type")
            if not isinstance(kind, str):
                raise RequestError(UNKNOWN_TYPE, "\"type\" must be a string (generate, describe, cancel, ping)",
                                   "type")
            handler = {"generate": self.on_generate, "describe": self.on_describe, "cancel": self.on_cancel,
                       "ping": self.on_ping}.get(kind)
            if handler is None:
                raise RequestError(UNKNOWN_TYPE, f"unknown message type {str(kind)[:50]!r} "
                                                 "(generate, describe, cancel, ping)", "type")
            await handler(data)
        except RequestError as err:
            await self.send_error(err, request_id_of(data))
        except Exception:
            log.exception("lobby message failed")
            await self.send_error(RequestError("internal_error", "the server failed to handle this message"),
                                  request_id_of(data))

    async def on_ping(self, data):
        check_fields(data, PING_FIELDS)
        await self.send_json({"type": "pong", "request_id": request_id_of(data)})

    async def on_generate(self, data):
        req = await database_sync_to_async(validate_generate)(data)
        await database_sync_to_async(limits.check_submission)(self.owner)
        user = self.scope.get("user")
        job, position = await database_sync_to_async(jobs.create_job)(req, self.owner, user)
        # only now: the job row exists and its task is on the queue
        await self.send_json({"type": "queued", "job_id": str(job.id), "request_id": req.request_id,
                              "position": position, "model": job.model, "prompt": job.prompt,
                              "params": job.params, "private": job.private})

    async def on_describe(self, data):
        user = self.scope.get("user")
        req = await database_sync_to_async(validate_describe)(data, self.owner, bool(getattr(user, "is_staff", False)))
        await database_sync_to_async(limits.check_submission)(self.owner)
        job, position = await database_sync_to_async(create_describe_job)(req, self.owner, user)
        await self.send_json(queued_event(job, position, req.request_id))

    async def on_cancel(self, data):
        check_fields(data, CANCEL_FIELDS)
        if data.get("job_id") is None:
            raise RequestError(MISSING_FIELD, "job_id is required", "job_id")
        job_id = validate_job_id(data["job_id"])
        user = self.scope.get("user")
        staff = bool(user is not None and getattr(user, "is_staff", False))
        job, state = await database_sync_to_async(jobs.cancel_job)(job_id, self.owner, staff)
        if state == "cancelling":  # the worker confirms with a `cancelled` event between two steps
            await self.send_json({"type": "cancelling", "job_id": job_id, "request_id": request_id_of(data)})
        elif job.audience() != LOBBY_GROUP and job.owner != self.owner:
            await self.send_json({"type": "cancelled", "job_id": job_id})

    async def job_event(self, message):
        """A job event from the channel layer (worker or another consumer): pass it on."""
        await self.send_json(message["event"])
