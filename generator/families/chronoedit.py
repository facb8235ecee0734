"""ChronoEdit (NVIDIA, ChronoEdit-14B): image editing as a short video, on Wan 2.1 I2V 14B's architecture.
The start image is frame 0 and the prompt says the edit; the clip moves from the image to its edit, whose
last frame is the edited image: 5 frames (the image's latent frame and the edit's), whatever num_frames the
pipeline is given. With `pipeline_kwargs.enable_temporal_reasoning` more frames are made between them
(reasoning frames): all of them are returned when `num_temporal_reasoning_steps` covers every step, else the
pipeline drops them after that many steps and returns 5 again. So the family allows 5 frames; an entry with
temporal reasoning raises `limits.max_frames` (e.g. 29), and a job that would come back shorter than it asked
is refused saying why. Guidance 5, 50 steps (its example), about 1280x720 (its example's area); sizes
multiples of 16 (Wan's VAE x 2 x 2 patches), frames 4k+1; 16 fps.
"""
from __future__ import annotations

from generator.families.base import Clip, Family, FamilyAdapter, PipelineKind
from generator.interface import GenerationError

EDIT_FRAMES = 5  # the input's latent frame and the edit's


class ChronoEditAdapter(FamilyAdapter):
    task_needs = {"i2v": "a start image (`image`) and a prompt saying the edit: the clip moves from the image to the "
                         "edited image, its last frame"}

    def one_clip(self, task: str, call: dict, req) -> Clip:
        kwargs = self.config.pipeline_kwargs
        reasoning_steps = int(kwargs.get("num_temporal_reasoning_steps", 0))
        keeps_reasoning = kwargs.get("enable_temporal_reasoning") and reasoning_steps >= req.steps
        if req.num_frames != EDIT_FRAMES and not keeps_reasoning:
            how = (f"it reasons over its frames for {reasoning_steps} of the {req.steps} steps, then keeps only the "
                   f"image and its edit" if kwargs.get("enable_temporal_reasoning") else "it makes the image and its "
                   "edit (more frames need pipeline_kwargs.enable_temporal_reasoning)")
            raise GenerationError(f"model {self.config.name} returns {EDIT_FRAMES} frames here, not {req.num_frames}: "
                                  f"{how}")
        return Clip(req.num_frames)


FAMILIES = (
    Family("chronoedit", "ChronoEdit (NVIDIA), image editing as a short video", {
        "chronoedit": PipelineKind("ChronoEditPipeline", ("i2v",)),
    }, vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=EDIT_FRAMES, size_multiple=16,
        max_size=1280, default_width=1280, default_height=720, default_frames=EDIT_FRAMES, default_steps=50,
        default_guidance=5.0, default_fps=16.0, adapter=ChronoEditAdapter, vae_dtype="float32"),
)
