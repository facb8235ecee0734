"""Endless video for live jobs: chunk after chunk, each continuing the frames before it, each made
under the prompt in force when it starts (a steer changes it between two chunks).

`LiveVideo(backend, request, prompt_at)` iterates over `LiveChunk`s of final frames:

- A backend with a native chunk-by-chunk generator (`backend.live_chunks(request, prompt_at,
  should_cancel)`: Helios, the causal built-in model) is driven as it is: each yielded batch is
  final and continues from the model's own history.
- Every other backend continues from its last frames, as long videos do
  (generator/longvideo.py `extend`): chunk i > 0 gets the previous chunk's last `k` frames as its
  start frames (a backend without start frames: none, and the chunks cross-fade), and its first
  `k` frames, which re-create those, are blended into them with a linear ramp. The `k` frames
  the next chunk will blend are held back; `tail()` gives them when the video ends.

A steer shows from the first frame of the chunk made under it (`LiveChunk.first_frame`), which
starts from the last frames made under the previous prompt: no jump at the seam. Nothing keeps the
whole video: memory stays flat however long the session runs.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional

import numpy as np

from generator.interface import Backend, Cancelled, CancelCheck, GenerationRequest
from generator.longvideo import blend_overlap, conditioned_frames

PromptAt = Callable[[int], str]  # chunk index -> the prompt in force when that chunk starts

LIVE_OVERLAP = 2  # frames a chunk continues from: few enough that a steer turns at once (measured:
# with 4, the built-in model keeps the old motion for ~6 more frames; with 2 it turns within 2)


@dataclass
class LiveChunk:
    frames: np.ndarray  # T x H x W x 3 uint8, final
    first_frame: int  # index of frames[0] in the whole session
    prompt: str  # the prompt this chunk was made under
    index: int  # the chunk's number (0-based)


class LiveVideo:
    def __init__(self, backend: Backend, request: GenerationRequest, prompt_at: PromptAt,
                 should_cancel: Optional[CancelCheck] = None, overlap: int = LIVE_OVERLAP):
        self.backend, self.prompt_at, self.should_cancel = backend, prompt_at, should_cancel
        self.request = backend.fill_defaults(request)
        self.native = getattr(backend, "live_chunks", None)
        self.cond = 0 if self.native else conditioned_frames(backend, overlap, self.request.num_frames)
        self.shared = 0 if self.native else (self.cond or overlap)
        if not self.native and not 1 <= self.shared < self.request.num_frames:
            raise ValueError(f"a live chunk of {self.request.num_frames} frames cannot share {self.shared}")
        self.emitted = 0  # frames handed out
        self.held: Optional[np.ndarray] = None  # the last chunk's frames the next one blends
        self.prompts: list = []  # the prompt each chunk started under
        self.last_chunk_s = 0.0  # seconds the backend took to make the last chunk

    def __iter__(self) -> Iterator[LiveChunk]:
        chunks = self._native() if self.native else self._continued()
        for index in itertools.count():
            started = time.perf_counter()
            frames = next(chunks, None)
            if frames is None:
                return
            self.last_chunk_s = time.perf_counter() - started
            chunk = LiveChunk(frames=frames, first_frame=self.emitted, prompt=self.prompts[index], index=index)
            self.emitted += len(frames)
            yield chunk

    def tail(self) -> Optional[np.ndarray]:
        """The frames held back for blending: the video's last frames once it stops."""
        held, self.held = self.held, None
        return held

    def _prompt(self, index: int) -> str:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled()
        prompt = self.prompt_at(index)
        self.prompts.append(prompt)
        return prompt

    def _native(self) -> Iterator[np.ndarray]:
        def prompt_at(index: int) -> str:
            return self._prompt(index)
        chunks = self.native(self.request, prompt_at, self.should_cancel)
        try:
            for frames in chunks:
                yield np.asarray(frames)
        finally:
            chunks.close()

    def _continued(self) -> Iterator[np.ndarray]:
        req, k = self.request, self.shared
        for index in itertools.count():
            chunk_req = replace(req, prompt=self._prompt(index), seed=(req.seed + index) % 2**31)
            if index and self.cond:
                chunk_req = replace(chunk_req, start_frames=self.held, image=self.held[-1])
            elif index:
                chunk_req = replace(chunk_req, start_frames=None, image=None)
            frames = self.backend.generate(chunk_req, should_cancel=self.should_cancel).frames
            if self.held is not None:
                frames = blend_overlap(self.held, frames, k)
            self.held = np.ascontiguousarray(frames[-k:])
            yield frames[:-k]
