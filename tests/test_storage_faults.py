"""Media storage faults on real parts: a Daphne whose media folder is a full 16 KB tmpfs (in its own
mount namespace, `unshare`), beside the shared live service's Redis, database and worker.

A start-image submission there used to answer 500 and leave a queued row without its image (which
later ran without it and took another job's turn) plus an empty file."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.support.stack import ROOT, http, wait_for
from tests.test_service import SMALL, png_b64


def full_folder_launcher(folder: Path) -> tuple:
    """Runs a process in its own mount namespace where `folder` is a 16 KB tmpfs filled to the last
    byte, its inputs/ and videos/<year>/<month> folders made first (so the file itself is what cannot
    be written)."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is missing")
    probe = subprocess.run(["unshare", "--map-root-user", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.fail(f"unshare --mount is not permitted here ({probe.stderr.decode()[:200]})")
    months = " ".join(f'"$0/{kind}/{datetime.now(timezone.utc):%Y}/{m:02d}"' for kind in ("inputs", "videos")
                      for m in range(1, 13))
    script = (f'mount -t tmpfs -o size=16k tmpfs "$0" && mkdir -p {months} '
              '&& { head -c 1048576 /dev/zero > "$0/fill" 2>/dev/null; exec "$@"; }')
    return ("unshare", "--map-root-user", "--mount", "--", "sh", "-c", script, str(folder))


@pytest.fixture(scope="module")
def full_media(live_service, tmp_path_factory):
    media = tmp_path_factory.mktemp("full-media")
    web = live_service.start_web("full-media", env={"MEDIA_ROOT": str(media)}, launcher=full_folder_launcher(media))
    base = live_service.url("full-media")
    try:
        wait_for(lambda: http("GET", f"{base}/healthz?timeout=1", timeout=5)[0] == 200, 120, "full-media web", [web])
        yield base, web, Path(f"/proc/{web.pid}/root") / str(media).lstrip("/")
    finally:
        web.stop(grace=5)


def files_in(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def test_a_submission_to_a_full_media_folder_leaves_no_row_no_file_and_no_turn(live_service, full_media):
    base, web, media = full_media
    assert list(files_in(media)) == ["fill"]  # the namespace's view: the tmpfs, full
    prompt = f"a square on a full disk {uuid.uuid4().hex[:8]}"
    status, headers, body = http("POST", f"{base}/api/jobs", {"prompt": prompt, "image": png_b64((256, 256)), **SMALL})
    answer = json.loads(body)
    assert (status, answer["code"]) == (503, "unavailable"), body
    assert int(headers["Retry-After"]) > 0 and str(media.name) not in answer["message"], answer
    assert list(files_in(media)) == ["fill"]  # the partial start image was removed
    listed = json.loads(http("GET", f"{live_service.base}/api/jobs?limit=200")[2])["jobs"]
    assert not [job for job in listed if job["prompt"] == prompt]  # no row
    # the same web process serves a job that has no file to store; it runs on the shared worker
    status, _, body = http("POST", f"{base}/api/jobs", {"prompt": prompt, **SMALL})
    assert status == 201, body
    assert live_service.wait_job(json.loads(body)["job"]["id"], timeout=120)["status"] == "succeeded"


def test_a_stored_video_that_is_gone_answers_410_not_500(live_service):
    status, _, body = http("POST", f"{live_service.base}/api/jobs", {"prompt": "a short-lived video", **SMALL})
    job_id = json.loads(body)["job"]["id"]
    assert live_service.wait_job(job_id, timeout=120)["status"] == "succeeded"
    [stored] = (live_service.tmp / "media" / "videos").rglob(f"{job_id}.mp4")
    stored.unlink()  # removed by hand, a lost volume
    for method, path, headers in (("GET", "video", {}), ("HEAD", "video", {}), ("GET", "video", {"Range": "bytes=0-9"}),
                                  ("GET", "stream", {})):
        status, _, body = http(method, f"{live_service.base}/api/jobs/{job_id}/{path}", headers=headers)
        assert status == 410, (method, path, status, body)
        if method == "GET":
            answer = json.loads(body)
            assert answer["code"] == "not_found" and answer["message"] == "the video of this job is no longer stored"


STORE_ON_A_FULL_DISK = """
import json, os, uuid
from django.utils import timezone
from generator.interface import GenerationError
from videoservice.models import Job, store_video
job = Job(id=uuid.uuid4(), created_at=timezone.now())
try:
    store_video(job, os.urandom(256 * 1024))
    outcome = "stored"
except GenerationError as exc:
    outcome = str(exc)
print("outcome:", json.dumps(outcome))
"""


def test_a_video_that_does_not_fit_the_disk_leaves_no_partial_file(live_service, tmp_path):
    """The worker's store of a finished MP4 on a full media folder (a 16 KB tmpfs in a mount namespace of
    its own): a clear error for the job (and no server path), and no partial MP4 left behind."""
    media = tmp_path / "media"
    media.mkdir()
    store_then_list = f'{sys.executable} manage.py shell -c "$1" && find "$2" -type f -printf "%P %s\\n"'
    out = subprocess.run([*full_folder_launcher(media), "sh", "-c", store_then_list, "sh", STORE_ON_A_FULL_DISK,
                          str(media)], cwd=ROOT, env={**live_service.env, "MEDIA_ROOT": str(media)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    [outcome] = [json.loads(line.removeprefix("outcome: ")) for line in lines if line.startswith("outcome: ")]
    files = lines[lines.index(next(line for line in lines if line.startswith("outcome: "))) + 1:]
    assert outcome.startswith("the video could not be stored (OSError: [Errno 28] No space left on device")
    assert str(media) not in outcome, outcome
    assert [line.split()[0] for line in files] == ["fill"], files  # the partial MP4 was removed
