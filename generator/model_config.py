"""The operator's model configuration: which diffusers checkpoints on local disk the service serves,
and the family descriptions that say what each kind of checkpoint can do.

The file is named by env `VIDEO_MODELS_CONFIG` (default: `models.json` at the repository root,
used only when present). JSON, or TOML when the name ends in `.toml`. One entry per model name:

    {
      "ltx-video": {
        "path": "/models/LTX-Video",            # local diffusers pipeline folder (model_index.json)
        "pipeline": ["ltx", "ltx-i2v"],          # one kind, or several kinds of one family and checkpoint
        "dtype": "bfloat16",                     # bfloat16 | float16 | float32
        "defaults": {"steps": 50, "guidance": 3.0, "width": 768, "height": 512, "frames": 121, "fps": 24},
        "limits": {"max_size": 1280, "max_frames": 257},
        "memory": {"cpu_offload": "none", "vae_tiling": false, "vae_slicing": false, "compile": false,
                   "cache": null, "attention_backend": null},
        "upsampler": "/models/ltxv-spatial-upscaler-0.9.7",   # optional latent upsampler folder
        "preset": "ltx-distilled",               # optional few-step preset (PRESETS)
        "pipeline_kwargs": {"decode_timestep": 0.05},          # optional extra pipeline arguments
        "queue": "ltx-video"
      }
    }

Every kind belongs to a `Family` (FAMILIES): its diffusers pipeline class per kind and the tasks
each serves (t2v, i2v, v2v, condition), frame and size rules, defaults, whether it makes sound
and which latent upsampler fits it. Several kinds of one family listed together are loaded once:
the first from the folder, the others from the very same components with `from_pipe` (no second
copy in memory), so they must share a checkpoint (`PipelineKind.checkpoint`). Adding a family is
one `Family(...)` entry; docs/models.md says how.

Unknown keys are errors (a misspelt `vae_tilling` silently ignored would cost an operator an
evening). `python -m generator.model_config [file]` checks a file and prints what it defines.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from generator.interface import ModelInfo

log = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_VAR = "VIDEO_MODELS_CONFIG"

# t2v: prompt only; i2v: a start image; v2v: a source video moved away from by `strength`;
# condition: given frames at the clip's start (continuation: long videos, key frames)
TASKS = ("t2v", "i2v", "v2v", "condition")
LATENT_LAYOUTS = ("packed", "bcfhw", "bfchw")  # LTX's token sequence, [B, C, F, H, W], CogVideoX's [B, F, C, H, W]


class ConfigError(ValueError):
    """The model configuration is wrong; the message names the model and the key."""


@dataclass(frozen=True)
class PipelineKind:
    """One diffusers pipeline class of a family and the tasks it serves."""

    cls: str
    tasks: tuple
    # kinds with the same checkpoint tag load from one folder (the second through from_pipe)
    checkpoint: str = "base"


@dataclass(frozen=True)
class Family:
    """What a family's checkpoints accept and default to (diffusers 0.42.1 + the models' cards)."""

    name: str
    description: str
    kinds: dict  # kind name ("pipeline" in the configuration) -> PipelineKind
    vae: str  # diffusers VAE class (loaded on its own when vae_dtype differs)
    frame_multiple: int  # num_frames = frame_multiple * k + frame_offset
    frame_offset: int
    min_frames: int
    max_frames: int
    size_multiple: int
    max_size: int
    default_width: int
    default_height: int
    default_frames: int
    default_steps: int
    default_guidance: float
    default_fps: float
    min_size: int = 64
    latents: str = "bcfhw"  # how the denoised latents are laid out (previews)
    audio: bool = False  # the pipeline returns a sound track with the video
    upsampler: Optional[str] = None  # latent upsample pipeline class, loaded from the entry's "upsampler" folder
    frame_rate_arg: Optional[str] = None  # call argument taking the fps (LTX scales its RoPE by it)
    vae_dtype: Optional[str] = None  # default VAE dtype when the entry names none
    chunked: bool = False  # its T2V/I2V pipelines make long videos themselves, in overlapping chunks

    def tasks(self, kinds) -> set:
        return {task for kind in kinds for task in self.kinds[kind].tasks}


def _check_family(fam: Family) -> Family:
    """A family description is code, but a wrong one would only fail on a GPU host: check it here."""
    problems = []
    for kind, pk in fam.kinds.items():
        if not kind.startswith(fam.name):
            problems.append(f"kind {kind!r} should start with the family name")
        if not pk.tasks or set(pk.tasks) - set(TASKS):
            problems.append(f"kind {kind!r}: tasks must be some of {TASKS}, got {pk.tasks}")
    if fam.latents not in LATENT_LAYOUTS:
        problems.append(f"latents must be one of {LATENT_LAYOUTS}")
    if not (1 <= fam.frame_multiple and 0 <= fam.frame_offset and fam.min_frames <= fam.default_frames <= fam.max_frames):
        problems.append("frame rule / default frames out of order")
    for n in (fam.min_frames, fam.max_frames, fam.default_frames):
        if (n - fam.frame_offset) % fam.frame_multiple:
            problems.append(f"{n} frames break its own rule {fam.frame_multiple}k+{fam.frame_offset}")
    for side in (fam.default_width, fam.default_height, fam.max_size):
        if side % fam.size_multiple or not fam.min_size <= side <= fam.max_size:
            problems.append(f"size {side} breaks its own rule (multiple of {fam.size_multiple})")
    if problems:
        raise ValueError(f"family {fam.name!r}: " + "; ".join(problems))
    return fam


T2V, I2V, V2V, COND = ("t2v",), ("i2v",), ("v2v",), ("condition",)

FAMILIES = {f.name: _check_family(f) for f in (
    # LTX-Video 0.9.x: VAE compresses 32x32 px x 8 frames per latent; sizes multiples of 32, frames 8k+1
    # (diffusers does NOT validate the frame count: 10 would silently become 9, so we do). 0.9.5+
    # checkpoints also run the condition pipeline: frames or clips at chosen positions, and editing.
    Family("ltx", "LTX-Video (Lightricks)", {
        "ltx": PipelineKind("LTXPipeline", T2V),
        "ltx-i2v": PipelineKind("LTXImageToVideoPipeline", I2V),
        "ltx-condition": PipelineKind("LTXConditionPipeline", ("t2v", "i2v", "v2v", "condition")),
    }, vae="AutoencoderKLLTXVideo", frame_multiple=8, frame_offset=1, min_frames=9, max_frames=257,
        size_multiple=32, max_size=1280, default_width=768, default_height=512, default_frames=121,
        default_steps=50, default_guidance=3.0, default_fps=24.0, latents="packed",
        upsampler="LTXLatentUpsamplePipeline", frame_rate_arg="frame_rate"),
    # LTX-2: the same latent grid, a Gemma 3 prompt encoder, and a sound track (audio VAE + vocoder)
    # generated with the video; settings of diffusers' LTX-2 example (30 steps, guidance 3, 24 fps).
    Family("ltx2", "LTX-2 (Lightricks), video with sound", {
        "ltx2": PipelineKind("LTX2Pipeline", T2V),
        "ltx2-i2v": PipelineKind("LTX2ImageToVideoPipeline", I2V),
        "ltx2-condition": PipelineKind("LTX2ConditionPipeline", ("t2v", "i2v", "condition")),
    }, vae="AutoencoderKLLTX2Video", frame_multiple=8, frame_offset=1, min_frames=9, max_frames=257,
        size_multiple=32, max_size=1280, default_width=768, default_height=512, default_frames=121,
        default_steps=30, default_guidance=3.0, default_fps=24.0, latents="packed", audio=True,
        upsampler="LTX2LatentUpsamplePipeline", frame_rate_arg="frame_rate"),
    # Wan 2.1 (and Wan 2.2 A14B: the same classes with two experts, transformer_2 + boundary_ratio
    # in the checkpoint): VAE 8x8 px x 4 frames, transformer patch 2x2: multiples of 16, frames 4k+1.
    # Its I2V checkpoints are separate (36 input channels + CLIP); WanVideoToVideoPipeline runs on the T2V one.
    Family("wan", "Wan 2.1 / 2.2 A14B (Alibaba)", {
        "wan": PipelineKind("WanPipeline", T2V),
        "wan-i2v": PipelineKind("WanImageToVideoPipeline", I2V),
        "wan-v2v": PipelineKind("WanVideoToVideoPipeline", V2V),
    }, vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=129,
        size_multiple=16, max_size=1280, default_width=832, default_height=480, default_frames=81,
        default_steps=50, default_guidance=5.0, default_fps=16.0, vae_dtype="float32"),
    # Wan 2.2 TI2V-5B: one transformer for text- and image-to-video on the 16x16x4 VAE (48 channels):
    # multiples of 32; 1280x704, 121 frames at 24 fps (its model card).
    Family("wan2.2", "Wan 2.2 TI2V-5B (Alibaba)", {
        "wan2.2": PipelineKind("WanPipeline", T2V),
        "wan2.2-i2v": PipelineKind("WanImageToVideoPipeline", I2V),
    }, vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=241,
        size_multiple=32, max_size=1280, default_width=1280, default_height=704, default_frames=121,
        default_steps=50, default_guidance=5.0, default_fps=24.0, vae_dtype="float32"),
    # Wan VACE: one pipeline for all tasks through a control video and a mask (0 = keep, 1 = generate)
    Family("wan-vace", "Wan VACE (Alibaba), all-in-one video creation and editing", {
        "wan-vace": PipelineKind("WanVACEPipeline", ("t2v", "i2v", "v2v", "condition")),
    }, vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=129,
        size_multiple=16, max_size=1280, default_width=832, default_height=480, default_frames=81,
        default_steps=50, default_guidance=5.0, default_fps=16.0, vae_dtype="float32"),
    # SkyReels-V2 diffusion forcing: Wan's VAE; any length in overlapping chunks the pipeline makes
    # itself; its V2V pipeline continues a given clip (the "condition" task). 960x544, 97 frames, 24 fps.
    Family("skyreels-v2", "SkyReels-V2 diffusion forcing (Skywork)", {
        "skyreels-v2": PipelineKind("SkyReelsV2DiffusionForcingPipeline", T2V),
        "skyreels-v2-i2v": PipelineKind("SkyReelsV2DiffusionForcingImageToVideoPipeline", I2V),
        "skyreels-v2-v2v": PipelineKind("SkyReelsV2DiffusionForcingVideoToVideoPipeline", COND),
    }, vae="AutoencoderKLWan", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=257,
        size_multiple=16, max_size=1280, default_width=960, default_height=544, default_frames=97,
        default_steps=30, default_guidance=6.0, default_fps=24.0, vae_dtype="float32", frame_rate_arg="fps",
        chunked=True),
    # HunyuanVideo 1.5: VAE 16x16 px x 4 frames; T2V and I2V are separate checkpoints (I2V adds SigLIP);
    # 480p: 848x480, 121 frames at 24 fps, 50 steps, guidance 6 (its model card).
    Family("hunyuanvideo1.5", "HunyuanVideo 1.5 (Tencent)", {
        "hunyuanvideo1.5": PipelineKind("HunyuanVideo15Pipeline", T2V),
        "hunyuanvideo1.5-i2v": PipelineKind("HunyuanVideo15ImageToVideoPipeline", I2V, checkpoint="i2v"),
    }, vae="AutoencoderKLHunyuanVideo15", frame_multiple=4, frame_offset=1, min_frames=5, max_frames=241,
        size_multiple=16, max_size=1280, default_width=848, default_height=480, default_frames=121,
        default_steps=50, default_guidance=6.0, default_fps=24.0),
    # CogVideoX: multiples of 16, 49 frames at 8 fps by default; 8k+1 fits both 1.0 (4k+1) and
    # 1.5 (temporal patch 2). Its I2V checkpoints are separate.
    Family("cogvideox", "CogVideoX (THUDM)", {
        "cogvideox": PipelineKind("CogVideoXPipeline", T2V),
        "cogvideox-i2v": PipelineKind("CogVideoXImageToVideoPipeline", I2V, checkpoint="i2v"),
    }, vae="AutoencoderKLCogVideoX", frame_multiple=8, frame_offset=1, min_frames=9, max_frames=49,
        size_multiple=16, max_size=1360, default_width=720, default_height=480, default_frames=49,
        default_steps=50, default_guidance=6.0, default_fps=8.0, latents="bfchw"),
)}
# kind -> its family's name
KINDS = {kind: fam.name for fam in FAMILIES.values() for kind in fam.kinds}


@dataclass(frozen=True)
class Preset:
    """A documented configuration for a distilled, few-step checkpoint (entry key "preset")."""

    name: str
    family: str
    description: str
    steps: int
    guidance: float  # 1.0: no classifier-free guidance (one transformer pass per step)
    kinds: tuple  # the pipeline kinds it runs on (those that take its schedule)
    pipeline_kwargs: dict = field(default_factory=dict)
    schedule_key: Optional[str] = None  # the pipeline_kwargs list that fixes the schedule (len == steps)


PRESETS = {p.name: p for p in (
    # LTX-Video 0.9.7/0.9.8 distilled: 8 steps on the schedule of Lightricks' distilled config, no CFG;
    # run by the condition pipeline as diffusers documents it (0.42.1's LTXPipeline raises on a custom schedule)
    Preset("ltx-distilled", "ltx", "LTX-Video 0.9.7/0.9.8 distilled: 8 steps, no classifier-free guidance",
           steps=8, guidance=1.0, kinds=("ltx-condition",), schedule_key="timesteps",
           pipeline_kwargs={"timesteps": [1000, 993, 987, 981, 975, 909, 725, 421],
                            "decode_timestep": 0.05, "decode_noise_scale": 0.025}),
    # LTX-2 distilled: diffusers' DISTILLED_SIGMA_VALUES, and every extra guidance pass off
    Preset("ltx2-distilled", "ltx2", "LTX-2 distilled: 8 steps, no guidance passes (CFG, STG, modality)",
           steps=8, guidance=1.0, kinds=("ltx2", "ltx2-i2v", "ltx2-condition"), schedule_key="sigmas",
           pipeline_kwargs={"sigmas": [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875],
                            "stg_scale": 0.0, "modality_scale": 1.0, "guidance_rescale": 0.0,
                            "audio_guidance_scale": 1.0, "audio_stg_scale": 0.0, "audio_modality_scale": 1.0,
                            "audio_guidance_rescale": 0.0}),
)}

DTYPES = ("bfloat16", "float16", "float32")
OFFLOAD = ("none", "model", "sequential")
CACHE_TYPES = ("first_block", "pab")
COMPILE_MODES = (False, True, "regional", "full")

DEFAULT_KEYS = {"steps", "guidance", "width", "height", "frames", "fps"}
LIMIT_KEYS = {"max_size", "min_size", "max_frames", "min_frames", "max_steps", "max_guidance",
              "frame_multiple", "frame_offset", "size_multiple"}
MEMORY_KEYS = {"cpu_offload", "vae_tiling", "vae_slicing", "compile", "cache", "attention_backend"}
ENTRY_KEYS = {"path", "pipeline", "backend", "dtype", "vae_dtype", "description", "defaults", "limits", "memory", "queue",
              "negative_prompt", "max_sequence_length", "upsampler", "preset", "pipeline_kwargs"}
# what the backend passes itself: pipeline_kwargs may not set these
RESERVED_KWARGS = {"prompt", "negative_prompt", "height", "width", "num_frames", "num_inference_steps",
                   "guidance_scale", "generator", "output_type", "callback_on_step_end",
                   "callback_on_step_end_tensor_inputs", "image", "video", "mask", "conditions", "latents",
                   "strength", "denoise_strength", "return_dict", "max_sequence_length", "frame_rate", "fps",
                   "base_num_frames", "overlap_history"}


@dataclass(frozen=True)
class MemoryOptions:
    cpu_offload: str = "none"  # none | model | sequential (only applied when an accelerator exists)
    vae_tiling: bool = False
    vae_slicing: bool = False
    compile: object = False  # False | True (= "regional") | "regional" | "full"
    cache: Optional[dict] = None  # {"type": "first_block", "threshold": 0.05} | {"type": "pab", ...}
    attention_backend: Optional[str] = None  # e.g. "flash", "_native_cudnn", "sage" (never *_hub)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: str
    kinds: tuple  # ("ltx",) or ("ltx", "ltx-i2v"): one family, one checkpoint
    family: str
    dtype: str = "bfloat16"
    vae_dtype: Optional[str] = None
    description: str = ""
    defaults: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)
    memory: MemoryOptions = MemoryOptions()
    queue: str = ""
    negative_prompt: Optional[str] = None
    max_sequence_length: Optional[int] = None
    upsampler: Optional[str] = None  # latent upsampler pipeline folder
    preset: Optional[str] = None
    pipeline_kwargs: dict = field(default_factory=dict)  # the preset's, updated by the entry's
    # "diffusers", or "package.module:factory" (a callable taking this ModelConfig and returning a
    # generator.interface.Backend): a plug-in backend; the tests register fault-injecting fakes this way
    backend: str = "diffusers"

    @property
    def family_info(self) -> Family:
        return FAMILIES[self.family]

    @property
    def tasks(self) -> dict:
        """task -> the configured kind that serves it; a dedicated pipeline beats an all-round one."""
        fam = self.family_info
        out = {}
        for kind in sorted(self.kinds, key=lambda k: len(fam.kinds[k].tasks)):
            for task in fam.kinds[kind].tasks:
                out.setdefault(task, kind)
        return out

    @property
    def text_kind(self) -> Optional[str]:
        return self.tasks.get("t2v")

    @property
    def image_kind(self) -> Optional[str]:
        return self.tasks.get("i2v")

    def model_info(self) -> ModelInfo:
        fam = self.family_info
        d, lim = self.defaults, self.limits
        width, height = int(d.get("width", fam.default_width)), int(d.get("height", fam.default_height))
        tasks = self.tasks
        preset = PRESETS.get(self.preset)
        return ModelInfo(
            name=self.name,
            description=self.description or f"{fam.description}: {' + '.join(self.kinds)} from {self.path}",
            supports_image="i2v" in tasks,
            supports_video="v2v" in tasks,
            has_audio=fam.audio,
            native_size=(height, width),
            default_frames=int(d.get("frames", fam.default_frames)),
            min_frames=int(lim.get("min_frames", fam.min_frames)),
            max_frames=int(lim.get("max_frames", fam.max_frames)),
            frame_multiple=int(lim.get("frame_multiple", fam.frame_multiple)),
            frame_offset=int(lim.get("frame_offset", fam.frame_offset)),
            default_width=width,
            default_height=height,
            size_multiple=int(lim.get("size_multiple", fam.size_multiple)),
            min_size=int(lim.get("min_size", fam.min_size)),
            max_size=int(lim.get("max_size", fam.max_size)),
            default_steps=int(d.get("steps", preset.steps if preset else fam.default_steps)),
            max_steps=int(lim.get("max_steps", 100)),
            default_guidance=float(d.get("guidance", preset.guidance if preset else fam.default_guidance)),
            max_guidance=float(lim.get("max_guidance", preset.guidance if preset else 20.0)),
            default_fps=float(d.get("fps", fam.default_fps)),
            extra={
                "backend": self.backend,
                "family": self.family,
                "pipelines": list(self.kinds),
                "tasks": sorted(tasks, key=TASKS.index),
                "requires_image": "t2v" not in tasks,
                "upsampler": self.upsampler is not None,
                "preset": self.preset,
                "queue": self.queue or self.name,
                "dtype": self.dtype,
                "gpu": True,
            },
        )


def _check_keys(name: str, where: str, data: dict, allowed: set) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"model {name!r}: {where} must be an object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"model {name!r}: unknown {where} key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(allowed))}")


def _parse_kinds(name: str, raw) -> tuple:
    if isinstance(raw, str):
        kinds = tuple(k.strip() for k in raw.split("+"))
    elif isinstance(raw, (list, tuple)) and all(isinstance(k, str) for k in raw):
        kinds = tuple(raw)
    else:
        raise ConfigError(f"model {name!r}: 'pipeline' must be a kind or a list of kinds, e.g. [\"ltx\", \"ltx-i2v\"]")
    for kind in kinds:
        if kind not in KINDS:
            raise ConfigError(f"model {name!r}: unknown pipeline kind {kind!r}; known: {', '.join(KINDS)}")
    if not kinds or len(set(kinds)) != len(kinds):
        raise ConfigError(f"model {name!r}: 'pipeline' lists each kind once; got {list(kinds)}")
    families = {KINDS[k] for k in kinds}
    if len(families) != 1:
        raise ConfigError(f"model {name!r}: the kinds of one entry must be one family's; got {list(kinds)} "
                          f"({', '.join(sorted(families))})")
    fam = FAMILIES[families.pop()]
    if len({fam.kinds[k].checkpoint for k in kinds}) != 1:
        raise ConfigError(f"model {name!r}: {' and '.join(kinds)} are separate {fam.description} checkpoints and "
                          f"cannot share one transformer; configure the I2V checkpoint as its own entry")
    return tuple(sorted(kinds, key=list(fam.kinds).index))  # the family's order: t2v first


def _positive_int(name, where, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"model {name!r}: {where} must be a non-negative integer, got {value!r}")


def _resolve(path, base_dir: str) -> str:
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def _parse_preset(name: str, entry: dict, family: str) -> tuple:
    """(preset name or None, pipeline_kwargs = the preset's updated by the entry's)."""
    kwargs = entry.get("pipeline_kwargs", {})
    if not isinstance(kwargs, dict):
        raise ConfigError(f"model {name!r}: pipeline_kwargs must be an object of pipeline call arguments")
    reserved = sorted(set(kwargs) & RESERVED_KWARGS)
    if reserved:
        raise ConfigError(f"model {name!r}: pipeline_kwargs may not set {', '.join(reserved)}: the service passes "
                          f"those from each request and the entry's other keys")
    preset_name = entry.get("preset")
    if preset_name is None:
        return None, dict(kwargs)
    preset = PRESETS.get(preset_name)
    if preset is None:
        raise ConfigError(f"model {name!r}: unknown preset {preset_name!r}; known: {', '.join(PRESETS)}")
    if preset.family != family:
        raise ConfigError(f"model {name!r}: preset {preset_name!r} is for {FAMILIES[preset.family].description} "
                          f"checkpoints, not {FAMILIES[family].description}")
    others = [k for k in _parse_kinds(name, entry["pipeline"]) if k not in preset.kinds]
    if others:
        raise ConfigError(f"model {name!r}: preset {preset_name!r} runs on {' / '.join(preset.kinds)}, "
                          f"not {', '.join(others)}")
    merged = {**preset.pipeline_kwargs, **kwargs}
    steps = entry.get("defaults", {}).get("steps", preset.steps)
    schedule = merged.get(preset.schedule_key) if preset.schedule_key else None
    if schedule is not None and (not isinstance(schedule, list) or len(schedule) != steps):
        raise ConfigError(f"model {name!r}: preset {preset_name!r} runs a fixed schedule of "
                          f"{len(schedule) if isinstance(schedule, list) else '?'} steps "
                          f"(pipeline_kwargs.{preset.schedule_key}); defaults.steps is {steps}")
    return preset_name, merged


def parse_entry(name: str, entry: dict, base_dir: str = REPO_ROOT) -> ModelConfig:
    _check_keys(name, "entry", entry, ENTRY_KEYS)
    backend = entry.get("backend", "diffusers")
    if backend != "diffusers" and (not isinstance(backend, str) or backend.count(":") != 1):
        raise ConfigError(f"model {name!r}: 'backend' must be \"diffusers\" or \"package.module:factory\"")
    if "pipeline" not in entry or ("path" not in entry and backend == "diffusers"):
        raise ConfigError(f"model {name!r}: 'path' and 'pipeline' are required")
    kinds = _parse_kinds(name, entry["pipeline"])
    family = KINDS[kinds[0]]
    fam = FAMILIES[family]
    path = _resolve(entry.get("path", ""), base_dir)
    dtype = entry.get("dtype", "bfloat16")
    vae_dtype = entry.get("vae_dtype")
    for key, value in (("dtype", dtype), ("vae_dtype", vae_dtype)):
        if value is not None and value not in DTYPES:
            raise ConfigError(f"model {name!r}: {key} must be one of {', '.join(DTYPES)}, got {value!r}")
    defaults = entry.get("defaults", {})
    _check_keys(name, "defaults", defaults, DEFAULT_KEYS)
    limits = entry.get("limits", {})
    _check_keys(name, "limits", limits, LIMIT_KEYS)
    for key in ("max_size", "min_size", "max_frames", "min_frames", "max_steps", "frame_offset"):
        if key in limits:
            _positive_int(name, f"limits.{key}", limits[key])
    for key in ("frame_multiple", "size_multiple"):
        if key in limits and (not isinstance(limits[key], int) or limits[key] < 1):
            raise ConfigError(f"model {name!r}: limits.{key} must be an integer >= 1")
    memory = entry.get("memory", {})
    _check_keys(name, "memory", memory, MEMORY_KEYS)
    mem = MemoryOptions(**memory)
    if mem.cpu_offload not in OFFLOAD:
        raise ConfigError(f"model {name!r}: memory.cpu_offload must be one of {', '.join(OFFLOAD)}")
    if mem.compile not in COMPILE_MODES:
        raise ConfigError(f"model {name!r}: memory.compile must be false, true, \"regional\" or \"full\"")
    if mem.cache is not None:
        if not isinstance(mem.cache, dict) or mem.cache.get("type") not in CACHE_TYPES:
            raise ConfigError(f"model {name!r}: memory.cache must be null or an object with "
                              f"\"type\": one of {', '.join(CACHE_TYPES)}")
    if mem.attention_backend is not None and "hub" in str(mem.attention_backend):
        raise ConfigError(f"model {name!r}: attention backend {mem.attention_backend!r} downloads kernels "
                          f"from the Hub; use a locally installed one (flash, sage, _native_cudnn, ...)")
    upsampler = entry.get("upsampler")
    if upsampler is not None:
        if fam.upsampler is None:
            raise ConfigError(f"model {name!r}: 'upsampler' is set but {fam.description} has no latent upsampler")
        if not isinstance(upsampler, str) or not upsampler:
            raise ConfigError(f"model {name!r}: 'upsampler' must be the path of a latent upsampler pipeline folder")
        upsampler = _resolve(upsampler, base_dir)
    preset, pipeline_kwargs = _parse_preset(name, entry, family)  # (after the kinds: it checks them)
    config = ModelConfig(name=name, path=path, kinds=kinds, family=family, dtype=dtype,
                         vae_dtype=vae_dtype or fam.vae_dtype, description=str(entry.get("description", "")),
                         defaults=dict(defaults), limits=dict(limits), memory=mem,
                         queue=str(entry.get("queue") or name), negative_prompt=entry.get("negative_prompt"),
                         max_sequence_length=entry.get("max_sequence_length"), upsampler=upsampler, preset=preset,
                         pipeline_kwargs=pipeline_kwargs, backend=backend)
    info = config.model_info()
    problems = info.problems(info.default_frames, info.default_width, info.default_height,
                             info.default_steps, info.default_guidance)
    if problems:
        raise ConfigError(f"model {name!r}: its defaults break its own limits: "
                          + "; ".join(msg for _, msg in problems))
    return config


def check_pipeline_kwargs(config: ModelConfig) -> list:
    """Problems with pipeline_kwargs against the real pipeline signatures (imports diffusers, so the
    validator and the backend's load call it, not the web process)."""
    import diffusers

    fam, out = config.family_info, []
    for key in config.pipeline_kwargs:
        takers = [k for k in config.kinds
                  if key in inspect.signature(getattr(diffusers, fam.kinds[k].cls).__call__).parameters]
        if not takers:
            out.append(f"model {config.name!r}: pipeline_kwargs.{key} is not an argument of "
                       f"{' or '.join(fam.kinds[k].cls for k in config.kinds)}")
    return out


def config_path() -> Optional[str]:
    """The configured file, or None when none is configured and `models.json` is absent."""
    path = os.environ.get(ENV_VAR)
    if path:
        return path
    default = os.path.join(REPO_ROOT, "models.json")
    return default if os.path.exists(default) else None


def read_file(path: str) -> dict:
    if not os.path.exists(path):
        raise ConfigError(f"model configuration {path} does not exist (set {ENV_VAR})")
    if path.endswith(".toml"):
        import tomllib

        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    else:
        with open(path, encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"model configuration {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"model configuration {path} must map model names to entries")
    return data.get("models", data) if isinstance(data.get("models"), dict) else data


def load_config(path: Optional[str] = None, strict: bool = True) -> dict:
    """{name: ModelConfig}. `strict=False` logs and skips broken entries instead of raising."""
    path = path or config_path()
    if path is None:
        return {}
    data = read_file(path)
    base_dir = os.path.dirname(os.path.abspath(path))
    out = {}
    for name, entry in data.items():
        try:
            if name == "builtin":
                raise ConfigError("the name 'builtin' is the built-in model's")
            out[name] = parse_entry(name, entry, base_dir)
        except (ConfigError, TypeError) as exc:
            if strict:
                raise ConfigError(str(exc)) from exc
            log.error("skipping model %r from %s: %s", name, path, exc)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else config_path()
    if path is None:
        print(f"no model configuration: set {ENV_VAR} or create models.json at {REPO_ROOT}")
        return 1
    try:
        configs = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}")
        return 1
    problems = [p for cfg in configs.values() if cfg.backend == "diffusers" for p in check_pipeline_kwargs(cfg)]
    for problem in problems:
        print(f"error: {problem}")
    for cfg in configs.values():
        info = cfg.model_info()
        exists = "ok" if os.path.exists(os.path.join(cfg.path, "model_index.json")) else "MISSING model_index.json"
        print(f"{cfg.name}: {'+'.join(cfg.kinds)} ({', '.join(info.extra['tasks'])}{', sound' if info.has_audio else ''})"
              f" {cfg.dtype} queue={info.extra['queue']} path={cfg.path} [{exists}]")
        print(f"  defaults {info.default_width}x{info.default_height} {info.default_frames} frames "
              f"{info.default_steps} steps guidance {info.default_guidance} {info.default_fps} fps; "
              f"frames {info.frame_rule()}, size multiple of {info.size_multiple} in "
              f"{info.min_size}..{info.max_size}; memory {cfg.memory}")
        if cfg.preset:
            print(f"  preset {cfg.preset}: {PRESETS[cfg.preset].description}")
        if cfg.upsampler:
            up = "ok" if os.path.exists(os.path.join(cfg.upsampler, "model_index.json")) else "MISSING model_index.json"
            print(f"  latent upsampler {cfg.upsampler} [{up}]")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
