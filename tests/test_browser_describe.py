"""The web UI's understanding features in headless Chromium against the service as serve.py starts it
(its worker consumes the describe queue): a job submitted with "Evaluate" shows its metrics and
caption, "describe" captions a finished video, and "edit and regenerate" puts the caption in the
prompt box to edit and submit again."""
from __future__ import annotations

import os
import re
from pathlib import Path

from tests.test_browser import playwright_api, service  # noqa: F401 (fixture)


def test_evaluate_describe_and_edit_and_regenerate(service, browser, tmp_path):  # noqa: F811
    expect = playwright_api.expect
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(service["url"] + "/")
        expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "open", timeout=20_000)
        expect(page.locator("#model option[value=builtin]")).to_have_count(1, timeout=20_000)
        page.fill("#prompt", "a yellow square moving to the right")
        for field, value in (("num_frames", "12"), ("width", "64"), ("height", "64"), ("steps", "12"),
                             ("seed", "5")):
            page.fill(f"#{field}", value)
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
