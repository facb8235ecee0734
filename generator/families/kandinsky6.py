"""Kandinsky 6 (Kandinsky Lab): text- and image-to-video WITH SOUND in one checkpoint
(Kandinsky6TI2VAPipeline). Video and audio latents are denoised together by fused cross-modal blocks;
HunyuanVideo's VAE makes the frames and an MMAudio VAE + vocoder the sound track (mono, 44.1 kHz),
muxed into the MP4 as LTX-2's is. A start image is appended as a clean, masked extra latent frame.
Prompts go through Qwen2.5-VL (token embeddings) and CLIP (pooled). 864x480, 121 frames at 24 fps;
50 steps, guidance 5 (its pipeline's defaults; the distilled checkpoints: 16 steps, guidance 1).

Its latents are laid out [B, F, H, W, C] (channels last), with the start image's extra frame at the end.

Without torchvision: the checkpoint names Qwen2_5_VLProcessor as its tokenizer, which transformers
cannot build without torchvision (its video processor needs it). The pipeline calls it on text only
(images=None, videos=None), which is exactly the Qwen2 tokenizer it wraps, so that tokenizer is loaded
from the same folder instead. What needs the full processor is the pipeline's optional `expand_prompts`
(Qwen2.5-VL rewriting the prompt, with the image), which the service does not use.
"""
from __future__ import annotations

from generator.families.base import Family, FamilyAdapter, PipelineKind


class Kandinsky6Adapter(FamilyAdapter):
    upsampler_shares_vae = False  # Kandinsky6SRPipeline: its own transformer, VAE and latent upscaler bank

    def upscale_passes(self, factor: int) -> list:
        return [{"resolution_scale": float(factor)}]  # one pass: the SR pipeline takes x2 and x4 directly

    def load_components(self, path: str) -> dict:
        return {"tokenizer": None}  # diffusers refuses a tokenizer in place of the processor it names: loaded() sets it

    def loaded(self, pipe, path: str) -> None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
        pipe.register_modules(tokenizer=tokenizer)

    def call_arguments(self, req) -> dict:
        return {"frame_rate": float(req.fps)}

    def audio_track(self, pipe, audio) -> tuple:
        """[B, samples] mono from the MMAudio vocoder, at the audio VAE's sample rate."""
        import torch

        return torch.as_tensor(audio[0]).float().cpu().numpy()[:, None], int(pipe.audio_sample_rate)

    def latent_grid(self, pipe, latents, req):
        """[B, F (+1 for a start image), H, W, C] -> C x F x H x W of the clip's own frames."""
        frames = (req.num_frames - 1) // pipe.vae_scale_factor_temporal + 1
        return latents[0, :frames].permute(3, 0, 1, 2)


FAMILIES = (
    Family("kandinsky6", "Kandinsky 6 (Kandinsky Lab), video with sound", {
        "kandinsky6": PipelineKind("Kandinsky6TI2VAPipeline", ("t2v", "i2v")),
    }, vae="AutoencoderKLHunyuanVideo", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=241,
        size_multiple=16, max_size=1280, default_width=864, default_height=480, default_frames=121,
        default_steps=50, default_guidance=5.0, default_fps=24.0, adapter=Kandinsky6Adapter, audio=True,
        upsampler="Kandinsky6SRPipeline"),
)
