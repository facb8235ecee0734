"""Test-only backends that fake faults which cannot be produced for real on a CPU test host.

Registered through the model configuration (an entry with "backend": "tests.fault_backends:fake_faults")
by the faults suites (tests/support/faults.py). Which fault a model fakes comes from its configured name:

- `fake-oom`: generate() raises torch.OutOfMemoryError after two steps (there is no GPU to exhaust);
  `fake-memoryerror`: the host-memory flavour, a Python MemoryError;
- `fake-nan`: generate() returns float frames full of NaN, as a numerically broken model would;
- `fake-steps`: no fault, a stand-in model that loads at once: it draws a square moving across the
  frames in `steps` steps of 50 ms each. The 20-kill test uses it because each SIGKILL costs the real
  built-in model a fresh load (4-8 s on a busy 2-core host); what is under test there is the worker,
  the queue and the reaper, not the model;
- `fake-hog`: `fake-steps` after touching 1.5 GB of host memory (a big input decoded whole), freed
  again before it returns: what stays is the process's peak.
"""
from __future__ import annotations

import time

import numpy as np

from generator.interface import Backend, GenerationResult

HOG_BYTES = 1536 << 20


class FakeFaultBackend(Backend):
    def __init__(self, config):
        super().__init__(config.model_info())
        self.fault = config.name.removeprefix("fake-")

    def load(self) -> None:
        pass

    def generate(self, request, progress=None, should_cancel=None):
        req = self.fill_defaults(request)
        if self.fault == "hog":
            np.ones(HOG_BYTES // 8).sum()  # every page touched
        if self.fault in ("steps", "hog"):
            from generator.interface import Cancelled

            frames = np.zeros((req.num_frames, req.height, req.width, 3), np.uint8)
            for step in range(1, req.steps + 1):
                time.sleep(0.05)
                if should_cancel is not None and should_cancel():
                    raise Cancelled()
                if progress is not None:
                    progress(step, req.steps, None)
            for t in range(req.num_frames):
                x = (t * 4) % max(1, req.width - 8)
                frames[t, 8:16, x:x + 8] = (230, 30, 30)
            return GenerationResult(frames=frames, fps=float(req.fps), seed=int(req.seed),
                                    native_size=(req.height, req.width))
        for step in (1, 2):
            if progress is not None:
                progress(step, req.steps, None)
        if self.fault == "oom":
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (faked by the test)")
        if self.fault == "memoryerror":
            raise MemoryError("faked by the test: cannot allocate 20 GiB")
        if self.fault == "nan":
            frames = np.full((req.num_frames, req.height, req.width, 3), np.nan, np.float32)
            return GenerationResult(frames=frames, fps=float(req.fps), seed=int(req.seed),
                                    native_size=(req.height, req.width))
        raise AssertionError(f"unknown fake fault {self.fault!r}")


def fake_faults(config):
    return FakeFaultBackend(config)
