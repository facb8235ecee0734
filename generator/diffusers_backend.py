"""diffusers video pipelines (LTX-Video, Wan 2.1, CogVideoX; text- and image-to-video) behind the
common `Backend` interface, loaded from local checkpoint folders named in the model configuration.

Previews: every step we show the current latents through a fixed linear map latent-channels -> RGB
(a C x 3 matrix + bias), so a preview costs one tiny matmul on the latent grid (LTX at 768x512x121:
16 x 16 x 24 cells) and never a VAE decode. The map is not hard-coded per checkpoint: it is fitted
once per loaded model (ridge least squares) from the model's OWN VAE encoder on a synthetic colour
chart, in the same normalised latent space the pipeline denoises in, so it is right for any
checkpoint/VAE version. Early steps show coloured noise, later steps the emerging layout and
colours — what a user watching progress needs. Cost: one encode of a single 16x16-latent image at
load time.
"""
from __future__ import annotations

import gc
import logging
import os
import time
from typing import Optional

import numpy as np
import torch
from PIL import Image

from generator.interface import (Backend, CancelCheck, Cancelled, GenerationError, GenerationRequest,
                                 GenerationResult, ProgressCallback)
from generator.model_config import KINDS, ModelConfig

log = logging.getLogger(__name__)

TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
PREVIEW_LONG_SIDE = 128  # previews are upscaled (nearest) until their long side reaches about this


def accelerator_available() -> bool:
    return torch.cuda.is_available()


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def free_accelerator_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _transformer_blocks(transformer) -> int:
    for attr in ("transformer_blocks", "blocks", "single_transformer_blocks"):
        blocks = getattr(transformer, attr, None)
        if blocks is not None:
            return len(blocks)
    return 0


class DiffusersBackend(Backend):
    """One configured diffusers model: a T2V pipeline, an I2V pipeline, or both sharing components."""

    def __init__(self, config: ModelConfig):
        super().__init__(config.model_info())
        self.config = config
        self.pipes: dict = {}  # kind -> pipeline
        self.primary = None  # the pipeline that owns offload hooks
        self.device = pick_device()
        self.dtype = TORCH_DTYPES[config.dtype]
        self.applied: dict = {}  # memory/speed options actually in effect (for logs, bench, /api)
        self._preview_map: Optional[tuple] = None  # (W [C x 3], b [3]) torch float32 on the execution device
        self._preview_ready = False

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        if self.pipes:
            return
        import diffusers

        cfg = self.config
        if not os.path.isfile(os.path.join(cfg.path, "model_index.json")):
            raise GenerationError(f"model {cfg.name}: {cfg.path} is not a diffusers pipeline folder "
                                  f"(no model_index.json); check 'path' in the model configuration")
        if self.device.type == "cpu" and self.dtype == torch.float16:
            log.warning("model %s: float16 on CPU is slow/unsupported, loading float32", cfg.name)
            self.dtype = torch.float32
        first = cfg.kinds[0]
        cls = getattr(diffusers, KINDS[first][2])
        kwargs = {"dtype": self.dtype, "local_files_only": True}
        if cfg.vae_dtype and TORCH_DTYPES[cfg.vae_dtype] != self.dtype:
            vae_cls = type(self).vae_class(cfg.family)
            kwargs["vae"] = vae_cls.from_pretrained(cfg.path, subfolder="vae", dtype=TORCH_DTYPES[cfg.vae_dtype],
                                                    local_files_only=True)
        t0 = time.perf_counter()
        try:
            pipe = cls.from_pretrained(cfg.path, **kwargs)
        except Exception as exc:
            raise GenerationError(f"model {cfg.name}: cannot load {KINDS[first][2]} from {cfg.path}: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        self.pipes[first] = pipe
        self.primary = pipe
        if len(cfg.kinds) == 2:
            second = cfg.kinds[1]
            self._check_pair(pipe)
            # Shares every component. diffusers 0.42's from_pipe casts the shared components to float32
            # unless given a dtype (a bf16 LTX ran 8x slower), so name it and put a separate VAE dtype back.
            other = getattr(diffusers, KINDS[second][2]).from_pipe(pipe, dtype=self.dtype)
            if cfg.vae_dtype:
                pipe.vae.to(dtype=TORCH_DTYPES[cfg.vae_dtype])
            other.set_progress_bar_config(disable=True)
            self.pipes[second] = other
        self._apply_memory_options(pipe)
        log.info("model %s loaded in %.1f s on %s (%s): %s", cfg.name, time.perf_counter() - t0, self.device,
                 self.dtype, self.applied)

    @staticmethod
    def vae_class(family: str):
        import diffusers

        return {"ltx": diffusers.AutoencoderKLLTXVideo, "wan": diffusers.AutoencoderKLWan,
                "cogvideox": diffusers.AutoencoderKLCogVideoX}[family]

    def _check_pair(self, pipe) -> None:
        if self.config.family == "wan":
            transformer, vae = pipe.transformer, pipe.vae
            if transformer.config.in_channels == vae.config.z_dim and not getattr(pipe.config, "expand_timesteps", False):
                raise GenerationError(f"model {self.config.name}: this Wan checkpoint is text-to-video only "
                                      f"(transformer takes {transformer.config.in_channels} channels); configure "
                                      f"the Wan I2V checkpoint as its own 'wan-i2v' entry")

    def _apply_memory_options(self, pipe) -> None:
        mem, applied = self.config.memory, self.applied
        offload = mem.cpu_offload
        if offload != "none" and not accelerator_available():
            log.warning("model %s: cpu_offload=%s needs an accelerator; none here, running on %s",
                        self.config.name, offload, self.device)
            offload = "none"
        if offload == "model":
            pipe.enable_model_cpu_offload()
        elif offload == "sequential":
            pipe.enable_sequential_cpu_offload()
        else:
            pipe.to(self.device)
        applied["cpu_offload"] = offload
        vae = pipe.vae
        if mem.vae_tiling and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
            applied["vae_tiling"] = True
        if mem.vae_slicing and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
            applied["vae_slicing"] = True
        transformer = pipe.transformer
        if mem.attention_backend:
            try:
                transformer.set_attention_backend(mem.attention_backend)
                applied["attention_backend"] = mem.attention_backend
            except Exception as exc:  # backend not installed / unsupported on this GPU: keep native SDPA
                log.warning("model %s: attention backend %r unavailable (%s); using native SDPA",
                            self.config.name, mem.attention_backend, exc)
        if mem.cache:
            self._enable_cache(pipe, dict(mem.cache))
        if mem.compile:
            if not accelerator_available():
                log.warning("model %s: compile is only applied on a GPU host; skipped", self.config.name)
            else:
                if mem.compile == "full":
                    transformer.compile(fullgraph=False)
                else:  # regional: compile the repeated block once, reuse it for every block (fast warm-up)
                    transformer.compile_repeated_blocks(fullgraph=True)
                applied["compile"] = "full" if mem.compile == "full" else "regional"

    def _enable_cache(self, pipe, cache: dict) -> None:
        kind = cache.pop("type")
        transformer = pipe.transformer
        try:
            from diffusers.hooks import FirstBlockCacheConfig, PyramidAttentionBroadcastConfig
        except ImportError:
            log.warning("model %s: this diffusers has no caching hooks; cache skipped", self.config.name)
            return
        if kind == "first_block":
            if _transformer_blocks(transformer) < 2:
                log.warning("model %s: FirstBlockCache needs >= 2 transformer blocks; skipped", self.config.name)
                return
            transformer.enable_cache(FirstBlockCacheConfig(threshold=float(cache.get("threshold", 0.05))))
        elif kind == "pab":
            transformer.enable_cache(PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=int(cache.get("spatial_attention_block_skip_range", 2)),
                spatial_attention_timestep_skip_range=tuple(cache.get("spatial_attention_timestep_skip_range",
                                                                      (100, 800))),
                current_timestep_callback=lambda: pipe.current_timestep))
        self.applied["cache"] = kind

    def unload(self) -> None:
        for pipe in self.pipes.values():
            try:
                pipe.maybe_free_model_hooks()
            except Exception:  # noqa: BLE001 - freeing must not fail
                pass
        self.pipes.clear()
        self.primary = None
        self._preview_map = None
        self._preview_ready = False
        free_accelerator_memory()

    # ------------------------------------------------------------------ previews
    def _latent_space(self, pipe, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents [B, C, F, H, W] -> the normalised space the pipeline denoises in."""
        vae, family = pipe.vae, self.config.family
        if family == "ltx":
            return pipe._normalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        if family == "wan":
            mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(z)
            std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(z)
            return (z - mean) / std
        return z * vae.config.scaling_factor

    def _spatial_ratio(self, pipe) -> int:
        for attr in ("vae_spatial_compression_ratio", "vae_scale_factor_spatial"):
            if hasattr(pipe, attr):
                return int(getattr(pipe, attr))
        return 8

    def _temporal_ratio(self, pipe) -> int:
        for attr in ("vae_temporal_compression_ratio", "vae_scale_factor_temporal"):
            if hasattr(pipe, attr):
                return int(getattr(pipe, attr))
        return 4

    @torch.no_grad()
    def _calibrate_preview(self, pipe) -> None:
        """Fit latent -> RGB (ridge least squares) on a random smooth colour chart encoded by the VAE."""
        self._preview_ready = True
        try:
            ratio, cells = self._spatial_ratio(pipe), 16
            rng = np.random.default_rng(0)
            coarse = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.uint8)
            chart = np.asarray(Image.fromarray(coarse).resize((cells * ratio,) * 2, Image.Resampling.BILINEAR))
            x = torch.from_numpy(chart.copy()).float().div(127.5).sub(1).permute(2, 0, 1)[None, :, None]
            vae = pipe.vae
            device = pipe._execution_device
            z = vae.encode(x.to(device, vae.dtype)).latent_dist.mode()
            z = self._latent_space(pipe, z.float())[0, :, 0]  # C x h x w
            h, w = z.shape[-2:]
            target = torch.nn.functional.adaptive_avg_pool2d(x[0, :, 0], (h, w))  # 3 x h x w in [-1, 1]
            feats = z.reshape(z.shape[0], -1).T.cpu()  # N x C
            ys = target.reshape(3, -1).T  # N x 3
            mean_f, mean_y = feats.mean(0), ys.mean(0)
            fc, yc = feats - mean_f, ys - mean_y
            lam = 1e-1 * float((fc * fc).sum() / max(1, fc.shape[1]))
            weight = torch.linalg.solve(fc.T @ fc + lam * torch.eye(fc.shape[1]), fc.T @ yc)  # C x 3
            self._preview_map = (weight.to(device), (mean_y - mean_f @ weight).to(device))  # previews map there
        except Exception as exc:  # noqa: BLE001 - a preview is never worth failing a job
            log.warning("model %s: preview calibration failed (%s); grey previews", self.config.name, exc)
            self._preview_map = None

    def _preview(self, pipe, latents: torch.Tensor, num_frames: int, height: int, width: int) -> Optional[np.ndarray]:
        """Current latents -> T' x h' x w' x 3 uint8 through the fixed linear map (no VAE decode)."""
        try:
            z = latents[:1].detach()
            family = self.config.family
            if family == "ltx":  # packed [B, tokens, C]
                lf = (num_frames - 1) // self._temporal_ratio(pipe) + 1
                ratio = self._spatial_ratio(pipe)
                z = pipe._unpack_latents(z, lf, height // ratio, width // ratio, pipe.transformer_spatial_patch_size,
                                         pipe.transformer_temporal_patch_size)
            elif family == "cogvideox":  # [B, F, C, H, W]
                z = z.permute(0, 2, 1, 3, 4)
            z = z[0].float()  # C x F x H x W, on the pipeline's device: only the small uint8 preview is copied back
            if self._preview_map is not None and self._preview_map[0].shape[0] == z.shape[0]:
                weight, bias = self._preview_map
                rgb = torch.einsum("cfhw,cd->fhwd", z, weight) + bias
            else:
                rgb = z.mean(0, keepdim=True).permute(1, 2, 3, 0).repeat(1, 1, 1, 3) * 0.5
            frames = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
            scale = max(1, PREVIEW_LONG_SIDE // max(frames.shape[1:3]))
            return np.ascontiguousarray(frames.repeat(scale, axis=1).repeat(scale, axis=2))
        except Exception as exc:  # noqa: BLE001
            log.debug("preview failed: %s", exc)
            return None

    # ------------------------------------------------------------------ generation
    def generate(self, request: GenerationRequest, progress: Optional[ProgressCallback] = None,
                 should_cancel: Optional[CancelCheck] = None) -> GenerationResult:
        req = self.fill_defaults(request)
        problems = self.info.problems(req.num_frames, req.width, req.height, req.steps, req.guidance_scale)
        if problems:
            raise GenerationError("; ".join(msg for _, msg in problems))
        cfg = self.config
        if req.image is not None:
            kind = cfg.image_kind
            if kind is None:
                raise GenerationError(f"model {cfg.name} is text-to-video only; it cannot take a start image")
        else:
            kind = cfg.text_kind
            if kind is None:
                raise GenerationError(f"model {cfg.name} is image-to-video: it needs a start image")
        if not self.pipes:
            self.load()
        pipe = self.pipes[kind]
        if not self._preview_ready and progress is not None:
            self._calibrate_preview(pipe)

        exec_device = pipe._execution_device
        generator = torch.Generator(device=exec_device).manual_seed(int(req.seed))

        def on_step_end(p, i, t, kwargs):
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            if progress is not None:
                latents = kwargs.get("latents")
                preview = None if latents is None else self._preview(p, latents, req.num_frames, req.height,
                                                                     req.width)
                progress(i + 1, p.num_timesteps, preview)
            return kwargs

        call = dict(prompt=req.prompt, height=req.height, width=req.width, num_frames=req.num_frames,
                    num_inference_steps=req.steps, guidance_scale=req.guidance_scale, generator=generator,
                    output_type="np", callback_on_step_end=on_step_end,
                    callback_on_step_end_tensor_inputs=["latents"])
        if cfg.negative_prompt is not None:
            call["negative_prompt"] = cfg.negative_prompt
        if cfg.max_sequence_length:
            call["max_sequence_length"] = int(cfg.max_sequence_length)
        if cfg.family == "ltx":
            call["frame_rate"] = int(round(req.fps))  # LTX scales its RoPE by the frame rate
        if req.image is not None:
            image = Image.fromarray(np.asarray(req.image, dtype=np.uint8)).convert("RGB")
            call["image"] = image.resize((req.width, req.height), Image.Resampling.BICUBIC)

        try:
            with torch.inference_mode():
                output = pipe(**call)
        except Cancelled:
            raise
        except Exception as exc:
            if _is_oom(exc):
                del exc
                self._free_after_call(pipe)
                raise GenerationError(
                    f"out of GPU memory running {cfg.name} at {req.width}x{req.height}, {req.num_frames} frames: "
                    f"try fewer frames or a smaller size, or set memory.cpu_offload / vae_tiling for this model"
                ) from None
            raise
        finally:
            self._free_after_call(pipe)
        video = np.asarray(output.frames[0])  # T x H x W x 3 float in [0, 1]
        if np.issubdtype(video.dtype, np.floating) and not np.isfinite(video).all():
            raise GenerationError(f"model {cfg.name} produced NaN/Inf values (numerical instability, often "
                                  f"float16 overflow): try dtype bfloat16/float32, another seed or fewer steps")
        frames = (np.clip(video, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return GenerationResult(frames=frames, fps=float(req.fps), seed=int(req.seed),
                                native_size=(frames.shape[1], frames.shape[2]))

    def _free_after_call(self, pipe) -> None:
        for p in {id(pipe): pipe, id(self.primary): self.primary}.values():
            if p is None:
                continue
            p._interrupt = False
            try:
                p.maybe_free_model_hooks()  # re-arms model offload and resets cache hooks
            except Exception as exc:  # noqa: BLE001
                log.debug("maybe_free_model_hooks: %s", exc)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
