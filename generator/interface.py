"""The contract every video backend honours, and the registry that names them (filled at start-up by
generator.registry_setup.register_models).

A backend turns a `GenerationRequest` into a `GenerationResult` (uint8 frames,
T x H x W x 3, plus fps). While it runs it reports each denoising step through a
`progress` callback and asks `should_cancel` between steps; returning True there
makes the backend raise `Cancelled`. Nothing here imports Django.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np

# video-to-video when a request names no strength: keeps the source's layout, redraws the rest (the one
# default of the service's contract, the built-in model and the diffusers backends)
DEFAULT_STRENGTH = 0.6
# step (1-based), total steps, preview frames (t x h x w x 3 uint8) or None
ProgressCallback = Callable[[int, int, Optional[np.ndarray]], None]
CancelCheck = Callable[[], bool]


class Cancelled(Exception):
    """Raised by a backend when `should_cancel` returned True between steps."""


class GenerationError(Exception):
    """A failure with a message fit to show the user (bad start image, out of memory...)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """GPU (torch.OutOfMemoryError, a RuntimeError) or host memory exhausted."""
    import torch

    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


@dataclass
class GenerationRequest:
    prompt: str
    num_frames: Optional[int] = None
    width: Optional[int] = None
    height: Optional[int] = None
    steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    seed: Optional[int] = None
    fps: Optional[float] = None
    image: Optional[np.ndarray] = None  # start frame, H x W x 3 uint8 (image-to-video)
    # frames to continue from, k x H x W x 3 uint8 (long-video extension); a backend honours the
    # last `max_start_frames` of them as the clip's first frames; one with a single start frame
    # (image-to-video) gets the last one as `image` (see fill_defaults)
    start_frames: Optional[np.ndarray] = None
    # video-to-video: the source clip, T x H x W x 3 uint8 (resized to the request's size and frame
    # count by the caller), and how far to move away from it: 0 returns the source, 1 ignores it
    video: Optional[np.ndarray] = None
    strength: Optional[float] = None


@dataclass
class GenerationResult:
    frames: np.ndarray  # T x H x W x 3 uint8
    fps: float
    seed: int
    native_size: tuple  # (height, width) the model generated before upscaling
    # a sound track for models that make one (LTX-2): samples x channels float32 in [-1, 1]
    audio: Optional[np.ndarray] = None
    audio_sample_rate: Optional[int] = None
    # an HDR pipeline's frames before the SDR view (`frames`): linear light, T x H x W x 3 float16, kept
    # as the job's HDR10 master (generator.hdr)
    hdr_frames: Optional[np.ndarray] = None


@dataclass
class ModelInfo:
    """What a model accepts; the service validates requests against this."""

    name: str
    description: str
    supports_image: bool = True
    native_size: tuple = (64, 64)  # (height, width) the network generates
    default_frames: int = 16
    min_frames: int = 8
    max_frames: int = 32
    frame_multiple: int = 1  # num_frames = frame_multiple * k + frame_offset
    frame_offset: int = 0
    default_width: int = 256
    default_height: int = 256
    size_multiple: int = 16
    min_size: int = 64
    max_size: int = 512
    default_steps: int = 20
    max_steps: int = 100
    default_guidance: float = 4.0
    max_guidance: float = 20.0
    default_fps: float = 8.0
    supports_video: bool = False  # takes a source video (video-to-video, GenerationRequest.video)
    has_audio: bool = False  # its results carry a sound track (GenerationResult.audio)
    extra: dict = field(default_factory=dict)

    def frame_rule(self) -> str:
        if self.frame_multiple == 1:
            return f"{self.min_frames}..{self.max_frames}"
        return f"{self.frame_multiple}k+{self.frame_offset}, {self.min_frames}..{self.max_frames}"

    def problems(self, num_frames: int, width: int, height: int, steps: int, guidance: float) -> list:
        """Human-readable reasons this model cannot honour the numbers (empty when fine)."""
        out = []
        if not self.min_frames <= num_frames <= self.max_frames or (
            (num_frames - self.frame_offset) % self.frame_multiple
        ):
            out.append(("num_frames", f"num_frames must be {self.frame_rule()} for model {self.name}"))
        for label, value in (("width", width), ("height", height)):
            if not self.min_size <= value <= self.max_size or value % self.size_multiple:
                out.append((label, f"{label} must be a multiple of {self.size_multiple} "
                                   f"between {self.min_size} and {self.max_size} for model {self.name}"))
        if not 1 <= steps <= self.max_steps:
            out.append(("steps", f"steps must be between 1 and {self.max_steps}"))
        if not 0.0 <= guidance <= self.max_guidance:
            out.append(("guidance_scale", f"guidance_scale must be between 0 and {self.max_guidance}"))
        return out

    def as_dict(self) -> dict:
        data = asdict(self)
        data["frame_rule"] = self.frame_rule()
        return data


class Backend(ABC):
    """One loaded model. `load` is called lazily before the first `generate`."""

    info: ModelInfo
    # how many leading frames of `start_frames` generate() reproduces and continues from
    # (1: image-to-video from the last one; only meaningful when info.supports_image)
    max_start_frames: int = 1

    def __init__(self, info: ModelInfo):
        self.info = info

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def generate(self, request: GenerationRequest, progress: Optional[ProgressCallback] = None,
                 should_cancel: Optional[CancelCheck] = None) -> GenerationResult: ...

    def unload(self) -> None:
        """Free memory held by the model (called before another model is loaded)."""

    def fill_defaults(self, request: GenerationRequest) -> GenerationRequest:
        info = self.info
        return GenerationRequest(
            prompt=request.prompt,
            num_frames=request.num_frames or info.default_frames,
            width=request.width or info.default_width,
            height=request.height or info.default_height,
            steps=request.steps or info.default_steps,
            guidance_scale=info.default_guidance if request.guidance_scale is None else request.guidance_scale,
            seed=request.seed if request.seed is not None else int(np.random.SeedSequence().entropy % (2**31)),
            fps=request.fps or info.default_fps,
            image=request.image if request.image is not None or request.start_frames is None
            else request.start_frames[-1],
            start_frames=request.start_frames,
            video=request.video,
            strength=request.strength,
        )


# ---------------------------------------------------------------- registry
BackendFactory = Callable[[], Backend]
_factories: dict = {}
_infos: dict = {}
_resident: dict = {}  # at most one loaded backend per process
_lock = threading.Lock()
DEFAULT_MODEL = "builtin"


def register(info: ModelInfo, factory: BackendFactory) -> None:
    _factories[info.name] = factory
    _infos[info.name] = info


def list_models() -> list:
    return list(_infos.values())


def get_info(name: str) -> Optional[ModelInfo]:
    return _infos.get(name)


def get_backend(name: str = DEFAULT_MODEL) -> Backend:
    """The loaded backend for `name`; loading a different model frees the resident one first."""
    if not _factories:
        raise KeyError("no models are registered: call generator.registry_setup.register_models() at start-up")
    if name not in _factories:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_factories))}")
    with _lock:
        if name in _resident:
            return _resident[name]
        for old in list(_resident):
            _resident.pop(old).unload()
        backend = _factories[name]()
        backend.load()
        _resident[name] = backend
        return backend
