"""The built-in describer: reads the built-in world's shapes straight off the frames.

No model and no download: `analyse_scene` splits the foreground by palette colour (two shapes of a
scene always differ in colour) and runs `generator.evaluate.analyse` on each part; captions are
phrased like the world's own ("a red circle moving to the left"). `parse_scene` reads the same
attributes back out of free text in any of the world's phrasings, which is what answering
questions and prompt/caption agreement need.
"""
from __future__ import annotations

import re
from typing import Optional

import numpy as np

from generator.builtin import world
from generator.evaluate import analyse, classify_shape, foreground
from generator.interface import Cancelled
from generator.understanding.base import Describer, Description

ATTRIBUTES = ("colour", "shape", "direction")
MIN_COLOUR_SHARE = 0.25  # a colour covering less than this share of the largest one is edge noise
UNOCCLUDED_SHARE = 0.9  # shapes are read in frames where their area is near its largest (not covered)
STILL_SPEED = 0.3  # pixels per frame on the 64-pixel canvas

# every phrasing of a direction the world's captions use (training and held-out), longest first
DIRECTION_WORDS = {
    "left": ["to the left side", "towards the left", "to the left", "leftwards", "leftward", "left"],
    "right": ["to the right side", "towards the right", "to the right", "rightwards", "rightward", "right"],
    "up": ["towards the top", "to the top", "floats up", "upwards", "upward", "rising", "rises", "climbing", "up"],
    "down": ["towards the bottom", "to the bottom", "falls down", "downwards", "downward", "falling", "sinks",
             "dropping", "down"],
}
COLOUR_WORDS = {name: [name] for name in world.COLOURS} | {"magenta": ["magenta", "pink", "purple"],
                                                           "white": ["white", "grey", "gray"]}
SHAPE_WORDS = {"circle": ["circle", "ball", "disc", "dot"], "square": ["square", "box", "block"],
               "triangle": ["triangle"]}
# a new clause starts after "and" when an article or a colour follows ("... left and magenta-coloured triangle")
CLAUSE_SPLIT = re.compile(r",\s*while\s+|\s+and\s+also\s+|;\s*|\s+and\s+(?=(?:a|an|the|one|there|watch|"
                          + "|".join(world.COLOURS) + r")\b)")


def _find(words: dict, text: str) -> Optional[str]:
    """The attribute whose word appears first in `text` (whole words only)."""
    best = None
    for value, phrases in words.items():
        for phrase in phrases:
            match = re.search(rf"\b{re.escape(phrase)}\b", text)
            if match and (best is None or match.start() < best[0]):
                best = (match.start(), value)
    return best[1] if best else None


def parse_scene(text: str) -> list:
    """Free text -> [{colour, shape, direction}, ...], one per described shape (None where the
    text does not say). "a red circle moving left and a blue square rising" gives two."""
    objects = []
    for clause in CLAUSE_SPLIT.split(text.lower().replace("-coloured", "").replace("-colored", "")):
        found = {"colour": _find(COLOUR_WORDS, clause), "shape": _find(SHAPE_WORDS, clause),
                 "direction": _find(DIRECTION_WORDS, clause)}
        if any(found.values()):
            objects.append(found)
    return objects


def analyse_scene(frames: np.ndarray) -> list:
    """Frames -> [{colour, shape, direction, speed}, ...], largest shape first."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames T x H x W x 3, got shape {frames.shape}")
    mask = np.stack([foreground(f) for f in frames])
    if not mask.any():
        return []
    pixels = frames[mask].astype(np.float32)
    names = list(world.COLOURS)
    palette = np.array([np.array(rgb) / max(rgb) for rgb in world.COLOURS.values()])
    hues = pixels / np.maximum(pixels.max(axis=1, keepdims=True), 1e-6)  # brightness-free, as analyse does
    nearest = np.argmin(((hues[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
    labels = np.full(mask.shape, -1)
    labels[mask] = nearest
    areas = np.bincount(nearest, minlength=len(names))
    objects = []
    for index in np.argsort(-areas):
        if areas[index] < MIN_COLOUR_SHARE * areas.max():
            break
        mine = labels == index
        found = analyse(np.where(mine[..., None], frames, 0).astype(np.uint8))
        if found["shape"] is None:
            continue
        if found["speed"] < STILL_SPEED:
            found["direction"] = None
        objects.append({"colour": names[index], "shape": _unoccluded_shape(mine), "direction": found["direction"],
                        "speed": round(found["speed"], 3)})
    return objects


def _unoccluded_shape(mask: np.ndarray) -> str:
    """Majority shape over the frames where this shape shows (nearly) whole: another shape passing
    over it cuts its outline, which reads as a triangle."""
    areas = mask.sum(axis=(1, 2))
    whole = [classify_shape(m) for m, area in zip(mask, areas) if area and area >= UNOCCLUDED_SHARE * areas.max()]
    return max(set(whole), key=whole.count)


def _phrase(obj: dict) -> str:
    motion = f"moving {'to the ' if obj['direction'] in ('left', 'right') else ''}{obj['direction']}" \
        if obj.get("direction") else "standing still"
    return f"a {obj['colour']} {obj['shape']} {motion}"


def caption_of(objects: list) -> str:
    if not objects:
        return "an empty dark background"
    return " and ".join(_phrase(o) for o in objects)


YES_NO = re.compile(r"^\s*(is|are|does|do|was|were|can|has|have)\b")


def answer_question(question: str, objects: list) -> str:
    """Answers about colour, shape, direction, count or yes/no checks of those attributes."""
    q = question.lower()
    asked = parse_scene(q)
    mentioned = asked[0] if asked else {}
    if "how many" in q:
        return str(len(objects))
    if not objects:
        return "there is no shape in this video"
    if YES_NO.match(q) and mentioned:
        wanted = {k: v for k, v in mentioned.items() if v}
        hit = any(all(o.get(k) == v for k, v in wanted.items()) for o in objects)
        return "yes" if hit else f"no, it shows {caption_of(objects)}"
    # "what colour is the circle?": narrow to the shapes the question names
    named = [o for o in objects if all(o.get(k) == v for k, v in mentioned.items() if v)] or objects
    if re.search(r"\bcolou?r\b", q):
        return " and ".join(o["colour"] for o in named)
    if re.search(r"\b(shape|kind of object|what object)\b", q):
        return " and ".join(o["shape"] for o in named)
    if re.search(r"\b(direction|where|which way|moving|going|heading|move|go)\b", q):
        return " and ".join(o["direction"] or "nowhere (it stands still)" for o in named)
    return caption_of(named)


class BuiltinDescriber(Describer):
    name = "builtin"

    def describe(self, frames, question=None, progress=None, should_cancel=None) -> Description:
        if should_cancel and should_cancel():
            raise Cancelled()
        objects = analyse_scene(frames)
        if progress:
            progress(1, 1)
        attributes = [{k: o[k] for k in ATTRIBUTES} for o in objects]
        return Description(caption=caption_of(objects), describer=self.name, attributes=attributes,
                           answer=answer_question(question, objects) if question else None)
