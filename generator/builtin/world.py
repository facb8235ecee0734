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

import numpy as np
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


SHAPE_INDEX = {name: i for i, name in enumerate(SHAPES)}


def _distance(shape: torch.Tensor, px: torch.Tensor, py: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Signed distance (pixels) to each shape's edge, picked per clip by `shape` (an index
    into SHAPES); px, py are offsets from the shape's centre."""
    circle = torch.sqrt(px**2 + py**2) - radius
    square = torch.maximum(px.abs(), py.abs()) - radius * 0.9
    # upward-pointing equilateral triangle: three edges at the inradius from the centre
    half_root3 = math.sqrt(3.0) / 2.0
    triangle = torch.maximum(torch.maximum(py, -half_root3 * px - 0.5 * py),
                             half_root3 * px - 0.5 * py) - radius * 0.62
    return torch.where(shape == 0, circle, torch.where(shape == 1, square, triangle))


def render(scenes: list, num_frames: int, size: int = 64, device=None, bounce: bool = False,
           events: list | None = None) -> torch.Tensor:
    """Scenes (lists of ShapeMotion) -> clips B x 3 x T x size x size in [-1, 1].

    Without `bounce` each shape moves in a straight line, leaving the canvas when its path does (the
    v2 world: its training and evaluation clips keep the whole path inside). With `bounce` (or
    `events`, one list per scene, see `simulate`) shapes bounce off the edges (Moving MNIST) and
    obey the events. Vectorised over the batch (one pass per shape slot), so it runs as well on a GPU."""
    b = len(scenes)
    t = torch.arange(num_frames, dtype=torch.float32, device=device).view(1, num_frames)
    slots = max(len(scene) for scene in scenes)
    tracks = []
    for slot in range(slots):
        motions = [scene[slot] if slot < len(scene) else None for scene in scenes]
        if bounce or events:
            paths = [simulate(scene, num_frames, (events or [[]] * b)[i])[slot] if slot < len(scene)
                     else [(0.0, 0.0)] * num_frames for i, scene in enumerate(scenes)]
            centres = torch.tensor(paths, dtype=torch.float32, device=device)  # B x T x 2
            cx, cy = centres[..., 0], centres[..., 1]
        else:
            def column(value):
                return torch.tensor([value(m) if m else 0.0 for m in motions], dtype=torch.float32, device=device)

            speed = column(lambda m: m.speed)[:, None]
            cx = column(lambda m: m.x0)[:, None] + column(lambda m: DIRECTIONS[m.direction][0])[:, None] * speed * t
            cy = column(lambda m: m.y0)[:, None] + column(lambda m: DIRECTIONS[m.direction][1])[:, None] * speed * t
        tracks.append((motions, cx, cy))
    return draw(tracks, num_frames, size, device)


def draw(tracks: list, num_frames: int, size: int, device=None) -> torch.Tensor:
    """[(motions of one slot per clip (None: no shape), centres x B x T, centres y B x T)] at 64-pixel
    coordinates -> B x 3 x T x size x size in [-1, 1], later slots drawn over earlier ones."""
    b, scale = len(tracks[0][0]), size / 64.0
    grid = torch.arange(size, dtype=torch.float32, device=device) + 0.5
    ys, xs = grid.view(1, 1, size, 1), grid.view(1, 1, 1, size)
    canvas = torch.tensor(BACKGROUND, device=device).view(1, 3, 1, 1, 1).repeat(b, 1, num_frames, size, size)
    for motions, cx, cy in tracks:
        def column(value, fill=0.0):
            return torch.tensor([value(m) if m else fill for m in motions], dtype=torch.float32, device=device)

        present = column(lambda m: 1.0)
        radius = column(lambda m: m.radius, 1.0)
        shape = column(lambda m: SHAPE_INDEX[m.shape]).view(b, 1, 1, 1)
        distance = _distance(shape, xs - (cx * scale)[:, :, None, None], ys - (cy * scale)[:, :, None, None],
                             (radius * scale).view(b, 1, 1, 1))
        alpha = ((0.5 - distance).clamp(0.0, 1.0) * present.view(b, 1, 1, 1)).unsqueeze(1)  # B x 1 x T x H x W
        colour = torch.tensor([COLOURS[m.colour] if m else BACKGROUND for m in motions], device=device)
        canvas = canvas * (1 - alpha) + colour.view(b, 3, 1, 1, 1) * alpha
    return canvas * 2.0 - 1.0


# ------------------------------------------------------------------ an endless world (v3)
SPEED_UP = 1.6  # "speeds up": the speed times this
MAX_SPEED = 3.0
OUTLINE_REACH = 1.3  # a square's corner and a triangle's tip reach this many radii from the centre
BOUNCE_GAP = 2.0  # pixels between two outlines where objects moving towards each other turn back


@dataclass
class Event:
    """At `frame`, object `index` of the scene: "go" moves it towards `direction` (a turn, or a start
    after a stop), "stop" halts it, "faster" multiplies its speed by SPEED_UP."""
    frame: int
    index: int
    kind: str
    direction: str | None = None


class Body:
    """One object of the endless world as it moves: its centre, velocity and speed (64-pixel canvas)."""

    def __init__(self, m: ShapeMotion):
        self.x, self.y, self.radius, self.speed = m.x0, m.y0, m.radius, m.speed
        self.vx, self.vy = (c * m.speed for c in DIRECTIONS[m.direction])

    def obey(self, event: Event) -> None:
        if event.kind == "stop":
            self.vx = self.vy = 0.0
        elif event.kind == "faster":
            self.speed = min(MAX_SPEED, self.speed * SPEED_UP)
            norm = max((self.vx * self.vx + self.vy * self.vy) ** 0.5, 1e-9)
            if norm > 1e-6:
                self.vx, self.vy = self.vx / norm * self.speed, self.vy / norm * self.speed
        elif event.kind == "go":
            self.vx, self.vy = (c * self.speed for c in DIRECTIONS[event.direction])

    def advance(self) -> None:
        """One frame on: a straight line, turning back where its outline would cross an edge."""
        low, high = self.radius, 64.0 - self.radius
        self.x, self.y = self.x + self.vx, self.y + self.vy
        if self.x < low or self.x > high:
            self.x, self.vx = (2 * low - self.x if self.x < low else 2 * high - self.x), -self.vx
        if self.y < low or self.y > high:
            self.y, self.vy = (2 * low - self.y if self.y < low else 2 * high - self.y), -self.vy

    def layout(self) -> tuple:
        """(x, y, radius, speed, vx, vy): where it is and where it goes, as the denoiser's layout reads it."""
        return (self.x, self.y, self.radius, self.speed, self.vx, self.vy)


def gap(a: Body, b: Body) -> float:
    """Pixels between two objects' outlines (at most: measured as if both reached OUTLINE_REACH radii)."""
    return math.hypot(a.x - b.x, a.y - b.y) - OUTLINE_REACH * (a.radius + b.radius)


def move(bodies: list) -> None:
    """One frame on for every object: each advances (turning back at the edges), then two that come
    within BOUNCE_GAP of each other turn back too, each that was moving towards the other. Drawn over
    each other, two objects blend into one blob of neither's colour and shape."""
    for body in bodies:
        body.advance()
    for i, a in enumerate(bodies):
        for b in bodies[i + 1:]:
            if gap(a, b) >= BOUNCE_GAP:
                continue
            for body, dx, dy in ((a, b.x - a.x, b.y - a.y), (b, a.x - b.x, a.y - b.y)):
                if body.vx * dx + body.vy * dy > 0:
                    body.vx, body.vy = -body.vx, -body.vy


def simulate(scene: list, num_frames: int, events: list = (), bodies: list | None = None) -> list:
    """Per object, its centre (x, y) at each frame on the 64-pixel canvas: it moves in a straight
    line and bounces off the edges (its outline touches them, it turns back) and off the other
    objects (`move`), obeying `events` (an event at a frame acts before the move onto the next).
    With `bodies`, the objects' states after the last frame are put there."""
    moving = [Body(m) for m in scene]
    paths = [[] for _ in scene]
    for frame in range(num_frames):
        for event in events:
            if event.frame == frame:
                moving[event.index].obey(event)
        if frame:
            move(moving)
        for body, path in zip(moving, paths):
            path.append((body.x, body.y))
    if bodies is not None:
        bodies[:] = moving
    return paths


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


_JOINERS_TRAIN = [" and ", ", while ", " and also "]
_JOINERS_EVAL = ["; ", ", and "]  # held out as well


def caption(scene: list, rng: random.Random, held_out: bool = False) -> str:
    parts = [_phrase(m, rng, held_out) for m in scene]
    joiner = rng.choice(_JOINERS_EVAL if held_out else _JOINERS_TRAIN) if len(parts) > 1 else ""
    return joiner.join(parts)


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """3 x T x H x W in [-1, 1] -> T x H x W x 3 uint8."""
    return ((video.permute(1, 2, 3, 0) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
