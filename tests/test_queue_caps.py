"""Queue caps on real parts (tests/support/faults.py), on SQLite and on PostgreSQL (the counts are
database queries under concurrent submissions): MAX_QUEUED_PER_OWNER and MAX_QUEUED_JOBS answer
queue_full and free up when jobs leave, cookieless connections of one address share the per-owner
cap, and the caps hold on the Phoenix endpoint. Jobs for a queue no worker serves stay queued.
"""
from __future__ import annotations

import json

import pytest

from tests.support.client import Client, run
from tests.support.faults import cancel_all, drained, fault_service, submit_parked
from tests.support.stack import http


@pytest.fixture(scope="module")
def faults(tmp_path_factory, database_url):
    with fault_service(tmp_path_factory.mktemp("faults"), database_url) as svc:
        svc.tokens = svc.issue_tokens("ann", "ben", "cara", "phoebe")  # signed-in users: the per-address cap skips them
        yield svc


def test_queue_caps_answer_queue_full_and_free_up_when_jobs_leave(faults):
    """MAX_QUEUED_PER_OWNER=8, MAX_QUEUED_JOBS=12 (fixture env); jobs for a queue no worker serves
    stay queued, so the caps are reached and held. Two signed-in users (API tokens): the cap per
    anonymous address does not apply to them."""
    submit = submit_parked
    drained(faults)
    tokens = [faults.tokens[user] for user in ("ann", "ben")]

    async def scenario():
        async with Client(faults, token=tokens[0]) as a, Client(faults, token=tokens[1]) as b:
            mine = [await submit(a) for _ in range(8)]
            assert all(m["type"] == "queued" for m in mine), mine
            over = await submit(a)
            assert (over["type"], over["code"]) == ("error", "queue_full"), over
            assert "8 jobs waiting" in over["message"]
            others = [await submit(b) for _ in range(4)]
            assert all(m["type"] == "queued" for m in others), others
            full = await submit(b)  # 12 queued in all
            assert (full["type"], full["code"]) == ("error", "queue_full") and "queue is full" in full["message"], full
            await a.send({"type": "cancel", "job_id": mine[0]["job_id"]})
            await a.until(lambda m: m.get("job_id") == mine[0]["job_id"] and m["type"] == "cancelled", 10)
            again = await submit(b)  # a place came free
            assert again["type"] == "queued", again
            await cancel_all([(a, m) for m in mine[1:]] + [(b, m) for m in others + [again]])
        status, _, body = http("GET", f"{faults.base}/api/jobs?limit=200",
                               headers={"Authorization": f"Bearer {tokens[0]}"})
        assert not [j for j in json.loads(body)["jobs"] if j["status"] == "queued"]
    run(scenario())


def test_six_cookieless_connections_of_one_client_hold_at_most_the_per_owner_cap(faults):
    """Each cookieless connection is an owner of its own (c:<uuid>), but they come from one address:
    together they hold at most MAX_QUEUED_PER_OWNER (8) queued jobs; nobody else is crowded out."""
    drained(faults)

    async def scenario():
        clients = [Client(faults) for _ in range(6)]
        for c in clients:
            await c.__aenter__()
        try:
            answers = [(c, await submit_parked(c)) for c in clients for _ in range(2)]
            queued = [(c, m) for c, m in answers if m["type"] == "queued"]
            refused = [m for _, m in answers if m["type"] == "error"]
            assert len(queued) == 8 and len(refused) == 4, [m.get("code") for _, m in answers]
            assert all(m["code"] == "queue_full" and "from your address" in m["message"] for m in refused), refused
            # a signed-in user still gets a place: the global cap (12) was not reached
            token = faults.tokens["cara"]
            async with Client(faults, token=token) as signed_in:
                mine = await submit_parked(signed_in)
                assert mine["type"] == "queued", mine
                await cancel_all([(signed_in, mine)])
            await cancel_all(queued)
        finally:
            for c in clients:
                await c.__aexit__(None, None, None)
    run(scenario())


def test_per_owner_caps_hold_on_the_phoenix_endpoint(faults):
    """MAX_QUEUED_PER_OWNER=8: a signed-in Phoenix socket's ninth parked job is refused with queue_full."""
    drained(faults)
    from tests.test_phoenix import PhoenixFrames

    token = faults.tokens["phoebe"]

    async def scenario():
        async with PhoenixFrames(faults.base, faults.origin, token) as c:
            answers = [await c.call("video:lobby", "generate", {"prompt": "parked", "model": "fake-parked"})
                       for _ in range(9)]
            assert [a["status"] for a in answers] == ["ok"] * 8 + ["error"], answers
            assert answers[-1]["response"]["code"] == "queue_full"
            for a in answers[:8]:
                cancelled = await c.call("video:lobby", "cancel", {"job_id": a["response"]["job_id"]})
                assert cancelled["response"]["state"] == "cancelled", cancelled
    run(scenario())
