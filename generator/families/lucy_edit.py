"""Lucy Edit (Decart): video editing from a prompt ("make the cat a tiger"), on Wan 2.2 TI2V-5B's
architecture: the source video's latents are concatenated to the noisy latents on the channel axis, so
the transformer takes 2 x 48 channels. Only v2v: the edit is said by the prompt, not by a strength (0
still returns the source as it came, for every model). 832x480, 81 frames, 50 steps, guidance 5 (its
card); the 16x VAE: sizes multiples of 32, frames 4k+1."""
from __future__ import annotations

from generator.families.base import Family, FamilyAdapter, PipelineKind, pil


class LucyEditAdapter(FamilyAdapter):
    task_needs = {"v2v": "a prompt saying the edit and a source video (`video` or `source_job_id`); `strength` is "
                         "not used (except 0, which returns the source)"}

    def task_inputs(self, pipe, task: str, req) -> dict:
        return {"video": [pil(f, (req.width, req.height)) for f in req.video]}


FAMILIES = (
    Family("lucy-edit", "Lucy Edit (Decart), video editing from a prompt", {
        "lucy-edit": PipelineKind("LucyEditPipeline", ("v2v",)),
    }, vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=161,
        size_multiple=32, max_size=1280, default_width=832, default_height=480, default_frames=81,
        default_steps=50, default_guidance=5.0, default_fps=24.0, adapter=LucyEditAdapter, vae_dtype="float32"),
)
