"""Sampling from the built-in model: a small diffusers-style pipeline.

A pipeline folder holds `unet/` (VideoUNet config + weights), `scheduler/` (the DDPM
training schedule) and optionally `upsampler/` (a FrameUpsampler for the output size);
`from_pretrained` loads them from disk, the text encoder comes from the installed
all-MiniLM-L6-v2 package. Sampling runs DPM-Solver++ (default) or DDIM
from diffusers over that schedule, with classifier-free guidance.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from generator.builtin import world
from generator.builtin.info import INFO
from generator.builtin.model import FrameUpsampler, VideoUNet
from generator.builtin.text import object_phrases, shared_text_encoder
from generator.interface import Cancelled

# `timestep_spacing` is explicit: a scheduler built in memory carries `_use_default_values`,
# so `from_config` would take the sampler's own default ("linspace" for DPM-Solver) while the
# same scheduler reloaded from disk passes DDPM's "leading" -- the exported pipeline then
# sampled differently from the in-memory model. "trailing" starts at t=999 (pure noise).
SAMPLERS = {
    "dpm++": lambda config: DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="dpmsolver++", timestep_spacing="trailing"),
    "ddim": lambda config: DDIMScheduler.from_config(config, timestep_spacing="trailing"),
}

# Classifier-free guidance only while the layout forms (t >= 600 of 1000); the steps below
# use the text-conditioned prediction alone, one U-Net pass instead of two (a guidance
# interval, Kynkaenniemi et al. 2024). Guiding the low-noise steps as well bought nothing
# measurable on the shipped or a CPU-trained model (README, built-in model).
GUIDANCE_MIN_TIMESTEP = 600
# the most objects drawn in layers of their own (the world's scenes hold one or two)
MAX_LAYERS = 4


def training_scheduler(zero_terminal_snr: bool = False) -> DDPMScheduler:
    """The reference design's forward process: linear betas 1e-4..0.02 over 1000 steps.

    The network predicts the clean clip x0 ("sample"): through the 4x4 pixel folding, an
    eps-predicting net must copy 48 channels of per-token noise to its output and barely
    learned (eps MSE ~0.43 at every t after 500 steps); x0 is flat colours and easy.
    `zero_terminal_snr` rescales the betas so t=999 holds no trace of the clip (Lin et al.
    2023): the linear schedule keeps 0.0064 x clip there, enough for a net to learn to find
    objects in noise, and at sampling it finds them in pure noise too (e.g. two where the
    prompt asks for one). The samplers read the flag from the saved scheduler config.
    """
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                         beta_end=0.02, prediction_type="sample", clip_sample=False,
                         rescale_betas_zero_snr=zero_terminal_snr)


class BuiltinPipeline:
    def __init__(self, unet: VideoUNet, scheduler: DDPMScheduler, text_encoder=None,
                 upsampler: Optional[FrameUpsampler] = None):
        self.unet, self.scheduler, self.text_encoder = unet.eval(), scheduler, text_encoder
        self.upsampler = upsampler.eval() if upsampler is not None else None

    @classmethod
    def from_pretrained(cls, path: str, text_encoder=None) -> "BuiltinPipeline":
        unet = VideoUNet.from_pretrained(os.path.join(path, "unet"))
        scheduler = DDPMScheduler.from_pretrained(os.path.join(path, "scheduler"))
        upsampler = (FrameUpsampler.from_pretrained(os.path.join(path, "upsampler"))
                     if os.path.isdir(os.path.join(path, "upsampler")) else None)
        return cls(unet, scheduler, text_encoder or shared_text_encoder(), upsampler)

    def save_pretrained(self, path: str) -> None:
        self.unet.save_pretrained(os.path.join(path, "unet"))
        self.scheduler.save_pretrained(os.path.join(path, "scheduler"))
        if self.upsampler is not None:
            self.upsampler.save_pretrained(os.path.join(path, "upsampler"))

    @torch.no_grad()
    def upscale(self, video: torch.Tensor) -> torch.Tensor:
        """3 x T x H x W -> the learned upsampler's scale x larger (unchanged without one)."""
        return video if self.upsampler is None else self.upsampler.upscale_video(video.to(self.upsampler.device))

    @torch.no_grad()
    def __call__(self, prompt: str, num_frames: int = 16, height: int = 64, width: int = 64,
                 steps: int = INFO.default_steps, guidance_scale: float = INFO.default_guidance,
                 generator: Optional[torch.Generator] = None,
                 start_frames: Optional[torch.Tensor] = None, video: Optional[torch.Tensor] = None,
                 strength: float = 1.0, sampler: str = "dpm++",
                 guidance_min_timestep: int = GUIDANCE_MIN_TIMESTEP, layers: bool = True,
                 callback: Optional[Callable[[int, int, torch.Tensor], None]] = None,
                 should_cancel: Optional[Callable[[], bool]] = None) -> torch.Tensor:
        """Returns the video as 3 x T x H x W in [-1, 1].

        `start_frames` (3 x k x H x W in [-1, 1]) are the first k frames to continue from
        (image-to-video with k = 1, extension of a previous clip with k > 1).
        `video` (3 x T x H x W in [-1, 1]) is a source clip to redraw (SDEdit, Meng et al. 2022):
        it is noised to the timestep of step (1 - strength) * steps of the schedule and only the
        remaining round(strength * steps) steps run; strength 0 returns it, 1 ignores it.
        `layers`: each object the prompt describes (`object_phrases`) is drawn in a layer of its
        own, from its own phrase, all layers in one batch; each layer keeps its one object
        (`keep_one_object`) and the layers are composited (`composite_layers`). With start frames
        or a source video, which already hold every object, or more than MAX_LAYERS objects (the
        batch grows with them), the whole prompt is drawn in one piece and left as drawn.
        `callback(step, total, x0_estimate)` runs after every step. Guidance applies to the
        steps at timesteps >= `guidance_min_timestep` (0: every step).
        """
        device = self.unet.device
        phrases = object_phrases(prompt) if layers and start_frames is None and video is None else []
        layers = 0 < len(phrases) <= MAX_LAYERS
        rows = phrases if layers and len(phrases) > 1 else [prompt]
        count = len(rows)
        encoded = [x.to(device) for x in self.text_encoder(rows + [""], objects=True)]
        text = [x[:count] for x in encoded]
        # the guided batch: every layer with its phrase, then every layer with the empty prompt
        guided_text = [torch.cat([x[:count], x[count:].expand(count, *x.shape[1:])]) for x in encoded]
        shape = (count, 3, num_frames, height, width)
        cond_video = torch.zeros(shape, device=device)
        cond_mask = torch.zeros(count, 1, num_frames, 1, 1, device=device)
        if start_frames is not None:
            k = min(start_frames.shape[1], num_frames)
            cond_video[:, :, :k] = start_frames[:, :k].to(device)
            cond_mask[:, :, :k] = 1.0
        scheduler = SAMPLERS[sampler](self.scheduler.config)
        scheduler.set_timesteps(steps, device=device)
        timesteps = scheduler.timesteps
        # noise drawn on the CPU so a seed gives the same video on every device
        latents = torch.randn(shape, generator=generator).to(device)
        if video is not None and strength < 1.0:
            skipped = steps - round(strength * steps)
            if skipped == steps:
                return video.clamp(-1, 1).cpu()
            timesteps = timesteps[skipped:]
            if hasattr(scheduler, "set_begin_index"):  # multistep solvers keep a step index
                scheduler.set_begin_index(skipped)
            latents = self.scheduler.add_noise(video[None].to(device), latents, timesteps[:1])
        total = len(timesteps)
        for i, t in enumerate(timesteps):
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            if guidance_scale != 1.0 and t >= guidance_min_timestep:
                both = self.unet(latents.repeat(2, 1, 1, 1, 1), t.view(1), *guided_text,
                                 cond_video=cond_video.repeat(2, 1, 1, 1, 1), cond_mask=cond_mask.repeat(2, 1, 1, 1, 1))
                x0_text, x0_free = both.chunk(2)
                x0 = x0_free + guidance_scale * (x0_text - x0_free)
            else:
                x0 = self.unet(latents, t.view(1), *text, cond_video=cond_video, cond_mask=cond_mask)
            if callback is not None:
                callback(i + 1, total, composite_layers(x0.clamp(-1, 1)).cpu())
            latents = scheduler.step(x0, t, latents).prev_sample
        video = latents.clamp(-1, 1).cpu()
        if layers:
            video = torch.stack([keep_one_object(layer) for layer in video])
        return composite_layers(video)


# a pixel whose brightest channel is above this is part of a shape (the background is ~-0.85)
FOREGROUND_LEVEL = -0.45


def keep_one_object(layer: torch.Tensor) -> torch.Tensor:
    """3 x T x H x W with one object asked -> the largest space-time blob of its foreground kept
    and every other blob painted over with the background. A moving shape overlaps itself from
    frame to frame, so all of it is one blob across time; the network draws the asked shape a
    second time in about one clip in six (two copies moving side by side), never as one blob."""
    import cv2

    solid = (layer.amax(dim=0) > FOREGROUND_LEVEL).numpy().astype(np.uint8)  # T x H x W
    labels, count = np.zeros(solid.shape, np.int64), 1  # 0: background
    for frame, solid_frame in enumerate(solid):
        found, frame_labels = cv2.connectedComponents(solid_frame, connectivity=8)
        labels[frame] = np.where(frame_labels > 0, frame_labels + count - 1, 0)
        count += found - 1
    if count <= 2:
        return layer
    # blobs that overlap in consecutive frames are one object (union-find over their labels)
    root = np.arange(count)

    def find(label):
        while root[label] != label:
            label = root[label]
        return label

    touching = (labels[:-1] > 0) & (labels[1:] > 0)
    for a, b in np.unique(np.stack([labels[:-1][touching], labels[1:][touching]], axis=1), axis=0):
        ra, rb = find(a), find(b)
        root[max(ra, rb)] = min(ra, rb)
    objects = np.array([find(label) for label in range(count)])[labels]
    sizes = np.bincount(objects[solid > 0], minlength=count)
    others = ((objects != sizes.argmax()) & (solid > 0)).astype(np.uint8)
    if not others.any():
        return layer
    others = np.stack([cv2.dilate(frame, np.ones((5, 5), np.uint8)) for frame in others])  # and their halo
    background = torch.tensor(world.BACKGROUND, dtype=layer.dtype).view(3, 1, 1, 1) * 2.0 - 1.0
    return torch.where(torch.from_numpy(others > 0), background, layer)


def composite_layers(layers: torch.Tensor) -> torch.Tensor:
    """K x 3 x T x H x W layers (one object each, over the world's dark background) -> 3 x T x H x W:
    each pixel from the layer that is brightest there, so every object shows whole and one
    passing over another hides it as the renderer's later shape does."""
    if layers.shape[0] == 1:
        return layers[0]
    top = layers.amax(dim=1, keepdim=True).argmax(dim=0, keepdim=True)  # 1 x 1 x T x H x W
    return layers.gather(0, top.expand(1, *layers.shape[1:]))[0]

