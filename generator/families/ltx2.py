"""LTX-2 (Lightricks): LTX's latent grid, a Gemma 3 prompt encoder, and a sound track (audio VAE +
vocoder) generated with the video and muxed into the MP4. Settings of diffusers' LTX-2 example (30
steps, guidance 3, 24 fps). T2V, I2V and its condition pipeline (continuation); a latent upsampler.
"""
from __future__ import annotations

from generator.families.base import Family, PipelineKind
from generator.families.ltx import LTXAdapter


class LTX2Adapter(LTXAdapter):
    condition_kind = "ltx2-condition"

    @staticmethod
    def conditions(frames) -> dict:
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

        return {"conditions": [LTX2VideoCondition(frames=frames, index=0)]}

    def call_arguments(self, req) -> dict:
        return {"frame_rate": float(req.fps)}


FAMILIES = (
    Family("ltx2", "LTX-2 (Lightricks), video with sound", {
        "ltx2": PipelineKind("LTX2Pipeline", ("t2v",)),
        "ltx2-i2v": PipelineKind("LTX2ImageToVideoPipeline", ("i2v",)),
        "ltx2-condition": PipelineKind("LTX2ConditionPipeline", ("t2v", "i2v", "condition")),
    }, vae="AutoencoderKLLTX2Video", frame_multiple=8, frame_offset=1, min_frames=9, max_frames=257,
        size_multiple=32, max_size=1280, default_width=768, default_height=512, default_frames=121,
        default_steps=30, default_guidance=3.0, default_fps=24.0, adapter=LTX2Adapter, audio=True,
        upsampler="LTX2LatentUpsamplePipeline"),
)
