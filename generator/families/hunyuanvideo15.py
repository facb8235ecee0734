"""HunyuanVideo 1.5 (Tencent): VAE 16x16 px x 4 frames; T2V and I2V are separate checkpoints (I2V adds
SigLIP and picks its own size bucket: the backend resizes back). 480p: 848x480, 121 frames at 24 fps,
50 steps, guidance 6 (its model card). Its pipelines have no step callback (the backend observes the
scheduler) and keep their guidance scale in a guider."""
from __future__ import annotations

from generator.families.base import Family, FamilyAdapter, PipelineKind

FAMILIES = (
    Family("hunyuanvideo1.5", "HunyuanVideo 1.5 (Tencent)", {
        "hunyuanvideo1.5": PipelineKind("HunyuanVideo15Pipeline", ("t2v",)),
        "hunyuanvideo1.5-i2v": PipelineKind("HunyuanVideo15ImageToVideoPipeline", ("i2v",), checkpoint="i2v"),
    }, vae="AutoencoderKLHunyuanVideo15", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=241,
        size_multiple=16, max_size=1280, default_width=848, default_height=480, default_frames=121,
        default_steps=50, default_guidance=6.0, default_fps=24.0, adapter=FamilyAdapter),
)
