"""Previews of a video being denoised: small images of the model's current estimate."""
from __future__ import annotations

import base64
import io
from typing import Optional

import numpy as np

PREVIEW_FRAMES = 4
PREVIEW_HEIGHT = 96


def preview_jpeg(frames: Optional[np.ndarray]) -> Optional[str]:
    """A contact sheet of up to 4 evenly spaced frames, <= 96 px high, as base64 JPEG."""
    from PIL import Image

    if frames is None:
        return None
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[0] == 0:
        return None
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    idx = np.unique(np.linspace(0, frames.shape[0] - 1, min(PREVIEW_FRAMES, frames.shape[0])).round().astype(int))
    h, w = frames.shape[1:3]
    th = min(PREVIEW_HEIGHT, h)
    tw = max(1, round(w * th / h))
    tiles = [Image.fromarray(frames[i][..., :3]).resize((tw, th), Image.Resampling.BILINEAR) for i in idx]
    sheet = Image.new("RGB", (tw * len(tiles), th))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, (k * tw, 0))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=70)
    return base64.b64encode(buf.getvalue()).decode("ascii")
