"""Database faults and sign-in abuse on real parts: a SQLite file write-locked by another process for
longer than the service's busy timeout (DB_BUSY_TIMEOUT_S=1 here) while a job runs, while clients
submit and while websocket clients connect, and a password brute force on the login page.

One stack for the module, always on SQLite (its lock is the fault under test): redis-server,
Daphne, a Celery worker serving a stand-in model (tests/fault_backends.py, 50 ms a step)."""
from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from http.cookiejar import CookieJar

import pytest
import websockets

from tests.support.stack import Stack, http, wait_for

FAKE = {"backend": "tests.fault_backends:fake_faults", "pipeline": "ltx", "queue": "fakes",
        "defaults": {"steps": 4, "width": 64, "height": 64, "frames": 9, "fps": 8},
        "limits": {"min_size": 32, "max_size": 128, "max_steps": 1000}}
ENV = {"DB_BUSY_TIMEOUT_S": "1", "LOGIN_FAILURES_PER_ACCOUNT": "3", "LOGIN_FAILURES_PER_ADDRESS": "5",
       "SUBMISSIONS_PER_MINUTE": "1000"}
USERS = """
import json
from django.contrib.auth import get_user_model
from videoservice.models import ApiToken
User = get_user_model()
User.objects.create_user("pat", password="pat-pass-Rt5!")
User.objects.create_user("kim", password="kim-pass-Lp2!")
print(json.dumps({"tok": ApiToken.issue(User.objects.create_user("tok"), "tests")[1]}))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("database-faults")
    with Stack(tmp, env=ENV, models={"fake-steps": FAKE}, database_url=f"sqlite:///{tmp / 'db.sqlite3'}") as stack:
        stack.start_redis()
        stack.migrate()
        stack.tokens = json.loads(stack.manage("shell", "-c", USERS).strip().splitlines()[-1])
        stack.start_web()
        stack.start_worker("w1", "fakes")
        stack.wait_healthy()
        stack.db = str(tmp / "db.sqlite3")
        yield stack


@contextmanager
def write_locked(path: str):
    """Another process's write transaction on the file (readers go on: WAL), until the block ends."""
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        db.execute("ROLLBACK")
        db.close()


def test_a_lock_longer_than_the_busy_timeout_fails_no_job_and_submissions_get_503(stack):
    status, _, body = http("POST", stack.base + "/api/jobs", {"prompt": "through a lock", "model": "fake-steps",
                                                              "steps": 100})  # 5 s
    assert status == 201, body
    job_id = json.loads(body)["job"]["id"]
    wait_for(lambda: stack.job(job_id)["step"] > 0, 60, "the job's first progress")
    with write_locked(stack.db):  # 4 s: each progress write of the job waits 1 s and fails
        started = time.monotonic()
        status, headers, body = http("POST", stack.base + "/api/jobs", {"prompt": "while locked",
                                                                         "model": "fake-steps"})
        answer = json.loads(body)
        assert (status, answer["code"]) == (503, "unavailable") and int(headers["Retry-After"]) > 0, body
        assert time.monotonic() - started < 3.5  # the busy timeout, not the lock's length
        time.sleep(max(0.0, 4 - (time.monotonic() - started)))
    job = stack.wait_job(job_id, timeout=60)
    assert job["status"] == "succeeded" and job["progress"] == 1.0, job  # a progress write failing is not fatal
    assert "not written: database is locked" in stack.workers["w1"].tail(10**6)


async def _handshake(url: str, origin: str) -> float:
    started = time.monotonic()
    async with websockets.connect(url, origin=origin, open_timeout=20) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "pong"
    return time.monotonic() - started


def test_websocket_handshakes_do_not_wait_for_a_token_bookkeeping_write(stack):
    """A token's first use writes its last_used_at; on Channels' one database thread, that write
    waited for the lock and every handshake of the process, anonymous ones too, waited behind it."""
    async def scenario():
        token_url = f"{stack.ws}?token={stack.tokens['tok']}"
        return await asyncio.gather(_handshake(token_url, stack.origin), _handshake(stack.ws, stack.origin))

    with write_locked(stack.db):
        took = asyncio.run(scenario())
        assert max(took) < 2.0, took  # the lock is held 4 s more after this
        time.sleep(4)
    # the write that met the lock was dropped, logged; the token's next use writes it
    assert "could not note the use of API token" in stack.web().tail(10**6)
    assert http("GET", stack.base + "/api/jobs", headers={"Authorization": f"Bearer {stack.tokens['tok']}"})[0] == 200
    wait_for(lambda: sqlite3.connect(stack.db).execute(
        "SELECT last_used_at FROM videoservice_apitoken").fetchone()[0] is not None, 30, "last_used_at written")


def _login(stack, username: str, password: str) -> tuple:
    """(signed in?, the page's error text) after one try through the login form."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(stack.base + "/accounts/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token,
                                   "next": "/"}).encode()
    with opener.open(stack.base + "/accounts/login/", form, timeout=10) as resp:
        page = resp.read().decode()
    return any(c.name == "sessionid" for c in jar), re.sub(r"\s+", " ", page)


def test_password_guessing_is_throttled_per_account_and_per_address(stack):
    for n in range(3):
        assert _login(stack, "pat", f"guess-{n}")[0] is False
    signed_in, page = _login(stack, "pat", "pat-pass-Rt5!")  # the right password, refused unchecked
    assert not signed_in and "too many failed sign-ins for this account" in page
    assert _login(stack, "kim", "kim-pass-Lp2!")[0] is True  # another account from here still may
    for n in range(2):  # 5 failures from this address in all
        _login(stack, f"nobody-{n}", "guess")
    signed_in, page = _login(stack, "kim", "kim-pass-Lp2!")
    assert not signed_in and "too many failed sign-ins for your address" in page
    assert "sign-in refused: 3 failures for this account (account 'pat'" in stack.web().tail(10**6)
