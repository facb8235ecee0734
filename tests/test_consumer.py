"""The websocket lobby in-process (Channels' WebsocketCommunicator on the whole ASGI application,
pytest-django's test database, an in-memory channel layer and Celery's in-memory broker): fast
checks of the protocol's answers that need no Redis, worker or Daphne. The real stack runs the
same protocol in tests/test_service.py and tests/test_fuzz.py."""
from __future__ import annotations

import json

import pytest
from channels.testing import WebsocketCommunicator

from videoservice import bus
from videoservice.contract import GenerateRequest, GenerationParams, RequestError, parse

ORIGIN = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def in_process(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.SUBMISSIONS_PER_MINUTE = 0  # (counted in Redis)
    broker = bus.app.conf.broker_url
    bus.app.conf.broker_url = "memory://"
    yield
    bus.app.conf.broker_url = broker


async def connect(headers=ORIGIN, path="/ws/lobby/"):
    from videoservice.asgi import application

    comm = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await comm.connect(timeout=10)
    return comm, connected, code


async def ask(comm, message) -> dict:
    await comm.send_to(text_data=message if isinstance(message, str) else json.dumps(message))
    return json.loads(await comm.receive_from(timeout=10))


async def test_ping_and_the_errors_of_malformed_messages():
    comm, connected, _ = await connect()
    assert connected
    assert await ask(comm, {"type": "ping", "request_id": 7}) == {"type": "pong", "request_id": 7}
    for message, code in (("not json", "invalid_json"), ("[1, 2]", "invalid_json"), ('{"a": NaN}', "invalid_json"),
                          ({"request_id": "r"}, "missing_field"), ({"type": "dance"}, "unknown_type"),
                          ({"type": ["generate"]}, "unknown_type"), ({"type": "ping", "x": 1}, "unknown_field"),
                          ({"type": "cancel"}, "missing_field"), ({"type": "cancel", "job_id": "nope"}, "not_found"),
                          ({"type": "generate", "prompt": "x", "width": "64"}, "invalid_field")):
        answer = await ask(comm, message)
        assert (answer["type"], answer["code"]) == ("error", code), (message, answer)
    await comm.send_to(bytes_data=b"\x00\x01")
    assert json.loads(await comm.receive_from())["code"] == "invalid_json"
    await comm.disconnect()


async def test_a_refused_generate_says_what_the_contract_says():
    comm, _, _ = await connect()
    bad = {"type": "generate", "prompt": "a red circle", "num_frames": 7, "upscale": 3, "request_id": "b1"}
    answer = await ask(comm, bad)
    with pytest.raises(RequestError) as refused:
        parse(GenerateRequest, bad)
    assert (answer["code"], answer["field"], answer["message"], answer["request_id"]) == \
        (refused.value.code, refused.value.field, refused.value.message, "b1")
    await comm.disconnect()


async def test_generate_is_queued_with_the_params_the_worker_will_read():
    from channels.db import database_sync_to_async

    from videoservice.models import Job

    comm, _, _ = await connect()
    answer = await ask(comm, {"type": "generate", "prompt": "a green square moving up", "num_frames": 8,
                              "width": 64, "height": 64, "num_chunks": 2, "request_id": "g1"})
    assert answer["type"] == "queued" and answer["request_id"] == "g1" and answer["position"] == 0, answer
    job = await database_sync_to_async(Job.objects.get)(pk=answer["job_id"])
    params = GenerationParams.model_validate(job.params)
    assert params.stored() == answer["params"] == job.params
    assert (job.status, job.total_steps, params.num_chunks) == ("queued", 2 * params.steps, 2)
    await comm.disconnect()


async def test_message_rate_and_size_caps(settings):
    settings.WS_MESSAGES_PER_MINUTE = 3
    settings.WS_MAX_CLIENT_MESSAGE_BYTES = 1000
    comm, _, _ = await connect()
    big = await ask(comm, json.dumps({"type": "ping", "request_id": "\u20ac" * 400}, ensure_ascii=False))
    assert big["code"] == "too_large"  # 400 characters, 1200 bytes
    answers = [await ask(comm, {"type": "ping"}) for _ in range(3)]
    assert [a["type"] for a in answers] == ["pong", "pong", "error"] and answers[-1]["code"] == "rate_limited"
    await comm.disconnect()


async def test_handshakes_without_our_origin_are_refused():
    for headers in ([(b"host", b"127.0.0.1:8000")],
                    [(b"origin", b"http://127.0.0.1:8001"), (b"host", b"127.0.0.1:8000")],
                    [(b"origin", b"http://evil.example:8000"), (b"host", b"evil.example:8000")]):
        comm, connected, _ = await connect(headers)
        assert not connected, headers


async def test_anonymous_connections_are_closed_when_auth_is_required(settings):
    settings.REQUIRE_AUTH = True
    comm, connected, _ = await connect()
    assert connected  # accepted, so that the client can read why
    answer = json.loads(await comm.receive_from())
    assert answer["code"] == "auth_required"
    assert (await comm.receive_output())["code"] == 4401
