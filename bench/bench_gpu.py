"""GPU benchmark: LTX-Video's real architecture with random weights at its published setting, and
rows for LTX-2 and Wan 2.2 TI2V-5B at theirs.

    python -m bench.bench_gpu                      # 768x512, 121 frames, 50 steps, every variant
    python -m bench.bench_gpu --steps 8 --variants bf16,fp16,cache
    python -m bench.bench_gpu --variants ltx2,wan2.2-ti2v --json bench/results/families_h200.json
    python -m bench.bench_gpu --json bench/ltx_h100.json

Architecture: `LTXVideoTransformer3DModel()` and `AutoencoderKLLTXVideo()` with diffusers' default
constructor arguments, which are the published LTX-Video 0.9.0 configs (transformer: 28 blocks,
32 heads x 64, 128 latent channels, caption_channels 4096; VAE: 32x32 px x 8 frames per latent,
128 channels). Weights are random (nothing is downloaded), which does not change the cost of a
step. The text encoder is a ONE-layer T5 with d_model 4096 (the width LTX's caption projection
expects) and a small in-memory tokenizer, so prompt encoding is near free in every variant: the
numbers are denoising + VAE decode, not T5-XXL.

Per variant: seconds per denoising step (median of step intervals measured in the step callback
after a CUDA sync), total seconds for one clip, peak GPU memory (torch.cuda.max_memory_allocated),
after one untimed warm-up run (compile time is reported separately).
Variants: bf16 (baseline), steps20 (bf16 at 20 steps, the setting of the published speed claim's
class of runs), fp16, compile (regional torch.compile of the transformer, bf16), cache (FirstBlockCache
threshold 0.05, bf16), cudnn (diffusers attention backend _native_cudnn), tiling (VAE tiling, bf16),
offload (model CPU offload, for small cards), service (the same bf16
checkpoint saved to disk, configured as a model, run through registry -> DiffusersBackend ->
MP4 encode, compared with the bare pipeline: overhead ratio). The service variant does NOT
include Django/Channels/Celery hops (queue wait, progress broadcasts): those are a few ms per
message and are measured by the service's own tests.

Family rows (variants `ltx2`, `wan2.2-ti2v`): the family's published architecture (diffusers'
constructor defaults for LTX-2 19B: 48 blocks of 32 x 128 video + 32 x 64 audio heads, its video
and audio VAEs and 24 kHz vocoder; Wan 2.2 TI2V-5B: 30 blocks of 24 x 128 on the 48-channel 16x VAE)
with random weights at the published setting (FAMILY_ARCHS), bare pipeline (s/step, total, peak,
FLOPs per step) and through the service's backend + MP4 (with LTX-2's sound track). Prompt
encoders are stand-ins of the width the model reads (LTX-2: a narrow 48-layer Gemma 3 with hidden
3840, whose 49 hidden states its connectors take; Wan: a 1-layer UMT5 of width 4096).

Helios-Distilled row (variant `helios-distilled`): HeliosPyramidPipeline with diffusers' default
HeliosTransformer3DModel (Helios 14B: 40 blocks of 40 x 128 heads) on Wan's VAE, the DMD scheduler,
`is_distilled`, 2 + 2 + 2 steps per 33-frame chunk (9 latent frames), guidance 1, first chunk
amplified, at 640x384 (its published setting: 19.5 FPS on one H100). Measured bare (one pipeline call
making N chunks: frames per second) and through the service's backend (`live_chunks`, one call per
chunk with the history latents: seconds to the first chunk's frames, frames per second over N chunks).
The backend is given the in-memory pipeline (saving 28 GB of random weights to load them back would
measure the disk).

Row `ltx2-ic-lora`: LTX2InContextPipeline on the same LTX-2 components, at the same setting, following a
synthetic reference video of the clip's size (its tokens appended to the noisy ones: twice the video tokens
per step), bare and through the backend's `control` task + MP4; no IC-LoRA (random weights).

Row `ltx2-hdr`: LTX2HDRPipeline on the same components at its example's distilled setting (768x512, 121
frames, 8 steps, guidance 1), re-making a synthetic SDR reference of the clip's size in linear HDR, bare and
through the backend's `control` task (tone-mapped into the SDR MP4); no HDR IC-LoRA (random weights).

Row `ltx2-dfr`: LTX2DFRPipeline (LTX-2.5's Diffusion Fidelity Rendering pass) on the LTX-2 19B architecture
with the keyframe position embedding its slots need, one pass at its example's setting (1216x704, 121 frames,
the 8 distilled sigmas, no guidance), bare and through the backend's `t2v` task with the `ltx2-distilled` preset.

Row `ltx2-dfr-1080p`: LTX-2.5's composed 1080p recipe through the service's backend (`generate_refined`): the DFR
pass at 960x544 (121 frames, 8 distilled sigmas), the spatial latent upsampler and a second pass at 1920x1088
(3 steps), then two temporal refine rounds (x4 fps: 481 frames at 96 fps), on the same architecture with the
published upsamplers' configurations (LTX-2.3's spatial and temporal LTX2LatentUpsamplerModel), random weights,
in memory: total seconds, peak memory, the passes run.

Rows `sana-video`, `motif-video`, `lucy-edit`: diffusers' constructor defaults for their transformers
(Sana-Video 2B; Motif-Video; Lucy Edit = Wan 2.2 TI2V-5B's transformer with 96 input channels) on
their VAEs, one-layer prompt encoders of the width they read, at their published settings; Lucy Edit
edits a synthetic source video of that size.

Without CUDA it says so and runs the same code path on a tiny config on CPU (smoke test), exit 0.
Never prints made-up numbers.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch

from generator.families import FAMILIES


# In the order they run: the most telling first, so a run cut short still answers the main questions.
VARIANTS = ("bf16", "steps20", "service", "cache", "fp16", "cudnn", "tiling", "offload", "compile", "ltx2",
            "ltx2-ic-lora", "ltx2-hdr", "ltx2-dfr", "ltx2-dfr-1080p", "wan2.2-ti2v", "helios-distilled", "sana-video",
            "motif-video", "lucy-edit", "framepack", "wan-animate", "chronoedit", "kandinsky6", "kandinsky6-sr")
DENSE_BF16_TFLOPS = 989  # NVIDIA's H100 SXM / H200 spec sheet, dense (no sparsity)
PUBLISHED = "LTX-Video: 768x512, 121 frames (5 s at 24 fps) in about 2 s on one H100 (published claim)"

# published settings (diffusers' LTX-2 example; Wan 2.2 TI2V-5B's model card) and what was claimed for them
FAMILY_ARCHS = {
    "ltx2": {"kinds": ["ltx2", "ltx2-i2v"], "fps": 24,
             "call": dict(width=768, height=512, num_frames=121, frame_rate=24.0, num_inference_steps=30,
                          guidance_scale=3.0),
             "published": "LTX-2 (diffusers example): 768x512, 121 frames at 24 fps, 30 steps, guidance 3, "
                          "with sound; no speed figure published for this setting"},
    # LTX2InContextPipeline on the same 19B architecture: a synthetic reference video of the clip's size appended
    # as clean tokens (twice the video tokens per step); random weights, so no IC-LoRA is loaded (a LoRA adds little)
    "ltx2-ic-lora": {"kinds": ["ltx2-ic-lora"], "fps": 24, "source_video": True,
                     "call": dict(width=768, height=512, num_frames=121, frame_rate=24.0, num_inference_steps=30,
                                  guidance_scale=3.0),
                     "published": "LTX-2 IC-LoRA (diffusers example): 768x512, 121 frames at 24 fps, 30 steps, "
                                  "guidance 3, a reference video of the same size; no speed figure published"},
    # LTX2HDRPipeline on the same architecture at its example's distilled setting (8 steps, no guidance), an SDR
    # reference of the clip's size; the frames come back linear and are tone-mapped into the SDR MP4
    "ltx2-hdr": {"kinds": ["ltx2-hdr"], "fps": 24, "source_video": True,
                 "call": dict(width=768, height=512, num_frames=121, frame_rate=24.0, num_inference_steps=8,
                              guidance_scale=1.0),
                 "published": "LTX-2.3 HDR IC-LoRA (diffusers example): 768x512, 121 frames at 24 fps, 8 distilled "
                              "steps, guidance 1, an SDR reference of the same size; no speed figure published"},
    # LTX2DFRPipeline: LTX-2.5's Diffusion Fidelity Rendering pass (the LTX-2 19B architecture with the keyframe
    # position embedding its slots need), one pass at its example's setting: 8 distilled sigmas, no guidance
    "ltx2-dfr": {"kinds": ["ltx2-dfr"], "fps": 24, "preset": "ltx2-distilled",
                 "call": dict(width=1216, height=704, num_frames=121, frame_rate=24.0, num_inference_steps=8),
                 "published": "LTX-2.5 DFR (diffusers example): one pass at 1216x704, 121 frames at 24 fps, the 8 "
                              "distilled sigmas, with sound; no speed figure published"},
    "wan2.2-ti2v": {"kinds": ["wan2.2", "wan2.2-i2v"], "fps": 24,
                    "call": dict(width=1280, height=704, num_frames=121, num_inference_steps=50, guidance_scale=5.0),
                    "published": "Wan 2.2 TI2V-5B (its README): a 5 s 720P video in under 9 minutes on one "
                                 "consumer GPU (RTX 4090)"},
    # diffusers' constructor defaults: Sana-Video 2B (20 blocks of 20 x 112, linear attention) on Wan 2.1's VAE
    "sana-video": {"kinds": ["sana-video", "sana-video-i2v"], "fps": 16, "frames_arg": "frames",
                   "call": dict(width=832, height=480, num_frames=81, num_inference_steps=50, guidance_scale=6.0,
                                use_resolution_binning=False),
                   "published": "Sana-Video 2B (its card): 832x480, 81 frames, 50 steps; no speed figure used here"},
    # MotifVideoTransformer3DModel's defaults (20 dual-stream + 40 single-stream blocks of 24 x 128), text-to-video
    "motif-video": {"kinds": ["motif-video"], "fps": 24,
                    "call": dict(width=1280, height=736, num_frames=121, num_inference_steps=50),
                    "published": "Motif-Video (its pipeline's defaults): 1280x736, 121 frames, 50 steps"},
    # Lucy Edit Dev: Wan 2.2 TI2V-5B's transformer with the source video's 48 channels appended (96 in)
    "lucy-edit": {"kinds": ["lucy-edit"], "fps": 24, "source_video": True,
                  "call": dict(width=832, height=480, num_frames=81, num_inference_steps=50, guidance_scale=5.0),
                  "published": "Lucy Edit Dev (its card): 832x480, 81 frames, 50 steps, guidance 5"},
    # FramePackI2V_HY: HunyuanVideo 13B's transformer (20 dual + 40 single blocks of 24 x 128) with FramePack's
    # history embedder and SigLIP projection; image-to-video in sections of 9 latent frames (4 x 33 frames)
    "framepack": {"kinds": ["framepack"], "fps": 30, "start_image": True,
                  "call": dict(width=832, height=480, num_frames=145, num_inference_steps=25, guidance_scale=10.0),
                  "published": "FramePack (its demo's defaults): 25 steps, distilled guidance 10, sections of 9 "
                               "latent frames at 30 fps; 1.5-2.5 s per frame on an RTX 4090 (its README)"},
    # Wan2.2-Animate-14B: WanAnimateTransformer3DModel's defaults (40 blocks of 40 x 128, motion encoder on 512 x 512
    # faces, a face adapter every 5 blocks) on Wan 2.1's VAE; one 77-frame segment driven by a synthetic video
    "wan-animate": {"kinds": ["wan-animate"], "fps": 30, "start_image": True, "source_video": True,
                    "call": dict(width=1280, height=720, num_frames=77, num_inference_steps=20, guidance_scale=1.0),
                    "published": "Wan2.2-Animate-14B (diffusers example): 1280x720 segments of 77 frames, 20 steps, "
                                 "guidance 1"},
    # ChronoEdit-14B: Wan 2.1 I2V 14B's transformer (40 blocks of 40 x 128, image cross-attention) editing an image
    # in 5 frames (the image and its edit)
    "chronoedit": {"kinds": ["chronoedit"], "fps": 16, "start_image": True,
                   "call": dict(width=1280, height=720, num_frames=5, num_inference_steps=50, guidance_scale=5.0),
                   "published": "ChronoEdit-14B (diffusers example): about 1280x720, 5 frames, 50 steps, guidance 5"},
    # Kandinsky 6 Pro: Kandinsky6Transformer3DModel's defaults (60 fused video/audio blocks of width 4096) with the
    # released checkpoints' flags, HunyuanVideo's VAE, MMAudio's VAE and vocoder; video with sound
    "kandinsky6": {"kinds": ["kandinsky6"], "fps": 24,
                   "call": dict(width=864, height=480, num_frames=121, frame_rate=24.0, num_inference_steps=16,
                                guidance_scale=1.0),
                   "published": "Kandinsky 6.0 Pro distilled (diffusers example): 864x480, 121 frames at 24 fps, "
                                "16 steps, guidance 1, with sound"},
}
TINY_FAMILY_BUILDERS = {"ltx2": "ltx2", "ltx2-ic-lora": "ltx2", "ltx2-hdr": "ltx2", "ltx2-dfr": "ltx2-dfr",
                        "wan2.2-ti2v": "wan2.2-ti2v",
                        "sana-video": "sana-video", "motif-video": "motif-video", "lucy-edit": "lucy-edit",
                        "framepack": "framepack", "wan-animate": "wan-animate",
                        "chronoedit": "chronoedit", "kandinsky6": "kandinsky6"}  # tests/tiny_checkpoints.py

# LTX-2 rows whose pipeline follows a reference video (the kinds taking an IC-LoRA): kind -> its description
REFERENCE_PIPELINES = {kind: pk for kind, pk in FAMILIES["ltx2"].kinds.items() if pk.ic_lora}

TINY = {  # the same classes, CPU-sized (smoke run)
    "transformer": dict(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8,
                        cross_attention_dim=16, num_layers=2, caption_channels=32),
    "vae": dict(latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1)),
    "text_dim": 32,
}


def tokenizer():
    from transformers import T5TokenizerFast

    words = "a the red blue cat dog sea sky city night walking flying over under slowly camera".split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in words]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def build_pipeline(tiny: bool, device: str, dtype: torch.dtype):
    """LTXPipeline with the published architecture (or the tiny one), random weights."""
    from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline,
                           LTXVideoTransformer3DModel)
    from transformers import T5Config, T5EncoderModel

    tok = tokenizer()
    text_dim = TINY["text_dim"] if tiny else 4096
    torch.manual_seed(0)
    with torch.device(device):
        transformer = LTXVideoTransformer3DModel(**(TINY["transformer"] if tiny else {}))
        vae = AutoencoderKLLTXVideo(**(TINY["vae"] if tiny else {}))
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=text_dim, d_kv=64, d_ff=256,
                                               num_layers=1, num_heads=max(1, text_dim // 64)))
    scheduler = FlowMatchEulerDiscreteScheduler()
    pipe = LTXPipeline(transformer=transformer.to(dtype), vae=vae.to(dtype), scheduler=scheduler,
                       text_encoder=text_encoder.to(dtype).eval(), tokenizer=tok)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_family(arch: str, tiny: bool, device: str, dtype: torch.dtype):
    """The LTX-2 or Wan 2.2 TI2V-5B pipeline with its published architecture (tiny: the test suite's tiny
    checkpoint of the same classes), random weights."""
    if arch in REFERENCE_PIPELINES:  # the same components in the in-context (IC-LoRA) or HDR pipeline
        import inspect

        import diffusers

        parts = build_family("ltx2", tiny, device, dtype).components
        cls = getattr(diffusers, REFERENCE_PIPELINES[arch].cls)
        pipe = cls(**{k: v for k, v in parts.items() if k in inspect.signature(cls).parameters})
        pipe.set_progress_bar_config(disable=True)
        return pipe
    if tiny:
        from tests import tiny_checkpoints

        pipe = tiny_checkpoints.BUILDERS[TINY_FAMILY_BUILDERS[arch]]().to(device=device, dtype=dtype)
        if arch in ("sana-video", "motif-video", "lucy-edit", "wan-animate", "chronoedit"):
            pipe.vae.to(torch.float32)  # as the families' vae_dtype loads it (Lucy encodes float32 frames)
        return pipe
    if arch in ("sana-video", "motif-video", "lucy-edit"):
        return build_new_family(arch, device, dtype)
    if arch == "framepack":
        return build_framepack(device, dtype)
    if arch in ("wan-animate", "chronoedit"):
        return build_wan_image_family(arch, device, dtype)
    if arch == "kandinsky6":
        return build_kandinsky6(device, dtype)
    import diffusers

    torch.manual_seed(0)
    if arch in ("ltx2", "ltx2-dfr"):  # schedulers keep their tables on the CPU: made outside the device scope
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler()
    else:
        scheduler = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                      flow_shift=5.0)
    with torch.device(device):
        if arch in ("ltx2", "ltx2-dfr"):
            from diffusers.pipelines.ltx2 import LTX2TextConnectors
            from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
            from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, GemmaTokenizer

            vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [
                "\u2581" + w for w in "a the red blue cat dog sea sky city night walking flying over under".split()])}
            tok = GemmaTokenizer(vocab=vocab, merges=[])
            text = Gemma3TextConfig(vocab_size=len(tok), hidden_size=3840, intermediate_size=256, num_hidden_layers=48,
                                    num_attention_heads=1, num_key_value_heads=1, head_dim=64)
            text_encoder = Gemma3ForConditionalGeneration(Gemma3Config(
                text_config=text.to_dict(), mm_tokens_per_image=4, vision_config=dict(
                    hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16,
                    patch_size=8)))
            cls = diffusers.LTX2DFRPipeline if arch == "ltx2-dfr" else diffusers.LTX2Pipeline
            pipe = cls(
                transformer=diffusers.LTX2VideoTransformer3DModel(
                    use_keyframes_abs_pos_embedding=arch == "ltx2-dfr"), vae=diffusers.AutoencoderKLLTX2Video(),
                audio_vae=diffusers.AutoencoderKLLTX2Audio(), vocoder=LTX2Vocoder(), connectors=LTX2TextConnectors(),
                scheduler=scheduler, text_encoder=text_encoder.eval(), tokenizer=tok)
        else:
            pipe = diffusers.WanPipeline(**wan22_ti2v_parts(in_channels=48), expand_timesteps=True, scheduler=scheduler)
    pipe = pipe.to(dtype=dtype)
    if arch == "wan2.2-ti2v":
        pipe.vae.to(torch.float32)  # as its model card loads it
    pipe.set_progress_bar_config(disable=True)
    return pipe


HELIOS_DISTILLED = {"width": 640, "height": 384, "chunk_frames": 33, "chunks": 8, "stage_steps": [2, 2, 2],
                    "published": "Helios-Distilled: 19.5 FPS on one H100 at 640x384 in 33-frame chunks (its card)"}


def build_helios_distilled(tiny: bool, device: str, dtype: torch.dtype):
    """HeliosPyramidPipeline, distilled (DMD scheduler), with Helios 14B's architecture (tiny: the test
    suite's tiny transformer and VAE), random weights."""
    import diffusers

    if tiny:
        from tests import tiny_checkpoints

        pipe = tiny_checkpoints.helios_distilled_pipeline()
    else:
        torch.manual_seed(0)
        with torch.device(device):
            parts = dict(transformer=diffusers.HeliosTransformer3DModel(), vae=diffusers.AutoencoderKLWan(),
                         **umt5_stand_in())
        pipe = diffusers.HeliosPyramidPipeline(
            **parts, scheduler=diffusers.HeliosDMDScheduler(use_dynamic_shifting=True), is_distilled=True)
    pipe = pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def helios_rows(pipe, tiny: bool, device: str) -> list:
    """Bare: one call making N chunks. Service backend: live_chunks, one call per chunk."""
    from generator.diffusers_backend import DiffusersBackend
    from generator.interface import GenerationRequest
    from generator.model_config import parse_entry

    spec = dict(HELIOS_DISTILLED, **({"width": 64, "height": 64, "chunk_frames": 9, "chunks": 3} if tiny else {}))
    latent_frames = (spec["chunk_frames"] - 1) // 4 + 1
    call = dict(prompt="a cat walking over the city at night, camera slowly flying", width=spec["width"],
                height=spec["height"], guidance_scale=1.0, num_latent_frames_per_chunk=latent_frames,
                pyramid_num_inference_steps_list=spec["stage_steps"], is_amplify_first_chunk=True,
                max_sequence_length=128, output_type="np")
    setting = {k: v for k, v in call.items() if k not in ("prompt", "output_type")}
    timed_call(pipe, dict(call, num_frames=spec["chunk_frames"], generator=torch.Generator(device).manual_seed(0)),
               [])  # warm-up
    steps = []
    out, total = timed_call(pipe, dict(call, num_frames=spec["chunks"] * spec["chunk_frames"],
                                       generator=torch.Generator(device).manual_seed(0)), steps)
    frames = len(out.frames[0])
    bare = {"variant": "helios-distilled", "total_s": total, "frames": frames, "fps": frames / total,
            "s_per_step": float(statistics.median(np.diff(steps)[1:])),
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
            "setting": setting, "published": spec["published"]}
    config = parse_entry("bench-helios", {
        "path": "in-memory", "pipeline": "helios-pyramid", "preset": "helios-distilled", "dtype": "bfloat16",
        "max_sequence_length": 128, "limits": {"min_size": 32},
        "defaults": {"width": spec["width"], "height": spec["height"], "frames": spec["chunk_frames"], "fps": 24},
        "pipeline_kwargs": {"num_latent_frames_per_chunk": latent_frames}})
    backend = DiffusersBackend(config)
    backend.pipes, backend.primary = {"helios-pyramid": pipe}, pipe  # the weights in memory, not from disk
    sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    chunks = backend.live_chunks(GenerationRequest(call["prompt"], seed=0), lambda i: call["prompt"])
    made, first_s = 0, None
    for _ in range(spec["chunks"]):
        made += len(next(chunks))
        first_s = first_s or time.perf_counter() - t0
    chunks.close()
    live_s = time.perf_counter() - t0
    service = {"variant": "helios-distilled live_chunks", "first_chunk_s": first_s, "total_s": live_s, "frames": made,
               "fps": made / live_s, "overhead_ratio": (live_s / made) / (total / frames),
               "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}
    return [bare, service]


KANDINSKY6_SR = {"width": 864, "height": 480, "frames": 121, "factor": 2, "steps": 2,
                 "published": "Kandinsky 6.0 VSR distilled (diffusers example): 2 steps on Kandinsky 6's 864x480, "
                              "121-frame output, repeated blocks compiled"}


DFR_1080P = {"width": 960, "height": 544, "frames": 121, "upscale": 2, "interpolate": 4,
             "published": "LTX-2.5 DFR 1080p recipe (diffusers' LTX-2 docs): a 960x544 pass, x2 spatial pass "
                          "(1920x1088), two temporal rounds (x4 fps); no speed figure published"}


def ltx2_dfr_recipe_rows(tiny: bool, device: str) -> list:
    """LTX-2.5's composed recipe as a job asks it (`upscale` 2, `interpolate` 4) through DiffusersBackend's
    run_job -> generate_refined, the pipelines in memory: the DFR pass, the spatial upsampler and second pass, two
    temporal refine rounds."""
    import diffusers
    from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel

    from generator.diffusers_backend import DiffusersBackend
    from generator.interface import GenerationRequest
    from generator.longvideo import LongVideoOptions, run_job
    from generator.model_config import parse_entry

    spec = dict(DFR_1080P, **({"width": 32, "height": 32, "frames": 9} if tiny else {}))
    pipe = build_family("ltx2-dfr", tiny, device, torch.bfloat16)
    if tiny:
        from tests import tiny_checkpoints

        spatial, temporal = tiny_checkpoints.ltx2_upsampler_pipeline().latent_upsampler, \
            tiny_checkpoints.ltx2_temporal_upsampler()
    else:  # LTX-2.3's published configurations (its spatial_upsampler / latent_upsampler_temporal folders)
        torch.manual_seed(0)
        spatial = LTX2LatentUpsamplerModel(in_channels=128, mid_channels=1024, num_blocks_per_stage=4, dims=3,
                                           spatial_upsample=True, temporal_upsample=False)
        temporal = LTX2LatentUpsamplerModel(in_channels=128, mid_channels=1024, num_blocks_per_stage=4, dims=3,
                                            spatial_upsample=False, temporal_upsample=True)
    upsampler = diffusers.LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=spatial.to(device, torch.bfloat16))
    refiner = diffusers.LTX2DFRTemporalRefinePipeline.from_pipe(
        pipe, temporal_latent_upsampler=temporal.to(device, torch.bfloat16),
        scheduler=diffusers.LTXEulerAncestralRFScheduler(eta=0.5))
    for p in (upsampler, refiner):
        p.set_progress_bar_config(disable=True)
    config = parse_entry("bench-ltx2-dfr-1080p", {
        "path": "in-memory", "pipeline": "ltx2-dfr", "preset": "ltx2-distilled", "upsampler": "in-memory",
        "temporal_upsampler": "in-memory", "dtype": "bfloat16", "max_sequence_length": 128,
        "defaults": {"width": spec["width"], "height": spec["height"], "frames": spec["frames"], "fps": 24},
        "limits": {"min_size": 32}})
    backend = DiffusersBackend(config)
    backend.pipes, backend.upsampler, backend.temporal_refiner = {"ltx2-dfr": pipe}, upsampler, refiner
    options = LongVideoOptions(upscale=spec["upscale"], interpolate=spec["interpolate"])
    request = GenerationRequest("a cat walking over the city at night, camera slowly flying", seed=0)
    run_job(backend, GenerationRequest(request.prompt, seed=0, steps=2), options)  # warm-up
    backend.calls.clear()
    sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    steps = []
    t0 = time.perf_counter()
    result = run_job(backend, request, options, progress=lambda s, t, p: steps.append(t))
    sync()
    total_s = time.perf_counter() - t0
    return [{"variant": "ltx2-dfr-1080p", "total_s": total_s, "frames_shape": list(result.frames.shape),
             "fps": result.fps, "steps": steps[-1] if steps else None, "passes": [c for c, _ in backend.calls],
             "audio_s": None if result.audio is None else len(result.audio) / result.audio_sample_rate,
             "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
             "setting": {k: v for k, v in spec.items() if k != "published"}, "published": spec["published"]}]


def kandinsky6_sr_rows(tiny: bool, device: str) -> list:
    """Kandinsky6SRPipeline (diffusers' default transformer, VAE and latent upscaler bank; tiny: the test suite's)
    upscaling a synthetic 121-frame 864x480 video x2 in 2 steps: bare, then as the Kandinsky 6 model's `upscale`
    post-step (DiffusersBackend.upscale_video, the pipeline in memory)."""
    import diffusers

    from generator.diffusers_backend import DiffusersBackend
    from generator.model_config import parse_entry

    spec = dict(KANDINSKY6_SR, **({"width": 32, "height": 32, "frames": 9} if tiny else {}))
    if tiny:
        from tests import tiny_checkpoints

        pipe = tiny_checkpoints.kandinsky6_sr_pipeline().to(device=device, dtype=torch.bfloat16)
    else:
        torch.manual_seed(0)
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler()  # keeps its tables on the CPU
        with torch.device(device):
            pipe = diffusers.Kandinsky6SRPipeline(
                transformer=diffusers.Kandinsky6SRTransformer3DModel(), vae=diffusers.Kandinsky6SRVAE(),
                scheduler=scheduler, latent_upscaler=diffusers.Kandinsky6SRLatentUpscalerBank())
        pipe = pipe.to(dtype=torch.bfloat16)
        pipe.transformer.compile_repeated_blocks(fullgraph=True)  # its flex attention, fused (the example does)
    pipe.set_progress_bar_config(disable=True)
    video = source_frames({"num_frames": spec["frames"], "height": spec["height"], "width": spec["width"]})
    from PIL import Image

    call = dict(video=[Image.fromarray(f) for f in video], resolution_scale=float(spec["factor"]),
                num_inference_steps=spec["steps"], output_type="np")
    pipe(**call, generator=torch.Generator(device).manual_seed(0))  # warm-up (compile)
    sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = pipe(**call, generator=torch.Generator(device).manual_seed(0)).frames[0]
    sync()
    bare_s = time.perf_counter() - t0
    bare = {"variant": "kandinsky6-sr", "total_s": bare_s, "frames_shape": list(np.asarray(out).shape),
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
            "setting": {k: v for k, v in spec.items() if k != "published"}, "published": spec["published"]}
    config = parse_entry("bench-kandinsky6", {"path": "in-memory", "pipeline": "kandinsky6", "upsampler": "in-memory",
                                              "dtype": "bfloat16", "limits": {"min_size": 32}})
    backend = DiffusersBackend(config)
    backend.pipes, backend.upsampler = {"kandinsky6": pipe}, pipe  # the SR weights in memory; no base model needed
    sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    frames = backend.upscale_video(video, spec["factor"])
    sync()
    service_s = time.perf_counter() - t0
    service = {"variant": "kandinsky6-sr upscale post-step", "total_s": service_s, "frames_shape": list(frames.shape),
               "overhead_ratio": service_s / bare_s,
               "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}
    return [bare, service]


def wan22_ti2v_parts(in_channels: int) -> dict:
    """Wan 2.2 TI2V-5B's transformer (30 blocks of 24 x 128; `in_channels` 48, or 96 for Lucy Edit's appended
    source latents) on its 48-channel 16x VAE, with a 1-layer UMT5 of width 4096."""
    import diffusers

    return dict(
        vae=diffusers.AutoencoderKLWan(base_dim=160, decoder_base_dim=256, z_dim=48, in_channels=12, out_channels=12,
                                       is_residual=True, patch_size=2, scale_factor_spatial=16,
                                       latents_mean=[0.0] * 48, latents_std=[1.0] * 48),
        transformer=diffusers.WanTransformer3DModel(num_attention_heads=24, attention_head_dim=128,
                                                    in_channels=in_channels, out_channels=48, ffn_dim=14336,
                                                    num_layers=30),
        **umt5_stand_in())


def umt5_stand_in() -> dict:
    """A one-layer UMT5 of width 4096 (what Wan-based transformers read from umt5-xxl) + a small tokenizer."""
    from transformers import UMT5Config, UMT5EncoderModel

    tok = tokenizer()
    return dict(text_encoder=UMT5EncoderModel(UMT5Config(vocab_size=len(tok), d_model=4096, d_kv=64, d_ff=256,
                                                         num_layers=1, num_heads=64)).eval(), tokenizer=tok)


def build_new_family(arch: str, device: str, dtype: torch.dtype):
    """Sana-Video, Motif-Video or Lucy Edit at their published width, random weights; prompt encoders are
    one-layer stand-ins of the width the transformer reads."""
    import diffusers

    torch.manual_seed(0)
    scheduler = {  # schedulers keep their tables on the CPU: made outside the device scope
        "sana-video": diffusers.FlowMatchEulerDiscreteScheduler(),
        "motif-video": diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0),
        "lucy-edit": diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                       flow_shift=5.0)}[arch]
    words = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [
        "\u2581" + w for w in "a the red blue cat dog sea sky city night walking flying over under".split()])}
    with torch.device(device):
        if arch == "sana-video":
            from transformers import Gemma2Config, Gemma2Model, GemmaTokenizer

            tok = GemmaTokenizer(vocab=words, merges=[])
            text = Gemma2Model(Gemma2Config(vocab_size=len(tok), hidden_size=2304, intermediate_size=256,
                                            num_hidden_layers=1, num_attention_heads=8, num_key_value_heads=4,
                                            head_dim=256)).eval()
            pipe = diffusers.SanaVideoPipeline(transformer=diffusers.SanaVideoTransformer3DModel(),
                                               vae=diffusers.AutoencoderKLWan(), text_encoder=text, tokenizer=tok,
                                               scheduler=scheduler)
        elif arch == "motif-video":
            from diffusers.guiders import AdaptiveProjectedGuidance
            from diffusers.models.transformers.transformer_motif_video import MotifVideoTransformer3DModel
            from transformers import SiglipVisionConfig, T5Gemma2Encoder, T5Gemma2EncoderConfig, T5Gemma2TextConfig

            tok = tokenizer()
            text = T5Gemma2Encoder(T5Gemma2EncoderConfig(
                text_config=T5Gemma2TextConfig(hidden_size=4096, num_hidden_layers=1, num_attention_heads=16,
                                               intermediate_size=256, vocab_size=len(tok), head_dim=256,
                                               num_key_value_heads=8, dropout_rate=0.0),
                vision_config=SiglipVisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=32, image_size=16, patch_size=8))).eval()
            pipe = diffusers.MotifVideoPipeline(transformer=MotifVideoTransformer3DModel(),
                                                vae=diffusers.AutoencoderKLWan(), text_encoder=text, tokenizer=tok,
                                                scheduler=scheduler, guider=AdaptiveProjectedGuidance())
        else:
            pipe = diffusers.LucyEditPipeline(**wan22_ti2v_parts(in_channels=96), expand_timesteps=True,
                                              scheduler=scheduler)
    pipe = pipe.to(dtype=dtype)
    pipe.vae.to(torch.float32)  # Wan's VAE runs in float32 (the families' vae_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_framepack(device: str, dtype: torch.dtype):
    """HunyuanVideoFramepackPipeline with FramePackI2V_HY's transformer (diffusers' defaults = HunyuanVideo 13B,
    plus its history embedder and SigLIP image projection) and HunyuanVideo's VAE, random weights. Prompt and
    image encoders are stand-ins of the width the transformer reads: a 2-layer Llama of width 4096 (the
    pipeline takes its third-last hidden state), a 1-layer CLIP text model of width 768, a 1-layer SigLIP of
    width 1152 at 384 px (flux_redux_bfl's image encoder)."""
    import diffusers
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTokenizer, LlamaConfig, LlamaModel, LlamaTokenizerFast,
                              SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel)

    torch.manual_seed(0)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler()  # keeps its tables on the CPU: outside the device scope
    letters = list("abcdefghijklmnopqrstuvwxyz")
    llama_tok = LlamaTokenizerFast(
        vocab={t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>", "\u2581", *letters])}, merges=[],
        pad_token="<pad>")
    clip_tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(
        ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)])}, merges=[])
    with torch.device(device):
        pipe = diffusers.HunyuanVideoFramepackPipeline(
            transformer=diffusers.HunyuanVideoFramepackTransformer3DModel(has_image_proj=True,
                                                                          has_clean_x_embedder=True),
            vae=diffusers.AutoencoderKLHunyuanVideo(), scheduler=scheduler, tokenizer=llama_tok,
            text_encoder=LlamaModel(LlamaConfig(vocab_size=len(llama_tok), hidden_size=4096, intermediate_size=256,
                                                num_hidden_layers=2, num_attention_heads=32, num_key_value_heads=8,
                                                max_position_embeddings=512)).eval(),
            tokenizer_2=clip_tok,
            text_encoder_2=CLIPTextModel(CLIPTextConfig(
                vocab_size=len(clip_tok), hidden_size=768, intermediate_size=256, num_hidden_layers=1,
                num_attention_heads=12, projection_dim=768, bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval(),
            image_encoder=SiglipVisionModel(SiglipVisionConfig(hidden_size=1152, intermediate_size=256,
                                                               num_hidden_layers=1, num_attention_heads=16,
                                                               image_size=384, patch_size=14)).eval(),
            feature_extractor=SiglipImageProcessor(size={"height": 384, "width": 384}))
    pipe = pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_wan_image_family(arch: str, device: str, dtype: torch.dtype):
    """WanAnimatePipeline with Wan2.2-Animate-14B's transformer (diffusers' defaults), or ChronoEditPipeline with
    Wan 2.1 I2V 14B's (36 input channels, image cross-attention from CLIP-H's 1280 features), on Wan 2.1's VAE
    (float32, as their examples load it), random weights; a one-layer UMT5 of width 4096 and a one-layer CLIP
    vision model of width 1280 (what the transformers' image projections read) as stand-ins."""
    import diffusers
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    scheduler = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                  flow_shift=5.0)  # keeps its tables on the CPU
    with torch.device(device):
        if arch == "wan-animate":
            cls, transformer = diffusers.WanAnimatePipeline, diffusers.WanAnimateTransformer3DModel()
        else:
            cls, transformer = diffusers.ChronoEditPipeline, diffusers.ChronoEditTransformer3DModel(
                in_channels=36, image_dim=1280, added_kv_proj_dim=5120)
        pipe = cls(
            transformer=transformer, vae=diffusers.AutoencoderKLWan(), scheduler=scheduler,
            image_encoder=CLIPVisionModel(CLIPVisionConfig(
                hidden_size=1280, intermediate_size=256, num_hidden_layers=1, num_attention_heads=16, image_size=224,
                patch_size=14)).eval(),
            image_processor=CLIPImageProcessor(crop_size=224, size=224), **umt5_stand_in())
    pipe = pipe.to(dtype=dtype)
    pipe.vae.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_kandinsky6(device: str, dtype: torch.dtype):
    """Kandinsky6TI2VAPipeline with diffusers' default Kandinsky6Transformer3DModel and the released checkpoints'
    flags (text_token_padding, ca_rope, cross_gates, fix_modulation, 2 token types), HunyuanVideo's VAE, MMAudio's
    VAE and vocoder (44.1 kHz), random weights; a 2-layer Qwen2.5-VL text model of width 3584 and a 1-layer CLIP
    text model of width 768 (what the transformer reads) as prompt stand-ins, with a Qwen2 tokenizer as the
    service loads it."""
    import diffusers
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTokenizer, Qwen2_5_VLConfig,
                              Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer)

    torch.manual_seed(0)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler()  # keeps its tables on the CPU: outside the device scope
    letters = list("abcdefghijklmnopqrstuvwxyz")
    qwen_tok = Qwen2Tokenizer(vocab={t: i for i, t in enumerate(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "\u0120", *letters])}, merges=[])
    clip_tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(
        ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)])}, merges=[])
    with torch.device(device):
        pipe = diffusers.Kandinsky6TI2VAPipeline(
            transformer=diffusers.Kandinsky6Transformer3DModel(text_token_padding=True, ca_rope=True, cross_gates=True,
                                                               fix_modulation=True, visual_token_type_num_embeddings=2),
            vae=diffusers.AutoencoderKLHunyuanVideo(), scheduler=scheduler, tokenizer=qwen_tok,
            text_encoder=Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
                text_config=dict(vocab_size=len(qwen_tok), hidden_size=3584, intermediate_size=256, num_hidden_layers=2,
                                 num_attention_heads=28, num_key_value_heads=4),
                vision_config=dict(depth=1, hidden_size=64, intermediate_size=64, num_heads=2,
                                   out_hidden_size=3584))).eval(),
            tokenizer_2=clip_tok,
            text_encoder_2=CLIPTextModel(CLIPTextConfig(
                vocab_size=len(clip_tok), hidden_size=768, intermediate_size=256, num_hidden_layers=1,
                num_attention_heads=12, projection_dim=768, bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval(),
            audio_vae=diffusers.MMAudioVAE(), vocoder=diffusers.MMAudioVocoder())
    pipe = pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def source_frames(call) -> np.ndarray:
    """A smooth moving colour field, frames x height x width x 3 uint8: the video an editing row edits."""
    t, y, x = np.mgrid[0:call["num_frames"], 0:call["height"], 0:call["width"]]
    return np.stack([(x + 4 * t) % 256, (y + 2 * t) % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def for_pipeline(pipe, args: dict) -> dict:
    """`args` as `pipe` takes them: a pass without a step count (LTX2DFRPipeline) gets its steps as sigmas (as
    the family's adapter gives them; 8 is its own distilled schedule), and what it has not (guidance) is left out."""
    import inspect

    from generator.families.ltx2 import dfr_sigmas

    params = inspect.signature(pipe.__call__).parameters
    out = {k: v for k, v in args.items() if k in params}
    steps = args.get("num_inference_steps")
    if steps and "num_inference_steps" not in params and "sigmas" in params and dfr_sigmas(steps) is not None:
        out["sigmas"] = dfr_sigmas(steps)
    return out


def flops_per_step(pipe, args) -> float:
    """FLOPs of one denoising step (classifier-free guidance included), counted by torch's FlopCounterMode
    on a real 1-step call that stops at the latents (no VAE decode). The 1-layer text encoder adds <0.1%."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        pipe(**for_pipeline(pipe, dict(args, num_inference_steps=1, output_type="latent", generator=torch.Generator(
            pipe._execution_device).manual_seed(0))))
    return float(counter.get_total_flops())


def free_memory():
    """Pipelines hold reference cycles: collect them, or the next variant's peak memory includes this one."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed_call(pipe, args, step_times):
    def on_step(p, i, t, kwargs):
        sync()
        step_times.append(time.perf_counter())
        return kwargs

    sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step_times.append(start)
    out = pipe(**for_pipeline(pipe, args), callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents"])
    sync()
    total = time.perf_counter() - start
    return out, total


def measure(pipe, args, label):
    """One untimed 2-step warm-up call (compiles, allocates), then the timed call."""
    t0 = time.perf_counter()
    timed_call(pipe, dict(args, num_inference_steps=2), [])
    warm = time.perf_counter() - t0
    steps = []
    out, total = timed_call(pipe, args, steps)
    intervals = np.diff(steps)
    frames = out.frames[0]
    row = {
        "variant": label,
        "s_per_step": float(statistics.median(intervals[1:])) if len(intervals) > 1 else float(intervals[0]),
        "first_step_s": float(intervals[0]),  # includes prompt encoding + latent prep
        "total_s": total,
        "after_denoise_s": total - (steps[-1] - steps[0]),  # VAE decode + postprocess
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "warmup_s": warm,
        "finite": bool(np.isfinite(np.asarray(frames, dtype=np.float32)).all()),
        "frames_shape": list(np.asarray(frames).shape),
    }
    return row


def service_row(path, args, workdir, label="service", memory=None, kinds=("ltx", "ltx-i2v"), name="bench-ltx",
                video=None, image=None, preset=None):
    """Configure the saved bf16 checkpoint at `path` and run it through registry -> backend -> MP4."""
    from generator import interface
    from generator.encode import encode_video
    from generator.interface import GenerationRequest
    from generator.registry_setup import register_configured_models

    config = {name: {"path": path, "pipeline": list(kinds), "dtype": "bfloat16", "memory": memory or {},
                     "defaults": {**({} if preset else {"steps": args["num_inference_steps"]}), "width": args["width"],
                                  "height": args["height"], "frames": args["num_frames"], "fps": 24,
                                  **({"guidance": args["guidance_scale"]} if "guidance_scale" in args else {})},
                     "limits": {"min_size": 32, "max_frames": 257}, "max_sequence_length": args["max_sequence_length"],
                     **({"preset": preset} if preset else {})}}
    cfg_file = os.path.join(workdir, "models.json")
    with open(cfg_file, "w") as fh:
        json.dump(config, fh)
    interface.list_models()
    register_configured_models(cfg_file, strict=True)
    t0 = time.perf_counter()
    backend = interface.get_backend(name)
    load_s = time.perf_counter() - t0
    request = GenerationRequest(args["prompt"], seed=0, video=video, image=image, steps=args["num_inference_steps"])
    previews = []
    backend.generate(GenerationRequest(args["prompt"], seed=0, steps=2, video=video, image=image),
                     progress=lambda s, t, p: None)  # warm-up
    sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = backend.generate(request, progress=lambda s, t, p: previews.append(time.perf_counter()))
    gen_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    mp4 = encode_video(result.frames, result.fps, audio=result.audio, sample_rate=result.audio_sample_rate)
    enc_s = time.perf_counter() - t1
    row = {"variant": label, "total_s": gen_s + enc_s, "applied": dict(backend.applied), "generate_s": gen_s,
           "encode_mp4_s": enc_s, "load_s": load_s, "mp4_bytes": len(mp4),
           "s_per_step": float(statistics.median(np.diff(previews))) if len(previews) > 2 else None,
           "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
           "frames_shape": list(result.frames.shape),
           "audio_s": None if result.audio is None else len(result.audio) / result.audio_sample_rate}
    backend.unload()
    interface._resident.pop(name, None)
    del backend
    free_memory()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--steps", type=int, default=50, help="LTXPipeline's default num_inference_steps")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--tiny", action="store_true", help="tiny config (also used automatically without CUDA)")
    opts = parser.parse_args(argv)
    variants = [v for v in opts.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")

    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    cuda = torch.cuda.is_available()
    tiny = opts.tiny or not cuda
    if not cuda:
        print("bench_gpu: this benchmark needs a CUDA GPU; none here. Running a tiny CPU smoke test of the "
              "same code path instead (these timings say nothing about GPU speed).")
        opts.width, opts.height, opts.frames, opts.steps = 64, 64, 9, 2
        torch.set_num_threads(min(2, torch.get_num_threads()))
    device = "cuda" if cuda else "cpu"
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}; torch {torch.__version__}; "
          f"{'tiny' if tiny else 'LTX-Video 0.9.0'} architecture, random weights; "
          f"{opts.width}x{opts.height}, {opts.frames} frames, {opts.steps} steps")
    args = dict(prompt="a cat walking over the city at night, camera slowly flying", width=opts.width,
                height=opts.height, num_frames=opts.frames, num_inference_steps=opts.steps, output_type="np",
                generator=None, max_sequence_length=128)
    rows = []

    def record(*new_rows):
        rows.extend(new_rows)
        for row in new_rows:
            print(json.dumps(row), flush=True)
        if opts.json:  # rewritten after every variant: a run cut short keeps what it measured
            with open(opts.json, "w") as fh:
                json.dump({"device": torch.cuda.get_device_name() if cuda else "cpu", "tiny": tiny,
                           "torch": torch.__version__, "setting": {"width": opts.width, "height": opts.height,
                                                                  "frames": opts.frames, "steps": opts.steps},
                           "rows": rows}, fh, indent=2)

    def run(label, dtype, setup=None, steps=None, build_on=None):
        pipe = None
        try:
            pipe = build_pipeline(tiny, build_on or device, dtype)
            if setup is not None:
                note = setup(pipe)
                if note:
                    record({"variant": label, "skipped": note})
                    return
            call = dict(args, generator=torch.Generator(device).manual_seed(0))
            if steps:
                call["num_inference_steps"] = steps
            row = measure(pipe, call, label)
            if label == "bf16":
                row["tflop_per_step"] = flops_per_step(pipe, call) / 1e12
                row["achieved_tflops"] = row["tflop_per_step"] / row["s_per_step"]
            record(row)
        except Exception as exc:  # one failing option must not cost the other measurements
            record({"variant": label, "error": f"{type(exc).__name__}: {exc}"[:500]})
        finally:
            del pipe
            free_memory()

    def compile_setup(pipe):
        if not cuda:
            return "compile is only benchmarked on a GPU"
        pipe.transformer.compile_repeated_blocks(fullgraph=True)

    def cache_setup(pipe):
        from diffusers.hooks import FirstBlockCacheConfig

        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.05))

    def cudnn_setup(pipe):
        if not cuda:
            return "the cuDNN attention backend needs a GPU"
        pipe.transformer.set_attention_backend("_native_cudnn")

    def offload_setup(pipe):
        if not cuda:
            return "model CPU offload needs a GPU"
        pipe.enable_model_cpu_offload()

    def service_variant():
        """The bare bf16 pipeline, then the same weights as a configured model through the service's backend,
        as configured by default and with memory.compile = "regional"."""
        with tempfile.TemporaryDirectory() as workdir:
            pipe = build_pipeline(tiny, device, torch.bfloat16)
            bare = measure(pipe, dict(args, generator=torch.Generator(device).manual_seed(0)), "bare-for-service")
            record(bare)
            path = os.path.join(workdir, "ltx-random")
            pipe.save_pretrained(path)
            del pipe
            free_memory()
            service = service_row(path, args, workdir)
            service["overhead_ratio"] = service["total_s"] / bare["total_s"]
            record(service)
            if cuda and "compile" in variants:
                compiled = service_row(path, args, workdir, "service-compile", {"compile": "regional"})
                compiled["overhead_ratio"] = compiled["total_s"] / bare["total_s"]
                record(compiled)

    def family_variant(arch):
        """The family's bare pipeline at its published setting, then the same weights through the backend."""
        spec = FAMILY_ARCHS[arch]
        call = dict(args, **spec["call"]) if not tiny else dict(args)
        if arch not in ("ltx2", "ltx2-ic-lora", "ltx2-hdr", "ltx2-dfr", "kandinsky6"):
            call.pop("frame_rate", None)
        if tiny and arch == "sana-video":
            call["use_resolution_binning"] = False
        if tiny and arch == "chronoedit":
            call["num_frames"] = 5  # the image and its edit, at any size
        video = source_frames(call) if spec.get("source_video") else None
        bare = dict(call)  # the pipeline's own argument names
        if spec.get("frames_arg"):
            bare[spec["frames_arg"]] = bare.pop("num_frames")
        image = source_frames(dict(call, num_frames=1))[0] if spec.get("start_image") else None
        if image is not None:
            from PIL import Image

            bare["image"] = Image.fromarray(image)
        if video is not None and arch == "wan-animate":  # what the family's adapter passes: pose and face videos
            from PIL import Image

            face = 16 if tiny else 512  # the motion encoder's size
            del bare["num_frames"]  # the clip is as long as the driving video
            bare.update(pose_video=[Image.fromarray(f) for f in video], segment_frame_length=call["num_frames"],
                        face_video=[Image.fromarray(f).resize((face, face)) for f in video])
        elif video is not None and arch in REFERENCE_PIPELINES:  # what the family's adapter passes: one reference
            from diffusers.pipelines.ltx2.pipeline_ltx2_hdr_lora import LTX2HDRReferenceCondition
            from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition
            from PIL import Image

            condition = LTX2HDRReferenceCondition if REFERENCE_PIPELINES[arch].hdr else LTX2ReferenceCondition
            bare["reference_conditions"] = [condition(frames=[Image.fromarray(f) for f in video])]
        elif video is not None:
            from PIL import Image

            bare["video"] = [Image.fromarray(f) for f in video]
        sections = 1
        if arch == "framepack":  # the sections the service's adapter asks for (one pipeline call makes them all)
            from generator.families.framepack import sections as framepack_sections

            plan = framepack_sections(call["num_frames"])
            bare.update(num_frames=plan["num_frames"], latent_window_size=plan["latent_window_size"])
            sections = plan["sections"]
        with tempfile.TemporaryDirectory() as workdir:
            pipe = build_family(arch, tiny, device, torch.bfloat16)
            row = measure(pipe, dict(bare, generator=torch.Generator(device).manual_seed(0)), arch)
            row["tflop_per_step"] = flops_per_step(pipe, dict(bare, generator=torch.Generator(device).manual_seed(0)))
            row["tflop_per_step"] /= 1e12 * sections
            row["achieved_tflops"] = row["tflop_per_step"] / row["s_per_step"]
            row["setting"] = {k: v for k, v in call.items() if k not in ("generator", "prompt", "output_type")}
            row["published"] = spec["published"]
            record(row)
            path = os.path.join(workdir, arch)
            size = sum(p.numel() * p.element_size() for c in pipe.components.values()
                       if isinstance(c, torch.nn.Module) for p in c.parameters())
            if size * 1.1 > shutil.disk_usage(workdir).free:  # the service row loads the weights back from disk
                record({"variant": f"{arch} service", "skipped": f"saving the checkpoint needs {size / 2**30:.0f} GiB "
                                                               f"of disk; {workdir} has "
                                                               f"{shutil.disk_usage(workdir).free / 2**30:.0f}"})
                return
            pipe.save_pretrained(path)
            del pipe
            free_memory()
            service = service_row(path, call, workdir, f"{arch} service", kinds=spec["kinds"], name=f"bench-{arch}",
                                  video=video, image=image, preset=spec.get("preset"))
            service["overhead_ratio"] = service["total_s"] / row["total_s"]
            record(service)

    own_rows = {"ltx2-dfr-1080p": ltx2_dfr_recipe_rows, "kandinsky6-sr": kandinsky6_sr_rows}  # label -> its rows
    for label in variants:
        if label in own_rows:
            try:
                record(*own_rows[label](tiny, device))
            except Exception as exc:
                record({"variant": label, "error": f"{type(exc).__name__}: {exc}"[:500]})
            free_memory()
            continue
        if label == "helios-distilled":
            pipe = None
            try:
                pipe = build_helios_distilled(tiny, device, torch.bfloat16)
                record(*helios_rows(pipe, tiny, device))
            except Exception as exc:
                record({"variant": label, "error": f"{type(exc).__name__}: {exc}"[:500]})
            finally:
                del pipe
                free_memory()
            continue
        if label in FAMILY_ARCHS:
            try:
                family_variant(label)
            except Exception as exc:
                record({"variant": label, "error": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        if label == "service":
            try:
                service_variant()
            except Exception as exc:
                record({"variant": "service", "error": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        dtype = torch.float16 if label == "fp16" else torch.bfloat16
        setup = {"compile": compile_setup, "cache": cache_setup, "cudnn": cudnn_setup, "offload": offload_setup,
                 "tiling": lambda p: p.vae.enable_tiling()}.get(label)
        run(label, dtype, setup, steps=20 if label == "steps20" else None,
            build_on="cpu" if label == "offload" else None)

    base = next((r for r in rows if r["variant"] == "bf16" and "s_per_step" in r), None)
    print()
    print(f"{'variant':18} {'s/step':>8} {'step x':>7} {'total s':>8} {'total x':>8} {'peak GiB':>9}")
    for row in rows:
        if "skipped" in row or "error" in row:
            status = "skipped" if "skipped" in row else "FAILED"
            print(f"{row['variant']:18} {status}: {row.get('skipped') or row['error']}")
            continue
        sps, peak, total = row.get("s_per_step"), row.get("peak_gpu_gib"), row["total_s"]
        ltx = row["variant"].split()[0] not in (*FAMILY_ARCHS, "helios-distilled")  # speed-ups are over LTX's bf16 row
        step_x = f"{base['s_per_step'] / sps:.2f}" if base and sps and ltx else "-"  # (>1 is faster)
        total_x = f"{base['total_s'] / total:.2f}" if base and ltx and row["variant"] != "steps20" else "-"
        print(f"{row['variant']:18} {'-' if sps is None else f'{sps:.3f}':>8} {step_x:>7} {total:8.2f} {total_x:>8} "
              f"{'-' if peak is None else f'{peak:9.2f}'}")
    if cuda and base and "tflop_per_step" in base:  # a share of a GPU spec means nothing for the CPU smoke run
        print(f"\nbf16: {base['tflop_per_step']:.1f} TFLOP per step (classifier-free guidance: 2 sequences), "
              f"{base['achieved_tflops']:.0f} TFLOP/s achieved = {base['achieved_tflops'] / DENSE_BF16_TFLOPS:.0%} "
              f"of the H100/H200 SXM dense BF16 spec ({DENSE_BF16_TFLOPS} TFLOP/s)")
        for row in rows:
            if row.get("variant") in ("compile", "service", "service-compile") and row.get("s_per_step"):
                achieved = base["tflop_per_step"] / row["s_per_step"]
                print(f"{row['variant']}: {achieved:.0f} TFLOP/s = {achieved / DENSE_BF16_TFLOPS:.0%} of spec")
    for row in rows:
        if row.get("variant", "").startswith("helios-distilled") and "fps" in row:
            first = f", first chunk after {row['first_chunk_s']:.2f} s" if row.get("first_chunk_s") else ""
            print(f"{row['variant']}: {row['fps']:.1f} frames/s over {row['frames']} frames{first}")
    print(f"\nreference: {PUBLISHED}")
    if "helios-distilled" in variants:
        print(f"reference: {HELIOS_DISTILLED['published']}")
    for arch in FAMILY_ARCHS:
        if arch in variants:
            print(f"reference: {FAMILY_ARCHS[arch]['published']}")
    if not cuda:
        print("no GPU numbers were produced in this run.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
