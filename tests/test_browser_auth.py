"""The web UI (real headless Chromium) on a server that requires authentication (`strict_service`
in conftest.py): the login page, the websocket on the login session, and app.js's HTTP fallback
(submit and cancel as POSTs that must carry the CSRF token)."""
from __future__ import annotations

import re
import time

from tests.test_browser import browser, playwright_api  # noqa: F401  (fixture)

BLOCK_WEBSOCKET = """
window.WebSocket = class { constructor() { throw new Error("websocket blocked by the test"); } };
window.WebSocket.OPEN = 1;
"""


def test_login_then_websocket_and_http_posts_with_csrf(strict_service, browser):  # noqa: F811
    expect = playwright_api.expect
    base = strict_service.base
    context = browser.new_context()
    errors = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(base + "/")
        expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
        page.fill("#id_username", "dave")
        page.fill("#id_password", "dave-pass-Xy7!")
        page.click("button[type=submit]")
        expect(page).to_have_url(base + "/")
        # the websocket authenticates with the session cookie; the models come from GET /api/models
        expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "open", timeout=20_000)
        expect(page.locator("#model option[value=builtin]")).to_have_count(1, timeout=20_000)
        page.fill("#prompt", "a green circle moving left")
        for field, value in (("num_frames", "8"), ("width", "64"), ("height", "64"), ("steps", "2")):
            page.fill(f"#{field}", value)
        page.click("#submit")
        # (the page also lists every public job of the lobby: pick ours by its prompt)
        job = page.get_by_test_id("job").filter(has_text="a green circle moving left").first
        expect(job).to_have_attribute("data-status", "succeeded", timeout=120_000)

        # app.js without a websocket: it submits and cancels over HTTP, with X-CSRFToken
        http_page = context.new_page()
        http_page.on("pageerror", lambda exc: errors.append(str(exc)))
        http_page.add_init_script(BLOCK_WEBSOCKET)
        http_page.goto(base + "/")
        expect(http_page.locator("#model option[value=builtin]")).to_have_count(1, timeout=20_000)
        http_page.fill("#prompt", "a yellow square moving down")
        for field, value in (("num_frames", "8"), ("width", "64"), ("height", "64"), ("steps", "80")):
            http_page.fill(f"#{field}", value)
        http_page.click("#submit")
        card = http_page.get_by_test_id("job").filter(has_text="a yellow square moving down").first
        expect(card).to_have_attribute("data-job-id", re.compile(r".+"), timeout=20_000)
        job_id = card.get_attribute("data-job-id")
        card.get_by_test_id("job-cancel").click()
        fetch_status = ("id => fetch('/api/jobs/' + id, {credentials: 'same-origin'})"
                        ".then(r => r.json()).then(d => d.job.status)")
        deadline = time.monotonic() + 60
        while http_page.evaluate(fetch_status, job_id) != "cancelled":
            assert time.monotonic() < deadline, "the HTTP cancel did not cancel the job"
            time.sleep(0.3)
        # the same POST without the header is refused: the CSRF check is real
        refused = http_page.evaluate("""() => fetch('/api/jobs', {method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/json'}, body: JSON.stringify({prompt: 'x'})})
            .then(r => r.json().then(d => [r.status, d.code]))""")
        assert refused == [403, "csrf_failed"]
        assert not errors, errors
    finally:
        context.close()
