"""The operator's model configuration: which diffusers checkpoints on local disk the service serves.

The file is named by env `VIDEO_MODELS_CONFIG` (default: `models.json` at the repository root,
used only when present). JSON, or TOML when the name ends in `.toml`. One entry per model name:

    {
      "ltx-video": {
        "path": "/models/LTX-Video",            # local diffusers pipeline folder (model_index.json)
        "pipeline": ["ltx", "ltx-i2v"],          # or "ltx", "ltx-i2v", "wan", "wan-i2v", "cogvideox", ...
        "dtype": "bfloat16",                     # bfloat16 | float16 | float32
        "defaults": {"steps": 50, "guidance": 3.0, "width": 768, "height": 512, "frames": 121, "fps": 24},
        "limits": {"max_size": 1280, "max_frames": 257},
        "memory": {"cpu_offload": "none", "vae_tiling": false, "vae_slicing": false, "compile": false,
                   "cache": null, "attention_backend": null},
        "queue": "ltx-video"
      }
    }

A pair `[t2v, i2v]` builds the image-to-video pipeline from the very same loaded components
with `from_pipe` (no second copy in memory); it needs a checkpoint whose transformer serves
both (LTX-Video; Wan 2.2 TI2V). Wan 2.1 and CogVideoX 1.x ship separate I2V checkpoints:
configure those as their own entries (`wan-i2v`, `cogvideox-i2v`).

Unknown keys are errors (a misspelt `vae_tilling` silently ignored would cost an operator an
evening). `python -m generator.model_config [file]` checks a file and prints what it defines.
"""
from __future__ import annotations

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


class ConfigError(ValueError):
    """The model configuration is wrong; the message names the model and the key."""


@dataclass(frozen=True)
class Family:
    """What a pipeline family accepts and defaults to (diffusers 0.42.1 + the models' cards)."""

    name: str
    description: str
    frame_multiple: int
    frame_offset: int
    size_multiple: int
    default_width: int
    default_height: int
    default_frames: int
    min_frames: int
    max_frames: int
    max_size: int
    default_steps: int
    default_guidance: float
    default_fps: float
    min_size: int = 64


FAMILIES = {
    # LTX-Video: VAE compresses 32x32 px x 8 frames per latent; sizes multiples of 32, frames 8k+1
    # (diffusers does NOT validate the frame count: 10 would silently become 9, so we do).
    "ltx": Family("ltx", "LTX-Video (Lightricks)", 8, 1, 32, 768, 512, 121, 9, 257, 1280, 50, 3.0, 24.0),
    # Wan 2.1: VAE 8x8 px x 4 frames, transformer patch 2x2: multiples of 16, frames 4k+1.
    "wan": Family("wan", "Wan 2.1 (Alibaba)", 4, 1, 16, 832, 480, 81, 5, 129, 1280, 50, 5.0, 16.0),
    # CogVideoX: multiples of 16, 49 frames at 8 fps by default; 8k+1 fits both 1.0 (4k+1) and
    # 1.5 (temporal patch 2).
    "cogvideox": Family("cogvideox", "CogVideoX (THUDM)", 8, 1, 16, 720, 480, 49, 9, 49, 1360, 50, 6.0, 8.0),
}

KINDS = {
    # kind: (family, image-to-video?, diffusers pipeline class)
    "ltx": ("ltx", False, "LTXPipeline"),
    "ltx-i2v": ("ltx", True, "LTXImageToVideoPipeline"),
    "wan": ("wan", False, "WanPipeline"),
    "wan-i2v": ("wan", True, "WanImageToVideoPipeline"),
    "cogvideox": ("cogvideox", False, "CogVideoXPipeline"),
    "cogvideox-i2v": ("cogvideox", True, "CogVideoXImageToVideoPipeline"),
}
# T2V + I2V from one set of components (from_pipe): only families whose transformer serves both.
PAIRABLE = {"ltx", "wan"}

DTYPES = ("bfloat16", "float16", "float32")
OFFLOAD = ("none", "model", "sequential")
CACHE_TYPES = ("first_block", "pab")
COMPILE_MODES = (False, True, "regional", "full")

DEFAULT_KEYS = {"steps", "guidance", "width", "height", "frames", "fps"}
LIMIT_KEYS = {"max_size", "min_size", "max_frames", "min_frames", "max_steps", "max_guidance",
              "frame_multiple", "frame_offset", "size_multiple"}
MEMORY_KEYS = {"cpu_offload", "vae_tiling", "vae_slicing", "compile", "cache", "attention_backend"}
ENTRY_KEYS = {"path", "pipeline", "backend", "dtype", "vae_dtype", "description", "defaults", "limits", "memory", "queue",
              "negative_prompt", "max_sequence_length"}


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
    kinds: tuple  # ("ltx",) or ("ltx", "ltx-i2v")
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
    # "diffusers", or "package.module:factory" (a callable taking this ModelConfig and returning a
    # generator.interface.Backend): a plug-in backend; the tests register fault-injecting fakes this way
    backend: str = "diffusers"

    @property
    def text_kind(self) -> Optional[str]:
        return next((k for k in self.kinds if not KINDS[k][1]), None)

    @property
    def image_kind(self) -> Optional[str]:
        return next((k for k in self.kinds if KINDS[k][1]), None)

    def model_info(self) -> ModelInfo:
        fam = FAMILIES[self.family]
        d, lim = self.defaults, self.limits
        width, height = int(d.get("width", fam.default_width)), int(d.get("height", fam.default_height))
        info = ModelInfo(
            name=self.name,
            description=self.description or f"{fam.description}: {' + '.join(self.kinds)} from {self.path}",
            supports_image=self.image_kind is not None,
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
            default_steps=int(d.get("steps", fam.default_steps)),
            max_steps=int(lim.get("max_steps", 100)),
            default_guidance=float(d.get("guidance", fam.default_guidance)),
            max_guidance=float(lim.get("max_guidance", 20.0)),
            default_fps=float(d.get("fps", fam.default_fps)),
            extra={
                "backend": self.backend,
                "family": self.family,
                "pipelines": list(self.kinds),
                "requires_image": self.text_kind is None,
                "queue": self.queue or self.name,
                "dtype": self.dtype,
                "gpu": True,
            },
        )
        return info


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
    elif isinstance(raw, (list, tuple)):
        kinds = tuple(raw)
    else:
        raise ConfigError(f"model {name!r}: 'pipeline' must be a kind or a [t2v, i2v] pair")
    for kind in kinds:
        if kind not in KINDS:
            raise ConfigError(f"model {name!r}: unknown pipeline kind {kind!r}; known: {', '.join(KINDS)}")
    if len(kinds) == 2:
        fams = {KINDS[k][0] for k in kinds}
        modes = sorted(KINDS[k][1] for k in kinds)
        if len(fams) != 1 or modes != [False, True]:
            raise ConfigError(f"model {name!r}: a pipeline pair must be one family's text-to-video and "
                              f"image-to-video kinds, e.g. [\"ltx\", \"ltx-i2v\"]; got {list(kinds)}")
        if fams.pop() not in PAIRABLE:
            raise ConfigError(f"model {name!r}: {kinds[0]} checkpoints cannot serve both text- and image-to-video "
                              f"from one transformer; configure the I2V checkpoint as its own entry")
        kinds = tuple(sorted(kinds, key=lambda k: KINDS[k][1]))  # t2v first
    elif len(kinds) != 1:
        raise ConfigError(f"model {name!r}: 'pipeline' takes one kind or a pair")
    return kinds


def _positive_int(name, where, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"model {name!r}: {where} must be a non-negative integer, got {value!r}")


def parse_entry(name: str, entry: dict, base_dir: str = REPO_ROOT) -> ModelConfig:
    _check_keys(name, "entry", entry, ENTRY_KEYS)
    backend = entry.get("backend", "diffusers")
    if backend != "diffusers" and (not isinstance(backend, str) or backend.count(":") != 1):
        raise ConfigError(f"model {name!r}: 'backend' must be \"diffusers\" or \"package.module:factory\"")
    if "pipeline" not in entry or ("path" not in entry and backend == "diffusers"):
        raise ConfigError(f"model {name!r}: 'path' and 'pipeline' are required")
    kinds = _parse_kinds(name, entry["pipeline"])
    family = KINDS[kinds[0]][0]
    path = os.path.expanduser(str(entry.get("path", "")))
    if not os.path.isabs(path):
        path = os.path.normpath(os.path.join(base_dir, path))
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
    if family == "wan" and vae_dtype is None:
        vae_dtype = "float32"  # Wan's model card loads its VAE in float32
    config = ModelConfig(name=name, path=path, kinds=kinds, family=family, dtype=dtype, vae_dtype=vae_dtype,
                         description=str(entry.get("description", "")), defaults=dict(defaults),
                         limits=dict(limits), memory=mem, queue=str(entry.get("queue") or name),
                         negative_prompt=entry.get("negative_prompt"),
                         max_sequence_length=entry.get("max_sequence_length"), backend=backend)
    info = config.model_info()
    problems = info.problems(info.default_frames, info.default_width, info.default_height,
                             info.default_steps, info.default_guidance)
    if problems:
        raise ConfigError(f"model {name!r}: its defaults break its own limits: "
                          + "; ".join(msg for _, msg in problems))
    return config


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
    for cfg in configs.values():
        info = cfg.model_info()
        exists = "ok" if os.path.exists(os.path.join(cfg.path, "model_index.json")) else "MISSING model_index.json"
        print(f"{cfg.name}: {'+'.join(cfg.kinds)} {cfg.dtype} queue={info.extra['queue']} path={cfg.path} [{exists}]")
        print(f"  defaults {info.default_width}x{info.default_height} {info.default_frames} frames "
              f"{info.default_steps} steps guidance {info.default_guidance} {info.default_fps} fps; "
              f"frames {info.frame_rule()}, size multiple of {info.size_multiple} in "
              f"{info.min_size}..{info.max_size}; memory {cfg.memory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
