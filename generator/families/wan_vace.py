"""Wan VACE (Alibaba): one pipeline for every task through a control video and a mask (0 = keep,
1 = generate): a start image or clip is kept as the first frames, a source video steers as control."""
from __future__ import annotations

from PIL import Image

from generator.families.base import Family, FamilyAdapter, PipelineKind, pil


class WanVACEAdapter(FamilyAdapter):
    def task_inputs(self, pipe, task: str, req) -> dict:
        size, n = (req.width, req.height), req.num_frames
        if task == "i2v":
            return self.keep([req.image], n, size)
        if task == "condition":
            given = req.start_frames if req.start_frames is not None else req.image[None]
            return self.keep(given[-(n - 1):], n, size)
        if task == "v2v":  # the source steers as a control video, less as strength grows
            return {"video": [pil(f, size) for f in req.video], "conditioning_scale": 1.0 - req.strength}
        return {}

    @staticmethod
    def keep(frames, num_frames: int, size: tuple) -> dict:
        """The given frames first (mask 0: keep), grey frames to generate (mask 1)."""
        keep = [pil(f, size) for f in frames]
        grey, black, white = (Image.new("RGB", size, (127, 127, 127)), Image.new("L", size, 0),
                              Image.new("L", size, 255))
        rest = num_frames - len(keep)
        return {"video": keep + [grey] * rest, "mask": [black] * len(keep) + [white] * rest}


FAMILIES = (
    Family("wan-vace", "Wan VACE (Alibaba), all-in-one video creation and editing", {
        "wan-vace": PipelineKind("WanVACEPipeline", ("t2v", "i2v", "v2v", "condition")),
    }, vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=129,
        size_multiple=16, max_size=1280, default_width=832, default_height=480, default_frames=81,
        default_steps=50, default_guidance=5.0, default_fps=16.0, adapter=WanVACEAdapter, vae_dtype="float32"),
)
