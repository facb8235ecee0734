"""Built-in model v3 behind the common backend interface: a chunk-causal few-step denoiser in a
causal tokenizer's latent (`causal.py`, `tokenizer.py`), decoding straight to 256x256.

A pipeline folder holds `tokenizer/` and `denoiser/` (save_pretrained). Every clip is made chunk
after chunk, each chunk from the clean latents of the frames before it, so text-to-video,
image-to-video (the start frame is the first context), continuation (`start_frames`),
video-to-video (each chunk from the source's latents noised to `strength`) and endless live
video (`live_chunks`, the prompt read again before every chunk) are one loop.
"""
from __future__ import annotations

import copy
import os
import random
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from generator.builtin import world
from generator.builtin.causal import ChunkDenoiser, layout_rows, object_ids, sample_levels
from generator.builtin.info import INFO_V3
from generator.builtin.text import parse_objects
from generator.builtin.tokenizer import CausalVideoTokenizer, DecoderCache, ENCODER_SIZE, decode_frames_uint8, quantize
from generator.interface import (DEFAULT_STRENGTH, Backend, CancelCheck, Cancelled, GenerationError, GenerationRequest,
                                 GenerationResult, ModelInfo, ProgressCallback)
from generator.postprocess import resize_frames

WEIGHTS_V3 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights", "builtin_v3")
_TURN_CLOCKWISE = {"right": "down", "down": "left", "left": "up", "up": "right"}
_OPPOSITE = {"right": "left", "left": "right", "up": "down", "down": "up"}


def scene_objects(prompt: str, previous: Optional[list] = None) -> list:
    """The prompt's objects as the denoiser reads them ({colour, shape, direction, stopped, fast,
    steer}). With the `previous` chunk's objects (a live video's steer), an object the prompt names
    again (same colour, else same shape) is updated and marked `steer` when what it asks changed;
    the objects it does not name keep going as they were (at most three in all)."""
    previous = [dict(o, steer=False) for o in previous or []]
    out = list(previous)
    for mention in parse_objects(prompt):
        if mention.colour is None and mention.shape is None:
            continue
        match = next((o for o in out if mention.colour and o["colour"] == mention.colour), None) or next(
            (o for o in out if mention.colour is None and mention.shape and o["shape"] == mention.shape), None)
        if match is None:
            if len(out) == 3:
                continue
            match = {"colour": mention.colour, "shape": mention.shape, "direction": None,
                     "stopped": False, "fast": False, "steer": False}
            out.append(match)
            fresh = True
        else:
            fresh = False
        before = dict(match)
        match["shape"] = mention.shape or match["shape"]
        direction = mention.direction
        if mention.motion in ("turn", "reverse") and not direction and match["direction"]:
            direction = (_OPPOSITE if mention.motion == "reverse" else _TURN_CLOCKWISE)[match["direction"]]
        if direction:
            match["direction"], match["stopped"] = direction, False
        if mention.motion == "stop":
            match["stopped"] = True
        elif mention.motion == "fast":
            match["fast"], match["stopped"] = True, False
        if not fresh and previous:
            match["steer"] = any(before[k] != match[k] for k in ("direction", "stopped", "fast"))
    return out


START_TRIES = 512  # layouts drawn per start, the first that keeps the objects apart is taken
APART_FRAMES = 16  # a default clip


def start_bodies(objects: list, seed: str, others: tuple = ()) -> list:
    """Where each object starts, its size and speed (`world.Body`s on the 64-pixel canvas): what a prompt
    does not say, drawn from the seed as the training scenes draw it. Their straight paths keep
    `world.BOUNCE_GAP` apart from each other and from the `others` already there for the first
    `APART_FRAMES` frames (else the draw that keeps them furthest apart): drawn independently, two objects'
    paths crossed in 7 of 10 clips, and then they blended into one blob or turned back off each other in
    the middle of a clip that asked them to go one way."""
    rng = random.Random(f"layout:{seed}")
    best, best_gap = None, -float("inf")
    for _ in range(START_TRIES):
        bodies = []
        for o in objects:
            direction = o.get("direction") or rng.choice(list(world.DIRECTIONS))
            body = world.Body(world.sample_shape(rng, 16, direction=direction))
            if o.get("stopped"):
                body.obey(world.Event(0, 0, "stop"))
            bodies.append(body)
        gap = closest_gap(list(others) + bodies, APART_FRAMES)
        if gap > best_gap:
            best, best_gap = bodies, gap
        if gap >= world.BOUNCE_GAP:
            break
    return best


def closest_gap(bodies: list, frames: int) -> float:
    """The smallest `world.gap` between two of the `bodies` over their next `frames` frames along their
    straight paths (bouncing off the edges, not off each other); inf for fewer than two."""
    moving = [copy.copy(body) for body in bodies]
    closest = float("inf")
    for _ in range(frames):
        closest = min([closest] + [world.gap(a, b) for i, a in enumerate(moving) for b in moving[i + 1:]])
        for body in moving:
            body.advance()
    return closest


def follow_steers(bodies: list, before: list, objects: list, seed: str) -> None:
    """What a steer changed (`scene_objects`: before -> objects), as world events on the moving `bodies`;
    an object the steer adds starts where the seed puts it."""
    for index, (o, was) in enumerate(zip(objects, before)):
        if o["stopped"] and not was["stopped"]:
            bodies[index].obey(world.Event(0, index, "stop"))
        elif o["direction"] and (o["direction"] != was["direction"] or was["stopped"] and not o["stopped"]):
            bodies[index].obey(world.Event(0, index, "go", o["direction"]))
        if o["fast"] and not was["fast"]:
            bodies[index].obey(world.Event(0, index, "faster"))
    bodies.extend(start_bodies(objects[len(bodies):], seed, tuple(bodies)))


def next_chunk(bodies: list, before: list, objects: list, frames: int, seed: str) -> None:
    """The moving `bodies` `frames` on, at the next chunk's first frame, where a steer (`before` -> `objects`)
    acts before the move onto it, as `world.simulate` puts a chunk's events."""
    for frame in range(frames):
        if frame == frames - 1:
            follow_steers(bodies, before, objects, seed)
        world.move(bodies)


class CausalPipeline:
    def __init__(self, tokenizer: CausalVideoTokenizer, denoiser: ChunkDenoiser):
        self.tokenizer, self.denoiser = tokenizer.eval(), denoiser.eval()
        self.context_level = float(denoiser.config.sample_context_level)

    @classmethod
    def from_pretrained(cls, path: str) -> "CausalPipeline":
        return cls(CausalVideoTokenizer.from_pretrained(os.path.join(path, "tokenizer")),
                   ChunkDenoiser.from_pretrained(os.path.join(path, "denoiser")))

    def save_pretrained(self, path: str) -> None:
        self.tokenizer.save_pretrained(os.path.join(path, "tokenizer"))
        self.denoiser.save_pretrained(os.path.join(path, "denoiser"))

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray) -> torch.Tensor:
        """T x H x W x 3 uint8 -> C x T x 16 x 16 latents."""
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)
        video = F.interpolate(video.transpose(0, 1), size=(ENCODER_SIZE, ENCODER_SIZE), mode="area").transpose(0, 1)
        return self.tokenizer.encode(video[None].to(self.tokenizer.device))[0]

    @torch.no_grad()
    def chunks(self, objects_at: Callable[[int], list], steps: int, generator: torch.Generator,
               given: Optional[torch.Tensor] = None, source: Optional[torch.Tensor] = None, strength: float = 1.0,
               should_cancel: Optional[CancelCheck] = None, seed: int = 0) -> Iterator[np.ndarray]:
        """Endless: yields decoded 256x256 uint8 frames, chunk after chunk (the `given` latents'
        frames first). `objects_at(i)` is chunk i's objects (`scene_objects`); `source` (C x T x
        16 x 16) is redrawn from `strength` (video-to-video) while it lasts. A clip that starts from
        nothing starts at a layout drawn from `seed` (`start_bodies`); with the denoiser's `scene_layout`
        every chunk gets its scene's layout, the world moving the objects as the steers ask."""
        cfg, tok, device = self.denoiser.config, self.tokenizer, self.denoiser.device
        cache = DecoderCache()
        bodies, before = None, None  # a clip made from text: its scene as the world moves it
        history = torch.zeros(1, cfg.latent_channels, 0, cfg.latent_size, cfg.latent_size, device=device)
        if source is not None:
            source = source.to(device)
        if given is not None and given.shape[1]:
            history = given[None].to(device)
            yield decode_frames_uint8(tok, history[0], cache)
        index = 0
        while True:
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            objects = objects_at(index)
            ids, mask = (x.to(device) for x in object_ids(objects, cfg.max_objects))
            if index == 0 and history.shape[2] == 0 and (source is None or strength >= 1.0):
                bodies = start_bodies(objects, str(seed))
            elif bodies is not None:
                next_chunk(bodies, before, objects, cfg.chunk, f"{seed}:{index}")
            before = objects
            layout = None
            if bodies is not None and (index == 0 or cfg.scene_layout):
                layout = layout_rows([body.layout() for body in bodies], cfg.max_objects)[None].to(device)
            context = history[:, :, -cfg.context:]
            k = context.shape[2]
            context = F.pad(context, (0, 0, 0, 0, cfg.context - k, 0))
            context_mask = torch.arange(cfg.context, device=device) >= cfg.context - k
            context_level = None
            if cfg.context_noise:
                context_level = torch.tensor([self.context_level], device=device)
                if self.context_level > 0:  # what the network was trained to redraw from (`context_noise`)
                    context_noise = torch.randn(context.shape, generator=generator).to(device)
                    context = ((1 - self.context_level) * context + self.context_level * context_noise) \
                        * context_mask[None, None, :, None, None]
            # noise drawn on the CPU so a seed gives the same video on every device
            noise = torch.randn(1, cfg.latent_channels, cfg.chunk, cfg.latent_size, cfg.latent_size,
                                generator=generator).to(device)
            levels = sample_levels(steps)
            start = index * cfg.chunk + (0 if given is None else given.shape[1])
            x = noise
            if source is not None and start < source.shape[1] and strength < 1.0:
                piece = source[:, start:start + cfg.chunk]
                piece = F.pad(piece, (0, 0, 0, 0, 0, cfg.chunk - piece.shape[1]), mode="replicate") \
                    if piece.shape[1] < cfg.chunk else piece
                levels = [strength * level for level in levels]
                x = (1 - levels[0]) * piece[None] + levels[0] * noise
            for i, level in enumerate(levels):
                x0 = self.denoiser(x, torch.tensor([level], device=device), ids[None], mask[None], context,
                                   context_mask[None], layout, context_level=context_level)
                following = levels[i + 1] if i + 1 < len(levels) else 0.0
                eps = (x - (1 - level) * x0) / max(level, 1e-6)
                x = (1 - following) * x0 + following * eps
            latents = quantize(x0, tok.config.levels)
            history = torch.cat([history, latents], dim=2)[:, :, -cfg.context:]
            yield decode_frames_uint8(tok, latents[0], cache)
            index += 1


class BuiltinV3Backend(Backend):
    max_start_frames = 4  # the denoiser's context

    def __init__(self, path: Optional[str] = None, info: ModelInfo = INFO_V3):
        super().__init__(info)
        self.path = path or os.environ.get("BUILTIN_V3_MODEL_PATH") or WEIGHTS_V3
        self.pipe: Optional[CausalPipeline] = None

    def load(self) -> None:
        self.pipe = CausalPipeline.from_pretrained(self.path)

    def unload(self) -> None:
        self.pipe = None

    def _frames_and_source(self, req: GenerationRequest) -> tuple:
        given = None
        if req.start_frames is not None and len(req.start_frames):
            given = self.pipe.encode_frames(np.asarray(req.start_frames)[-self.max_start_frames:])
        elif req.image is not None:
            given = self.pipe.encode_frames(np.asarray(req.image)[None])
        source, strength = None, 1.0
        if req.video is not None:
            strength = DEFAULT_STRENGTH if req.strength is None else float(req.strength)
            if not 0.0 <= strength <= 1.0:
                raise GenerationError(f"strength must be between 0 and 1, got {strength}")
            if len(req.video) != req.num_frames:
                raise GenerationError(f"the source video has {len(req.video)} frames, the request asks "
                                      f"for {req.num_frames}")
            source = self.pipe.encode_frames(np.asarray(req.video))
        return given, source, strength

    def generate(self, request: GenerationRequest, progress: Optional[ProgressCallback] = None,
                 should_cancel: Optional[CancelCheck] = None) -> GenerationResult:
        if self.pipe is None:
            self.load()
        req = self.fill_defaults(request)
        given, source, strength = self._frames_and_source(req)
        if source is not None and strength == 0.0:
            return GenerationResult(frames=np.array(req.video, dtype=np.uint8), fps=req.fps, seed=req.seed,
                                    native_size=(256, 256))
        objects = scene_objects(req.prompt)
        made, total = [], 0
        for frames in self.pipe.chunks(lambda i: objects, req.steps, torch.Generator().manual_seed(req.seed),
                                       given, source, strength, should_cancel, seed=req.seed):
            made.append(frames)
            total += len(frames)
            if progress is not None:
                progress(min(total, req.num_frames), req.num_frames, None)
            if total >= req.num_frames:
                break
        frames = np.concatenate(made)[:req.num_frames]
        return GenerationResult(frames=resize_frames(frames, (req.height, req.width)), fps=req.fps, seed=req.seed,
                                native_size=(256, 256))

    def live_chunks(self, request: GenerationRequest, prompt_at: Callable[[int], str],
                    should_cancel: Optional[CancelCheck] = None) -> Iterator[np.ndarray]:
        """Endless video, one native chunk (4 frames) at a time; the prompt is read before each
        chunk and a change steers the objects it names from that chunk on (`scene_objects`)."""
        if self.pipe is None:
            self.load()
        req = self.fill_defaults(request)
        given, _, _ = self._frames_and_source(req)
        state = {"prompt": None, "objects": None}

        def objects_at(index: int) -> list:
            prompt = prompt_at(index)
            if prompt != state["prompt"]:
                state["objects"] = scene_objects(prompt, state["objects"])
                state["prompt"] = prompt
            else:
                state["objects"] = [dict(o, steer=False) for o in state["objects"]]
            return state["objects"]

        first = True
        for frames in self.pipe.chunks(objects_at, req.steps, torch.Generator().manual_seed(req.seed), given,
                                       should_cancel=should_cancel, seed=req.seed):
            if first and given is not None:  # the start frames are the caller's own
                first = False
                continue
            first = False
            yield resize_frames(frames, (req.height, req.width))
