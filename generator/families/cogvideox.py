"""CogVideoX (THUDM): multiples of 16, 49 frames at 8 fps by default; 8k+1 fits both 1.0 (4k+1) and
1.5 (temporal patch 2). Its I2V checkpoints are separate. Latents are [B, F, C, H, W]."""
from __future__ import annotations

from generator.families.base import Family, FamilyAdapter, PipelineKind


class CogVideoXAdapter(FamilyAdapter):
    def latent_grid(self, pipe, latents, req):
        return latents[0].permute(1, 0, 2, 3)  # F x C x H x W -> C x F x H x W


FAMILIES = (
    Family("cogvideox", "CogVideoX (THUDM)", {
        "cogvideox": PipelineKind("CogVideoXPipeline", ("t2v",)),
        "cogvideox-i2v": PipelineKind("CogVideoXImageToVideoPipeline", ("i2v",), checkpoint="i2v"),
    }, vae="AutoencoderKLCogVideoX", frame_multiple=8, frame_offset=1, min_frames=9, max_frames=49,
        size_multiple=16, max_size=1360, default_width=720, default_height=480, default_frames=49,
        default_steps=50, default_guidance=6.0, default_fps=8.0, adapter=CogVideoXAdapter),
)
