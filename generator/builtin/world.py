"""The built-in model's world: coloured shapes moving over a dark background.

`sample_scene` draws a random scene description, `render` turns scenes into clips
(float tensors in [-1, 1], B x 3 x T x H x W) and `caption` phrases a scene in one of
many templates. Training and evaluation phrasings are disjoint so the evaluator
measures prompts the model never read.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

COLOURS = {
    "red": (0.95, 0.15, 0.15),
    "green": (0.15, 0.85, 0.2),
    "blue": (0.2, 0.35, 1.0),
    "yellow": (0.95, 0.9, 0.15),
    "magenta": (0.95, 0.2, 0.9),
    "cyan": (0.15, 0.9, 0.95),
    "white": (0.95, 0.95, 0.95),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
BACKGROUND = (0.06, 0.06, 0.09)


@dataclass
class ShapeMotion:
    colour: str
    shape: str
    direction: str
    radius: float  # half the shape's extent, pixels at 64x64
    x0: float
    y0: float
    speed: float  # pixels per frame at 64x64


def sample_shape(rng: random.Random, num_frames: int, size: int = 64, colour=None, shape=None,
                 direction=None) -> ShapeMotion:
    colour = colour or rng.choice(list(COLOURS))
    shape = shape or rng.choice(SHAPES)
    direction = direction or rng.choice(list(DIRECTIONS))
    radius = rng.uniform(6.0, 10.0)
    speed = rng.uniform(1.0, 1.9)
    travel = speed * (num_frames - 1)
    dx, dy = DIRECTIONS[direction]
    margin = radius + 1.0

    def start(d):  # keep the whole path inside the canvas
        if d > 0:
            return rng.uniform(margin, max(margin, size - margin - travel))
        if d < 0:
            return rng.uniform(min(size - margin, margin + travel), size - margin)
        return rng.uniform(margin, size - margin)

    return ShapeMotion(colour, shape, direction, radius, start(dx), start(dy), speed)


def sample_scene(rng: random.Random, num_frames: int, two_shapes_prob: float = 0.25) -> list:
    first = sample_shape(rng, num_frames)
    if rng.random() >= two_shapes_prob:
        return [first]
    second = sample_shape(rng, num_frames, colour=rng.choice([c for c in COLOURS if c != first.colour]))
    return [first, second]


def _coverage(shape: str, px: torch.Tensor, py: torch.Tensor, radius: float) -> torch.Tensor:
    """Anti-aliased coverage (0..1) of a shape centred at the origin; px, py are offsets."""
    if shape == "circle":
        distance = torch.sqrt(px**2 + py**2) - radius
    elif shape == "square":
        side = radius * 0.9
        distance = torch.maximum(px.abs(), py.abs()) - side
    else:  # upward-pointing equilateral triangle: three edges at the inradius from the centre
        inradius = radius * 0.62
        half_root3 = math.sqrt(3.0) / 2.0
        distance = torch.maximum(torch.maximum(py, -half_root3 * px - 0.5 * py),
                                 half_root3 * px - 0.5 * py) - inradius
    return (0.5 - distance).clamp(0.0, 1.0)


def render(scenes: list, num_frames: int, size: int = 64) -> torch.Tensor:
    """Scenes (lists of ShapeMotion) -> clips B x 3 x T x size x size in [-1, 1]."""
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = grid.view(1, size, 1), grid.view(1, 1, size)
    t = torch.arange(num_frames, dtype=torch.float32).view(num_frames, 1, 1)
    clips = torch.empty(len(scenes), 3, num_frames, size, size)
    background = torch.tensor(BACKGROUND).view(3, 1, 1, 1)
    for i, scene in enumerate(scenes):
        canvas = background.expand(3, num_frames, size, size).clone()
        for m in scene:
            scale = size / 64.0
            dx, dy = DIRECTIONS[m.direction]
            cx = (m.x0 + dx * m.speed * t) * scale
            cy = (m.y0 + dy * m.speed * t) * scale
            alpha = _coverage(m.shape, xs - cx, ys - cy, m.radius * scale).unsqueeze(0)
            colour = torch.tensor(COLOURS[m.colour]).view(3, 1, 1, 1)
            canvas = canvas * (1 - alpha) + colour * alpha
        clips[i] = canvas
    return clips * 2.0 - 1.0


# ------------------------------------------------------------------ captions
_DIRECTION_WORDS_TRAIN = {
    "left": ["left", "to the left", "leftward", "towards the left"],
    "right": ["right", "to the right", "rightward", "towards the right"],
    "up": ["up", "upward", "upwards", "towards the top"],
    "down": ["down", "downward", "downwards", "towards the bottom"],
}
_VERBS_TRAIN = ["moving", "going", "slides", "moves", "travels", "gliding", "heading"]
_VERTICAL_PHRASES_TRAIN = {"up": ["rising", "rises", "floats up", "climbing"],
                           "down": ["falling", "falls down", "sinks", "dropping"]}
_TEMPLATES_TRAIN = [
    "a {c} {s} {v} {d}",
    "{c} {s} {v} {d}",
    "the {c} {s} {v} {d}",
    "a {c} {s} that is {v} {d}",
    "one {c} {s} {v} {d}",
    "a {s} in {c} {v} {d}",
]
_TEMPLATES_EVAL = [  # held out: never seen in training
    "watch a {c} {s} drift {d}",
    "there is a {c} {s} and it travels {d} across the screen",
    "{c}-coloured {s} heading {d}",
    "an animation of a {c} {s} sliding {d}",
    "a small {c} {s} making its way {d}",
]
_DIRECTION_WORDS_EVAL = {
    "left": ["to the left side", "leftwards"], "right": ["to the right side", "rightwards"],
    "up": ["upward", "to the top"], "down": ["downward", "to the bottom"],
}


def _phrase(m: ShapeMotion, rng: random.Random, held_out: bool) -> str:
    if held_out:
        template = rng.choice(_TEMPLATES_EVAL)
        return template.format(c=m.colour, s=m.shape, d=rng.choice(_DIRECTION_WORDS_EVAL[m.direction]))
    if m.direction in _VERTICAL_PHRASES_TRAIN and rng.random() < 0.3:
        article = rng.choice(["a ", "the ", ""])
        return f"{article}{m.colour} {m.shape} {rng.choice(_VERTICAL_PHRASES_TRAIN[m.direction])}"
    template = rng.choice(_TEMPLATES_TRAIN)
    return template.format(c=m.colour, s=m.shape, v=rng.choice(_VERBS_TRAIN),
                           d=rng.choice(_DIRECTION_WORDS_TRAIN[m.direction]))


def caption(scene: list, rng: random.Random, held_out: bool = False) -> str:
    parts = [_phrase(m, rng, held_out) for m in scene]
    joiner = rng.choice([" and ", ", while ", " and also "]) if len(parts) > 1 else ""
    return joiner.join(parts)
