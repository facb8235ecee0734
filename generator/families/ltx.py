"""LTX-Video 0.9.x (Lightricks): T2V, I2V, and with 0.9.5+ checkpoints the condition pipeline (frames or
clips at chosen positions: continuation, and video-to-video as SDEdit on the source's latents).

The VAE compresses 32x32 px x 8 frames per latent: sizes multiples of 32, frames 8k+1 (diffusers does
NOT validate the frame count: 10 would silently become 9, so we do). Latents are LTX's packed token
sequence [B, tokens, C]. A latent upsampler (x2) can follow as a per-job `upscale` post-step.
"""
from __future__ import annotations

from generator.families.base import Family, FamilyAdapter, PipelineKind, pil


class LTXAdapter(FamilyAdapter):
    condition_kinds = ("ltx-condition",)  # kinds whose start image and given frames are `conditions`

    def task_inputs(self, pipe, task: str, req) -> dict:
        size = (req.width, req.height)
        conditioned = self.config.tasks[task] in self.condition_kinds
        if task == "i2v" and conditioned:
            return self.conditions(pil(req.image, size))
        if task == "condition":  # a clip of whole latent frames (8k+1)
            given = req.start_frames if req.start_frames is not None else req.image[None]
            return self.conditions([pil(f, size) for f in given[-self.rule_frames(len(given)):]])
        if task == "v2v":  # SDEdit on the source's latents: noised to `strength`, denoised
            video = [pil(f, size) for f in req.video]
            return {"latents": self.encode_video(pipe, video, req), "denoise_strength": req.strength}
        return super().task_inputs(pipe, task, req)

    @staticmethod
    def conditions(frames) -> dict:
        """An image or clip at frame 0 of the condition pipeline."""
        from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

        key = "video" if isinstance(frames, list) else "image"
        return {"conditions": [LTXVideoCondition(frame_index=0, **{key: frames})]}

    def call_arguments(self, req) -> dict:
        return {"frame_rate": int(round(req.fps))}  # LTX scales its RoPE by the frame rate

    def encode_video(self, pipe, video: list, req):
        """Source frames -> the normalised latents [B, C, F, H, W] the LTX pipelines denoise."""
        import torch

        vae = pipe.vae
        with torch.no_grad():
            x = pipe.video_processor.preprocess_video(video, req.height, req.width).to(pipe._execution_device,
                                                                                       vae.dtype)
            z = vae.encode(x).latent_dist.mode()
        return pipe._normalize_latents(z, vae.latents_mean, vae.latents_std).float()

    def normalised_latents(self, pipe, z):
        vae = pipe.vae
        return pipe._normalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)

    def latent_grid(self, pipe, latents, req):
        """[B, tokens, C] -> C x F x H x W: the last F*H*W tokens are the video's (LTX-2 adds none)."""
        ratio, temporal = pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio
        lf, lh, lw = (req.num_frames - 1) // temporal + 1, req.height // ratio, req.width // ratio
        grid = pipe._unpack_latents(latents[:1, -lf * lh * lw:], lf, lh, lw, pipe.transformer_spatial_patch_size,
                                    pipe.transformer_temporal_patch_size)
        return grid[0]


FAMILIES = (
    Family("ltx", "LTX-Video (Lightricks)", {
        "ltx": PipelineKind("LTXPipeline", ("t2v",)),
        "ltx-i2v": PipelineKind("LTXImageToVideoPipeline", ("i2v",)),
        "ltx-condition": PipelineKind("LTXConditionPipeline", ("t2v", "i2v", "v2v", "condition")),
    }, vae="AutoencoderKLLTXVideo", frame_multiple=8, frame_offset=1, min_frames=9, max_frames=257,
        size_multiple=32, max_size=1280, default_width=768, default_height=512, default_frames=121,
        default_steps=50, default_guidance=3.0, default_fps=24.0, adapter=LTXAdapter,
        upsampler="LTXLatentUpsamplePipeline"),
)
