"""Fan-out of job events to many subscribers without copies per subscriber.

- Serialized once: an event travels on the channel layer as its JSON text (bus.envelope), so a
  consumer forwards the very same string object instead of building its own. An event larger
  than SHARED_MIN_BYTES (a completion with its base64 MP4, a video chunk) is stored once in Redis
  and the layer carries only its key: each Daphne process fetches it once (`text_of`), whatever
  its number of subscribers, and forgets it a little later.
- Bounded memory: a send can only hand bytes to the connection's transport; a client that does
  not read keeps them there. `install_backpressure` (called by asgi.py under Daphne) lets a
  consumer wait (`drained`) until its connection's buffer is below LOW_WATER_BYTES before it
  relays the next event, and drops (closes, code 1013) a client that has not read for
  SLOW_CLIENT_S; so a connection holds at most one unread event beyond the low-water mark.
  Consumers hand large messages to the transport inside `big_sends()` (at most MAX_BIG_SENDS at
  once per process: Daphne builds a copy per subscriber on its path). The wait for a slow client
  is outside those slots: a client that does not read holds up itself only (32 of them held all
  16 slots for 5 s each, and a healthy viewer's completion came 5-9 s late).
- Binary frames (`?binary=1`): `binary_frame` gives the bytes once per process per event.
- Framed once: Daphne encodes a text again for every subscriber and autobahn joins a frame
  header to it: per subscriber, fresh multi-MB buffers whose page faults made these copies most
  of Daphne's time in a fan-out (py-spy). The websocket frame of a shared event (header + bytes) is
  built once per process and handed to every connection's transport as that same object
  (`_write_frame`), when the connection is a plain open one (no compression, no fragmentation);
  anything else takes Daphne's path.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct

from videoservice import redis_clients

log = logging.getLogger(__name__)

SHARED_MIN_BYTES = 64 * 1024
SHARED_TTL_S = 120
LOCAL_TTL_S = 30.0  # how long a process keeps an event it fetched (its subscribers are sent it by then)
BIG_MESSAGE_BYTES = 512 * 1024
MAX_BIG_SENDS = 16
LOW_WATER_BYTES = 256 * 1024
SLOW_CLIENT_S = 5.0  # a client that has not read a message this long after it was sent is dropped
BINARY_FIELDS = {"video_chunk": ("init", "data"), "generation_complete": ("video",)}
DRAIN = "videoservice.drain"  # a message to Daphne's send that only waits for the connection to drain

_local: dict = {}  # key -> Future of the text (per process, per event loop)
_frames: dict = {}  # id(payload) -> (payload, its whole websocket frame): shared events, framed once per process
_big_sends: dict = {}  # event loop -> Semaphore
_backpressure = False  # install_backpressure() patched Daphne in this process


def big_sends() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    if loop not in _big_sends:
        _big_sends[loop] = asyncio.Semaphore(MAX_BIG_SENDS)
    return _big_sends[loop]


def _client():
    return redis_clients.for_loop()


async def store(text: str) -> str:
    """Keep a large event's text in Redis once; the key the channel layer carries instead."""
    import uuid

    key = f"videoservice:event:{uuid.uuid4().hex}"
    await _client().set(key, text.encode("utf-8", "surrogatepass"), ex=SHARED_TTL_S)
    return key


def _remember(key: str, future: asyncio.Future) -> None:
    _local[key] = future
    asyncio.get_running_loop().call_later(LOCAL_TTL_S, _local.pop, key, None)


async def text_of(message: dict):
    """The JSON text of a job event from the channel layer (None when a stored one expired)."""
    if "text" in message:
        return message["text"]
    if "event" in message:  # an event built by hand (tests, benchmarks): serialized here
        return json.dumps(message["event"], separators=(",", ":"))
    key = message["shared"]
    future = _local.get(key)
    if future is None:
        future = asyncio.get_running_loop().create_future()
        _remember(key, future)
        try:
            raw = await _client().get(key)
            text = raw.decode("utf-8", "surrogatepass") if raw is not None else None
            if text is not None and len(raw) >= BIG_MESSAGE_BYTES:
                _keep_frame(text, _frame_header(1, len(raw)) + raw)
            future.set_result(text)
        except Exception as exc:
            future.set_exception(exc)
            _local.pop(key, None)
    return await future


async def binary_frame(message: dict, text: str):
    """A video_chunk / generation_complete as one binary websocket frame, built once per process:
    a 4-byte big-endian length, that many bytes of the event's JSON without its base64 fields
    (`binary` lists them, in order, with their sizes), then those fields' bytes. Other events: None."""
    kind = message.get("event_type")
    if kind not in BINARY_FIELDS:
        return None
    key = ("binary", message.get("shared") or message.get("id"))
    future = _local.get(key)
    if future is None:
        future = asyncio.get_running_loop().create_future()
        _remember(key, future)
        event = json.loads(text)
        parts = [(name, base64.b64decode(event.pop(name))) for name in BINARY_FIELDS[kind] if event.get(name)]
        event["binary"] = [{"field": name, "bytes": len(data)} for name, data in parts]
        header = json.dumps(event, separators=(",", ":")).encode()
        frame = struct.pack(">I", len(header)) + header + b"".join(data for _, data in parts)
        if len(frame) >= BIG_MESSAGE_BYTES:
            _keep_frame(frame, _frame_header(2, len(frame)) + frame)
        future.set_result(frame)
    return await future


def _keep_frame(payload, frame: bytes) -> None:
    _frames[id(payload)] = (payload, frame)
    asyncio.get_running_loop().call_later(LOCAL_TTL_S, _frames.pop, id(payload), None)


# ---------------------------------------------------------------- Daphne: sends that wait for slow clients
def _pending(protocol) -> int:
    """Bytes a Twisted TCP transport still holds for this connection."""
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return 0
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:  # another transport (TLS): no backpressure, as before
        return 0


def _frame_header(opcode: int, length: int) -> bytes:
    """A final, unmasked websocket frame header (RFC 6455 5.2: servers do not mask)."""
    if length <= 125:
        return struct.pack("!BB", 0x80 | opcode, length)
    if length <= 0xFFFF:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


def _write_frame(protocol, message: dict) -> bool:
    """Hand a shared event's prebuilt frame to the connection's transport (False: not one, or not a
    plain open connection; Daphne sends it). A transport with nothing pending sends from the very
    object: no copy per subscriber."""
    payload = message.get("bytes") if message.get("bytes") is not None else message.get("text")
    kept = _frames.get(id(payload))
    if kept is None or kept[0] is not payload or getattr(protocol, "transport", None) is None:
        return False
    frame = kept[1]
    if (getattr(protocol, "state", None) != getattr(protocol, "STATE_OPEN", object())
            or getattr(protocol, "_perMessageCompress", True) is not None
            or getattr(protocol, "autoFragmentSize", 1) or getattr(protocol, "logFrames", True)
            or 0 < getattr(protocol, "maxMessagePayloadSize", 0) < len(frame)):
        return False
    protocol.transport.write(frame)
    return True


async def drained(consumer) -> None:
    """Wait until the consumer's connection has read what it was sent (below LOW_WATER_BYTES; a
    client that does not read for SLOW_CLIENT_S is dropped). Nothing to wait for off Daphne."""
    if _backpressure:
        await consumer.base_send({"type": DRAIN})


async def _wait_drained(protocol) -> None:
    waited = 0.0
    while _pending(protocol) > LOW_WATER_BYTES:
        if waited >= SLOW_CLIENT_S:
            log.warning("dropping a websocket client that does not read (%d bytes pending)", _pending(protocol))
            # 1013 "try again later" (IANA-registered); autobahn's sendClose takes only 1000 and 3000-4999 and
            # raised here, so Daphne tore the connection down without a close frame
            protocol.sendCloseFrame(code=1013, isReply=False)
            return
        await asyncio.sleep(0.005)
        waited += 0.005


def missing_internals() -> list:
    """What this module reaches into and the installed Daphne / Twisted / autobahn lack (constraints.txt
    pins the versions CI tested): the reply handler it wraps, the transport's write buffer it reads,
    the protocol state it checks before writing a frame itself."""
    import inspect

    from autobahn.websocket.protocol import WebSocketProtocol
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol as DaphneProtocol
    from twisted.internet.abstract import FileDescriptor

    missing = []
    handle = getattr(Server, "handle_reply", None)
    if handle is None or list(inspect.signature(handle).parameters) != ["self", "protocol", "message"] \
            or not inspect.iscoroutinefunction(getattr(handle, "__wrapped__", handle)):
        missing.append("daphne.server.Server.handle_reply(self, protocol, message), a coroutine")
    if "self.connections" not in inspect.getsource(Server):
        missing.append("daphne.server.Server.connections")
    buffer_code = inspect.getsource(FileDescriptor)
    missing += [f"twisted FileDescriptor.{name}" for name in ("dataBuffer", "offset", "_tempDataLen")
                if f"self.{name}" not in buffer_code]
    protocol_code = inspect.getsource(WebSocketProtocol)
    missing += [f"autobahn WebSocketProtocol.{name}" for name in ("state", "_perMessageCompress", "autoFragmentSize",
                                                                 "logFrames", "maxMessagePayloadSize")
                if f"self.{name}" not in protocol_code]
    missing += [f"daphne WebSocketProtocol.{name}" for name in ("STATE_OPEN", "sendCloseFrame")
                if not hasattr(DaphneProtocol, name)]
    return missing


def install_backpressure() -> bool:
    """Teach Daphne's send the DRAIN message and the prebuilt frames (see the module's docstring).
    Refuses (RuntimeError, so Daphne does not start) when the installed versions lack an internal
    it needs: backpressure must not switch itself off silently."""
    global _backpressure
    try:
        from daphne.server import Server
    except ImportError:
        return False
    if getattr(Server.handle_reply, "backpressure", False):
        return True
    missing = missing_internals()
    if missing:
        raise RuntimeError("videoservice/fanout.py cannot patch this Daphne / Twisted / autobahn (install the "
                           "versions in constraints.txt): missing " + "; ".join(missing))
    original = Server.handle_reply

    async def handle_reply(self, protocol, message):
        if message.get("type") == DRAIN:
            if protocol in self.connections and not self.connections[protocol].get("disconnected"):
                await _wait_drained(protocol)
            return
        sent = (message.get("type") == "websocket.send" and protocol in self.connections
                and not self.connections[protocol].get("disconnected") and _write_frame(protocol, message))
        if not sent:
            await original(self, protocol, message)

    handle_reply.backpressure = _backpressure = True
    Server.handle_reply = handle_reply
    return True
