"""The web UI (real headless Chromium) on a server that requires authentication (`strict_service`
in conftest.py): the login page, the websocket on the login session, and app.js's HTTP fallback
(submit and cancel as POSTs that must carry the CSRF token)."""
from __future__ import annotations

import re
import time

from tests.test_browser import playwright_api

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


def test_staff_pause_the_queue_move_a_job_to_the_front_and_retry_from_the_page(strict_service, browser):  # noqa: F811
    expect = playwright_api.expect
    base = strict_service.base
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(base + "/accounts/login/")
        page.fill("#id_username", "root")
        page.fill("#id_password", "root-pass-Qw3!")
        page.click("button[type=submit]")
        expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "open", timeout=20_000)
        toggle = page.get_by_test_id("dispatch-toggle")
        expect(toggle).to_have_text("pause queue", timeout=10_000)
        toggle.click()
        expect(toggle).to_have_text("resume queue")
        page.fill("#prompt", "a purple circle moving up")
        for field, value in (("num_frames", "8"), ("width", "64"), ("height", "64"), ("steps", "2")):
            page.fill(f"#{field}", value)
        page.click("#submit")
        job = page.get_by_test_id("job").filter(has_text="a purple circle moving up").first
        expect(job).to_have_attribute("data-status", "queued", timeout=20_000)
        time.sleep(1.5)
        expect(job).to_have_attribute("data-status", "queued")  # paused: not dispatched
        job.get_by_test_id("job-front").click()
        expect(job.get_by_test_id("job-status")).to_contain_text("queued", timeout=10_000)
        job.get_by_test_id("job-cancel").click()
        expect(job).to_have_attribute("data-status", "cancelled", timeout=20_000)
        toggle.click()
        expect(toggle).to_have_text("pause queue")
        cancelled = job.get_attribute("data-job-id")
        page.locator(f'[data-job-id="{cancelled}"]').get_by_test_id("job-retry").click()
        newest = page.get_by_test_id("job").first  # the retry: a new card, a new job
        expect(newest).not_to_have_attribute("data-job-id", cancelled, timeout=10_000)
        expect(newest).to_have_attribute("data-status", "succeeded", timeout=120_000)
        expect(page.locator(f'[data-job-id="{cancelled}"]')).to_have_attribute("data-status", "cancelled")
    finally:
        context.close()
