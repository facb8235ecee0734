"""The service of the faults suites (test_model_faults, test_worker_loss, test_redis_faults,
test_queue_caps): redis-server with appendonly/appendfsync always, Daphne, and Celery workers they
SIGKILL, freeze and restart, named fault-<name>@host, consuming the stand-in models' queue
(tests/fault_backends.py) and the built-in model's. Reaper timings are shortened through settings
env (heartbeat 0.5 s, timeout 4 s, sweep 1 s). Each suite starts its own (the shared `live_service`
is not touched), so that the suites run in parallel.
"""
from __future__ import annotations

import base64
import io
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from tests.support.client import Client
from tests.support.stack import Proc, Stack

SMALL = {"num_frames": 8, "width": 64, "height": 64, "steps": 3}
FAULT_QUEUE = "faults"
FAKE_ENTRY = {"backend": "tests.fault_backends:fake_faults", "pipeline": "ltx", "queue": FAULT_QUEUE,
              "defaults": {"steps": 4, "width": 64, "height": 64, "frames": 9, "fps": 8},
              "limits": {"min_size": 32, "max_size": 128, "max_frames": 25, "max_steps": 1000}}
MODELS = {
    "fake-oom": FAKE_ENTRY,
    "fake-memoryerror": FAKE_ENTRY,
    "fake-nan": FAKE_ENTRY,
    "fake-steps": FAKE_ENTRY,
    # touches 1.5 GB, served by a worker that replaces pool processes past 1 GB (the recycling test)
    "fake-hog": {**FAKE_ENTRY, "queue": "recycle"},
    # served by no worker: its jobs stay queued (back-pressure test)
    "fake-parked": {**FAKE_ENTRY, "queue": "parked"},
    # a real diffusers entry whose checkpoint folder is corrupt (a model_index.json naming components that are
    # not there): it passes the start-up check, and its load fails for real
    "broken-model": {"path": "checkpoints/corrupt", "pipeline": "ltx", "dtype": "float32",
                     "queue": FAULT_QUEUE, "defaults": {"steps": 2, "width": 32, "height": 32, "frames": 9},
                     "limits": {"min_size": 32, "max_size": 128}},
}
# malformed entries: each is reported at start-up (log and /healthz) naming the entry and field, and skipped
MALFORMED = {
    "bad-type": ({**FAKE_ENTRY, "defaults": {**FAKE_ENTRY["defaults"], "steps": "ten"}}, "defaults.steps"),
    "bad-key": ({**FAKE_ENTRY, "memory": {"vae_tilling": True}}, "memory.vae_tilling"),
    "bad-path": ({"path": "checkpoints/not-there", "pipeline": "ltx", "queue": FAULT_QUEUE}, "path"),
    "bad-kind": ({**FAKE_ENTRY, "pipeline": "sora"}, "pipeline"),
}
MODELS.update({name: entry for name, (entry, _) in MALFORMED.items()})


FAULT_ENV = {
    "JOB_HEARTBEAT_S": "0.5",
    "JOB_HEARTBEAT_TIMEOUT_S": "4",
    "JOB_REAPER_INTERVAL_S": "1",
    "JOB_MAX_ATTEMPTS": "2",
    "MAX_QUEUED_JOBS": "12",
    "MAX_QUEUED_PER_OWNER": "8",
    "SUBMISSIONS_PER_MINUTE": "1000",
    "STREAM_IDLE_S": "6",
}

KILL_JOB = {"model": "fake-steps", "num_frames": 9, "width": 64, "height": 64, "steps": 30}  # 1.5 s


class FaultStack(Stack):
    """Workers named fault-<name>@host, consuming the fakes' queue and the built-in model's."""

    def start_worker(self, name: str = "w1", queues: str = f"{FAULT_QUEUE},builtin", **kwargs) -> Proc:
        return super().start_worker(name, queues, node=kwargs.pop("node", f"fault-{name}@%h"), **kwargs)


@contextmanager
def fault_service(tmp: Path, database_url: str | None = None) -> Iterator[FaultStack]:
    """Redis, the database (PostgreSQL when `database_url` says so), Daphne and worker w1, healthy."""
    corrupt = tmp / "checkpoints" / "corrupt"
    corrupt.mkdir(parents=True)
    (corrupt / "model_index.json").write_text(json.dumps({
        "_class_name": "LTXPipeline", "_diffusers_version": "0.42.1",
        "transformer": ["diffusers", "LTXVideoTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLLTXVideo"]}))
    with FaultStack(tmp, env=FAULT_ENV, models=MODELS, persist_redis=True, database_url=database_url) as svc:
        svc.start_redis()
        svc.migrate()
        svc.start_web()
        svc.start_worker("w1")
        svc.wait_healthy()
        yield svc


def png_b64() -> str:
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:40, 8:32] = (230, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


async def submit_parked(c: Client) -> dict:
    return await c.submit(prompt="parked", model="fake-parked")


async def cancel_all(pairs) -> None:
    for c, q in pairs:
        await c.send({"type": "cancel", "job_id": q["job_id"]})
        await c.until(lambda m: m.get("job_id") == q["job_id"] and m["type"] == "cancelled", 10)


def drained(svc: Stack, timeout: float = 180) -> None:
    """Wait until the jobs of earlier tests have left the queue (a loaded machine runs them late):
    the caps tests count every waiting job."""
    def queued() -> list:
        return svc.select("SELECT model, prompt FROM videoservice_job WHERE status = ?", ("queued",))
    deadline = time.monotonic() + timeout
    while left := queued():
        assert time.monotonic() < deadline, f"earlier tests left jobs queued: {left}"
        time.sleep(1)
