"""The reference design's own protocol: Phoenix Channels (V2 JSON serializer) on /socket/websocket.

The serving tier this project re-does was a Phoenix channel; its browser client is the npm
`phoenix` library. This consumer speaks that wire protocol over the same lobby as /ws/lobby/: the
same typed requests (videoservice/contract/), limits, owners, auth and Origin rules, and the same
events with the same payloads.

Frames are JSON arrays `[join_ref, ref, topic, event, payload]`:
- `heartbeat` on topic `phoenix` -> `phx_reply` ok;
- `phx_join` on `video:lobby` (public jobs and the owner's private ones) or `job:<id>` (one job's
  events, for its owner or a public job) -> `phx_reply` ok, or error with a `reason`;
  `phx_leave` -> `phx_reply` ok, then `phx_close`;
- pushes on a joined topic: `generate` (`{prompt, num_frames}` as in the reference, and every other
  generate field, `live: true` included), `describe`, `cancel` (`{job_id}`), a live job's `steer`
  (`{job_id, prompt}`) and `stop` (`{job_id}`) -> `phx_reply` `{"status": "ok", "response":
  {job_id, position, ...}}` (steer: the `steering` event, stop: `stopping`) or `{"status": "error",
  "response": {code, message, field}}`;
- job events are pushed to every joined topic they belong to as `[null, null, topic, type, event]`.
Credentials: a token in the socket params (the client sends them as query parameters: `?token=`),
or the client's `authToken` (the `base64url.bearer.phx.<token>` websocket subprotocol, answered
with `phoenix`), else the session cookie. A wrong token is refused at the handshake (403).
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from videoservice import bus, fanout, limits, metrics
from videoservice.auth import api_token, auth_required
from videoservice.consumers import cancel, owner_of, read_client_message, steer, stop, submit
from videoservice.contract import (INTERNAL_ERROR, INVALID_JSON, UNKNOWN_TYPE, CancelRequest, RequestError,
                                   SteerRequest, StopRequest, parse)
from videoservice.models import LOBBY_GROUP, Job, Submitter, owner_group

log = logging.getLogger(__name__)
LOBBY_TOPIC = "video:lobby"
JOB_TOPIC = "job:"
TOKEN_PROTOCOL = "base64url.bearer.phx."
PUSHES = ("generate", "describe", "cancel", "steer", "stop")


def subprotocol_token(scope) -> str | None:
    """The token the phoenix client's `authToken` option offers as a websocket subprotocol."""
    for protocol in scope.get("subprotocols", []):
        if protocol.startswith(TOKEN_PROTOCOL):
            encoded = protocol[len(TOKEN_PROTOCOL):]
            try:
                return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError):
                return ""
    return None


_STRING_OR_NULL = r'\s*("(?:[^"\\]|\\.){0,200}"|null)\s*'
_HEAD = re.compile(rf"^\[{_STRING_OR_NULL},{_STRING_OR_NULL},{_STRING_OR_NULL},")


def frame_head(text) -> list | None:
    """[join_ref, ref, topic] of a frame that was not parsed (too large, over the rate), read off its
    first bytes, so that the refusal still answers the push that was sent."""
    match = _HEAD.match(text[:1000]) if isinstance(text, str) else None
    if match is None:
        return None
    try:
        return [json.loads(part) for part in match.groups()]
    except ValueError:
        return None


class PhoenixConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        subprotocol = "phoenix" if "phoenix" in self.scope.get("subprotocols", []) else None
        token = subprotocol_token(self.scope)
        if token is not None:
            row = await database_sync_to_async(api_token)(token)
            if row is None:
                await self.close()  # before accepting: the handshake is refused (403)
                return
            self.scope["user"], self.scope["api_token"] = row.user, row
        user = self.scope.get("user")
        authenticated = bool(user is not None and getattr(user, "is_authenticated", False))
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        if self.scope.get("auth_error") or (not authenticated and auth_required(self.scope.get("server"))):
            await self.close()  # Phoenix refuses the socket itself (connect/3 returns :error)
            return
        if query.get("vsn", ["2.0.0"])[0] != "2.0.0":
            await self.close()
            return
        self.bucket = limits.MessageBucket()
        client = self.scope.get("client") or (None, None)
        self.submitter = Submitter.of(owner_of(self.scope), user, client[0], self.scope.get("api_token"))
        self.topics: dict = {}  # topic -> join_ref
        self.groups_joined = [LOBBY_GROUP, owner_group(self.submitter.owner)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await metrics.connection_opened(+1)
        await self.accept(subprotocol=subprotocol)

    async def disconnect(self, code):
        if hasattr(self, "groups_joined"):
            await metrics.connection_opened(-1)
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def frame(self, join_ref, ref, topic, event, payload) -> None:
        await self.send(text_data=json.dumps([join_ref, ref, topic, event, payload], separators=(",", ":")))

    async def reply(self, join_ref, ref, topic, status: str, response: dict) -> None:
        await self.frame(join_ref, ref, topic, "phx_reply", {"status": status, "response": response})

    async def receive(self, text_data=None, bytes_data=None):
        if not hasattr(self, "bucket"):  # refused at connect
            return
        message = None
        try:
            message = read_client_message(self.bucket, text_data,
                                          "binary frames are not accepted; send the V2 JSON serializer's text")
            if not (isinstance(message, list) and len(message) == 5 and isinstance(message[2], str)
                    and isinstance(message[3], str)):
                raise RequestError(INVALID_JSON, "a message is [join_ref, ref, topic, event, payload]")
            await self.handle(*message)
        except RequestError as err:
            head = message[:3] if isinstance(message, list) and len(message) == 5 else frame_head(text_data)
            if head:
                await self.reply(*head, "error", err.as_dict())
            else:  # not even a frame to answer: say it on the socket's own topic
                await self.frame(None, None, "phoenix", "phx_error", err.as_dict())
        except Exception:
            log.exception("phoenix message failed")
            if isinstance(message, list) and len(message) == 5:
                await self.reply(message[0], message[1], message[2], "error",
                                 {"code": INTERNAL_ERROR, "message": "the server failed to handle this message"})

    async def handle(self, join_ref, ref, topic, event, payload) -> None:
        if topic == "phoenix" and event == "heartbeat":
            await self.reply(None, ref, "phoenix", "ok", {})
        elif event == "phx_join":
            await self.join(join_ref, ref, topic)
        elif event == "phx_leave":
            self.topics.pop(topic, None)
            await self.reply(join_ref, ref, topic, "ok", {})
            await self.frame(join_ref, join_ref, topic, "phx_close", {})
        elif topic not in self.topics:
            await self.reply(join_ref, ref, topic, "error", {"reason": "unmatched topic"})
        elif event not in PUSHES:
            raise RequestError(UNKNOWN_TYPE, f"unknown event {event[:50]!r} ({', '.join(PUSHES)})", "event")
        elif not isinstance(payload, dict):
            raise RequestError(INVALID_JSON, "the payload must be a JSON object")
        elif event == "cancel":
            req = parse(CancelRequest, {**payload, "type": "cancel"})
            job, state = await database_sync_to_async(cancel)(req.job_id, self.submitter)
            await self.reply(join_ref, ref, topic, "ok", {"job_id": str(job.pk), "state": state})
        elif event == "steer":
            req = parse(SteerRequest, {**payload, "type": "steer"})
            await self.reply(join_ref, ref, topic, "ok", await database_sync_to_async(steer)(req, self.submitter))
        elif event == "stop":
            req = parse(StopRequest, {**payload, "type": "stop"})
            await self.reply(join_ref, ref, topic, "ok", await database_sync_to_async(stop)(req, self.submitter))
        else:
            queued = await database_sync_to_async(submit)(event, {**payload, "type": event}, self.submitter)
            await self.reply(join_ref, ref, topic, "ok", queued)

    async def join(self, join_ref, ref, topic) -> None:
        if topic == LOBBY_TOPIC:
            self.topics[topic] = join_ref
            await self.reply(join_ref, ref, topic, "ok", {})
            return
        if not topic.startswith(JOB_TOPIC):
            await self.reply(join_ref, ref, topic, "error", {"reason": "unmatched topic"})
            return
        job_id = topic[len(JOB_TOPIC):]
        try:
            parse(CancelRequest, {"job_id": job_id})  # (a job id's rules)
            await database_sync_to_async(Job.objects.get_visible)(job_id, self.submitter.owner, self.submitter.staff)
        except RequestError:
            await self.reply(join_ref, ref, topic, "error", {"reason": "not_found"})
            return
        self.topics[topic] = join_ref
        await self.reply(join_ref, ref, topic, "ok", {})

    async def job_event(self, message):
        """A job event from the channel layer: pushed to each joined topic it belongs to."""
        topics = [t for t in self.topics if t == LOBBY_TOPIC or t == JOB_TOPIC + str(message.get("job_id"))]
        if not topics:
            return
        text = await fanout.text_of(message)
        if text is None:
            return
        if message.get("watched"):  # a live job's chunk reaches a client: the job has a viewer
            await bus.note_watched(message["job_id"], message["watched"])
        kind = json.dumps(message.get("event_type") or json.loads(text)["type"])
        for topic in topics:  # the payload's JSON is pasted in as it is: serialized once
            frame = f'[null,null,{json.dumps(topic)},{kind},{text}]'
            if len(frame) < fanout.BIG_MESSAGE_BYTES:
                await self.send(text_data=frame)
            else:
                async with fanout.big_sends():
                    await self.send(text_data=frame)

