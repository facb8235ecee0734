"""videoservice/fanout.py's patch of Daphne is active in a real Daphne: a client that does not read is
dropped with 1013 once its backlog outlasts SLOW_CLIENT_S; and a patch that cannot apply (another
Daphne / Twisted / autobahn than constraints.txt's) stops start-up instead of switching backpressure
off in silence."""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time

from tests.support.client import Client, run
from tests.support.stack import ROOT, wait_for
from videoservice import fanout

SMALL = {"num_frames": 8, "width": 64, "height": 64, "steps": 2}


def masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    header = struct.pack("!BBQ", 0x81, 0x80 | 127, len(payload)) + mask
    return header + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def frames(data: bytes) -> list:
    """(opcode, payload) of each whole server frame in `data` (unmasked, RFC 6455 5.2)."""
    out, at = [], 0
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            length, at = struct.unpack("!H", data[at:at + 2])[0], at + 2
        elif length == 127:
            length, at = struct.unpack("!Q", data[at:at + 8])[0], at + 8
        if at + length > len(data):
            break
        out.append((opcode, data[at:at + length]))
        at += length
    return out


def test_the_patch_is_installed_and_fits_the_installed_versions():
    assert fanout.missing_internals() == []
    probe = ("import daphne.server as d\nd.Server.handle_reply = lambda self, protocol: None\n"
             "import videoservice.asgi\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DJANGO_SETTINGS_MODULE": "videoservice.settings"})
    assert out.returncode != 0 and "cannot patch this Daphne" in out.stderr and "handle_reply" in out.stderr, \
        out.stderr[-2000:]


def test_a_subscriber_that_does_not_read_is_dropped_with_1013(live_service):
    host, port = "127.0.0.1", int(live_service.base.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connect: a small window)
    sock.connect((host, port))
    sock.sendall((f"GET /ws/lobby/ HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                  f"Origin: {live_service.origin}\r\n\r\n").encode())
    handshake = b""
    while b"\r\n\r\n" not in handshake:
        handshake += sock.recv(1)
    assert b" 101 " in handshake.split(b"\r\n")[0], handshake
    # 1 MiB answers it does not read (an unknown field is named in the error): megabytes wait in
    # Daphne's transport, past what the kernel buffers hold
    for i in range(8):
        sock.sendall(masked_text_frame(json.dumps({"type": "ping", f"{i}" + "k" * (1024 * 1024): 1})))
    time.sleep(2)

    async def public_job():  # its events go to every lobby connection, the silent one too
        async with Client(live_service) as c:
            queued = await c.submit(prompt="a red circle moving left", **SMALL)
            return await c.terminal(queued["job_id"], 120)
    t0 = time.monotonic()
    log_before = len(live_service.web().tail(10 ** 9))
    assert run(public_job())["type"] == "generation_complete"
    dropped = "dropping a websocket client that does not read"
    wait_for(lambda: dropped in live_service.web().tail(10 ** 9)[log_before:], 60, "the drop", [live_service.web()])
    assert time.monotonic() - t0 >= fanout.SLOW_CLIENT_S - 1  # for not reading, not at once
    # Daphne then sends the close frame (1013, after the megabytes already queued) and tears the
    # connection down; read at once, and see the close frame when it arrives before the reset
    sock.settimeout(30)
    received, reset = b"", False
    try:
        while chunk := sock.recv(1 << 20):
            received += chunk
    except ConnectionResetError:
        reset = True
    sock.close()
    got = frames(received)
    closes = [payload for opcode, payload in got if opcode == 0x8]
    assert reset or closes, "the connection stayed open"
    if closes:
        assert struct.unpack("!H", closes[0][:2])[0] == 1013
    errors = [json.loads(payload) for opcode, payload in got if opcode == 0x1]
    assert all(e.get("code") == "unknown_field" for e in errors if e["type"] == "error")
    # the close frame is sent (autobahn's sendClose refused 1013 and raised inside the application)
    assert "invalid close code" not in live_service.web().tail(10 ** 9)[log_before:]
