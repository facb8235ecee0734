"""The web UI in a real headless Chromium against the whole service started as command 1 starts it.

`scripts/serve.py` (what `./scripts/serve.sh` runs once the installs are done) starts its own
redis-server, Daphne, a Celery worker and Flower on free ports, with the database, media and
Redis data in a temporary folder. Debian's `/usr/bin/chromium`, driven by Playwright (no
browser download), loads `/`, submits a small job from the form, sees progress and a preview,
and the finished `<video>` play; then the understanding features (Evaluate, describe, edit and
regenerate). The service must then stop cleanly on SIGTERM.
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

from playwright import sync_api as playwright_api  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 3.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except Exception:
        return None


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The service as `./scripts/serve.sh` runs it, isolated in a temporary folder."""
    tmp = tmp_path_factory.mktemp("served")
    port, flower_port, redis_port = free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.update({
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "FLOWER_PORT": str(flower_port),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "REDIS_DIR": str(tmp / "redis"),
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "MEDIA_ROOT": str(tmp / "media"),
        "READY_TIMEOUT": "150",
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
    })
    log_path = tmp / "serve.log"
    log = open(log_path, "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "scripts.serve"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while get(f"{base}/healthz") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"service did not become ready (exit {proc.poll()}):\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        # serve.py prints its banner after /healthz answers; wait for it so Flower is up too.
        while "Press Ctrl-C" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"service ready in {time.monotonic() - t0:.1f} s")
        yield {"url": base, "flower": f"http://127.0.0.1:{flower_port}", "proc": proc, "log": log_path, "port": port}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def filled_form(browser, url: str, viewport_height: int, prompt: str, **fields) -> tuple:
    """A page on the service, connected and listing the built-in model, its form filled in: (page, the
    page's uncaught errors as they come)."""
    page = browser.new_page(viewport={"width": 1280, "height": viewport_height})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url + "/")
    playwright_api.expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "open", timeout=20_000)
    playwright_api.expect(page.locator("#model option[value=builtin]")).to_have_count(1, timeout=20_000)
    page.fill("#prompt", prompt)
    for field, value in fields.items():
        page.fill(f"#{field}", str(value))
    return page, errors


def test_submit_from_page_watch_progress_and_play_video(service, browser, tmp_path):
    expect = playwright_api.expect
    page, errors = filled_form(browser, service["url"], 900, "a red circle moving to the right",
                               num_frames=8, width=64, height=64, steps=4, seed=7)
    try:
        page.click("#submit")

        job = page.get_by_test_id("job").first
        expect(job).to_have_attribute("data-job-id", re.compile(r".+"), timeout=20_000)
        # progress: a running status with a preview image of the video being denoised
        expect(job).to_have_attribute("data-status", re.compile(r"running|succeeded"), timeout=90_000)
        expect(job).to_have_attribute("data-status", "succeeded", timeout=120_000)
        assert int(job.get_attribute("data-step") or 0) >= 1  # progress messages reached the page

        video = job.get_by_test_id("job-video")
        expect(video).to_have_count(1)
        handle = video.element_handle()
        page.wait_for_function("v => v.readyState >= 2", arg=handle, timeout=20_000)
        start = video.evaluate("v => v.currentTime")
        page.wait_for_function("([v, t]) => !v.paused && v.currentTime !== t", arg=[handle, start], timeout=20_000)
        width, height = video.evaluate("v => [v.videoWidth, v.videoHeight]")
        assert (width, height) == (64, 64)

        # the finished job reaches the gallery (loaded from GET /api/jobs)
        expect(page.get_by_test_id("gallery-item")).not_to_have_count(0, timeout=20_000)
        shot = Path(os.environ.get("BROWSER_SCREENSHOT", tmp_path / "ui.png"))
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        assert not errors, errors
    finally:
        page.close()


def noisy_png(size: int = 800) -> bytes:
    """A start image whose base64 is well over 1 MiB (Daphne's default message cap)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    pixels[size // 3:size // 2, size // 3:size // 2] = (40, 90, 230)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def test_reconnect_start_image_progress_and_cancel(service, browser):
    """The page reconnects by itself; a longer image-to-video job is watched while it runs (the bar
    moves, the preview appears), and its cancel button ends it."""
    expect = playwright_api.expect
    page = browser.new_page()
    try:
        page.goto(service["url"] + "/")
        status = page.get_by_test_id("conn-status")
        expect(status).to_have_attribute("data-state", "open", timeout=20_000)
        page.evaluate("window.oldSocket = window.videoUI.state.ws; window.oldSocket.close()")  # server gone
        page.wait_for_function("() => { const ws = window.videoUI.state.ws;"
                               " return ws && ws !== window.oldSocket && ws.readyState === 1; }", timeout=20_000)
        expect(status).to_have_attribute("data-state", "open", timeout=5_000)

        expect(page.locator("#model option[value=builtin]")).to_have_count(1, timeout=20_000)
        image = noisy_png()
        assert len(image) * 4 / 3 > 1.5 * 2**20
        page.set_input_files("#image", {"name": "start.png", "mimeType": "image/png", "buffer": image})
        expect(page.locator("#image-preview")).to_be_visible(timeout=10_000)
        page.fill("#prompt", "a blue square moving up")
        for field, value in (("num_frames", "8"), ("width", "64"), ("height", "64"), ("steps", "100")):
            page.fill(f"#{field}", value)
        page.click("#submit")
        job = page.get_by_test_id("job").first
        expect(job).to_have_attribute("data-status", "running", timeout=60_000)
        # progress previews are tiny MP4s of the current estimate, played as a looping clip
        expect(job.get_by_test_id("job-preview-clip")).to_be_visible(timeout=60_000)
        page.wait_for_function("el => el.readyState >= 2 && el.videoWidth > 0",
                               arg=job.get_by_test_id("job-preview-clip").element_handle(), timeout=30_000)
        page.wait_for_function(
            "el => Number(el.getAttribute('aria-valuenow')) > 0",
            arg=job.get_by_test_id("job-progress").element_handle(), timeout=60_000)
        expect(job.get_by_test_id("job-eta")).to_contain_text("step", timeout=10_000)
        job.get_by_test_id("job-cancel").click()
        expect(job).to_have_attribute("data-status", "cancelled", timeout=60_000)
    finally:
        page.close()


def test_long_video_section_sends_only_changed_options(service, browser):
    """The collapsed "Long video" section adds nothing to a plain job; changed inputs are sent and
    the finished card shows the final video (2 chunks of 8 sharing 4 frames, x2 interpolation)."""
    expect = playwright_api.expect
    page = browser.new_page()
    try:
        page.goto(service["url"] + "/")
        expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "open", timeout=20_000)
        expect(page.locator("#model option[value=builtin]")).to_have_count(1, timeout=20_000)
        page.evaluate("""() => { const ws = window.videoUI.state.ws, send = ws.send.bind(ws); window.sent = [];
                                 ws.send = (m) => { window.sent.push(JSON.parse(m)); send(m); }; }""")
        expect(page.locator("#num_chunks")).to_be_hidden()  # collapsed
        page.fill("#prompt", "a red circle moving to the right")
        for field, value in (("num_frames", "8"), ("width", "64"), ("height", "64"), ("steps", "2"), ("fps", "8")):
            page.fill(f"#{field}", value)
        page.click("#submit")
        page.get_by_test_id("long-video").locator("summary").click()
        page.fill("#num_chunks", "2")
        page.select_option("#interpolate", "2")
        page.click("#submit")
        page.wait_for_function("() => window.sent.filter(m => m.type === 'generate').length === 2")
        plain, long = [m for m in page.evaluate("window.sent") if m["type"] == "generate"]
        fields = {"num_chunks", "duration_s", "overlap", "interpolate", "upscale"}
        assert not fields & set(plain), plain
        assert {k: long[k] for k in fields & set(long)} == {"num_chunks": 2, "interpolate": 2}, long
        job = page.get_by_test_id("job").first  # newest first
        expect(job).to_have_attribute("data-status", "succeeded", timeout=120_000)
        expect(job.locator(".job-meta")).to_contain_text("23 frames @ 16 fps")
    finally:
        page.close()


def test_the_page_plays_the_stream_while_the_job_runs_then_the_final_mp4(service, browser):
    """video_chunk events feed a Media Source Extensions <video> while the job runs (frames are
    buffered and play before the job ends); generation_complete replaces it with the final MP4."""
    expect = playwright_api.expect
    page = browser.new_page()
    try:
        page.goto(service["url"] + "/")
        expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "open", timeout=20_000)
        page.fill("#prompt", "a blue square moving left")
        for field, value in (("num_frames", "8"), ("width", "64"), ("height", "64"), ("steps", "6"), ("fps", "8")):
            page.fill(f"#{field}", value)
        page.get_by_test_id("long-video").locator("summary").click()
        page.fill("#num_chunks", "6")
        page.click("#submit")
        job = page.get_by_test_id("job").first
        stream = job.get_by_test_id("job-stream")
        expect(stream).to_be_visible(timeout=60_000)
        page.wait_for_function("""(el) => el.buffered.length > 0 && el.buffered.end(0) > 0.2""",
                               arg=stream.element_handle(), timeout=60_000)
        assert job.get_attribute("data-status") == "running", "the stream played only after the job ended"
        assert int(job.get_attribute("data-streamed")) > 0
        expect(job).to_have_attribute("data-status", "succeeded", timeout=120_000)
        expect(job.get_by_test_id("job-video")).to_have_count(1)
        expect(job.get_by_test_id("job-stream")).to_have_count(0)  # swapped for the final MP4
    finally:
        page.close()


def test_the_page_works_over_the_phoenix_protocol(service, browser):
    """?protocol=phoenix: the same page over /socket/websocket (Phoenix Channels V2)."""
    expect = playwright_api.expect
    page = browser.new_page()
    frames = []
    page.on("websocket", lambda ws: frames.append(ws.url))
    try:
        page.goto(service["url"] + "/?protocol=phoenix")
        expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "open", timeout=20_000)
        page.fill("#prompt", "a green circle moving down")
        for field, value in (("num_frames", "8"), ("width", "64"), ("height", "64"), ("steps", "2")):
            page.fill(f"#{field}", value)
        page.click("#submit")
        job = page.get_by_test_id("job").first
        expect(job).to_have_attribute("data-status", "succeeded", timeout=120_000)
        expect(job.get_by_test_id("job-video")).to_have_count(1)
        assert frames and all("/socket/websocket?vsn=2.0.0" in url for url in frames), frames
    finally:
        page.close()


def test_evaluate_describe_and_edit_and_regenerate(service, browser, tmp_path):
    """The understanding features (the worker consumes the describe queue): a job submitted with
    "Evaluate" shows its metrics and caption, "describe" captions a finished video, and "edit and
    regenerate" puts the caption in the prompt box to edit and submit again."""
    expect = playwright_api.expect
    page, errors = filled_form(browser, service["url"], 1000, "a yellow square moving to the right",
                               num_frames=12, width=64, height=64, steps=12, seed=5)
    try:
        page.check("#evaluate")
        page.click("#submit")

        job = page.get_by_test_id("job").first
        expect(job).to_have_attribute("data-status", "succeeded", timeout=120_000)
        metrics = job.get_by_test_id("job-metrics")
        expect(metrics).to_be_visible()
        expect(metrics).to_contain_text("motion smoothness")
        expect(metrics).to_contain_text("dynamic degree")
        caption = job.get_by_test_id("job-caption")
        expect(caption).to_contain_text(re.compile(r"yellow \w+ moving to the right.*agreement with the prompt"))

        page.evaluate("() => { document.querySelector('[data-testid=job-caption]').textContent = ''; }")
        job.get_by_test_id("job-describe").click()  # a describe job on the describe queue
        expect(caption).to_contain_text(re.compile(r"\u201ca yellow \w+ moving to the right\u201d .*attributes"),
                                        timeout=60_000)

        job.get_by_test_id("job-remix").click()
        described = job.evaluate("el => el.dataset.caption")
        expect(page.locator("#prompt")).to_have_value(described)
        page.fill("#prompt", described.replace("yellow", "blue"))
        page.click("#submit")
        remix = page.get_by_test_id("job").first
        expect(remix.get_by_test_id("job-prompt")).to_have_text(described.replace("yellow", "blue"))
        expect(remix).to_have_attribute("data-status", "succeeded", timeout=120_000)
        expect(remix.get_by_test_id("job-caption")).to_contain_text("blue", timeout=10_000)  # Evaluate stays on
        page.screenshot(path=str(Path(os.environ.get("BROWSER_SCREENSHOT", tmp_path / "describe.png"))),
                        full_page=True)
        assert not errors, errors
    finally:
        page.close()


def test_flower_shows_the_worker_and_its_tasks(service):
    """Flower (started by the launcher) lists the worker and the turns run above (worker.tasks.run_next:
    a turn on a queue, whose result names the job it ran)."""
    with urllib.request.urlopen(service["flower"] + "/workers", timeout=10) as resp:
        assert f"builtin-{service['port']}@" in resp.read().decode()
    query = ("draw=1&start=0&length=50&search%5Bvalue%5D=&order%5B0%5D%5Bcolumn%5D=0"
             "&order%5B0%5D%5Bdir%5D=asc&columns%5B0%5D%5Bdata%5D=name")
    deadline = time.monotonic() + 20
    while True:
        with urllib.request.urlopen(f"{service['flower']}/tasks/datatable?{query}", timeout=10) as resp:
            tasks = json.loads(resp.read())["data"]
        names = {t["name"] for t in tasks}
        if "worker.tasks.run_next" in names and any(t["state"] == "SUCCESS" and "job_id" in str(t.get("result"))
                                                     for t in tasks):
            break
        assert time.monotonic() < deadline, tasks
        time.sleep(0.5)


def test_service_stops_cleanly_on_sigterm(service):
    """Last in this module: SIGTERM to the launcher stops every child (nothing left in their groups)."""
    proc, log = service["proc"], service["log"]
    text = log.read_text()
    pids = [int(p) for p in re.findall(r"started \w+ \(pid (\d+)\)", text)]
    assert len(pids) >= 4, text[-3000:]  # redis, web, worker, flower
    assert get(service["flower"] + "/") == 200
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    print(f"stopped in {time.monotonic() - t0:.1f} s")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
