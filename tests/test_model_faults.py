"""A job whose model fails, on real parts (tests/support/faults.py): a faked OOM, NaN output, a model
that does not load, malformed models.json entries, a corrupt start image, a pool process that took
too much memory; each time the job fails with a reason and the worker serves the next one.
"""
from __future__ import annotations

import json
import re

import pytest

from tests.support.client import Client, run
from tests.support.faults import MALFORMED, SMALL, fault_service, png_b64
from tests.support.stack import Stack, http, wait_for


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    with fault_service(tmp_path_factory.mktemp("faults")) as svc:
        yield svc


async def _fails_then_next_succeeds(svc: Stack, c: Client, job: dict, expect: str) -> dict:
    pools = svc.pool_pids("w1")
    queued = await c.submit(**job)
    failed = await c.terminal(queued["job_id"])
    assert failed["type"] == "generation_failed", failed
    assert re.search(expect, failed["error"]), failed["error"]
    row = svc.job(queued["job_id"])
    assert row["status"] == "failed" and re.search(expect, row["error"]), row
    nxt = await c.submit(prompt="a blue square moving right", **SMALL)
    done = await c.terminal(nxt["job_id"])
    assert done["type"] == "generation_complete", done
    assert svc.pool_pids("w1") == pools  # the same pool process: nothing crashed or restarted
    return failed


def test_faked_oom_fails_the_job_and_the_worker_serves_the_next(faults):
    async def scenario():
        async with Client(faults) as c:
            failed = await _fails_then_next_succeeds(faults, c, {"prompt": "x", "model": "fake-oom"},
                                                     r"^out of memory running model fake-oom at 64x64, 9 frames")
            assert failed["retriable"] is True and "OutOfMemoryError" in failed["error"]
            failed = await _fails_then_next_succeeds(faults, c, {"prompt": "x", "model": "fake-memoryerror"},
                                                     r"^out of memory running model fake-memoryerror")
            assert "MemoryError" in failed["error"]
    run(scenario())


def test_faked_nan_output_fails_the_job_and_the_worker_serves_the_next(faults):
    async def scenario():
        async with Client(faults) as c:
            failed = await _fails_then_next_succeeds(faults, c, {"prompt": "x", "model": "fake-nan"},
                                                     r"produced NaN/Inf values")
            assert failed["retriable"] is False
    run(scenario())


def test_model_that_fails_to_load_fails_the_job_and_the_worker_serves_the_next(faults):
    async def scenario():
        async with Client(faults) as c:
            await _fails_then_next_succeeds(faults, c, {"prompt": "x", "model": "broken-model"},
                                            r"^model 'broken-model' could not be loaded: .*corrupt")
    run(scenario())


def test_malformed_model_entries_are_reported_at_start_up_and_the_others_serve(faults):
    """A wrong type, an unknown key, a missing checkpoint folder, an unknown pipeline kind: each is named
    (entry and field) in the web's and the worker's start-up log and in /healthz; asking for such a model
    is a 400 (unknown model), never a 500; the configured models next to them are served."""
    status, _, body = http("GET", faults.base + "/healthz")
    assert status == 200, body
    reported = {e["model"]: e for e in json.loads(body)["model_config_errors"]}
    assert {name: reported[name]["field"] for name in MALFORMED} == {n: f for n, (_, f) in MALFORMED.items()}
    assert "valid integer" in reported["bad-type"]["message"] and "not-there" in reported["bad-path"]["message"]
    assert "unknown pipeline kind 'sora'" in reported["bad-kind"]["message"]
    for proc in (faults.webs["web"][0], faults.workers["w1"]):
        log = proc.log_path.read_text(errors="replace")
        for name, (_, field) in MALFORMED.items():
            assert f"model {name!r}: {field}:" in log, (proc.name, name)
    status, _, body = http("GET", faults.base + "/api/models")
    names = {m["name"] for m in json.loads(body)["models"]}
    assert status == 200 and not names & set(MALFORMED) and {"fake-steps", "broken-model"} <= names
    for name in MALFORMED:
        status, _, body = http("POST", faults.base + "/api/jobs", {"prompt": "x", "model": name},
                               headers={"Origin": faults.origin})
        assert status == 400 and name in body.decode(), (status, body)

    async def scenario():
        async with Client(faults) as c:
            done = await c.terminal((await c.submit(prompt="a cat", model="fake-steps"))["job_id"])
            assert done["type"] == "generation_complete", done
    run(scenario())


def test_corrupt_start_image_fails_the_job_and_the_worker_serves_the_next(faults):
    """The image passed validation; its stored copy is then damaged before the worker reads it."""
    async def scenario():
        async with Client(faults) as c:
            blocker = await c.submit(prompt="a yellow triangle moving down", **{**SMALL, "steps": 100})
            await c.until(lambda m: m.get("job_id") == blocker["job_id"] and m["type"] == "progress", 60)
            queued = await c.submit(prompt="a red square moving left", image=png_b64(), **SMALL)
            stored = list((faults.tmp / "media" / "inputs").rglob(f"{queued['job_id']}.png"))
            assert len(stored) == 1, stored
            stored[0].write_bytes(stored[0].read_bytes()[:40])  # truncated: header only
            await c.send({"type": "cancel", "job_id": blocker["job_id"]})
            assert (await c.terminal(blocker["job_id"]))["type"] == "cancelled"
            pools = faults.pool_pids("w1")
            failed = await c.terminal(queued["job_id"])
            assert failed["type"] == "generation_failed", failed
            assert failed["error"].startswith("the start image could not be read"), failed
            # the file is named, not where the server keeps it (users and the lobby see this text)
            assert f"{queued['job_id']}.png" in failed["error"] and str(faults.tmp) not in failed["error"], failed
            nxt = await c.submit(prompt="a red square moving left", image=png_b64(), **SMALL)
            assert (await c.terminal(nxt["job_id"]))["type"] == "generation_complete"
            assert faults.pool_pids("w1") == pools
    run(scenario())


def _peak_mb(pid: int) -> float:
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def test_a_pool_process_whose_job_took_much_memory_is_replaced(faults):
    """WORKER_MAX_MEMORY_MB: memory a big job took is given back (the pool process that peaked past it
    is replaced after the job), not kept by the worker for good. (That ordinary jobs keep their pool
    process, under the default, is checked by the fails-then-next-succeeds tests above.)"""
    faults.start_worker("recycler", "recycle", env={"WORKER_MAX_MEMORY_MB": "1024"})
    try:
        before = faults.pool_pids("recycler")
        assert len(before) == 1 and _peak_mb(before[0]) < 1024, _peak_mb(before[0])
        status, _, body = http("POST", f"{faults.base}/api/jobs", {"prompt": "a hog", "model": "fake-hog"})
        assert status == 201, body
        assert faults.wait_job(json.loads(body)["job"]["id"], timeout=60)["status"] == "succeeded"
        wait_for(lambda: faults.pool_pids("recycler") not in ([], before), 30, "a fresh pool process",
                 [faults.workers["recycler"]])
        after = faults.pool_pids("recycler")
        assert len(after) == 1 and _peak_mb(after[0]) < 1024, after
    finally:
        faults.stop_worker("recycler")
