"""Sana Video (NVIDIA): a linear-attention video DiT on Wan 2.1's VAE with a Gemma 2 prompt encoder; one
checkpoint serves text- and image-to-video (the start image is the first latent frame). 832x480,
81 frames at 16 fps, 50 steps, guidance 6 (its card); sizes multiples of 16, frames 4k+1. Its calls
name the frame count `frames`, and resolution binning stays off: the service validates the size and
the clip is made at the size asked for."""
from __future__ import annotations

from generator.families.base import Family, FamilyAdapter, PipelineKind


class SanaVideoAdapter(FamilyAdapter):
    def call_arguments(self, req) -> dict:
        return {"frames": req.num_frames, "use_resolution_binning": False}


FAMILIES = (
    Family("sana-video", "Sana Video (NVIDIA)", {
        "sana-video": PipelineKind("SanaVideoPipeline", ("t2v",)),
        "sana-video-i2v": PipelineKind("SanaImageToVideoPipeline", ("i2v",)),
    }, vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=161,
        size_multiple=16, max_size=1280, default_width=832, default_height=480, default_frames=81,
        default_steps=50, default_guidance=6.0, default_fps=16.0, adapter=SanaVideoAdapter, vae_dtype="float32"),
)
