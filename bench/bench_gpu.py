"""GPU benchmark: LTX-Video's real architecture with random weights at its published setting.

    python bench/bench_gpu.py                      # 768x512, 121 frames, 50 steps, every variant
    python bench/bench_gpu.py --steps 8 --variants bf16,fp16,cache
    python bench/bench_gpu.py --json bench/ltx_h100.json

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

Without CUDA it says so and runs the same code path on a tiny config on CPU (smoke test), exit 0.
Never prints made-up numbers.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# In the order they run: the most telling first, so a run cut short still answers the main questions.
VARIANTS = ("bf16", "steps20", "service", "cache", "fp16", "cudnn", "tiling", "offload", "compile")
DENSE_BF16_TFLOPS = 989  # NVIDIA's H100 SXM / H200 spec sheet, dense (no sparsity)
PUBLISHED = "LTX-Video: 768x512, 121 frames (5 s at 24 fps) in about 2 s on one H100 (published claim)"

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
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel
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


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def flops_per_step(pipe, args) -> float:
    """FLOPs of one denoising step (classifier-free guidance included), counted by torch's FlopCounterMode
    on a real 1-step call that stops at the latents (no VAE decode). The 1-layer text encoder adds <0.1%."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        pipe(**dict(args, num_inference_steps=1, output_type="latent", generator=torch.Generator(
            pipe._execution_device).manual_seed(0)))
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
    out = pipe(**args, callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents"])
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


def service_row(path, args, workdir, label="service", memory=None):
    """Configure the saved bf16 checkpoint at `path` and run it through registry -> backend -> MP4."""
    from generator import interface
    from generator.encode import encode_video
    from generator.interface import GenerationRequest
    from generator.registry_setup import register_configured_models

    config = {"bench-ltx": {"path": path, "pipeline": ["ltx", "ltx-i2v"], "dtype": "bfloat16",
                            "memory": memory or {},
                            "defaults": {"steps": args["num_inference_steps"], "width": args["width"],
                                         "height": args["height"], "frames": args["num_frames"], "fps": 24},
                            "limits": {"min_size": 32, "max_frames": 257}}}
    cfg_file = os.path.join(workdir, "models.json")
    with open(cfg_file, "w") as fh:
        json.dump(config, fh)
    interface.list_models()
    register_configured_models(cfg_file, strict=True)
    t0 = time.perf_counter()
    backend = interface.get_backend("bench-ltx")
    load_s = time.perf_counter() - t0
    request = GenerationRequest(args["prompt"], seed=0)
    previews = []
    backend.generate(GenerationRequest(args["prompt"], seed=0, steps=2), progress=lambda s, t, p: None)  # warm-up
    sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = backend.generate(request, progress=lambda s, t, p: previews.append(time.perf_counter()))
    gen_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    mp4 = encode_video(result.frames, result.fps)
    enc_s = time.perf_counter() - t1
    row = {"variant": label, "total_s": gen_s + enc_s, "applied": dict(backend.applied), "generate_s": gen_s, "encode_mp4_s": enc_s,
           "load_s": load_s, "mp4_bytes": len(mp4),
           "s_per_step": float(statistics.median(np.diff(previews))) if len(previews) > 2 else None,
           "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
           "frames_shape": list(result.frames.shape)}
    backend.unload()
    interface._resident.pop("bench-ltx", None)
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

    for label in variants:
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
            print(f"{row['variant']:18} {'skipped' if 'skipped' in row else 'FAILED'}: {row.get('skipped') or row['error']}")
            continue
        sps, peak, total = row.get("s_per_step"), row.get("peak_gpu_gib"), row["total_s"]
        step_x = f"{base['s_per_step'] / sps:.2f}" if base and sps else "-"  # speed-up over bf16 (>1 is faster)
        total_x = f"{base['total_s'] / total:.2f}" if base and row["variant"] != "steps20" else "-"
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
    print(f"\nreference: {PUBLISHED}")
    if not cuda:
        print("no GPU numbers were produced in this run.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
