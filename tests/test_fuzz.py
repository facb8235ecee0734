"""Bad input, on real parts (redis-server, a Celery worker, Daphne; fixtures in conftest.py).

Every field of `generate`, `cancel` and `ping` and of the HTTP API gets wrong types,
negative / huge / non-finite numbers, unknown names, 1 MB strings, lone surrogates, invalid
base64, images that are not images or claim 20000x20000 pixels; plus non-JSON and binary frames,
messages over the size caps, unknown types and fields, and floods. Each message must be answered
by an `error` with the documented stable `code` (and `field`), the connection must stay usable
(ping -> pong) where the protocol allows it, and afterwards the server and the worker must still
serve a real job to completion.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import struct
import time
import uuid
import zlib

import websockets
from PIL import Image

from tests.support.client import Client, run
from tests.support.stack import http
from tests.test_service import SMALL

# the stable error codes of docs/protocol.md
CODES = {"invalid_json", "unknown_type", "missing_field", "unknown_field", "invalid_field", "unknown_model",
         "image_invalid", "too_large", "not_found", "forbidden", "not_cancellable", "queue_full", "unavailable",
         "auth_required", "csrf_failed", "rate_limited", "method_not_allowed", "internal_error",
         "video_invalid"}  # (describe)
WS_CAP = 12 * 1024 * 1024  # WS_MAX_CLIENT_MESSAGE_BYTES default
DAPHNE_CAP = 64 * 1024 * 1024  # conftest's --websocket-max-message-size
OK = {"prompt": "a fuzzed red circle", **SMALL}


# ---------------------------------------------------------------- images
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header claiming width x height, with a few bytes of pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


def image_bytes(size=(32, 32), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(image_bytes((16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


BAD_IMAGES = [
    (123, "invalid_field"), ([], "invalid_field"), (True, "invalid_field"), ({"png": "x"}, "invalid_field"),
    ("!!! not base64 !!!", "image_invalid"), ("QUJD=", "image_invalid"), ("\u00e9t\u00e9", "image_invalid"),
    (b64(b"hello, I am not an image at all"), "image_invalid"),
    (b64(image_bytes(fmt="GIF")), "image_invalid"), (b64(image_bytes(fmt="BMP")), "image_invalid"),
    (b64(image_bytes((4, 4))), "image_invalid"),  # smaller than 8x8
    (b64(image_bytes()[:60]), "image_invalid"),  # truncated PNG
    (b64(png_claiming(64, 64)), "image_invalid"),  # header fine, pixel data missing
    (b64(png_claiming(20000, 20000)), "too_large"),  # decompression-bomb header: refused before decoding
    (b64(png_claiming(4097, 4096)), "too_large"),
    (b64(png_claiming(2 ** 31 - 1, 1)), "too_large"),
    (b64(jpeg_claiming(65000, 65000)), "too_large"),
    ("data:image/png," + b64(image_bytes()), "image_invalid"),  # data URL not base64
    ("data:image/png;base64,%%%", "image_invalid"),
    ("A" * (8 * 1024 * 1024 * 4 // 3 + 100), "too_large"),  # over MAX_IMAGE_BYTES
]


# ---------------------------------------------------------------- the table
def generate_cases() -> list:
    """(message dict, expected code, expected field or None) for `generate`; the same bodies are
    POSTed to /api/jobs."""
    cases = []
    wrong_types = ["8", True, False, [], [8], {}, {"value": 8}, "NaN", "Infinity"]
    int_fields = ["num_frames", "width", "height", "steps", "seed", "num_chunks", "overlap", "interpolate", "upscale"]
    for name in int_fields:
        bad = wrong_types + [-1, 1.5, 10 ** 30, -10 ** 30, 1e308, -1e308, 2 ** 64, 7.000001]
        if name != "seed":
            bad.append(0)
        for value in bad:
            cases.append(({**OK, name: value}, "invalid_field", name))
    for name in ("guidance_scale", "fps", "duration_s"):
        for value in wrong_types + [-1, -0.5, 1e308, -1e308, 10 ** 30]:
            cases.append(({**OK, name: value}, "invalid_field", name))
    cases += [({**OK, "fps": 0}, "invalid_field", "fps"), ({**OK, "fps": 61}, "invalid_field", "fps"),
              ({**OK, "duration_s": 0}, "invalid_field", "duration_s"),
              ({**OK, "seed": 2 ** 32}, "invalid_field", "seed"), ({**OK, "width": 63}, "invalid_field", "width"),
              ({**OK, "height": 100000}, "invalid_field", "height"),
              ({**OK, "num_frames": 100000}, "invalid_field", "num_frames"),
              ({**OK, "steps": 100000}, "invalid_field", "steps"),
              ({**OK, "num_chunks": 2, "duration_s": 2}, "invalid_field", None),
              ({**OK, "duration_s": 120, "fps": 1}, "invalid_field", None),
              ({**OK, "num_chunks": 2, "overlap": 8}, "invalid_field", "overlap"),
              ({**OK, "interpolate": 5}, "invalid_field", "interpolate"),
              ({**OK, "upscale": 3}, "invalid_field", "upscale")]
    for value in (123, 1.5, True, [], {}, ["a prompt"], "", "   ", "\n\t", "abc\x00def", "x" * 1001,
                  "x" * (1024 * 1024), "a lone surrogate \ud800 here", "\udfff"):
        cases.append(({**OK, "prompt": value}, "invalid_field", "prompt"))
    cases.append(({k: v for k, v in OK.items() if k != "prompt"}, "missing_field", "prompt"))
    cases.append(({**OK, "prompt": None}, "missing_field", "prompt"))
    for value in (123, True, [], {}, ""):
        cases.append(({**OK, "model": value}, "invalid_field", "model"))
    for value in ("nope", "../../etc/passwd", "builtin\x00", "BUILTIN ", "x" * 10000, "\ud800", "builtin; rm -rf /",
                  "__init__", "\u202ebuiltin"):
        cases.append(({**OK, "model": value}, "unknown_model", "model"))
    for value in (1, 0, "true", "false", [], {}, "yes"):
        cases.append(({**OK, "private": value}, "invalid_field", "private"))
    for value in ("r" * 101, 1.5, [], {}, True, ["r"]):
        cases.append(({**OK, "request_id": value}, "invalid_field", "request_id"))
    for value, code in BAD_IMAGES:
        cases.append(({**OK, "image": value}, code, "image"))
    for extra in ({"foo": 1}, {"Prompt": "x"}, {"__proto__": {}}, {"": 1}, {"prompt ": "x"},
                  {"num-frames": 8}, {"x" * 5000: 1}):
        cases.append(({**OK, **extra}, "unknown_field", None))
    return cases


GENERATE_CASES = generate_cases()

# raw websocket text frames: (text, code)
RAW_CASES = [
    ('{"type": "generate", "prompt": "x", "fps": NaN}', "invalid_json"),
    ('{"type": "generate", "prompt": "x", "guidance_scale": Infinity}', "invalid_json"),
    ('{"type": "generate", "prompt": "x", "duration_s": -Infinity}', "invalid_json"),
    ('{"type": "generate", "prompt": "x", "seed": NaN}', "invalid_json"),
    ('{"type": "ping", "request_id": NaN}', "invalid_json"),
    ('{"type": "generate", "prompt": "x", "num_frames": 1e999}', "invalid_field"),  # parses as inf
    ('{"type": "generate", "prompt": "x", "width": -1e999}', "invalid_field"),
    ('{"type": "generate", "prompt": "x", "seed": ' + "9" * 5000 + "}", "invalid_json"),  # digit cap
    ("", "invalid_json"), ("{", "invalid_json"), ("nope", "invalid_json"), ("{'type': 'ping'}", "invalid_json"),
    ("\x00", "invalid_json"), ("[" * 100000, "invalid_json"), ('{"a":' * 50000, "invalid_json"),
    ('{"type": "ping"} trailing', "invalid_json"), ("\ufeff{}", "invalid_json"),
    ("[]", "invalid_json"), ("1", "invalid_json"), ('"generate"', "invalid_json"), ("null", "invalid_json"),
    ("true", "invalid_json"), ('[{"type": "ping"}]', "invalid_json"),
    ("{}", "missing_field"), ('{"type": null}', "missing_field"), ('{"prompt": "x"}', "missing_field"),
    ('{"type": "ping", "type": "generate"}', "missing_field"),  # duplicate keys: the last one wins
    ('{"type": "foo"}', "unknown_type"), ('{"type": "GENERATE"}', "unknown_type"), ('{"type": ""}', "unknown_type"),
    ('{"type": 1}', "unknown_type"), ('{"type": []}', "unknown_type"), ('{"type": {}}', "unknown_type"),
    ('{"type": true}', "unknown_type"), ('{"type": "generate "}', "unknown_type"),
    ('{"type": "ping", "foo": 1}', "unknown_field"), ('{"type": "ping", "request_id": []}', "invalid_field"),
    ('{"type": "ping", "request_id": "\\ud800"}', "invalid_field"),
    ('{"type": "cancel"}', "missing_field"), ('{"type": "cancel", "job_id": null}', "missing_field"),
    ('{"type": "cancel", "job_id": 1}', "invalid_field"), ('{"type": "cancel", "job_id": []}', "invalid_field"),
    ('{"type": "cancel", "job_id": true}', "invalid_field"), ('{"type": "cancel", "job_id": {}}', "invalid_field"),
    ('{"type": "cancel", "job_id": "nope"}', "not_found"), ('{"type": "cancel", "job_id": ""}', "not_found"),
    ('{"type": "cancel", "job_id": "' + "x" * 10000 + '"}', "not_found"),
    ('{"type": "cancel", "job_id": "' + str(uuid.uuid4()) + '"}', "not_found"),
    ('{"type": "cancel", "job_id": "00000000-0000-0000-0000-000000000000"}', "not_found"),
    ('{"type": "cancel", "job_id": "\\ud800"}', "not_found"),
    ('{"type": "cancel", "job_id": "' + str(uuid.uuid4()) + '", "force": true}', "unknown_field"),
]
# `describe` (docs/protocol.md): bad sources, questions, describers
NO_JOB = str(uuid.uuid4())
DESCRIBE_CASES = [
    ({}, "missing_field"), ({"job_id": None}, "missing_field"),
    ({"job_id": NO_JOB, "video": "AAAA"}, "invalid_field"),
    ({"job_id": 1}, "invalid_field"), ({"job_id": []}, "invalid_field"), ({"job_id": "nope"}, "not_found"),
    ({"job_id": NO_JOB}, "not_found"), ({"job_id": "\ud800"}, "not_found"),
    ({"video": 1}, "invalid_field"), ({"video": ""}, "invalid_field"), ({"video": []}, "invalid_field"),
    ({"video": "!!! not base64"}, "video_invalid"), ({"video": b64(b"not a video at all" * 10)}, "video_invalid"),
    ({"video": "data:video/mp4;base64,%%%"}, "video_invalid"),
    ({"job_id": NO_JOB, "question": 1}, "invalid_field"), ({"job_id": NO_JOB, "question": []}, "invalid_field"),
    ({"job_id": NO_JOB, "question": "q" * 501}, "invalid_field"),
    ({"job_id": NO_JOB, "question": "a\x00b"}, "invalid_field"),
    ({"job_id": NO_JOB, "model": "nope"}, "unknown_model"), ({"job_id": NO_JOB, "model": 1}, "unknown_model"),
    ({"job_id": NO_JOB, "private": "yes"}, "invalid_field"), ({"job_id": NO_JOB, "private": 1}, "invalid_field"),
    ({"job_id": NO_JOB, "foo": 1}, "unknown_field"), ({"job_id": NO_JOB, "prompt": "x"}, "unknown_field"),
]


def small_mp4() -> str:
    import numpy as np

    from generator.encode import encode_video

    return b64(encode_video(np.zeros((4, 32, 32, 3), np.uint8), fps=4))


# a real video with a question that cannot be stored (lone surrogate): refused, not internal_error
DESCRIBE_CASES.append(({"video": small_mp4(), "question": "what is \ud800 this"}, "invalid_field"))
RAW_CASES += [(json.dumps({"type": "describe", **msg}), code) for msg, code in DESCRIBE_CASES]
rng = random.Random(20260526)
RAW_CASES += [("~" + "".join(rng.choice("{}[]:,\"'\\ aZ09\u00e9\u4e2d\U0001f600") for _ in range(rng.randint(0, 60))),
               "invalid_json") for _ in range(25)]
BINARY_CASES = [b"\x00\xff\xfe", b'{"type": "ping"}', bytes(range(256)), b"\x89PNG\r\n\x1a\n" + b"\x00" * 100]


async def expect_error(c: Client, code: str, field: str | None = None, request_id=None) -> dict:
    reply = await c.recv(20)
    assert reply.get("type") == "error", reply
    assert reply["code"] == code, (code, reply)
    assert reply["code"] in CODES and isinstance(reply["message"], str) and reply["message"]
    if field is not None:
        assert reply.get("field") == field, (field, reply)
    if request_id is not None:
        assert reply.get("request_id") == request_id, reply
    return reply


def test_fuzzed_websocket_messages_get_stable_errors(live_service):
    """Every case on one of a few connections, each reply checked, then ping -> pong on the same one."""
    counts = {"generate": 0, "raw": 0, "binary": 0}

    async def scenario():
        # 3 connections: each stays under WS_MESSAGES_PER_MINUTE (600) with its pings
        chunks = [GENERATE_CASES[i::2] for i in range(2)]
        for part in chunks:
            async with Client(live_service) as c:
                for i, (msg, code, field) in enumerate(part):
                    rid = msg["request_id"] if "request_id" in msg else f"g{i}"
                    await c.send({"type": "generate", **msg, "request_id": rid} if "request_id" not in msg
                                 else {"type": "generate", **msg})
                    await expect_error(c, code, field, rid if isinstance(rid, str) and len(rid) <= 100
                                       and "\ud800" not in rid else None)
                    await c.ping_ok()
                    counts["generate"] += 1
        async with Client(live_service) as c:
            for text, code in RAW_CASES:
                await c.send(text)
                await expect_error(c, code)
                await c.ping_ok()
                counts["raw"] += 1
            for raw in BINARY_CASES:
                await c.send(raw)
                await expect_error(c, "invalid_json")
                await c.ping_ok()
                counts["binary"] += 1
            # over WS_MAX_CLIENT_MESSAGE_BYTES (but under Daphne's cap): refused, connection kept
            for big in ("x" * (WS_CAP + 1), json.dumps({"type": "generate", "prompt": "p" * (WS_CAP + 10)})):
                await c.send(big)
                await expect_error(c, "too_large")
                await c.ping_ok()
                counts["raw"] += 1
    run(scenario())
    total = sum(counts.values())
    assert total >= 200, counts
    print(f"websocket fuzz: {counts} = {total} messages")


def test_protocol_violations_close_only_that_connection(live_service):
    """Over Daphne's frame cap (1009) and a text frame that is not UTF-8 (1007): the websocket protocol
    ends that connection (no reply is possible); the next connection is served normally."""
    async def scenario():
        for payload, text, close_code in ((b"x" * (DAPHNE_CAP + 1024), True, 1009),
                                          (b'{"type": "ping", "request_id": "\xff\xfe"}', True, 1007)):
            c = await Client(live_service).__aenter__()
            try:
                await c.ws.send(payload, text=text)
                await c.recv(30)
                raise AssertionError(f"connection still open after a {close_code} violation")
            except websockets.exceptions.ConnectionClosed as exc:
                closed = exc
            # Daphne fails the connection (close code 1009 / 1007, then drops it, often before the client
            # has read the close frame)
            assert closed.rcvd is None or closed.rcvd.code == close_code, closed.rcvd
            async with Client(live_service) as c:
                await c.ping_ok()
    run(scenario())


def test_floods_are_answered_in_order(live_service):
    """300 bad generates sent without waiting, 500 pings sent without waiting, and 20 connections at
    once with 10 bad messages each: every message answered, nothing dropped, connections usable."""
    async def scenario():
        async with Client(live_service) as c:
            for i in range(300):
                await c.send({"type": "generate", "prompt": "flood", "width": -i - 1, "request_id": f"f{i}"})
            for i in range(300):
                reply = await expect_error(c, "invalid_field", "width")
                assert reply["request_id"] == f"f{i}"
            await c.ping_ok()
        async with Client(live_service) as c:
            for i in range(500):
                await c.send({"type": "ping", "request_id": i})
            got = [await c.recv(20) for _ in range(500)]
            assert [m["type"] for m in got] == ["pong"] * 500 and [m["request_id"] for m in got] == list(range(500))

        async def one(k):
            async with Client(live_service) as c:
                for i in range(10):
                    await c.send({"type": "cancel", "job_id": f"nope-{k}-{i}", "request_id": f"{k}-{i}"})
                for i in range(10):
                    await expect_error(c, "not_found", request_id=f"{k}-{i}")
                await c.ping_ok()
        await asyncio.gather(*(one(k) for k in range(20)))
    run(scenario())


# ---------------------------------------------------------------- HTTP API
def test_fuzzed_http_api_gets_stable_errors(live_service):
    base = live_service.base
    seen = 0

    def check(resp, status, code, field=None):
        nonlocal seen
        got_status, headers, raw = resp
        assert got_status == status, (status, code, got_status, raw[:300])
        assert headers["Content-Type"].startswith("application/json"), headers["Content-Type"]
        data = json.loads(raw)
        assert data["code"] == code and data["error"]["code"] == code and data["message"], data
        assert code in CODES
        if field is not None:
            assert data.get("field") == field, (field, data)
        seen += 1

    for msg, code, field in GENERATE_CASES:
        body = json.dumps(msg).encode()
        check(http("POST", f"{base}/api/jobs", body), 400, code, field)
    for text, code in RAW_CASES:
        if text.startswith('{"type": "describe"'):
            continue  # below, on /api/describe
        if not text.startswith('{"type": "generate"') and code != "invalid_json":
            continue  # websocket-only message types
        check(http("POST", f"{base}/api/jobs", text.encode()), 400, code)
    for msg, code in DESCRIBE_CASES:
        check(http("POST", f"{base}/api/describe", msg), 404 if code == "not_found" else 400, code)
    for raw in (b"\xff\xfe\x00", b'{"prompt": "\xff"}', b"", b"\x89PNG\r\n\x1a\n"):
        check(http("POST", f"{base}/api/jobs", raw), 400, "invalid_json")
    # bodies over the cap, wrong content types, wrong methods
    check(http("POST", f"{base}/api/jobs", b'{"prompt": "' + b"p" * (WS_CAP + 10) + b'"}'), 413, "too_large")
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/json-seq", "application/jsonx"):
        check(http("POST", f"{base}/api/jobs", b'{"prompt": "x"}', headers={"Content-Type": ctype}), 415,
              "invalid_json")
    # (a malformed multipart body is refused by Daphne's HTTP layer itself, before Django)
    form = b'--xx\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na cat\r\n--xx--\r\n'
    check(http("POST", f"{base}/api/jobs", form, headers={"Content-Type": "multipart/form-data; boundary=xx"}),
          415, "invalid_json")
    for method, path in (("PUT", "/api/jobs"), ("DELETE", "/api/jobs"), ("PATCH", "/api/jobs"),
                         ("GET", f"/api/jobs/{uuid.uuid4()}/cancel"), ("DELETE", f"/api/jobs/{uuid.uuid4()}"),
                         ("POST", "/api/models"), ("POST", f"/api/jobs/{uuid.uuid4()}")):
        check(http(method, base + path, b"{}" if method != "GET" else None), 405, "method_not_allowed")
    # job ids: detail, cancel and video of what does not exist
    for job_id in ("nope", "0" * 32, str(uuid.uuid4()), "%00", "%ff%fe", "a" * 5000, "..%2F..%2Fetc",
                   "00000000-0000-0000-0000-000000000000", "%F0%9F%98%80", "1;DROP%20TABLE"):
        check(http("GET", f"{base}/api/jobs/{job_id}"), 404, "not_found")
        check(http("POST", f"{base}/api/jobs/{job_id}/cancel", b"{}"), 404, "not_found")
        check(http("GET", f"{base}/api/jobs/{job_id}/video"), 404, "not_found")
    for query, field in (("limit=abc", "limit"), ("limit=1e9", "limit"), ("status=bogus", "status"),
                         ("status=%ff", "status"), ("status=queued,nope", "status")):
        check(http("GET", f"{base}/api/jobs?{query}"), 400, "invalid_field", field)
    assert http("GET", f"{base}/api/jobs?limit=-5")[0] == 200
    assert seen >= 200, seen
    print(f"HTTP fuzz: {seen} requests")


# ---------------------------------------------------------------- limits as settings (strict server)
def test_message_rate_and_pixel_budget_limits(strict_service):
    """WS_MESSAGES_PER_MINUTE=40 and MAX_VIDEO_PIXELS=40000 on the strict server (conftest.STRICT_ENV)."""

    svc = strict_service

    async def scenario():
        async with Client(svc, token=svc.tokens["bob"]) as c:
            for i in range(60):
                await c.send({"type": "ping", "request_id": i})
            got = [await c.recv(10) for _ in range(60)]
            pongs = [m for m in got if m["type"] == "pong"]
            limited = [m for m in got if m["type"] == "error" and m["code"] == "rate_limited"]
            assert 40 <= len(pongs) < 60 and len(pongs) + len(limited) == 60, [m["type"] for m in got]
            await asyncio.sleep(3.5)  # refilled at 40/60 a second
            await c.ping_ok()
        async with Client(svc, token=svc.tokens["bob"]) as c:
            for fields in ({"num_frames": 16}, {"width": 128, "height": 128}, {"num_chunks": 2}, {"upscale": 2}):
                await c.send({"type": "generate", "prompt": "too many pixels", **SMALL, **fields,
                              "request_id": "px"})
                reply = await expect_error(c, "invalid_field", request_id="px")
                assert "MAX_VIDEO_PIXELS" in reply["message"], reply
                await c.ping_ok()
    run(scenario())


# ---------------------------------------------------------------- afterwards
def test_after_the_storm_a_real_job_completes(live_service):
    """Runs after the fuzz tests above (file order): the same Daphne and worker still serve a job."""
    for proc in [live_service.redis, live_service.web(), *live_service.workers.values()]:
        assert proc.alive(), proc.tail()
    health = json.loads(http("GET", live_service.base + "/healthz?timeout=2")[2])
    assert health["status"] == "ok" and health["workers"], health

    async def scenario():
        async with Client(live_service) as c:
            queued = await c.submit(prompt="a blue circle moving right", **{**SMALL, "steps": 2})
            assert queued["type"] == "queued", queued
            events = await c.events_for(queued["job_id"], timeout=180)
            assert events[-1]["type"] == "generation_complete", events[-1]
            assert base64.b64decode(events[-1]["video"])[4:8] == b"ftyp"
            return queued["job_id"]
    job_id = run(scenario())
    job = json.loads(http("GET", f"{live_service.base}/api/jobs/{job_id}")[2])["job"]
    assert job["status"] == "succeeded" and job["num_frames"] == 8
    assert time.time() > 0
