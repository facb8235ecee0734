"""A cross-port hijack that worked once, repeated in real Chromium against the real service: a page on
another loopback port, with the victim's cookies, can neither read the lobby (private events) nor
cancel the victim's job (websocket or a text/plain form POST), anonymous on loopback or signed in
on a server that requires authentication. (The other attacks: tests/test_hardening.py.)"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.stack import wait_for
from tests.test_browser import playwright_api

SLOW = {"num_frames": 8, "width": 64, "height": 64, "steps": 100}

ATTACK_PAGE = """<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="f" method="POST" action="{base}/api/jobs/{job_id}/cancel" enctype="text/plain" target="sink">
<input name='{{"x":"' value='"}}'></form>
<script>
window.result = {{opened: false, messages: [], closed: null}};
const ws = new WebSocket("{ws}");
ws.onopen = () => {{ window.result.opened = true; ws.send(JSON.stringify({{type: "cancel", job_id: "{job_id}"}})); }};
ws.onmessage = (e) => window.result.messages.push(e.data);
ws.onclose = (e) => {{ window.result.closed = e.code; }};
document.getElementById("f").submit();
</script></body></html>"""


class AttackerSite:
    """A real HTTP server on another loopback port, serving the attacker's page."""

    def __init__(self):
        page = {"html": ""}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = page["html"].encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.page = page
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def page(browser):  # noqa: F811
    """A page in a fresh browser context (its own cookies)."""
    context = browser.new_context()
    yield context.new_page()
    context.close()


@pytest.fixture
def attacker():
    site = AttackerSite()
    yield site
    site.close()


def same_origin_post(page, url: str, body: dict) -> tuple:
    """A JSON POST from the service's own page (same origin, with the CSRF token): (status, JSON answer)."""
    return tuple(page.evaluate("""async ([url, body]) => {
        const csrf = (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || "";
        const resp = await fetch(url, {method: "POST", credentials: "same-origin",
            headers: {"Content-Type": "application/json", "X-CSRFToken": csrf}, body: JSON.stringify(body)});
        return [resp.status, await resp.json()];
    }""", [url, body]))


def submit_private_job(page, base: str, fields: dict = SLOW) -> str:
    """A private job submitted from the service's own page."""
    status, answer = same_origin_post(page, base + "/api/jobs",
                                      {"prompt": "a private magenta square moving up", "private": True, **fields})
    assert status == 201, answer
    return answer["job"]["id"]


def owner_cancels(page, base: str, job_id: str) -> None:
    """The control: the same cancel sent from the service's own page lands (and the slow job stops
    instead of running its 100 steps on the shared worker)."""
    status, answer = same_origin_post(page, f"{base}/api/jobs/{job_id}/cancel", {})
    assert status in (200, 202), answer


def attack_fails(page, attacker: AttackerSite, base: str, job_id: str) -> None:
    """The attacker's page neither opened the lobby nor got its form POST through."""
    result = attack(page, attacker, base, job_id)
    assert result["opened"] is False and result["messages"] == [], result
    assert result["form_statuses"] == [403], result


def attack(page, attacker: AttackerSite, base: str, job_id: str) -> dict:
    ws = base.replace("http://", "ws://") + "/ws/lobby/"
    attacker.page["html"] = ATTACK_PAGE.format(base=base, ws=ws, job_id=job_id)
    statuses = []
    page.on("response", lambda r: statuses.append(r.status) if "/cancel" in r.url else None)
    page.goto(attacker.url)
    page.wait_for_function("() => window.result.closed !== null", timeout=20_000)
    page.wait_for_timeout(1000)  # anything the socket or the form could still do
    return {**page.evaluate("window.result"), "form_statuses": statuses}


def control_same_origin_socket_opens(page, base: str) -> None:
    """The same browser on the service's own page does open the lobby: the attack failing means something."""
    page.goto(base + "/")
    opened = page.evaluate("""(ws) => new Promise((ok) => {
        const s = new WebSocket(ws); s.onopen = () => { s.close(); ok(true); }; s.onclose = () => ok(false); })""",
                           base.replace("http://", "ws://") + "/ws/lobby/")
    assert opened is True


def test_a_page_on_another_loopback_port_cannot_read_or_cancel_anonymous_jobs(live_service, page, attacker):
    base = live_service.base
    page.goto(base + "/")
    job_id = submit_private_job(page, base)
    control_same_origin_socket_opens(page, base)
    attack_fails(page, attacker, base, job_id)
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies(base))
    assert live_service.row(job_id)["cancel_requested"] == 0  # the cancels did not land
    page.goto(base + "/")
    owner_cancels(page, base, job_id)
    assert live_service.wait_job(job_id, headers={"Cookie": cookie})["status"] == "cancelled"


def test_a_page_on_another_loopback_port_cannot_use_a_login_session(strict_service, page, attacker):
    base = strict_service.base
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", "dave")
    page.fill("#id_password", "dave-pass-Xy7!")
    page.click("button[type=submit]")
    playwright_api.expect(page).to_have_url(base + "/")
    job_id = submit_private_job(page, base)
    attack_fails(page, attacker, base, job_id)
    assert strict_service.stack.row(job_id)["cancel_requested"] == 0  # the cancels did not land
    page.goto(base + "/")
    owner_cancels(page, base, job_id)
    wait_for(lambda: strict_service.stack.row(job_id)["status"] == "cancelled", 30, "the owner's cancel")
