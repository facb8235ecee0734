"""The shared runtime of the diffusers video families behind the common `Backend` interface: loading a
configured checkpoint folder (one or several pipeline kinds sharing its components), memory options,
previews, the step callback (progress, cancel), the call and its result. What differs per family -
how its pipelines take a request's inputs, its latent layout, what it can do for long and live
videos - is its adapter (generator/families/<family>.py), which this class holds and never switches on.

A request goes to a task (t2v, i2v, v2v, condition: see `DiffusersBackend.task_for`), the task to
the configured pipeline kind that serves it, and the request's inputs to that pipeline's own
arguments (`adapter.task_inputs`). Long videos (generator.longvideo) and live jobs (generator.live)
use the optional capabilities the adapter offers (`continuation_frames`, `generate_long`,
`live_chunks`), plus `upscale_video` / `latent_upscale_factors` when a latent upsampler is configured and
`generate_refined` / `native_factors` where the model makes `upscale` / `interpolate` itself (LTX-2.5's recipe).
With a diffusion decoder configured (`decoder`: LTX-2.5's), every call asks the pipeline for latents and the
adapter decodes them (`adapter.decoded`), the upsampler's passes too (`adapter.decode_video`).

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

import collections
import contextlib
import gc
import inspect
import logging
import os
import time
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from generator.families import FamilyAdapter
from generator.families.base import pil
from generator.interface import (DEFAULT_STRENGTH, Backend, CancelCheck, Cancelled, GenerationError,
                                 GenerationRequest, GenerationResult, ProgressCallback)
from generator.model_config import ModelConfig, check_pipeline_kwargs, upsampler_folder_kind
from generator.postprocess import resize_frames

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


def _accepts(pipe, name: str) -> bool:
    return name in inspect.signature(pipe.__call__).parameters


def fit_audio(audio: np.ndarray, samples: int) -> np.ndarray:
    """samples x channels: trimmed or padded with silence to exactly `samples` (the video's duration)."""
    if len(audio) >= samples:
        return audio[:samples]
    return np.concatenate([audio, np.zeros((samples - len(audio), audio.shape[1]), audio.dtype)])


class DiffusersBackend(Backend):
    """One configured diffusers model: one or several pipeline kinds sharing one checkpoint's components."""

    def __init__(self, config: ModelConfig):
        super().__init__(config.model_info())
        self.config = config
        self.family = config.family_info
        self.pipes: dict = {}  # kind -> pipeline
        self.primary = None  # the pipeline that owns offload hooks
        self.upsampler = None  # latent upsample pipeline (config.upsampler)
        self.decoder = None  # diffusion decode pipeline (config.decoder)
        self.temporal_refiner = None  # temporal refine pipeline (config.temporal_upsampler)
        self.device = pick_device()
        self.dtype = TORCH_DTYPES[config.dtype]
        self.applied: dict = {}  # memory/speed options actually in effect (for logs, bench, /api)
        self.calls = collections.deque(maxlen=64)  # (pipeline class, task) of recent generations: what ran
        self._preview_map: Optional[tuple] = None  # (W [C x 3], b [3]) torch float32 on the execution device
        self._preview_ready = False
        self.adapter: FamilyAdapter = (self.family.adapter or FamilyAdapter)(self)
        self.live_mode = self.adapter.live  # "native" (live_chunks) or "continuation"
        # continuation_frames, generate_long, live_chunks, generate_refined (+ native_factors)
        for name, method in self.adapter.capabilities().items():
            setattr(self, name, method)
        if config.upsampler:
            self.latent_upscale_factors = (2, 4)  # one or two passes of the x2 upsampler
            self.upscale_video = self._upscale_video

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        if self.pipes:
            return
        import diffusers

        cfg = self.config
        if not os.path.isfile(os.path.join(cfg.path, "model_index.json")):
            raise GenerationError(f"model {cfg.name}: {cfg.path} is not a diffusers pipeline folder "
                                  f"(no model_index.json); check 'path' in the model configuration")
        missing = [cfg.kind_class(k) for k in cfg.kinds if not hasattr(diffusers, cfg.kind_class(k))]
        if missing:
            raise GenerationError(f"model {cfg.name}: diffusers {diffusers.__version__} has no pipeline class "
                                  f"{', '.join(missing)}")
        problems = check_pipeline_kwargs(cfg)
        if problems:
            raise GenerationError("; ".join(problems))
        if self.device.type == "cpu" and self.dtype == torch.float16:
            log.warning("model %s: float16 on CPU is slow/unsupported, loading float32", cfg.name)
            self.dtype = torch.float32
        first = cfg.kinds[0]
        cls_name = cfg.kind_class(first)
        kwargs = {"dtype": self.dtype, "local_files_only": True, **self.adapter.load_components(cfg.path)}
        if cfg.vae_dtype and TORCH_DTYPES[cfg.vae_dtype] != self.dtype:
            kwargs["vae"] = getattr(diffusers, self.family.vae).from_pretrained(
                cfg.path, subfolder="vae", dtype=TORCH_DTYPES[cfg.vae_dtype], local_files_only=True)
        t0 = time.perf_counter()
        try:
            pipe = getattr(diffusers, cls_name).from_pretrained(cfg.path, **kwargs)
        except Exception as exc:
            raise GenerationError(f"model {cfg.name}: cannot load {cls_name} from {cfg.path}: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        self.adapter.loaded(pipe, cfg.path)
        self.adapter.check_shared(pipe, first)
        self.pipes[first] = pipe
        self.primary = pipe
        for kind in cfg.kinds[1:]:
            self.adapter.check_shared(pipe, kind)
            # Shares every component. diffusers 0.42's from_pipe casts the shared components to float32
            # unless given a dtype (a bf16 LTX ran 8x slower), so name it and put a separate VAE dtype back.
            other = getattr(diffusers, cfg.kind_class(kind)).from_pipe(pipe, dtype=self.dtype)
            if cfg.vae_dtype:
                pipe.vae.to(dtype=TORCH_DTYPES[cfg.vae_dtype])
            other.set_progress_bar_config(disable=True)
            self.pipes[kind] = other
        self._apply_memory_options(pipe)
        if cfg.upsampler:
            self._load_upsampler(pipe)
        if cfg.decoder:
            self._load_decoder(pipe)
        if cfg.temporal_upsampler:
            self._load_temporal_refiner()
        log.info("model %s loaded in %.1f s on %s (%s): %s", cfg.name, time.perf_counter() - t0, self.device,
                 self.dtype, self.applied)

    def _load_upsampler(self, pipe) -> None:
        # a latent upsampler decodes with the model's own VAE (no second copy); a super-resolution pipeline has its own
        shared = {"vae": pipe.vae} if self.adapter.upsampler_shares_vae else {}
        self.upsampler = self._load_second_pipeline(pipe, "upsampler", "latent_upsampler", shared, {"vae": pipe.vae})

    def _load_decoder(self, pipe) -> None:
        """The diffusion decoder alone takes a FlowMatchEulerDiscreteScheduler around it; either way the model's own
        VAE gives the latent statistics."""
        import diffusers

        self.decoder = self._load_second_pipeline(
            pipe, "decoder", "diffusion_decoder", {"vae": pipe.vae},
            {"vae": pipe.vae, "scheduler": diffusers.FlowMatchEulerDiscreteScheduler()})
        if self.config.memory.vae_tiling:
            self.decoder.diffusion_decoder.enable_tiling()

    def _load_temporal_refiner(self) -> None:
        """The refine rounds run on the keyframes kind's own components (its transformer, VAE, text encoder,
        sound parts), with an ancestral scheduler (eta 0.5, LTX-2.5's recipe) unless the folder brings one."""
        import diffusers

        fam = self.family
        kind = next(k for k in self.config.kinds if fam.kinds[k].keyframes)
        source = self.pipes[kind]
        pipeline_cls = getattr(diffusers, fam.temporal_upsampler)
        parts = {name: component for name, component in source.components.items()
                 if name in pipeline_cls._get_signature_keys(pipeline_cls)[0] and name != "scheduler"}
        self.temporal_refiner = self._load_second_pipeline(
            source, "temporal_upsampler", "temporal_latent_upsampler", parts,
            dict(parts, scheduler=diffusers.LTXEulerAncestralRFScheduler(eta=0.5)))

    def _load_second_pipeline(self, pipe, field: str, model_component: str, shared: dict, around_model: dict):
        """The entry's `field` folder (upsampler, decoder) as the family's pipeline of that name: a pipeline folder
        (model_index.json, given the `shared` components), or the model alone (config.json, as LTX-2 ships its
        latent_upsampler) with the `around_model` components. Its own parts go where the model runs."""
        import diffusers

        cfg = self.config
        path = getattr(cfg, field)
        folder = upsampler_folder_kind(path)
        if folder is None:
            raise GenerationError(f"model {cfg.name}: {field} {path} is neither a diffusers pipeline folder "
                                  f"(model_index.json) nor a model folder (config.json); check '{field}' in the "
                                  f"model configuration")
        pipeline_cls = getattr(diffusers, getattr(self.family, field))
        try:
            if folder == "pipeline":
                second = pipeline_cls.from_pretrained(path, dtype=self.dtype, local_files_only=True, **shared)
            else:
                model_cls = pipeline_cls._get_signature_types()[model_component][0]
                second = pipeline_cls(**around_model, **{model_component: model_cls.from_pretrained(
                    path, dtype=self.dtype, local_files_only=True)})
        except Exception as exc:
            raise GenerationError(f"model {cfg.name}: cannot load {pipeline_cls.__name__} from {path}: {exc}") from exc
        second.set_progress_bar_config(disable=True)
        owned = [c for c in second.components.values()  # the model's own parts stay where offload keeps them
                 if isinstance(c, torch.nn.Module) and not any(c is mine for mine in pipe.components.values())]
        for component in owned:
            component.to(self.device)
        return second

    def _transformers(self, pipe) -> list:
        """The denoisers: Wan 2.2 A14B has two experts (transformer_2 below its boundary_ratio)."""
        return [t for t in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if t is not None]

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
        for transformer in self._transformers(pipe):
            if mem.attention_backend:
                try:
                    transformer.set_attention_backend(mem.attention_backend)
                    applied["attention_backend"] = mem.attention_backend
                except Exception as exc:  # backend not installed / unsupported on this GPU: keep native SDPA
                    log.warning("model %s: attention backend %r unavailable (%s); using native SDPA",
                                self.config.name, mem.attention_backend, exc)
            if mem.cache:
                self._enable_cache(pipe, transformer, mem.cache)
            if mem.compile:
                if not accelerator_available():
                    log.warning("model %s: compile is only applied on a GPU host; skipped", self.config.name)
                else:
                    if mem.compile == "full":
                        transformer.compile(fullgraph=False)
                    else:  # regional: compile the repeated block once, reuse it for every block (fast warm-up)
                        transformer.compile_repeated_blocks(fullgraph=True)
                    applied["compile"] = "full" if mem.compile == "full" else "regional"

    def _enable_cache(self, pipe, transformer, cache) -> None:
        try:
            from diffusers.hooks import FirstBlockCacheConfig, PyramidAttentionBroadcastConfig
        except ImportError:
            log.warning("model %s: this diffusers has no caching hooks; cache skipped", self.config.name)
            return
        if cache.type == "first_block":
            if _transformer_blocks(transformer) < 2:
                log.warning("model %s: FirstBlockCache needs >= 2 transformer blocks; skipped", self.config.name)
                return
            transformer.enable_cache(FirstBlockCacheConfig(threshold=cache.threshold))
        else:  # pab
            transformer.enable_cache(PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=cache.spatial_attention_block_skip_range,
                spatial_attention_timestep_skip_range=tuple(cache.spatial_attention_timestep_skip_range),
                current_timestep_callback=lambda: pipe.current_timestep))
        self.applied["cache"] = cache.type

    def unload(self) -> None:
        for pipe in self.pipes.values():
            try:
                pipe.maybe_free_model_hooks()
            except Exception:  # noqa: BLE001 - freeing must not fail
                pass
        self.pipes.clear()
        self.primary = None
        self.upsampler = None
        self.decoder = None
        self.temporal_refiner = None
        self._preview_map = None
        self._preview_ready = False
        free_accelerator_memory()

    # ------------------------------------------------------------------ previews
    def _spatial_ratio(self, pipe) -> int:
        for attr in ("vae_spatial_compression_ratio", "vae_scale_factor_spatial"):
            if hasattr(pipe, attr):
                return int(getattr(pipe, attr))
        return int(getattr(pipe.vae, "spatial_compression_ratio", None) or getattr(pipe.vae.config,
                                                                                  "spatial_compression_ratio", 8))

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
            z = self.adapter.normalised_latents(pipe, z.float())[0, :, 0]  # C x h x w
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

    def _preview(self, pipe, latents: torch.Tensor, req: GenerationRequest) -> Optional[np.ndarray]:
        """Current latents -> T' x h' x w' x 3 uint8 through the fixed linear map (no VAE decode)."""
        try:
            z = self.adapter.latent_grid(pipe, latents.detach(), req).float()  # C x F x H x W, on its device
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

    # ------------------------------------------------------------------ routing
    def task_for(self, req: GenerationRequest) -> str:
        """an image and a video -> animate; video -> v2v, else control (a reference video the clip follows), else
        condition for a family that continues a video; several start frames -> condition (when a condition
        pipeline is configured); a start image -> i2v; nothing -> t2v. Raises GenerationError when this model
        cannot."""
        tasks, name = self.config.tasks, self.config.name
        if "animate" in tasks and req.image is not None and req.video is not None:
            return "animate"
        if set(tasks) == {"animate"}:
            raise GenerationError(f"model {name} animates a character image (image) with a driving video "
                                  f"(video or source_job_id): it needs both")
        if req.video is not None:
            if "v2v" not in tasks and "control" in tasks:
                return "control"
            if "v2v" not in tasks and "condition" in tasks and self.family.continues_video:
                return "condition"
            if "v2v" not in tasks:
                raise GenerationError(f"model {name} cannot take a source video (video-to-video); "
                                      f"its pipelines: {', '.join(self.config.kinds)}")
            return "v2v"
        if req.start_frames is not None and len(req.start_frames) > 1 and "condition" in tasks:
            return "condition"
        if req.image is not None:
            if "i2v" in tasks:
                return "i2v"
            if "condition" in tasks:
                return "condition"
            raise GenerationError(f"model {name} is text-to-video only; it cannot take a start image")
        if "t2v" not in tasks:
            needs = ("image-to-video: it needs a start image" if "i2v" in tasks
                     else "video control: it needs a reference video" if "control" in tasks
                     else "video editing: it needs a source video")
            raise GenerationError(f"model {name} is {needs}")
        return "t2v"

    # ------------------------------------------------------------------ generation
    @staticmethod
    def call_parameters(pipe) -> set:
        """The argument names a pipeline's call takes."""
        return set(inspect.signature(pipe.__call__).parameters)

    def pipe_for(self, task: str):
        """The loaded pipeline of the configured kind serving `task` (loads the model when needed)."""
        if not self.pipes:
            self.load()
        return self.pipes[self.config.tasks[task]]

    def checked(self, request: GenerationRequest) -> GenerationRequest:
        req = self.fill_defaults(request)
        problems = self.info.problems(req.num_frames, req.width, req.height, req.steps, req.guidance_scale)
        if problems:
            raise GenerationError("; ".join(msg for _, msg in problems))
        if req.video is not None:
            shape = (req.num_frames, req.height, req.width, 3)
            if np.shape(req.video) != shape:
                raise GenerationError(f"the source video is {'x'.join(map(str, np.shape(req.video)))}; model "
                                      f"{self.config.name} needs it as {'x'.join(map(str, shape))} "
                                      "(frames x h x w x 3)")
            strength = DEFAULT_STRENGTH if req.strength is None else float(req.strength)
            if not 0.0 <= strength <= 1.0:
                raise GenerationError(f"strength must be between 0 and 1, got {strength}")
            req.strength = strength
        return req

    def generate(self, request: GenerationRequest, progress: Optional[ProgressCallback] = None,
                 should_cancel: Optional[CancelCheck] = None) -> GenerationResult:
        req = self.checked(request)
        task = self.task_for(req)
        if task == "v2v" and req.strength == 0.0:  # nothing to move away from the source: it is the answer
            return GenerationResult(frames=np.ascontiguousarray(req.video, dtype=np.uint8), fps=float(req.fps),
                                    seed=int(req.seed), native_size=(req.height, req.width))
        pipe = self.pipe_for(task)
        call = self.adapter.task_inputs(pipe, task, req)
        clip = self.adapter.one_clip(task, call, req)
        result = self.run(pipe, task, req, call, progress, should_cancel, total_steps=clip.steps,
                          num_frames=clip.frames)
        result.frames = result.frames[clip.keep]
        return result

    def run(self, pipe, task: str, req: GenerationRequest, call: dict, progress, should_cancel,
            total_steps: Optional[int] = None, num_frames: Optional[int] = None,
            on_latents: Optional[Callable] = None, raw: bool = False):
        """One pipeline call: the common arguments, the configured ones, then `call` (the task's).
        `on_latents` sees the latents after every step (the last: the clip's final latents). Returns a
        GenerationResult, or with `raw` the pipeline's output as it is (latents, when `call` asks for them)."""
        cfg = self.config
        if not self._preview_ready and progress is not None:
            self._calibrate_preview(pipe)
        exec_device = pipe._execution_device
        generator = torch.Generator(device=exec_device).manual_seed(int(req.seed))
        steps_done = [0]

        def on_step_end(p, i, t, kwargs):
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            steps_done[0] += 1
            if on_latents is not None:
                on_latents(kwargs["latents"])
            if progress is not None:
                latents = kwargs.get("latents")
                preview = None if latents is None else self._preview(p, latents, req)
                progress(steps_done[0], max(total_steps or p.num_timesteps, steps_done[0]), preview)
            return kwargs

        base = dict(prompt=req.prompt, height=req.height, width=req.width, num_frames=req.num_frames,
                    num_inference_steps=req.steps, guidance_scale=req.guidance_scale, generator=generator,
                    output_type="latent" if cfg.decoder else "np", negative_prompt=cfg.negative_prompt,
                    max_sequence_length=cfg.max_sequence_length and int(cfg.max_sequence_length))
        base.update(self.adapter.call_arguments(req))
        base.update(self._pipeline_kwargs(req.steps))
        base.update(call)
        call = {k: v for k, v in base.items() if v is not None and _accepts(pipe, k)}
        self.calls.append((type(pipe).__name__, task))
        hook = contextlib.nullcontext()
        if _accepts(pipe, "callback_on_step_end"):
            call.update(callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
        else:  # HunyuanVideo 1.5 has no step callback: observe the scheduler's steps instead
            hook = _scheduler_steps(pipe, on_step_end)
        guider = getattr(pipe, "guider", None)
        if guider is not None:  # its guidance scale lives in the guider, not in the call
            pipe.guider = guider.new(guidance_scale=float(req.guidance_scale))
        # the seed also drives the global generator, inside this call only: some pipelines draw from it
        # (SkyReels-V2's noise on history frames), and the same seed must give the same video
        devices = [exec_device.index if exec_device.index is not None else torch.cuda.current_device()] \
            if exec_device.type == "cuda" else []
        try:
            with torch.inference_mode(), hook, torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(req.seed))
                output = pipe(**call)
                if cfg.decoder and not raw:  # latents: the diffusion decoder makes the frames
                    output = self.adapter.decoded(pipe, output, int(req.seed), num_frames or req.num_frames)
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
            if guider is not None:
                pipe.guider = guider
            self._free_after_call(pipe)
        return output if raw else self._result(pipe, output, req, num_frames or req.num_frames)

    def _pipeline_kwargs(self, steps: int) -> dict:
        """pipeline_kwargs (a preset's among them); a fixed schedule only when the request runs its length."""
        out = {}
        for key, value in self.config.pipeline_kwargs.items():
            if key in ("timesteps", "sigmas") and isinstance(value, list) and len(value) != steps:
                continue  # another step count: the pipeline's own schedule for that many steps
            out[key] = value
        return out

    def _result(self, pipe, output, req: GenerationRequest, num_frames: int) -> GenerationResult:
        video = np.asarray(output.frames[0])  # T x H x W x 3 float in [0, 1] (an HDR kind's: linear)
        if np.issubdtype(video.dtype, np.floating) and not np.isfinite(video).all():
            raise GenerationError(f"model {self.config.name} produced NaN/Inf values (numerical instability, often "
                                  f"float16 overflow): try dtype bfloat16/float32, another seed or fewer steps")
        linear = video.astype(np.float16) if self.adapter.makes_hdr(pipe) else None
        video = self.adapter.display_frames(pipe, video)
        frames = (np.clip(video, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        native = frames.shape[1:3]
        if native != (req.height, req.width):  # HunyuanVideo 1.5 I2V picks its own size bucket
            frames = resize_frames(frames, (req.height, req.width))
            linear = None  # (no HDR pipeline does; a master is kept only at the size asked)
        if len(frames) != num_frames:
            raise GenerationError(f"model {self.config.name} returned {len(frames)} frames, not {num_frames}")
        result = GenerationResult(frames=frames, fps=float(req.fps), seed=int(req.seed), native_size=native,
                                  hdr_frames=linear)
        audio = getattr(output, "audio", None)
        if audio is not None:  # LTX-2, Kandinsky 6: the sound track made with the video
            result.audio, result.audio_sample_rate = self.track_of(pipe, audio, num_frames, float(req.fps))
        return result

    def track_of(self, pipe, audio, num_frames: int, fps: float) -> tuple:
        """A pipeline's sound output -> (samples x channels float32, as long as `num_frames` at `fps`; its rate)."""
        track, rate = self.adapter.audio_track(pipe, audio)
        return fit_audio(np.clip(track, -1.0, 1.0).astype(np.float32), round(num_frames / fps * rate)), rate

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

    # ------------------------------------------------------------------ the latent upsampler
    @torch.no_grad()
    def _upscale_video(self, frames: np.ndarray, factor: int,
                       should_cancel: Optional[CancelCheck] = None) -> np.ndarray:
        """Frames x factor (2 or 4) through the upsampler: a latent upsampler's x2 passes (VAE encode, x2 in latent
        space, decode: with the diffusion decoder when one is configured), or the family's super-resolution
        pipeline (adapter.upscale_passes)."""
        if factor not in self.latent_upscale_factors:
            raise GenerationError(f"model {self.config.name}: the latent upsampler scales by "
                                  f"{' or '.join(map(str, self.latent_upscale_factors))}, not {factor}")
        if not self.pipes:
            self.load()
        n = len(frames)
        pad = (-(n - self.family.frame_offset)) % self.family.frame_multiple  # the VAE takes 8k+1 frames
        video = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)]) if pad else frames
        for arguments in self.adapter.upscale_passes(factor):
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            h, w = video.shape[1:3]
            generator = torch.Generator(device=self.upsampler._execution_device).manual_seed(0)  # the same every time
            call = {k: v for k, v in dict(video=[pil(f) for f in video], height=h, width=w, num_frames=len(video),
                                           output_type="latent" if self.decoder else "np", generator=generator,
                                           **arguments).items()
                    if _accepts(self.upsampler, k)}
            with torch.inference_mode():
                out = self.upsampler(**call).frames
                out = self.adapter.decode_video(out, seed=0) if self.decoder else np.asarray(out[0])
            video = (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return video[:n]


@contextlib.contextmanager
def _scheduler_steps(pipe, on_step_end):
    """Call on_step_end(pipe, i, t, {"latents": ...}) after every scheduler step of one pipeline call."""
    scheduler, step, count = pipe.scheduler, pipe.scheduler.step, [0]

    def stepped(model_output, timestep, sample, *args, **kwargs):
        out = step(model_output, timestep, sample, *args, **kwargs)
        latents = out[0] if isinstance(out, tuple) else out.prev_sample
        on_step_end(pipe, count[0], timestep, {"latents": latents})
        count[0] += 1
        return out

    scheduler.step = stepped
    try:
        yield
    finally:
        del scheduler.step  # the class's own method again
