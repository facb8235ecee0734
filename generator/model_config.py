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
        "decoder": "/models/LTX-2.5/diffusion_decoder",        # optional diffusion decoder folder (LTX-2)
        "temporal_upsampler": "/models/LTX-2.5/temporal_latent_upsampler",  # optional (ltx2-dfr): fps x2, x4
        "ic_lora": "/models/ic-lora-union.safetensors",         # optional IC-LoRA (ltx2-ic-lora): file or folder
        "preset": "ltx-distilled",               # optional few-step preset (PRESETS)
        "pipeline_kwargs": {"decode_timestep": 0.05},          # optional extra pipeline arguments
        "queue": "ltx-video"
      }
    }

Every kind belongs to a `Family` (generator/families/<family>.py): its diffusers pipeline class per
kind and the tasks each serves (t2v, i2v, v2v, condition), frame and size rules, defaults, whether it
makes sound and which latent upsampler and diffusion decoder fit it. Several kinds of one family listed together are
loaded once: the first from the folder, the others from the very same components with `from_pipe`
(no second copy in memory), so they must share a checkpoint (`PipelineKind.checkpoint`).

Entries are parsed by pydantic models (`ModelEntry`: unknown keys and wrong JSON types refused) and
every error is a `ConfigError` naming the entry and the field. `validate_config` returns the good
entries and the errors; the service registers the good ones and reports the others at start-up
(generator.registry_setup). `python -m generator.model_config [file]` checks a file and prints what it
defines; `--schema` prints the JSON Schema (docs/models.schema.json).
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      TypeAdapter, ValidationError, field_validator, model_validator)

from generator.families import FAMILIES, KINDS, TASKS, Family, PipelineKind  # noqa: F401 (also for callers)
from generator.interface import ModelInfo

log = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_VAR = "VIDEO_MODELS_CONFIG"


class ConfigError(ValueError):
    """The model configuration is wrong; the message names the model (entry) and the field (dotted key)."""

    def __init__(self, message: str, model: Optional[str] = None, field: Optional[str] = None):
        self.message, self.model, self.field = message, model, field
        where = " ".join(part for part in (model and f"model {model!r}:", field and f"{field}:") if part)
        super().__init__(f"{where} {message}" if where else message)

    def as_dict(self) -> dict:
        return {"model": self.model, "field": self.field, "message": self.message}

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
           steps=8, guidance=1.0, kinds=("ltx2", "ltx2-i2v", "ltx2-condition", "ltx2-ic-lora", "ltx2-hdr", "ltx2-dfr"),
           schedule_key="sigmas",
           pipeline_kwargs={"sigmas": [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875],
                            "stg_scale": 0.0, "modality_scale": 1.0, "guidance_rescale": 0.0,
                            "audio_guidance_scale": 1.0, "audio_stg_scale": 0.0, "audio_modality_scale": 1.0,
                            "audio_guidance_rescale": 0.0}),
    # Helios-Distilled: its card's 2 + 2 + 2 steps over the pyramid's three stages, no guidance, the first
    # chunk's steps doubled (its DMD scheduler and is_distilled come with the checkpoint)
    Preset("helios-distilled", "helios-pyramid", "Helios-Distilled: 2 + 2 + 2 steps per chunk, no guidance",
           steps=6, guidance=1.0, kinds=("helios-pyramid",),
           pipeline_kwargs={"pyramid_num_inference_steps_list": [2, 2, 2], "is_amplify_first_chunk": True}),
)}

# what the backend passes itself: pipeline_kwargs may not set these
RESERVED_KWARGS = {"prompt", "negative_prompt", "height", "width", "num_frames", "num_inference_steps",
                   "guidance_scale", "generator", "output_type", "callback_on_step_end",
                   "callback_on_step_end_tensor_inputs", "image", "video", "mask", "conditions", "latents",
                   "strength", "denoise_strength", "reference_conditions", "return_dict", "max_sequence_length",
                   "frame_rate", "fps", "base_num_frames", "overlap_history"}
DType = Literal["bfloat16", "float16", "float32"]


class _Strict(BaseModel):
    """JSON types as written (no "10" for 10), unknown keys refused (a misspelt `vae_tilling` silently
    ignored would cost an operator an evening)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Defaults(_Strict):
    """What a request that names nothing gets (each falls back to the family's)."""

    steps: Optional[PositiveInt] = None
    guidance: Optional[NonNegativeFloat] = None
    width: Optional[PositiveInt] = None
    height: Optional[PositiveInt] = None
    frames: Optional[PositiveInt] = None
    fps: Optional[PositiveFloat] = None


class Limits(_Strict):
    """Narrower (or, at the operator's risk, wider) bounds than the family's."""

    max_size: Optional[NonNegativeInt] = None
    min_size: Optional[NonNegativeInt] = None
    max_frames: Optional[NonNegativeInt] = None
    min_frames: Optional[NonNegativeInt] = None
    max_steps: Optional[NonNegativeInt] = None
    max_guidance: Optional[NonNegativeFloat] = None
    frame_multiple: Optional[PositiveInt] = None
    frame_offset: Optional[NonNegativeInt] = None
    size_multiple: Optional[PositiveInt] = None


class CacheOptions(_Strict):
    """diffusers' caching hooks: FirstBlockCache (`threshold`) or Pyramid Attention Broadcast."""

    type: Literal["first_block", "pab"]
    threshold: float = 0.05
    spatial_attention_block_skip_range: PositiveInt = 2
    spatial_attention_timestep_skip_range: list[NonNegativeInt] = Field(default=[100, 800], min_length=2,
                                                                        max_length=2)


class MemoryOptions(_Strict):
    cpu_offload: Literal["none", "model", "sequential"] = "none"  # only applied when an accelerator exists
    vae_tiling: bool = False
    vae_slicing: bool = False
    compile: Union[bool, Literal["regional", "full"]] = False  # true = "regional"
    cache: Optional[CacheOptions] = None
    attention_backend: Optional[str] = None  # e.g. "flash", "_native_cudnn", "sage" (never *_hub)

    @field_validator("attention_backend")
    @classmethod
    def _local_kernels(cls, value):
        if value is not None and "hub" in value:
            raise ValueError(f"attention backend {value!r} downloads kernels from the Hub; use a locally "
                             f"installed one (flash, sage, _native_cudnn, ...)")
        return value


class ModelEntry(_Strict):
    """One entry of models.json: a model name's checkpoint folder and how to serve it."""

    path: Optional[str] = Field(None, description="local diffusers pipeline folder (with model_index.json)")
    pipeline: Union[str, list[str]] = Field(description="a pipeline kind, or several kinds of one family and "
                                                        "checkpoint (a list, or joined with '+')")
    backend: str = Field("diffusers", pattern=r"^(diffusers|[\w.]+:\w+)$",
                         description='"diffusers", or a plug-in "package.module:factory"')
    dtype: DType = "bfloat16"
    vae_dtype: Optional[DType] = None
    description: str = ""
    defaults: Defaults = Defaults()
    limits: Limits = Limits()
    memory: MemoryOptions = MemoryOptions()
    queue: Optional[str] = None
    negative_prompt: Optional[str] = None
    max_sequence_length: Optional[PositiveInt] = None
    upsampler: Optional[str] = Field(None, min_length=1, description="a latent upsampler: its pipeline folder "
                                     "(model_index.json) or the upsampler model's folder (config.json, e.g. "
                                     "LTX-2's latent_upsampler)")
    decoder: Optional[str] = Field(None, min_length=1, description="a diffusion decoder decoding the video latents "
                                   "in place of the VAE (LTX-2.5's): its pipeline folder (model_index.json) or the "
                                   "decoder model's folder (config.json)")
    temporal_upsampler: Optional[str] = Field(None, min_length=1, description="a temporal latent upsampler for the "
                                              "kinds whose passes leave keyframes (ltx2-dfr): a job's `interpolate` "
                                              "2 or 4 becomes one or two temporal refine rounds (LTX-2.5's); the "
                                              "upsampler model's folder (config.json) or a refine pipeline folder")
    ic_lora: Optional[str] = Field(None, min_length=1, description="an In-Context LoRA for the kinds that take one "
                                   "(ltx2-ic-lora): its .safetensors file, or a folder holding one")
    preset: Optional[str] = None
    pipeline_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra pipeline call arguments")
    pipeline_class: Optional[str] = Field(None, pattern=r"^[A-Z]\w*Pipeline$",
                                          description='the diffusers class of a "generic" entry')
    tasks: Optional[list[Literal["t2v", "i2v", "v2v"]]] = Field(
        None, min_length=1, description='what a "generic" entry serves (default ["t2v"])')

    @field_validator("pipeline")
    @classmethod
    def _known_kinds(cls, raw):
        kinds = tuple(k.strip() for k in raw.split("+")) if isinstance(raw, str) else tuple(raw)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown pipeline kind {unknown[0]!r}; known: {', '.join(KINDS)}")
        if not kinds or len(set(kinds)) != len(kinds):
            raise ValueError(f"lists each kind once; got {list(kinds)}")
        families = {KINDS[k] for k in kinds}
        if len(families) != 1:
            raise ValueError(f"the kinds of one entry must be one family's; got {list(kinds)} "
                             f"({', '.join(sorted(families))})")
        fam = FAMILIES[families.pop()]
        if len({fam.kinds[k].checkpoint for k in kinds}) != 1:
            raise ValueError(f"{' and '.join(kinds)} are separate {fam.description} checkpoints and cannot "
                             f"share one transformer; configure the I2V checkpoint as its own entry")
        return list(sorted(kinds, key=list(fam.kinds).index))  # the family's order: t2v first

    @field_validator("pipeline_kwargs")
    @classmethod
    def _not_reserved(cls, kwargs):
        reserved = sorted(set(kwargs) & RESERVED_KWARGS)
        if reserved:
            raise ValueError(f"may not set {', '.join(reserved)}: the service passes those from each request "
                             f"and the entry's other keys")
        return kwargs

    @model_validator(mode="after")
    def _fits_family(self):
        if self.backend == "diffusers" and self.path is None:
            raise ConfigError("'path' is required (a local diffusers pipeline folder)", field="path")
        fam = FAMILIES[KINDS[self.pipeline[0]]]
        generic = fam.name == "generic"
        if generic and self.pipeline_class is None:
            raise ConfigError("a generic entry names its diffusers class, e.g. \"MotifVideoPipeline\"",
                              field="pipeline_class")
        for key in ("pipeline_class", "tasks"):
            if not generic and getattr(self, key) is not None:
                raise ConfigError(f"only a \"generic\" entry takes {key!r}; {fam.description} knows its own",
                                  field=key)
        if self.upsampler is not None and fam.upsampler is None:
            raise ConfigError(f"'upsampler' is set but {fam.description} has no latent upsampler", field="upsampler")
        if self.decoder is not None and fam.decoder is None:
            raise ConfigError(f"'decoder' is set but {fam.description} has no diffusion decoder", field="decoder")
        if self.temporal_upsampler is not None and not any(fam.kinds[k].keyframes for k in self.pipeline):
            refiners = [k for k, pk in fam.kinds.items() if pk.keyframes]
            raise ConfigError(f"'temporal_upsampler' is set but none of {', '.join(self.pipeline)} leaves the "
                              f"keyframes a temporal refine round starts from"
                              + (f" ({' or '.join(refiners)} does)" if refiners else ""), field="temporal_upsampler")
        hdr_kinds = [k for k in self.pipeline if fam.kinds[k].hdr]
        if self.decoder is not None and hdr_kinds:
            raise ConfigError(f"'decoder' cannot decode {' / '.join(hdr_kinds)}'s "
                              f"HDR latents (it makes SDR frames): give that kind an entry of its own",
                              field="decoder")
        lora_kinds = [k for k in self.pipeline if fam.kinds[k].ic_lora]
        if len(lora_kinds) > 1:
            raise ConfigError(f"{' and '.join(lora_kinds)} both make control jobs, each with its own IC-LoRA: "
                              f"give each an entry of its own", field="pipeline")
        if self.ic_lora is not None and not lora_kinds:
            takers = [k for k, pk in fam.kinds.items() if pk.ic_lora]
            raise ConfigError(f"'ic_lora' is set but none of {', '.join(self.pipeline)} takes an IC-LoRA"
                              + (f" ({' or '.join(takers)} does)" if takers else ""), field="ic_lora")
        if self.preset is not None:
            preset = PRESETS.get(self.preset)
            if preset is None:
                raise ConfigError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}", field="preset")
            if preset.family != fam.name:
                raise ConfigError(f"preset {self.preset!r} is for {FAMILIES[preset.family].description} "
                                  f"checkpoints, not {fam.description}", field="preset")
            others = [k for k in self.pipeline if k not in preset.kinds]
            if others:
                raise ConfigError(f"preset {self.preset!r} runs on {' / '.join(preset.kinds)}, not "
                                  f"{', '.join(others)}", field="preset")
            steps = self.defaults.steps or preset.steps
            schedule = self.merged_kwargs().get(preset.schedule_key) if preset.schedule_key else None
            if schedule is not None and (not isinstance(schedule, list) or len(schedule) != steps):
                raise ConfigError(f"preset {self.preset!r} runs a fixed schedule of "
                                  f"{len(schedule) if isinstance(schedule, list) else '?'} steps "
                                  f"(pipeline_kwargs.{preset.schedule_key}); defaults.steps is {steps}",
                                  field="defaults.steps")
        unguided = [k for k in self.pipeline if not fam.kinds[k].guidance]
        if unguided and (self.preset is None or PRESETS[self.preset].guidance != 1.0):
            fits = [p.name for p in PRESETS.values() if set(unguided) <= set(p.kinds) and p.guidance == 1.0]
            raise ConfigError(f"{' / '.join(unguided)} is a distilled pass without guidance: the entry needs a preset "
                              f"that sets guidance 1 ({' or '.join(fits)})", field="preset")
        return self

    def merged_kwargs(self) -> dict:
        """pipeline_kwargs: the preset's, updated by the entry's."""
        preset = PRESETS.get(self.preset)
        return {**(preset.pipeline_kwargs if preset else {}), **self.pipeline_kwargs}


CONFIG_SCHEMA = TypeAdapter(dict[str, ModelEntry])


def json_schema() -> dict:
    """The JSON Schema of a models.json (published as docs/models.schema.json)."""
    schema = CONFIG_SCHEMA.json_schema()
    schema.update({"title": "models.json", "description": "model name -> entry (generator/model_config.py)"})
    return schema


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: str
    kinds: tuple  # ("ltx",) or ("ltx", "ltx-i2v"): one family, one checkpoint
    family: str
    dtype: str = "bfloat16"
    vae_dtype: Optional[str] = None
    description: str = ""
    defaults: Defaults = Defaults()
    limits: Limits = Limits()
    memory: MemoryOptions = MemoryOptions()
    queue: str = ""
    negative_prompt: Optional[str] = None
    max_sequence_length: Optional[int] = None
    upsampler: Optional[str] = None  # latent upsampler pipeline folder
    decoder: Optional[str] = None  # diffusion decoder: pipeline or model folder
    temporal_upsampler: Optional[str] = None  # temporal latent upsampler: model or refine pipeline folder
    ic_lora: Optional[str] = None  # IC-LoRA weights (file or folder) for the kinds that take one
    preset: Optional[str] = None
    pipeline_kwargs: dict = field(default_factory=dict)  # the preset's, updated by the entry's
    pipeline_class: Optional[str] = None  # a generic entry's diffusers class
    generic_tasks: tuple = ("t2v",)  # what a generic entry serves
    # "diffusers", or "package.module:factory" (a callable taking this ModelConfig and returning a
    # generator.interface.Backend): a plug-in backend; the tests register fault-injecting fakes this way
    backend: str = "diffusers"

    @property
    def family_info(self) -> Family:
        return FAMILIES[self.family]

    def kind_class(self, kind: str) -> str:
        """The diffusers class a configured kind runs."""
        return self.pipeline_class or self.family_info.kinds[kind].cls

    @property
    def tasks(self) -> dict:
        """task -> the configured kind that serves it; a dedicated pipeline beats an all-round one."""
        fam = self.family_info
        if self.pipeline_class:
            return {task: self.kinds[0] for task in self.generic_tasks}
        out = {}
        for kind in sorted(self.kinds, key=lambda k: len(fam.kinds[k].tasks)):
            for task in fam.kinds[kind].tasks:
                out.setdefault(task, kind)
        return out

    @property
    def native_factors(self) -> dict:
        """The `upscale` / `interpolate` factors the model makes itself from a kind's keyframe slots (LTX-2.5's
        recipe): upscale 2 with a latent upsampler (a second pass at twice the size), interpolate 2 and 4 with a
        temporal upsampler (refine rounds). Other factors, and other kinds' jobs, take the generic post-steps."""
        keyframes = any(self.family_info.kinds[k].keyframes for k in self.kinds)
        return {"upscale": [2] if keyframes and self.upsampler else [],
                "interpolate": [2, 4] if keyframes and self.temporal_upsampler else []}

    def model_info(self) -> ModelInfo:
        fam = self.family_info
        d, lim = self.defaults, self.limits
        width, height = d.width or fam.default_width, d.height or fam.default_height
        tasks = self.tasks
        preset = PRESETS.get(self.preset)
        return ModelInfo(
            name=self.name,
            description=self.description or f"{fam.description}: {' + '.join(self.kinds)} from {self.path}",
            supports_image="i2v" in tasks or "animate" in tasks,
            supports_video=bool({"v2v", "animate", "control"} & set(tasks)) or ("condition" in tasks
                                                                                and fam.continues_video),
            has_audio=fam.audio and any(fam.kinds[k].sound for k in self.kinds),
            native_size=(height, width),
            default_frames=d.frames or fam.default_frames,
            min_frames=_given(lim.min_frames, fam.min_frames),
            max_frames=_given(lim.max_frames, fam.max_frames),
            frame_multiple=lim.frame_multiple or fam.frame_multiple,
            frame_offset=_given(lim.frame_offset, fam.frame_offset),
            default_width=width,
            default_height=height,
            size_multiple=lim.size_multiple or fam.size_multiple,
            min_size=_given(lim.min_size, fam.min_size),
            max_size=_given(lim.max_size, fam.max_size),
            default_steps=d.steps or (preset.steps if preset else fam.default_steps),
            max_steps=_given(lim.max_steps, 100),
            default_guidance=float(_given(d.guidance, preset.guidance if preset else fam.default_guidance)),
            max_guidance=float(_given(lim.max_guidance, preset.guidance if preset else 20.0)),
            default_fps=float(d.fps or fam.default_fps),
            extra={
                "backend": self.backend,
                "family": self.family,
                "pipelines": list(self.kinds),
                "tasks": sorted(tasks, key=TASKS.index),
                "task_inputs": fam.task_needs(sorted(tasks, key=TASKS.index)),
                "requires_image": "t2v" not in tasks and bool({"i2v", "animate"} & set(tasks)),
                "requires_video": not {"t2v", "i2v"} & set(tasks),
                "live": fam.live,  # "native": made chunk by chunk with the model's own history
                "upsampler": self.upsampler is not None,
                "decoder": self.decoder is not None,
                "native_factors": self.native_factors,
                "ic_lora": self.ic_lora is not None,
                "preset": self.preset,
                "queue": self.queue or self.name,
                "dtype": self.dtype,
                "gpu": True,
            },
        )


def _given(value, fallback):
    return fallback if value is None else value


# an entry's folders of a second pipeline beside its checkpoint: field -> (what it is, its model's short name)
SECOND_FOLDERS = {"upsampler": ("latent upsampler", "upsampler"), "decoder": ("diffusion decoder", "decoder"),
                  "temporal_upsampler": ("temporal latent upsampler", "upsampler")}


def upsampler_folder_kind(folder: str) -> Optional[str]:
    """"pipeline" (model_index.json: LTX's ltxv-spatial-upscaler), "model" (config.json: the upsampler model
    alone, as LTX-2 ships it in its checkpoint's latent_upsampler folder) or None. The same for the other
    SECOND_FOLDERS."""
    for kind, marker in (("pipeline", "model_index.json"), ("model", "config.json")):
        if os.path.isfile(os.path.join(folder, marker)):
            return kind
    return None


def _resolve(path, base_dir: str) -> str:
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def _errors_of(name: str, exc: ValidationError) -> ConfigError:
    """pydantic's first error as a ConfigError naming the entry and the field (dotted)."""
    err = exc.errors()[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):  # raised by a model validator with its own field
        return ConfigError(cause.message, model=name, field=cause.field)
    where = ".".join(str(part) for part in err["loc"]) or None
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] not in ("missing", "extra_forbidden", "value_error"):
        message += f", got {err['input']!r}"
    if err["type"] == "extra_forbidden":
        message = "unknown key (a typo? see docs/models.schema.json)"
    return ConfigError(message, model=name, field=where)


def parse_entry(name: str, entry: dict, base_dir: str = REPO_ROOT, check_paths: bool = False) -> ModelConfig:
    """One entry -> ModelConfig; ConfigError (naming `name` and the field) when it is wrong. With
    `check_paths`, the checkpoint folder must exist and hold a model_index.json, the upsampler folder a
    model_index.json or a config.json (upsampler_folder_kind), the decoder folder too, and an `ic_lora` file or
    folder exist."""
    if not isinstance(entry, dict):
        raise ConfigError(f"an entry must be an object, got {type(entry).__name__}", model=name)
    try:
        parsed = ModelEntry.model_validate(entry)
    except ValidationError as exc:
        raise _errors_of(name, exc) from None
    except ConfigError as exc:
        raise ConfigError(exc.message, model=name, field=exc.field) from None
    kinds = tuple(parsed.pipeline)
    fam = FAMILIES[KINDS[kinds[0]]]
    path = _resolve(parsed.path or "", base_dir)
    folders = {key: getattr(parsed, key) and _resolve(getattr(parsed, key), base_dir) for key in SECOND_FOLDERS}
    ic_lora = parsed.ic_lora and _resolve(parsed.ic_lora, base_dir)
    if check_paths and parsed.backend == "diffusers":
        if not os.path.isfile(os.path.join(path, "model_index.json")):
            state = "does not exist" if not os.path.exists(path) else "has no model_index.json"
            raise ConfigError(f"{path} {state}: it must be a local diffusers pipeline folder", model=name, field="path")
        for key, (pipeline_name, model_name) in SECOND_FOLDERS.items():
            folder = folders[key]
            if folder and not upsampler_folder_kind(folder):
                state = "does not exist" if not os.path.exists(folder) else "has no model_index.json or config.json"
                raise ConfigError(f"{folder} {state}: it must be a local {pipeline_name} pipeline folder or the "
                                  f"{model_name} model's folder", model=name, field=key)
        if ic_lora and not (os.path.isfile(ic_lora) or os.path.isdir(ic_lora)):
            raise ConfigError(f"{ic_lora} does not exist: it must be an IC-LoRA .safetensors file or a folder "
                              f"holding one", model=name, field="ic_lora")
    config = ModelConfig(name=name, path=path, kinds=kinds, family=fam.name, dtype=parsed.dtype,
                         vae_dtype=parsed.vae_dtype or fam.vae_dtype, description=parsed.description,
                         defaults=parsed.defaults, limits=parsed.limits, memory=parsed.memory,
                         queue=parsed.queue or name, negative_prompt=parsed.negative_prompt,
                         max_sequence_length=parsed.max_sequence_length, ic_lora=ic_lora, **folders,
                         preset=parsed.preset,
                         pipeline_kwargs=parsed.merged_kwargs(), backend=parsed.backend,
                         pipeline_class=parsed.pipeline_class,
                         generic_tasks=tuple(sorted(parsed.tasks or ["t2v"], key=TASKS.index)))
    info = config.model_info()
    problems = info.problems(info.default_frames, info.default_width, info.default_height,
                             info.default_steps, info.default_guidance)
    if problems:
        field_of = {"num_frames": "frames", "guidance_scale": "guidance"}
        key, _ = problems[0]
        raise ConfigError("its defaults break its own limits: " + "; ".join(msg for _, msg in problems),
                          model=name, field=f"defaults.{field_of.get(key, key)}")
    return config


def check_pipeline_kwargs(config: ModelConfig) -> list:
    """Problems with pipeline_kwargs against the real pipeline signatures (imports diffusers, so the
    validator and the backend's load call it, not the web process)."""
    import diffusers

    out = [f"model {config.name!r}: pipeline_class: diffusers {diffusers.__version__} has no {config.kind_class(k)}"
           for k in config.kinds if not hasattr(diffusers, config.kind_class(k))]
    if out:
        return out
    preset = PRESETS[config.preset].pipeline_kwargs if config.preset else {}
    for key, value in config.pipeline_kwargs.items():
        if key in preset and preset[key] == value:
            continue  # the preset's: it turns off the passes of the kinds that have them (LTX2DFRPipeline has none)
        takers = [k for k in config.kinds
                  if key in inspect.signature(getattr(diffusers, config.kind_class(k)).__call__).parameters]
        if not takers:
            out.append(f"model {config.name!r}: pipeline_kwargs.{key} is not an argument of "
                       f"{' or '.join(config.kind_class(k) for k in config.kinds)}")
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
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"model configuration {path} is not valid TOML: {exc}") from exc
    else:
        with open(path, encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"model configuration {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"model configuration {path} must map model names to entries")
    return data.get("models", data) if isinstance(data.get("models"), dict) else data


def validate_config(path: Optional[str] = None, check_paths: bool = True) -> tuple:
    """({name: ModelConfig} of the good entries, [ConfigError] of the bad ones). A file that cannot be
    read at all is one error with no model."""
    path = path or config_path()
    if path is None:
        return {}, []
    try:
        data = read_file(path)
    except ConfigError as exc:
        return {}, [exc]
    base_dir = os.path.dirname(os.path.abspath(path))
    good, bad = {}, []
    for name, entry in data.items():
        try:
            if name == "builtin":
                raise ConfigError("the name 'builtin' is the built-in model's", model=name)
            good[name] = parse_entry(name, entry, base_dir, check_paths=check_paths)
        except ConfigError as exc:
            bad.append(exc)
    return good, bad


def load_config(path: Optional[str] = None, strict: bool = True, check_paths: bool = False) -> dict:
    """{name: ModelConfig}. `strict` raises the first error; otherwise broken entries are logged and
    skipped (the service's choice: see generator.registry_setup)."""
    good, bad = validate_config(path, check_paths=check_paths)
    if bad and strict:
        raise bad[0]
    for exc in bad:
        log.error("model configuration %s: %s (entry skipped)", path or config_path(), exc)
    return good


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--schema"]:
        print(json.dumps(json_schema(), indent=2))
        return 0
    path = argv[0] if argv else config_path()
    if path is None:
        print(f"no model configuration: set {ENV_VAR} or create models.json at {REPO_ROOT}")
        return 1
    configs, errors = validate_config(path, check_paths=False)
    problems = [str(e) for e in errors]
    problems += [p for cfg in configs.values() if cfg.backend == "diffusers" for p in check_pipeline_kwargs(cfg)]
    for problem in problems:
        print(f"error: {problem}")
    for cfg in configs.values():
        info = cfg.model_info()
        exists = "ok" if os.path.exists(os.path.join(cfg.path, "model_index.json")) else "MISSING model_index.json"
        sound = ", sound" if info.has_audio else ""
        print(f"{cfg.name}: {'+'.join(cfg.kinds)} ({', '.join(info.extra['tasks'])}{sound})"
              f" {cfg.dtype} queue={info.extra['queue']} path={cfg.path} [{exists}]")
        print(f"  defaults {info.default_width}x{info.default_height} {info.default_frames} frames "
              f"{info.default_steps} steps guidance {info.default_guidance} {info.default_fps} fps; "
              f"frames {info.frame_rule()}, size multiple of {info.size_multiple} in "
              f"{info.min_size}..{info.max_size}; memory {cfg.memory.model_dump(exclude_defaults=True)}")
        if cfg.preset:
            print(f"  preset {cfg.preset}: {PRESETS[cfg.preset].description}")
        for key, (pipeline_name, _) in SECOND_FOLDERS.items():
            if getattr(cfg, key):
                kind = upsampler_folder_kind(getattr(cfg, key)) or "MISSING model_index.json / config.json"
                print(f"  {pipeline_name} {getattr(cfg, key)} [{kind}]")
        if cfg.ic_lora:
            print(f"  IC-LoRA {cfg.ic_lora} [{'ok' if os.path.exists(cfg.ic_lora) else 'MISSING'}]")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
