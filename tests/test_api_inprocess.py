"""The HTTP API in-process (Django's test client on the whole URL conf, pytest-django's test
database, Celery's in-memory broker): who may do what, the queue caps, the order a queue's jobs
run in, and the refusals of bad bodies. No Redis, worker or Daphne: the same rules against the real
stack are in tests/test_auth.py, tests/test_queue.py and tests/test_contract.py."""
from __future__ import annotations

import json

import pytest

from videoservice import bus
from videoservice.models import ApiToken, Job

pytestmark = pytest.mark.django_db
SMALL = {"num_frames": 8, "width": 64, "height": 64, "steps": 2}


@pytest.fixture(autouse=True)
def in_process(settings):
    settings.SUBMISSIONS_PER_MINUTE = 0  # (counted in Redis)
    settings.WEBHOOK_ALLOW_PRIVATE = True
    broker = bus.app.conf.broker_url
    bus.app.conf.broker_url = "memory://"
    yield
    bus.app.conf.broker_url = broker


@pytest.fixture
def tokens(django_user_model) -> dict:
    out = {}
    for name in ("alice", "bob", "boss"):
        user = django_user_model.objects.create_user(name, is_staff=name == "boss")
        out[name] = {"HTTP_AUTHORIZATION": "Bearer " + ApiToken.issue(user, "tests")[1]}
    return out


def call(client, method: str, path: str, payload=None, auth=None):
    response = getattr(client, method.lower())(path, data=json.dumps(payload) if payload is not None else None,
                                               content_type="application/json", **(auth or {}))
    return response.status_code, response.json() if response.content else None


def submit(client, auth=None, **fields) -> dict:
    status, body = call(client, "POST", "/api/jobs", {"prompt": "a red circle moving left", **SMALL, **fields}, auth)
    assert status == 201, body
    return body["job"]


def test_anonymous_and_bad_tokens_are_refused_when_auth_is_required(client, settings):
    settings.REQUIRE_AUTH = True
    for method, path, payload in (("GET", "/api/jobs", None), ("POST", "/api/jobs", {"prompt": "x"}),
                                  ("GET", "/api/models", None), ("GET", f"/api/jobs/{'0' * 32}", None),
                                  ("POST", f"/api/jobs/{'0' * 32}/cancel", {})):
        for auth in (None, {"HTTP_AUTHORIZATION": "Bearer vs_not-a-token"}, {"HTTP_AUTHORIZATION": "Basic YTpi"}):
            status, body = call(client, method, path, payload, auth)
            assert (status, body["code"]) == (401, "auth_required"), (method, path, auth, body)


def test_owners_see_and_cancel_their_own_staff_all(client, tokens):
    private = submit(client, tokens["alice"], private=True)
    public = submit(client, tokens["alice"])
    assert private["mine"] and private["private"]
    assert call(client, "GET", f"/api/jobs/{public['id']}", auth=tokens["bob"])[0] == 200
    assert call(client, "GET", f"/api/jobs/{private['id']}", auth=tokens["bob"])[1]["code"] == "not_found"
    listed = [j["id"] for j in call(client, "GET", "/api/jobs?limit=200", auth=tokens["bob"])[1]["jobs"]]
    assert public["id"] in listed and private["id"] not in listed
    assert call(client, "POST", f"/api/jobs/{public['id']}/cancel", {}, tokens["bob"])[0] == 403
    assert call(client, "POST", f"/api/jobs/{private['id']}/cancel", {}, tokens["bob"])[0] == 404
    staff_view = call(client, "GET", f"/api/jobs/{private['id']}", auth=tokens["boss"])[1]["job"]
    assert staff_view["id"] == private["id"] and not staff_view["mine"]
    assert call(client, "POST", f"/api/jobs/{public['id']}/cancel", {}, tokens["boss"])[1]["state"] == "cancelled"
    assert call(client, "POST", f"/api/jobs/{private['id']}/cancel", {}, tokens["alice"])[1]["state"] == "cancelled"
    # raising a priority is for staff; staff may
    status, body = call(client, "POST", "/api/jobs", {"prompt": "a cat", **SMALL, "priority": 5}, tokens["bob"])
    assert (status, body["code"], body["field"]) == (403, "forbidden", "priority")
    assert submit(client, tokens["boss"], priority=5)["priority"] == 5


def test_queue_caps_per_owner_and_in_all(client, tokens, settings):
    settings.MAX_QUEUED_PER_OWNER = 2
    settings.MAX_QUEUED_JOBS = 3
    submit(client, tokens["alice"])
    submit(client, tokens["alice"])
    status, body = call(client, "POST", "/api/jobs", {"prompt": "one more", **SMALL}, tokens["alice"])
    assert (status, body["code"]) == (429, "queue_full")
    submit(client, tokens["bob"])
    status, body = call(client, "POST", "/api/jobs", {"prompt": "over the total", **SMALL}, tokens["boss"])
    assert (status, body["code"]) == (429, "queue_full")


def test_dispatch_order_owners_take_turns_and_priority_goes_first(client, tokens):
    alice = [submit(client, tokens["alice"], seed=i)["id"] for i in range(3)]
    bob = submit(client, tokens["bob"])["id"]
    urgent = submit(client, tokens["boss"], priority=3)["id"]
    queue = Job.objects.get(pk=bob).queue
    order = [str(job.id) for job in Job.objects.dispatch_order(queue)]
    assert order == [urgent, alice[0], bob, alice[1], alice[2]]
    claimed = Job.objects.claim_next(queue, "w1@test", 1, "test-host")
    assert str(claimed.id) == urgent and claimed.status == "running"
    assert [str(job.id) for job in Job.objects.dispatch_order(queue)] == [alice[0], bob, alice[1], alice[2]]


@pytest.mark.parametrize("payload, status, code, field", [
    ("not json", 400, "invalid_json", None),
    ([1, 2], 400, "invalid_json", None),
    ({"prompt": "x", "colour": "red"}, 400, "unknown_field", "colour"),
    ({}, 400, "missing_field", "prompt"),
    ({"prompt": "x", "num_frames": 7}, 400, "invalid_field", "num_frames"),
    ({"prompt": "x", "seed": -1}, 400, "invalid_field", "seed"),
    ({"prompt": "x", "model": "no-such-model"}, 400, "unknown_model", "model"),
    ({"prompt": "x", "source_job_id": "nope"}, 404, "not_found", "source_job_id"),
    ({"prompt": "x", "image": "!!!"}, 400, "image_invalid", "image"),
    ({"prompt": "x", "webhook": "ftp://example.org/hook"}, 400, "invalid_field", "webhook"),
])
def test_bad_bodies_get_their_code_status_and_field(client, payload, status, code, field):
    data = payload if isinstance(payload, str) else json.dumps(payload)
    response = client.post("/api/jobs", data=data, content_type="application/json")
    body = response.json()
    assert (response.status_code, body["code"], body.get("field")) == (status, code, field), body
    assert not Job.objects.exists()
