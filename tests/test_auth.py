"""Who may do what, on real parts: a Daphne configured as when bound to a public address
(`strict_service` in conftest.py: authentication required, small limits) on the live service's
Redis, database and Celery worker; API tokens made by `manage.py create_api_token`; a password
login with CSRF; Flower behind basic auth."""
from __future__ import annotations

import asyncio
import base64
from http.cookiejar import CookieJar
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import websockets

from tests.support.client import Client, run
from tests.support.stack import ROOT, Proc, free_port, http
from tests.test_service import SMALL
from videoservice.launch import BIN, daphne_argv

SLOW = {**SMALL, "steps": 60}  # long enough to be cancelled while queued or running


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def body(resp) -> dict:
    return json.loads(resp[2])


def wait_status(svc, job_id, token, wanted=("succeeded", "failed", "cancelled"), timeout=90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = body(http("GET", f"{svc.base}/api/jobs/{job_id}", headers=bearer(token)))["job"]
        if job["status"] in wanted:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']}")


# ---------------------------------------------------------------- anonymous is refused
def test_anonymous_and_bad_tokens_are_refused_off_loopback(strict_service):
    svc = strict_service
    base = svc.base
    for method, path, payload in (("GET", "/api/jobs", None), ("POST", "/api/jobs", {"prompt": "x"}),
                                  ("GET", "/api/models", None), ("GET", f"/api/jobs/{'0' * 32}", None),
                                  ("POST", f"/api/jobs/{'0' * 32}/cancel", {})):
        for headers in (None, bearer("vs_not-a-token"), {"Authorization": "Basic YTpi"}):
            status, _, raw = http(method, base + path, payload, headers=headers)
            assert status == 401 and json.loads(raw)["code"] == "auth_required", (method, path, headers, raw)
    # the page sends anonymous browsers to the login form; health probes stay open
    req = urllib.request.Request(base + "/")
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as exc:
        opener.open(req, timeout=10)
    assert exc.value.code == 302 and exc.value.headers["Location"].startswith("/accounts/login/")
    assert http("GET", base + "/healthz")[0] == 200
    assert http("GET", base + "/accounts/login/")[0] == 200

    async def scenario():
        for client in (Client(svc), Client(svc, token="vs_wrong"),
                       Client(svc, headers=bearer("vs_wrong"))):
            async with client as c:
                msg = await c.recv(10)
                assert msg["type"] == "error" and msg["code"] == "auth_required", msg
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    await c.recv(10)
                assert closed.value.rcvd.code == 4401
        # a valid token from a foreign Origin is still refused at the handshake
        with pytest.raises(websockets.exceptions.InvalidStatus):
            await websockets.connect(svc.ws + "?token=" + svc.tokens["alice"], origin="http://evil.example")
    run(scenario())


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


# ---------------------------------------------------------------- tokens, owners, staff
def test_tokens_owner_and_staff_rules_http_and_websocket(strict_service):
    svc = strict_service
    base, tok = svc.base, svc.tokens

    # alice: a private job over HTTP (token, no CSRF needed), a public one over the websocket (?token=)
    status, _, raw = http("POST", f"{base}/api/jobs", {"prompt": "a private blue square", "private": True,
                                                     **SLOW}, headers=bearer(tok["alice"]))
    assert status == 201, raw
    private = json.loads(raw)["job"]
    assert private["mine"] is True and private["private"] is True

    async def alice_public():
        async with Client(svc, token=tok["alice"]) as c:
            await c.ping_ok()
            queued = await c.submit(prompt="a public red square", **SLOW)
            assert queued["type"] == "queued", queued
            return queued["job_id"]
    public_id = run(alice_public())
    pid = private["id"]

    # bob sees the public job, not the private one; may cancel neither
    assert http("GET", f"{base}/api/jobs/{public_id}", headers=bearer(tok["bob"]))[0] == 200
    status, _, raw = http("GET", f"{base}/api/jobs/{pid}", headers=bearer(tok["bob"]))
    assert status == 404 and json.loads(raw)["code"] == "not_found"
    listed = [j["id"] for j in body(http("GET", f"{base}/api/jobs?limit=200", headers=bearer(tok["bob"])))["jobs"]]
    assert public_id in listed and pid not in listed
    status, _, raw = http("POST", f"{base}/api/jobs/{public_id}/cancel", {}, headers=bearer(tok["bob"]))
    assert status == 403 and json.loads(raw)["code"] == "forbidden"
    status, _, raw = http("POST", f"{base}/api/jobs/{pid}/cancel", {}, headers=bearer(tok["bob"]))
    assert status == 404 and json.loads(raw)["code"] == "not_found"
    assert http("GET", f"{base}/api/jobs/{pid}/video", headers=bearer(tok["bob"]))[0] == 404

    async def bob_ws():
        async with Client(svc, headers=bearer(tok["bob"])) as c:
            for job_id, code in ((public_id, "forbidden"), (pid, "not_found")):
                await c.send({"type": "cancel", "job_id": job_id, "request_id": "b-" + code})
                msg = await c.until(lambda m: m.get("request_id") == "b-" + code, 10)
                assert msg["type"] == "error" and msg["code"] == code, msg
            await c.ping_ok()
    run(bob_ws())

    # staff sees the private job; alice (another connection, header token) cancels her private job,
    # staff cancels alice's public one
    staff_view = body(http("GET", f"{base}/api/jobs/{pid}", headers=bearer(tok["boss"])))["job"]
    assert staff_view["id"] == pid and staff_view["mine"] is False
    assert pid in [j["id"] for j in body(http("GET", f"{base}/api/jobs?limit=200",
                                               headers=bearer(tok["boss"])))["jobs"]]

    async def alice_cancels():
        async with Client(svc, headers=bearer(tok["alice"])) as c:
            await c.send({"type": "cancel", "job_id": pid, "request_id": "a-c"})
            msg = await c.until(lambda m: (m.get("request_id") == "a-c" or m.get("job_id") == pid)
                                and m["type"] in ("cancelling", "cancelled", "error"), 15)
            assert msg["type"] in ("cancelling", "cancelled"), msg
    run(alice_cancels())
    status, _, raw = http("POST", f"{base}/api/jobs/{public_id}/cancel", {}, headers=bearer(tok["boss"]))
    assert status in (200, 202), raw
    assert wait_status(svc, pid, tok["alice"])["status"] == "cancelled"
    assert wait_status(svc, public_id, tok["boss"])["status"] == "cancelled"


def login(svc, username: str, password: str):
    """Password login through the form, as a browser does; returns (opener, cookie jar)."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(svc.base + "/accounts/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token,
                                   "next": "/"}).encode()
    with opener.open(svc.base + "/accounts/login/", form, timeout=10) as resp:
        assert resp.status == 200 and resp.url.endswith("/"), resp.url  # redirected to the page
    assert any(c.name == "sessionid" for c in jar)
    return opener, jar


def call(opener, method, url, payload=None, headers=None):
    req = urllib.request.Request(url, data=json.dumps(payload).encode() if payload is not None else None,
                                 method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_session_login_needs_csrf_and_opens_the_websocket(strict_service):
    svc = strict_service
    opener, jar = login(svc, "dave", "dave-pass-Xy7!")
    cookies = {c.name: c.value for c in jar}
    # a session-authenticated POST without the CSRF header is refused, with it accepted
    status, data = call(opener, "POST", svc.base + "/api/jobs", {"prompt": "a csrf test", **SLOW})
    assert status == 403 and data["code"] == "csrf_failed", data
    status, data = call(opener, "POST", svc.base + "/api/jobs", {"prompt": "a csrf test", **SLOW},
                        {"X-CSRFToken": cookies["csrftoken"]})
    assert status == 201 and data["job"]["mine"] is True, data
    job_id = data["job"]["id"]
    status, data = call(opener, "POST", f"{svc.base}/api/jobs/{job_id}/cancel", {})
    assert status == 403 and data["code"] == "csrf_failed"
    # the same session on the websocket: authenticated, and the owner of that job
    cookie = f"sessionid={cookies['sessionid']}"

    async def ws():
        async with Client(svc, cookie=cookie) as c:
            await c.ping_ok()
            await c.send({"type": "cancel", "job_id": job_id, "request_id": "d-c"})
            msg = await c.until(lambda m: (m.get("request_id") == "d-c" or m.get("job_id") == job_id)
                                and m["type"] in ("cancelling", "cancelled", "error"), 15)
            assert msg["type"] in ("cancelling", "cancelled"), msg
    run(ws())
    status, data = call(opener, "GET", f"{svc.base}/api/jobs/{job_id}")
    assert status == 200 and data["job"]["status"] in ("cancelled", "running")


def test_submissions_are_rate_limited_per_user(strict_service):
    """SUBMISSIONS_PER_MINUTE=4 for carol across HTTP and two websocket connections; bob is not affected."""
    svc = strict_service
    base, tok = svc.base, svc.tokens
    ids = []
    for _ in range(2):
        status, _, raw = http("POST", f"{base}/api/jobs", {"prompt": "rate one", **SLOW}, headers=bearer(tok["carol"]))
        assert status == 201, raw
        ids.append(json.loads(raw)["job"]["id"])

    async def ws():
        for _ in range(2):
            async with Client(svc, token=tok["carol"]) as c:
                queued = await c.submit(prompt="rate two", **SLOW)
                assert queued["type"] == "queued", queued
                ids.append(queued["job_id"])
        async with Client(svc, token=tok["carol"]) as c:
            refused = await c.submit(prompt="rate three", **SLOW)
            assert refused["type"] == "error" and refused["code"] == "rate_limited", refused
            await c.ping_ok()
    run(ws())
    status, _, raw = http("POST", f"{base}/api/jobs", {"prompt": "rate four", **SLOW}, headers=bearer(tok["carol"]))
    assert status == 429 and json.loads(raw)["code"] == "rate_limited", raw
    # an invalid request is refused for what it is, not counted; another user still submits
    status, _, raw = http("POST", f"{base}/api/jobs", {"prompt": "x", "width": 3}, headers=bearer(tok["carol"]))
    assert status == 400 and json.loads(raw)["code"] == "invalid_field"
    status, _, raw = http("POST", f"{base}/api/jobs", {"prompt": "bob is fine", **SLOW}, headers=bearer(tok["bob"]))
    assert status == 201, raw
    ids.append(json.loads(raw)["job"]["id"])
    for job_id in ids:
        status, _, raw = http("POST", f"{base}/api/jobs/{job_id}/cancel", {}, headers=bearer(tok["boss"]))
        assert status in (200, 202, 409), raw
    for job_id in ids:
        assert wait_status(svc, job_id, tok["boss"])["status"] in ("cancelled", "succeeded")


def test_create_api_token_command_and_token_storage(strict_service):
    env = strict_service.env
    out = subprocess.run([sys.executable, "manage.py", "create_api_token", "nobody-here"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "no user" in out.stderr
    token = strict_service.tokens["alice"]
    assert token.startswith("vs_") and len(token) > 40
    # only the hash is stored
    check = ("from videoservice.models import ApiToken as T; import sys; t=sys.argv[-1]; "
             "print(T.objects.filter(digest=T.hash(t)).count(), T.objects.filter(digest=t).count(), "
             "T.objects.get(digest=T.hash(t)).last_used_at is not None)")
    out = subprocess.run([sys.executable, "-c", "import django, os; django.setup(); exec(os.environ['CHECK'])",
                          token], cwd=ROOT, env={**env, "CHECK": check}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0", "True"]


# ---------------------------------------------------------------- Flower
def test_flower_needs_basic_auth_off_loopback(live_service):
    env = {**live_service.env, "HOST": "0.0.0.0", "PORT": str(free_port()), "FLOWER_PORT": str(free_port())}
    env.pop("FLOWER_BASIC_AUTH", None)
    out = subprocess.run([sys.executable, "-m", "scripts.serve"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "FLOWER_BASIC_AUTH" in out.stdout, out.stdout

    from scripts import serve

    with pytest.raises(SystemExit):
        serve.flower_command("10.1.2.3", 5555, {"FLOWER_BASIC_AUTH": "admin:"})
    assert "--address=10.1.2.3" in serve.flower_command("10.1.2.3", 5555, {"FLOWER_BASIC_AUTH": "admin:pw"})[0]

    # and the Flower that serve.py starts (same argv, FLOWER_BASIC_AUTH in its environment) asks for it
    port = free_port()
    fenv = {**live_service.env, "FLOWER_BASIC_AUTH": "admin:s3cret"}
    flower = Proc("flower-auth", serve.flower_command("127.0.0.1", port, fenv)[0], fenv, live_service.tmp)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status = http("GET", f"http://127.0.0.1:{port}/", timeout=5)[0]
                break
            except OSError:
                assert flower.alive() and time.monotonic() < deadline, flower.tail()
                time.sleep(0.3)
        assert status == 401
        good = "Basic " + base64.b64encode(b"admin:s3cret").decode()
        bad = "Basic " + base64.b64encode(b"admin:wrong").decode()
        assert http("GET", f"http://127.0.0.1:{port}/", headers={"Authorization": bad}, timeout=10)[0] == 401
        assert http("GET", f"http://127.0.0.1:{port}/", headers={"Authorization": good}, timeout=10)[0] == 200
    finally:
        flower.stop(grace=5)
    assert BIN.exists()


def non_loopback_address() -> str | None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))  # no packet is sent: this only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_daphne_on_a_public_address_without_bind_address_still_requires_auth(live_service):
    """Guard for a misconfiguration: Daphne bound to a non-loopback address while the settings were
    told loopback (BIND_ADDRESS unset). Requests that arrive on that address, even with a spoofed
    `Host: 127.0.0.1`, are treated as off loopback: auth_required."""
    address = non_loopback_address()
    if address is None:  # no network interface: check the decision itself
        out = subprocess.run([sys.executable, "-c", "import django; django.setup(); from videoservice.auth import "
                              "auth_required as a; print(a(('10.0.0.5', 80)), a(('127.0.0.1', 80)), a(None))"],
                             cwd=ROOT, env=live_service.env, capture_output=True, text=True, timeout=60)
        assert out.stdout.split() == ["True", "False", "False"], out.stderr
        return
    port = free_port()
    env = {k: v for k, v in live_service.env.items() if k not in ("BIND_ADDRESS", "REQUIRE_AUTH")}
    web = Proc("web-public", daphne_argv(address, port), env, live_service.tmp)
    base = f"http://{address}:{port}"
    spoof = {"Host": f"127.0.0.1:{port}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http("GET", base + "/healthz", headers=spoof, timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert web.alive() and time.monotonic() < deadline, web.tail()
            time.sleep(0.3)
        status, _, raw = http("GET", base + "/api/jobs", headers=spoof)
        assert status == 401 and json.loads(raw)["code"] == "auth_required", raw
        status, _, raw = http("POST", base + "/api/jobs", {"prompt": "x"}, headers=spoof)
        assert status == 401 and json.loads(raw)["code"] == "auth_required", raw

        async def ws():
            # refused at the handshake (the address the client really used is no allowed host, so no
            # Origin matches it), or, were it let through, refused as anonymous
            try:
                conn = await websockets.connect(f"ws://{address}:{port}/ws/lobby/", origin=f"http://127.0.0.1:{port}",
                                                additional_headers=spoof)
            except websockets.exceptions.InvalidStatus as exc:
                assert exc.response.status_code == 403
                return
            async with conn:
                msg = json.loads(await asyncio.wait_for(conn.recv(), 10))
                assert msg["type"] == "error" and msg["code"] == "auth_required", msg
                with pytest.raises(websockets.exceptions.ConnectionClosed):
                    await asyncio.wait_for(conn.recv(), 10)
        run(ws())
    finally:
        web.stop(grace=5)


def test_admin_issues_a_token_that_works(strict_service):
    """A superuser adds an API token for alice in the admin; the token is shown once and acts as alice."""
    svc = strict_service
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(svc.base + "/admin/login/", timeout=10).read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"username": "root", "password": "root-pass-Qw3!", "csrfmiddlewaretoken": csrf,
                                   "next": "/admin/"}).encode()
    opener.open(svc.base + "/admin/login/", form, timeout=10).read()
    page = opener.open(svc.base + "/admin/videoservice/apitoken/add/", timeout=10).read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    alice_id = re.search(r'<option value="(\d+)">alice</option>', page).group(1)
    form = urllib.parse.urlencode({"user": alice_id, "name": "from the admin", "csrfmiddlewaretoken": csrf,
                                   "_save": "Save"}).encode()
    with opener.open(svc.base + "/admin/videoservice/apitoken/add/", form, timeout=10) as resp:
        listing = resp.read().decode()
        assert resp.url.endswith("/admin/videoservice/apitoken/"), resp.url
    token = re.search(r"API token for alice: (vs_[A-Za-z0-9_-]+)", listing).group(1)
    assert token not in opener.open(svc.base + "/admin/videoservice/apitoken/", timeout=10).read().decode()
    mine_new = body(http("GET", f"{svc.base}/api/jobs?mine=1&limit=200", headers=bearer(token)))["jobs"]
    mine_old = body(http("GET", f"{svc.base}/api/jobs?mine=1&limit=200",
                         headers=bearer(svc.tokens["alice"])))["jobs"]
    assert [j["id"] for j in mine_new] == [j["id"] for j in mine_old]
    assert http("GET", f"{svc.base}/api/jobs", headers=bearer(token + "x"))[0] == 401
