"""A vision-language describer (SmolVLM2 and the rest of the SmolVLM / Idefics3 family) loaded
with transformers from a LOCAL folder: AutoProcessor + AutoModelForImageTextToText,
`local_files_only=True`, so nothing is ever downloaded.

The video goes in as its ~8 evenly spaced frames, one image each, followed by the instruction
(or the user's question) in the checkpoint's own chat template; greedy decoding.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
from transformers import StoppingCriteria

from generator.interface import Cancelled
from generator.understanding.base import DEFAULT_NUM_FRAMES, Describer, Description, DescribeError

CAPTION_INSTRUCTION = "Describe this video in one sentence: what is in it and how it moves."
DTYPES = ("bfloat16", "float16", "float32")


class SmolVLMDescriber(Describer):
    def __init__(self, path: str, name: str = "smolvlm2", device: Optional[str] = None, dtype: Optional[str] = None,
                 num_frames: int = DEFAULT_NUM_FRAMES, max_new_tokens: int = 96):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not os.path.isdir(path):
            raise DescribeError(f"describer {name!r}: {path!r} is not a folder holding a checkpoint")
        if dtype is not None and dtype not in DTYPES:
            raise DescribeError(f"describer {name!r}: dtype must be one of {', '.join(DTYPES)}")
        self.name, self.num_frames, self.max_new_tokens = name, int(num_frames), int(max_new_tokens)
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device.startswith("cuda")
                                                            else torch.float32)
        try:
            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        except ImportError as exc:  # SmolVLM2's processor brings a video processor that needs torchvision
            raise DescribeError(f"describer {name!r}: its processor needs a package that is missing: {exc}") from None
        self.model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
        self.model.eval().to(self.device)
        self.dtype = torch_dtype

    def _frames(self, frames: np.ndarray) -> list:
        from PIL import Image

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise DescribeError(f"expected frames T x H x W x 3, got shape {frames.shape}")
        if len(frames) > self.num_frames:
            frames = frames[np.linspace(0, len(frames) - 1, self.num_frames).round().astype(int)]
        return [Image.fromarray(f.astype(np.uint8)) for f in frames]

    def describe(self, frames, question=None, progress=None, should_cancel=None) -> Description:
        from transformers import StoppingCriteriaList

        images = self._frames(frames)
        messages = [{"role": "user", "content": [{"type": "image"} for _ in images]
                     + [{"type": "text", "text": question or CAPTION_INSTRUCTION}]}]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        # one global view per frame, as SmolVLM2 reads videos (splitting each frame in tiles would
        # multiply its image tokens ~17 times)
        inputs = self.processor(text=prompt, images=[images], do_image_splitting=False, return_tensors="pt")
        inputs.pop("token_type_ids", None)  # BERT-style tokenizers add it; the language models take none
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}
        prompt_length = inputs["input_ids"].shape[1]
        watcher = _ProgressAndCancel(prompt_length, self.max_new_tokens, progress, should_cancel)
        with self.torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         stopping_criteria=StoppingCriteriaList([watcher]))
        if watcher.cancelled:
            raise Cancelled()
        text = self.processor.batch_decode(output[:, prompt_length:], skip_special_tokens=True)[0].strip()
        if progress:
            progress(self.max_new_tokens, self.max_new_tokens)
        return Description(caption=text if question is None else "", answer=text if question else None,
                           describer=self.name)


class _ProgressAndCancel(StoppingCriteria):
    """Asked after every generated token: report it as a step, and stop generating when cancelled."""

    def __init__(self, prompt_length: int, total: int, progress, should_cancel):
        self.prompt_length, self.total = prompt_length, total
        self.progress, self.should_cancel = progress, should_cancel
        self.cancelled = False

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.progress:
            self.progress(min(input_ids.shape[1] - self.prompt_length, self.total), self.total)
        if self.should_cancel and self.should_cancel():
            self.cancelled = True
        return torch.full((input_ids.shape[0],), self.cancelled, dtype=torch.bool, device=input_ids.device)
