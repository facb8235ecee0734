"""The built-in model behind the common backend interface (the service's default model)."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
from PIL import Image

from generator.builtin import world
from generator.builtin.info import INFO, NATIVE_MAX_SIDE, NATIVE_SHORT_SIDE
from generator.builtin.sample import BuiltinPipeline
from generator.interface import (DEFAULT_STRENGTH, Backend, CancelCheck, GenerationError, GenerationRequest,
                                 GenerationResult, ModelInfo, ProgressCallback)
from generator.postprocess import resize_frames, sharpen_frames

WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights", "builtin")


def native_size(height: int, width: int) -> tuple:
    """Short side 64, long side in proportion (multiple of 16, at most 128): the canvas the U-Net fills."""
    short, long = sorted((height, width))
    long_native = min(NATIVE_MAX_SIDE, max(NATIVE_SHORT_SIDE, round(NATIVE_SHORT_SIDE * long / short / 16) * 16))
    return (NATIVE_SHORT_SIDE, long_native) if height <= width else (long_native, NATIVE_SHORT_SIDE)


def image_to_tensor(image: np.ndarray, size: tuple) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x 1 x h x w in [-1, 1] at the native size."""
    resized = np.asarray(Image.fromarray(image).convert("RGB").resize((size[1], size[0]), Image.Resampling.BICUBIC))
    return torch.from_numpy(resized.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0).unsqueeze(1)


class BuiltinBackend(Backend):
    max_start_frames = 6  # trained with 0, 1 or 2-6 given leading frames

    def __init__(self, path: Optional[str] = None, info: ModelInfo = INFO):
        super().__init__(info)
        self.path = path or os.environ.get("BUILTIN_MODEL_PATH") or WEIGHTS
        self.pipe: Optional[BuiltinPipeline] = None

    def load(self) -> None:
        self.pipe = BuiltinPipeline.from_pretrained(self.path)

    def unload(self) -> None:
        self.pipe = None

    def generate(self, request: GenerationRequest, progress: Optional[ProgressCallback] = None,
                 should_cancel: Optional[CancelCheck] = None) -> GenerationResult:
        if self.pipe is None:
            self.load()
        req = self.fill_defaults(request)
        size = native_size(req.height, req.width)
        start = None if req.image is None else image_to_tensor(req.image, size)
        if req.start_frames is not None and len(req.start_frames):
            given = req.start_frames[-min(self.max_start_frames, req.num_frames - 1):]
            start = torch.cat([image_to_tensor(f, size) for f in given], dim=1)  # 3 x k x h x w

        source, strength = None, 1.0
        if req.video is not None:
            strength = DEFAULT_STRENGTH if req.strength is None else float(req.strength)
            if not 0.0 <= strength <= 1.0:
                raise GenerationError(f"strength must be between 0 and 1, got {strength}")
            if len(req.video) != req.num_frames:
                raise GenerationError(f"the source video has {len(req.video)} frames, the request asks "
                                      f"for {req.num_frames}")
            if round(strength * req.steps) == 0:  # no step to run: the source as it came
                return GenerationResult(frames=np.array(req.video, dtype=np.uint8), fps=req.fps, seed=req.seed,
                                        native_size=size)
            source = torch.cat([image_to_tensor(f, size) for f in req.video], dim=1)  # 3 x T x h x w

        def on_step(step, total, estimate):
            if progress is not None:
                progress(step, total, world.to_uint8_frames(estimate))

        video = self.pipe(req.prompt, num_frames=req.num_frames, height=size[0], width=size[1],
                          steps=req.steps, guidance_scale=req.guidance_scale,
                          generator=torch.Generator().manual_seed(req.seed), start_frames=start,
                          video=source, strength=strength, callback=on_step, should_cancel=should_cancel)
        if (req.height > size[0] or req.width > size[1]) and self.pipe.upsampler is not None:
            # the learned 4x upscale leaves edges 0.68x as steep as the renderer draws them at
            # 256 pixels, bicubic + unsharp mask 0.44x; an unsharp mask after it makes 0.90x
            frames = sharpen_frames(world.to_uint8_frames(self.pipe.upscale(video)))
        else:
            frames = world.to_uint8_frames(video)
        frames = resize_frames(frames, (req.height, req.width))
        return GenerationResult(frames=frames, fps=req.fps, seed=req.seed, native_size=size)
