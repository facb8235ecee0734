"""The web UI's Live mode in a real headless Chromium against the real stack (redis-server, Daphne,
a Celery worker): a live video started from the form plays while it grows (Media Source
Extensions), Enter in the prompt box steers it and the timeline shows the new prompt, Stop ends
it with the final MP4; a second page opened after it started sees the LIVE card and plays it too
(read from GET /api/jobs/<id>/stream from its first byte)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.support.stack import http
from tests.test_browser import playwright_api

RIGHT, UP = "a red circle moving right", "a red circle moving up"


@pytest.fixture(scope="module")
def stack(live_service):
    return live_service  # the shared stack (tests/conftest.py: LIVE_MAX_LEAD_S 1, LIVE_STATUS_EVERY 1)


def open_page(browser, url, lose: str = ""):  # noqa: F811
    """A lobby page; with `lose`, the lobby messages of that type never reach it (the websocket is routed
    through Playwright, which passes everything else on)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    if lose:
        def route(socket):
            server = socket.connect_to_server()
            socket.on_message(server.send)
            server.on_message(lambda message: None if json.loads(message).get("type") == lose else socket.send(message))
        page.route_web_socket(re.compile(r"/ws/lobby/"), route)
    page.goto(url + "/")
    playwright_api.expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "open",
                                                                                timeout=20_000)
    return page


def wait_playing(page, video, min_buffered: float) -> None:
    """The <video> holds at least `min_buffered` seconds and its playback position moves."""
    handle = video.element_handle()
    page.wait_for_function("([v, s]) => v.buffered.length > 0 && v.buffered.end(v.buffered.length - 1) >= s",
                           arg=[handle, min_buffered], timeout=60_000)
    start = video.evaluate("v => v.currentTime")
    page.wait_for_function("([v, t]) => !v.paused && v.currentTime > t + 0.2", arg=[handle, start], timeout=30_000)


def stop_live_videos(page) -> None:
    """A failed test stops what it started: a live video left running would hold the shared stack's worker
    (lobby clients of the next tests keep it watched) until its max_duration_s."""
    stops = [stop for stop in page.get_by_test_id("job-stop").all() if stop.is_visible() and stop.is_enabled()]
    for stop in stops:
        stop.click()
    if stops:
        page.wait_for_timeout(1000)  # the stop message leaves before the page closes


def test_start_watch_steer_and_stop_a_live_video(stack, browser, tmp_path):  # noqa: F811
    expect = playwright_api.expect
    owner = open_page(browser, stack.base)
    viewer = deaf = None
    try:
        expect(owner.locator("#model option[value=builtin]")).to_have_count(1, timeout=20_000)
        owner.check("#live")
        expect(owner.locator("#long-video")).to_be_hidden()  # clip-only options go away
        expect(owner.locator("#max_duration_s")).to_be_visible()
        expect(owner.locator("#submit")).to_have_text("Start live")
        for field, value in (("width", "64"), ("height", "64"), ("steps", "4"), ("seed", "5"), ("fps", "8")):
            owner.fill(f"#{field}", value)
        owner.fill("#prompt", RIGHT)
        owner.press("#prompt", "Enter")  # Enter starts it in Live mode

        job = owner.get_by_test_id("job").first
        expect(job).to_have_attribute("data-live", "1")
        expect(job.get_by_test_id("job-live-badge")).to_be_visible()
        expect(job).to_have_attribute("data-status", "running", timeout=60_000)
        job_id = job.get_attribute("data-job-id")
        stream = job.get_by_test_id("job-stream")
        expect(stream).to_be_visible(timeout=60_000)
        wait_playing(owner, stream, 1.0)  # it plays while it is made
        expect(owner.locator("#submit")).to_have_text("Steer")
        expect(job.get_by_test_id("live-rtf")).to_have_text(re.compile(r"^\d+\.\d\d\u00d7$"), timeout=30_000)
        expect(job.get_by_test_id("live-buffered")).to_have_text(re.compile(r"^\d+\.\d s$"))
        expect(job.get_by_test_id("timeline-entry")).to_have_count(1)
        expect(job.get_by_test_id("timeline-entry").first).to_contain_text(RIGHT)

        # someone else in the lobby, arriving after it started: the LIVE card, and it plays
        viewer = open_page(browser, stack.base)
        seen = viewer.locator(f'[data-testid=job][data-job-id="{job_id}"]')
        expect(seen.get_by_test_id("job-live-badge")).to_be_visible(timeout=20_000)
        expect(seen.get_by_test_id("job-stop")).to_be_hidden()  # not theirs to stop
        expect(seen.get_by_test_id("job-cancel")).to_be_hidden()
        wait_playing(viewer, seen.get_by_test_id("job-stream"), 1.0)
        # and one whose `steered` is lost on the way (a busy lobby): the next live_status names the prompt in
        # force, and the page takes the timeline from the server
        deaf = open_page(browser, stack.base, lose="steered")
        unsteered = deaf.locator(f'[data-testid=job][data-job-id="{job_id}"]')
        expect(unsteered.get_by_test_id("job-live-badge")).to_be_visible(timeout=20_000)

        # steer: the prompt box stays editable, Enter sends it; the timeline gets the new prompt
        owner.fill("#prompt", UP)
        owner.press("#prompt", "Enter")
        entries = job.get_by_test_id("timeline-entry")
        expect(entries).to_have_count(2, timeout=60_000)
        expect(entries.nth(1)).to_contain_text(UP)
        # `steered` sets it; the timeline can also come from the server (a live_status naming the new prompt)
        expect(job).to_have_attribute("data-steer-latency", re.compile(r"^\d+\.\d{3}$"), timeout=30_000)
        latency = float(job.get_attribute("data-steer-latency"))
        assert 0 < latency < 30, latency
        shown = job.get_by_test_id("live-steer-latency").inner_text()
        assert re.fullmatch(r"\d+\.\d\d s", shown) and abs(float(shown[:-2]) - latency) <= 0.006, (shown, latency)
        expect(seen.get_by_test_id("timeline-entry")).to_have_count(2, timeout=30_000)  # the audience sees it
        expect(unsteered.get_by_test_id("timeline-entry")).to_have_count(2, timeout=30_000)
        expect(unsteered.get_by_test_id("timeline-entry").nth(1)).to_contain_text(UP)
        expect(unsteered.get_by_test_id("job-prompt")).to_have_text(UP)
        expect(job.get_by_test_id("job-prompt")).to_have_text(UP)
        wait_playing(owner, stream, 0)  # still playing after the steer
        shot = Path(os.environ.get("BROWSER_SCREENSHOT", tmp_path / "live.png"))
        owner.screenshot(path=str(shot), full_page=True)
        viewer.screenshot(path=str(shot.with_name(shot.stem + "-viewer.png")), full_page=True)

        job.get_by_test_id("job-stop").click()
        expect(job).to_have_attribute("data-status", "succeeded", timeout=60_000)
        video = job.get_by_test_id("job-video")
        expect(video).to_have_count(1)
        expect(job.get_by_test_id("job-stream")).to_have_count(0)
        wait_playing(owner, video, 1.0)
        assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [64, 64]
        expect(job.get_by_test_id("job-live-badge")).to_be_hidden()
        expect(owner.locator("#submit")).to_have_text("Start live")  # the next Enter starts a new one
        from_frame = int(entries.nth(1).get_attribute("data-from-frame"))
        expect(seen).to_have_attribute("data-status", "succeeded", timeout=30_000)
        expect(seen.get_by_test_id("job-video")).to_have_count(1)
        owner.screenshot(path=str(shot.with_name(shot.stem + "-stopped.png")), full_page=True)

        status, _, body = http("GET", f"{stack.base}/api/jobs/{job_id}")
        assert status == 200
        record = json.loads(body)["job"]
        assert record["timeline"] == [{"from_frame": 0, "prompt": RIGHT}, {"from_frame": from_frame, "prompt": UP}]
        assert not owner.errors and not viewer.errors and not deaf.errors, owner.errors + viewer.errors + deaf.errors
    finally:
        stop_live_videos(owner)
        owner.close()
        for page in (viewer, deaf):
            if page is not None:
                page.close()


def test_live_mode_over_the_phoenix_protocol(stack, browser):  # noqa: F811
    """?protocol=phoenix: the page starts, steers and stops a live video over /socket/websocket; its
    player, slowed down until it is far behind, jumps to the live edge."""
    expect = playwright_api.expect
    page = browser.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    try:
        page.goto(stack.base + "/?protocol=phoenix")
        expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "open", timeout=20_000)
        page.check("#live")
        for field, value in (("width", "64"), ("height", "64"), ("steps", "4"), ("seed", "9"), ("fps", "8")):
            page.fill(f"#{field}", value)
        page.fill("#prompt", "a blue square moving left")
        page.press("#prompt", "Enter")
        job = page.get_by_test_id("job").first
        stream = job.get_by_test_id("job-stream")
        wait_playing(page, stream, 0.5)
        # a player that falls behind (here: played at a tenth of the speed) jumps to the live edge
        stream.evaluate("v => { v.playbackRate = 0.1; }")
        expect(job).to_have_attribute("data-caught-up", re.compile(r"^[1-9]"), timeout=60_000)
        assert stream.evaluate("v => v.buffered.end(v.buffered.length - 1) - v.currentTime") < 6
        stream.evaluate("v => { v.playbackRate = 1; }")
        page.fill("#prompt", "a blue square moving down")
        page.press("#prompt", "Enter")
        expect(job.get_by_test_id("timeline-entry")).to_have_count(2, timeout=60_000)
        expect(job.get_by_test_id("live-steer-latency")).to_have_text(re.compile(r"^\d+\.\d\d s$"))
        job.get_by_test_id("job-stop").click()
        expect(job).to_have_attribute("data-status", "succeeded", timeout=60_000)
        expect(job.get_by_test_id("timeline-entry").nth(1)).to_contain_text("a blue square moving down")
        assert not page.errors, page.errors
    finally:
        stop_live_videos(page)
        page.close()
