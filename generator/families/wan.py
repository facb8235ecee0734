"""Wan 2.1 / 2.2 (Alibaba). Wan 2.1 and Wan 2.2 A14B (the same classes with two experts: transformer_2
below the checkpoint's boundary_ratio): VAE 8x8 px x 4 frames, transformer patch 2x2, so multiples of
16 and frames 4k+1; their I2V checkpoints are separate (36 input channels + CLIP) and
WanVideoToVideoPipeline runs on the T2V one. Wan 2.2 TI2V-5B: one transformer for text- and
image-to-video on the 16x16x4 VAE (48 channels): multiples of 32, 1280x704, 121 frames at 24 fps.
"""
from __future__ import annotations

from generator.families.base import Family, FamilyAdapter, PipelineKind


class WanAdapter(FamilyAdapter):
    def check_shared(self, pipe, kind: str) -> None:
        """Wan 2.1's T2V transformer cannot take a start image; Wan 2.2 TI2V's can (expand_timesteps)."""
        from generator.interface import GenerationError

        if self.family.kinds[kind].tasks != ("i2v",):
            return
        transformer, vae = pipe.transformer, pipe.vae
        if transformer.config.in_channels == vae.config.z_dim and not getattr(pipe.config, "expand_timesteps", False):
            raise GenerationError(f"model {self.config.name}: this Wan checkpoint is text-to-video only "
                                  f"(transformer takes {transformer.config.in_channels} channels); configure "
                                  f"the Wan I2V checkpoint as its own 'wan-i2v' entry")


FAMILIES = (
    Family("wan", "Wan 2.1 / 2.2 A14B (Alibaba)", {
        "wan": PipelineKind("WanPipeline", ("t2v",)),
        "wan-i2v": PipelineKind("WanImageToVideoPipeline", ("i2v",)),
        "wan-v2v": PipelineKind("WanVideoToVideoPipeline", ("v2v",)),
    }, vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=129,
        size_multiple=16, max_size=1280, default_width=832, default_height=480, default_frames=81,
        default_steps=50, default_guidance=5.0, default_fps=16.0, adapter=WanAdapter, vae_dtype="float32"),
    Family("wan2.2", "Wan 2.2 TI2V-5B (Alibaba)", {
        "wan2.2": PipelineKind("WanPipeline", ("t2v",)),
        "wan2.2-i2v": PipelineKind("WanImageToVideoPipeline", ("i2v",)),
    }, vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=241,
        size_multiple=32, max_size=1280, default_width=1280, default_height=704, default_frames=121,
        default_steps=50, default_guidance=5.0, default_fps=24.0, adapter=WanAdapter, vae_dtype="float32"),
)
