"""What every family adapter shares: the `Family` description (data, read by the web process without
torch) and the `FamilyAdapter` base class (how a family's pipelines take a request's inputs, run by the
worker's DiffusersBackend).

A family module (generator/families/<family>.py) defines its `FAMILIES`: one `Family` per checkpoint
layout, each naming its pipeline kinds (diffusers class + the tasks it serves), frame and size rules,
defaults, what it makes (sound), how it goes live, and its adapter class. Family modules import torch
only inside the adapter's methods: the web process reads the descriptions and never loads a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from PIL import Image

from generator.hdr import to_display

# t2v: prompt only; i2v: a start image; v2v: a source video moved away from by `strength`;
# condition: given frames at the clip's start (continuation: long videos, key frames, live);
# animate: a character image moved as a driving video moves (both inputs, one clip of the video's length);
# control: a reference video (depth, pose, edges...) whose structure the clip follows (one clip of its length)
TASKS = ("t2v", "i2v", "v2v", "condition", "animate", "control")
# how a live job runs on the family: "native" (the adapter's live_chunks drives the pipeline chunk by
# chunk with its own history) or "continuation" (each chunk continues the last frames, generator.live)
LIVE_MODES = ("native", "continuation")
# what a job must carry for each task (GET /api/models, extra.task_inputs); an adapter may say more
TASK_NEEDS = {
    "t2v": "a prompt",
    "i2v": "a prompt and a start image (`image`)",
    "v2v": "a prompt, a source video (`video` or `source_job_id`) and `strength` (0 returns the source, "
           "1 ignores it)",
    "condition": "given frames at the clip's start: long videos continue each chunk from the previous one",
    "animate": "a character image (`image`) and a driving video (`video` or `source_job_id`): the character moves "
               "as the video does",
    "control": "a prompt and a reference video (`video` or `source_job_id`: depth, pose, edges... as the model "
               "was trained on) whose structure the clip follows; `strength` does not apply",
}


@dataclass(frozen=True)
class Clip:
    """What one pipeline call for a clip returns: `frames` frames, of which `keep` are the request's;
    `steps` denoising steps in all (None: the pipeline's own count)."""

    frames: int
    keep: slice = field(default_factory=lambda: slice(None))
    steps: Optional[int] = None


@dataclass(frozen=True)
class PipelineKind:
    """One diffusers pipeline class of a family and the tasks it serves."""

    cls: str
    tasks: tuple
    # kinds with the same checkpoint tag load from one folder (the second through from_pipe)
    checkpoint: str = "base"
    # the kind loads the entry's `ic_lora` weights (an In-Context LoRA conditioned on a reference video)
    ic_lora: bool = False
    # False: the pipeline discards the family's sound track (LTX2HDRPipeline runs the audio branch, returns none)
    sound: bool = True
    # the pipeline returns linear HDR frames ([0, inf)), which the adapter's display_frames maps to the MP4's SDR
    hdr: bool = False
    # False: a distilled pass with no classifier-free guidance (no guidance_scale): its entries need a preset
    # with guidance 1, so no job asks for guidance it would not get
    guidance: bool = True
    # its latent output carries keyframe slots that LTX-2.5's refine passes start from: a second pass at twice the
    # size (with the entry's latent upsampler) and temporal refine rounds (Family.temporal_upsampler)
    keyframes: bool = False


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
    adapter: type = None  # the FamilyAdapter subclass that runs its pipelines (FamilyAdapter when None)
    min_size: int = 64
    audio: bool = False  # the pipeline returns a sound track with the video
    upsampler: Optional[str] = None  # latent upsample pipeline class, loaded from the entry's "upsampler" folder
    # diffusion decode pipeline class (latents -> pixels in place of the VAE decoder), from the entry's "decoder"
    decoder: Optional[str] = None
    vae_dtype: Optional[str] = None  # default VAE dtype when the entry names none
    # temporal refine pipeline class (frame rate x2 a round, on a keyframes kind's latents), run with the
    # temporal latent upsampler of the entry's "temporal_upsampler" folder
    temporal_upsampler: Optional[str] = None

    def tasks(self, kinds) -> set:
        return {task for kind in kinds for task in self.kinds[kind].tasks}

    @property
    def live(self) -> str:
        return (self.adapter or FamilyAdapter).live

    @property
    def continues_video(self) -> bool:
        """A job's source video is continued (the condition task), not edited (there is no v2v)."""
        return (self.adapter or FamilyAdapter).continues_video

    def task_needs(self, tasks) -> dict:
        return {task: {**TASK_NEEDS, **(self.adapter or FamilyAdapter).task_needs}[task] for task in tasks}


def check_family(fam: Family) -> Family:
    """A family description is code, but a wrong one would only fail on a GPU host: check it here."""
    problems = []
    for kind, pk in fam.kinds.items():
        if not kind.startswith(fam.name):
            problems.append(f"kind {kind!r} should start with the family name")
        if not pk.tasks or set(pk.tasks) - set(TASKS):
            problems.append(f"kind {kind!r}: tasks must be some of {TASKS}, got {pk.tasks}")
    if fam.live not in LIVE_MODES:
        problems.append(f"live must be one of {LIVE_MODES}")
    if not (1 <= fam.frame_multiple and 0 <= fam.frame_offset
            and fam.min_frames <= fam.default_frames <= fam.max_frames):
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


def pil(frame: np.ndarray, size: Optional[tuple] = None) -> Image.Image:
    """H x W x 3 uint8 -> RGB PIL image, resized to (width, height) when given."""
    image = Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGB")
    return image if size is None or image.size == size else image.resize(size, Image.Resampling.BICUBIC)


class FamilyAdapter:
    """How one family's pipelines are driven. The defaults fit the common diffusers layout (a start
    image as `image`, a source video as `video` + `strength`, latents [B, C, F, H, W] normalised with
    the VAE's mean/std or scaling factor); a family overrides what differs. `backend` is the
    DiffusersBackend running it (config, loaded pipes, `run`)."""

    live = "continuation"
    continues_video = False  # True: a source video goes to the condition task (continued, not edited)
    task_needs: dict = {}  # task -> what a job must carry, where it differs from TASK_NEEDS

    def __init__(self, backend):
        self.backend = backend
        self.config = backend.config
        self.family: Family = backend.family

    # ---------------------------------------------------------------- capabilities
    def capabilities(self) -> dict:
        """Optional backend methods this family offers for this configuration (generator.longvideo,
        generator.live): name -> callable. A configured condition pipeline continues a clip natively."""
        return {"continuation_frames": self.continuation_frames} if "condition" in self.config.tasks else {}

    def continuation_frames(self, overlap: int, num_frames: int) -> int:
        """Frames of the previous chunk a continuation is conditioned on: the smallest count of the
        family's frame rule (LTX 8k+1: whole latent frames) >= overlap that leaves a latent frame to make."""
        fam = self.family
        k = fam.frame_offset + fam.frame_multiple * max(0, -(-(overlap - fam.frame_offset) // fam.frame_multiple))
        return k if k <= num_frames - fam.frame_multiple else 0

    # ---------------------------------------------------------------- loading
    def load_components(self, path: str) -> dict:
        """from_pretrained overrides of the checkpoint's model_index.json (a component given, or None: not loaded)."""
        return {}

    def loaded(self, pipe, path: str) -> None:
        """After the first kind's pipeline is loaded from `path`: put in what load_components left out
        (and the entry's `ic_lora` weights, for a family with a kind that takes them)."""

    # the family's upsampler (Family.upsampler, loaded from the entry's "upsampler" folder): a latent upsampler
    # decoding with the model's VAE, upscaling x2 per pass (LTX); a super-resolution pipeline overrides both
    upsampler_shares_vae = True

    def upscale_passes(self, factor: int) -> list:
        """The upsampler calls (their extra arguments) that scale a video by `factor` (2 or 4): one x2 pass each."""
        return [{}] * int(math.log2(factor))

    # the family's diffusion decoder (Family.decoder, loaded from the entry's "decoder" folder as backend.decoder):
    # the pipeline is run with output_type="latent" and its latents decoded here instead of by its VAE
    def decoded(self, pipe, output, seed: int, num_frames: int):
        """A pipeline's output with output_type="latent" -> the output output_type="np" gives (frames
        [B, T, H, W, 3] floats in [0, 1], `num_frames` of them, a sound track decoded as the pipeline decodes it),
        the video through the diffusion decoder with a generator seeded with `seed` (the same seed, the same
        video)."""
        raise NotImplementedError(f"{self.family.name} has no diffusion decoder")  # the configuration refuses one

    def decode_video(self, latents, seed: int):
        """Video latents as the family's pipelines return them with output_type="latent" -> T x H x W x 3 floats
        in [0, 1] through the diffusion decoder (first batch item)."""
        raise NotImplementedError(f"{self.family.name} has no diffusion decoder")

    def check_shared(self, pipe, kind: str) -> None:
        """Raise GenerationError when `kind` cannot run on the components loaded for the first kind."""

    # ---------------------------------------------------------------- a request -> pipeline arguments
    def task_inputs(self, pipe, task: str, req) -> dict:
        """The pipeline arguments that carry the request's image / frames / source video."""
        size = (req.width, req.height)
        if task == "t2v":
            return {}
        if task == "i2v":
            return {"image": pil(req.image, size)}
        if task == "v2v":
            return {"video": [pil(f, size) for f in req.video], "strength": req.strength}
        raise NotImplementedError(f"{self.family.name} has no {task} task")  # the family's tasks exclude it

    def call_arguments(self, req) -> dict:
        """Arguments of every call beyond the common ones (prompt, size, frames, steps, guidance...)."""
        return {}

    def one_clip(self, task: str, call: dict, req) -> Clip:
        """Adjust `call` for one clip of req.num_frames; says what the pipeline will return."""
        return Clip(req.num_frames)

    def makes_hdr(self, pipe) -> bool:
        """Whether `pipe` returns linear HDR frames (its kind says `hdr`)."""
        return any(pk.hdr and type(pipe).__name__ == pk.cls for pk in self.family.kinds.values())

    def display_frames(self, pipe, video: np.ndarray) -> np.ndarray:
        """A pipeline's frames (T x H x W x 3 floats) -> the display-referred [0, 1] frames the MP4 shows
        (an HDR pipeline's through `generator.hdr.to_display`)."""
        return to_display(video) if self.makes_hdr(pipe) else video

    def audio_track(self, pipe, audio) -> tuple:
        """The pipeline output's `audio` -> (samples x channels float array of the first video, sample rate).
        The default is LTX-2's: [B, channels, samples] from a vocoder with `output_sampling_rate`."""
        import torch

        return (torch.as_tensor(audio[0]).float().cpu().numpy().T,
                int(pipe.vocoder.config.output_sampling_rate))

    # ---------------------------------------------------------------- latents (previews)
    def normalised_latents(self, pipe, z):
        """Raw VAE latents [B, C, F, H, W] -> the normalised space the pipeline denoises in."""
        import torch

        vae = pipe.vae
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:  # Wan's VAE and its descendants
            mean = torch.tensor(mean).view(1, -1, 1, 1, 1).to(z)
            std = torch.tensor(std).view(1, -1, 1, 1, 1).to(z)
            return (z - mean) / std
        return z * vae.config.scaling_factor

    def latent_grid(self, pipe, latents, req):
        """The step callback's latents -> C x F x H x W (first batch item)."""
        return latents[0]

    # ---------------------------------------------------------------- shared rules
    def rule_frames(self, available: int) -> int:
        """The most trailing frames (<= available) fitting the family's frame rule (LTX: 8k+1)."""
        fam = self.family
        return fam.frame_offset + fam.frame_multiple * ((available - fam.frame_offset) // fam.frame_multiple)
