"""What the built-in model accepts; importable without torch (the web tier validates with it)."""
from generator.interface import ModelInfo

NATIVE_SHORT_SIDE = 64
NATIVE_MAX_SIDE = 128

INFO = ModelInfo(
    name="builtin",
    description="Built-in shapes model trained by this project (CPU, offline): coloured circles, "
                "squares and triangles moving left/right/up/down. Native 64x64, upscaled.",
    native_size=(NATIVE_SHORT_SIDE, NATIVE_SHORT_SIDE),
    default_frames=16, min_frames=8, max_frames=32,
    default_width=256, default_height=256, size_multiple=16, min_size=64, max_size=512,
    # 10 DPM-Solver++ steps: every held-out bar holds as at 20 (generator.evaluate), in half the time
    default_steps=10, max_steps=100, default_guidance=4.0, default_fps=8.0,
    supports_video=True,  # video-to-video: SDEdit from the source noised to `strength`
)

INFO_V3 = ModelInfo(
    name="builtin-v3",
    description="Built-in shapes model v3, experimental (CPU, offline, live): a chunk-causal few-step denoiser "
                "in a causal video tokenizer's latent, decoded straight to 256x256, 5x+ faster than builtin. "
                "Trained on a CPU only so far: colour and direction mostly right, shapes not yet (docs/builtin.md).",
    native_size=(256, 256),
    default_frames=16, min_frames=4, max_frames=64,
    default_width=256, default_height=256, size_multiple=16, min_size=64, max_size=512,
    default_steps=2, max_steps=4, default_guidance=1.0, default_fps=8.0,
    supports_video=True,
    extra={"queue": "builtin"},
)
