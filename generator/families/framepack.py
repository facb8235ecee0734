"""FramePack (lllyasviel) on HunyuanVideo: image-to-video made section by section (next-frame-section
prediction). Each section of `latent_window_size` latent frames (9 by default: 33 frames) is denoised
while the transformer sees the start image's latents and a packed history of earlier sections (1x, 2x
and 4x compressed), so memory stays flat however long the clip. HunyuanVideo's VAE (8x space, 4x
time), a Llama 3 and a CLIP-L prompt encoder, SigLIP for the start image; the guidance scale is the
distilled guidance embedded in the transformer (true classifier-free guidance: `pipeline_kwargs.
true_cfg_scale`).

Two checkpoints, two sampling orders of one diffusers class: FramePackI2V_HY is trained for
"inverted anti-drifting" sampling (the sections are made from the clip's end back to the start image),
FramePack-F1 (`FramePack_F1_I2V_HY_20250503`) for "vanilla" sampling (forward in time).

A section makes 4 x window frames (the first section one more, the start image): a request's frames
are made in the fewest sections of at most the native window and cut to the request. Only i2v: the
pipeline needs a start image. Live: by continuation (image-to-video from the last frame). The diffusers
pipeline starts every call from an empty history (zeros and the start image's latents) and takes no
history latents, so one section per call cannot continue the one before; driving it section by section
would mean re-implementing its section loop outside diffusers.
"""
from __future__ import annotations

from generator.families.base import Clip, Family, FamilyAdapter, PipelineKind

WINDOW_LATENT_FRAMES = 9  # the pipeline's latent_window_size default, as FramePack's demo


def sections(num_frames: int, native_window: int = WINDOW_LATENT_FRAMES, temporal: int = 4) -> dict:
    """The fewest sections of at most `native_window` latent frames that make `num_frames`: n sections of w
    latent frames make temporal * w * n + 1 frames. The pipeline derives n from its num_frames and w, so it
    is given the frame count that asks for exactly n. -> {"sections", "latent_window_size", "num_frames" (the
    pipeline's argument), "frames" (what it returns)}."""
    wanted = num_frames - 1
    n = max(1, -(-wanted // (temporal * native_window)))
    window = max(1, -(-wanted // (temporal * n)))
    return {"sections": n, "latent_window_size": window, "num_frames": n * ((window - 1) * temporal + 1),
            "frames": temporal * window * n + 1}


class FramepackAdapter(FamilyAdapter):
    sampling_type = "inverted_anti_drifting"  # FramePackI2V_HY

    def call_arguments(self, req) -> dict:
        return {"sampling_type": self.sampling_type}

    def one_clip(self, task: str, call: dict, req) -> Clip:
        native = int(self.config.pipeline_kwargs.get("latent_window_size", WINDOW_LATENT_FRAMES))
        plan = sections(req.num_frames, native, self.backend.pipe_for(task).vae_scale_factor_temporal)
        call.update(latent_window_size=plan["latent_window_size"], num_frames=plan["num_frames"])
        return Clip(plan["frames"], keep=slice(0, req.num_frames), steps=plan["sections"] * req.steps)


class FramepackF1Adapter(FramepackAdapter):
    sampling_type = "vanilla"  # FramePack-F1: forward in time


FRAMEPACK = dict(vae="AutoencoderKLHunyuanVideo", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=1801,
                 size_multiple=16, max_size=1280, default_width=832, default_height=480, default_frames=121,
                 default_steps=25, default_guidance=10.0, default_fps=30.0)
FAMILIES = (
    Family("framepack", "FramePack (HunyuanVideo, inverted anti-drifting sections), image-to-video", {
        "framepack": PipelineKind("HunyuanVideoFramepackPipeline", ("i2v",)),
    }, adapter=FramepackAdapter, **FRAMEPACK),
    Family("framepack-f1", "FramePack-F1 (HunyuanVideo, forward sections), image-to-video", {
        "framepack-f1": PipelineKind("HunyuanVideoFramepackPipeline", ("i2v",)),
    }, adapter=FramepackF1Adapter, **FRAMEPACK),
)
