"""Motif-Video (Motif Technologies): a dual/single-stream video DiT on Wan 2.1's VAE with a T5Gemma 2
encoder (whose vision tower also reads the start image); one checkpoint serves text- and image-to-video
(the transformer takes the noisy latents, the start image's latents and a mask: 33 channels). Guidance
goes through its guider (adaptive projected guidance). 1280x736, 121 frames at 24 fps, 50 steps (its
pipeline's defaults); sizes multiples of 16, frames 4k+1."""
from __future__ import annotations

from generator.families.base import Family, FamilyAdapter, PipelineKind

FAMILIES = (
    Family("motif-video", "Motif-Video (Motif Technologies)", {
        "motif-video": PipelineKind("MotifVideoPipeline", ("t2v",)),
        "motif-video-i2v": PipelineKind("MotifVideoImage2VideoPipeline", ("i2v",)),
    }, vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=161,
        size_multiple=16, max_size=1280, default_width=1280, default_height=736, default_frames=121,
        default_steps=50, default_guidance=5.0, default_fps=24.0, adapter=FamilyAdapter, vae_dtype="float32"),
)
