"""The describer contract and frame sampling."""
from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Union

import numpy as np

DEFAULT_NUM_FRAMES = 8  # SmolVLM2 reads a video as ~8 evenly spaced images

ProgressCallback = Callable[[int, int], None]  # step, total
CancelCheck = Callable[[], bool]


class DescribeError(Exception):
    """A failure fit to show the user (not a video, a describer that will not load...)."""


@dataclass
class Description:
    caption: str
    answer: Optional[str] = None  # only when a question was asked
    describer: str = ""
    attributes: list = field(default_factory=list)  # built-in world: [{colour, shape, direction}, ...]

    def as_dict(self) -> dict:
        return asdict(self)


class Describer(ABC):
    """Video frames (T x H x W x 3 uint8) -> a caption, or the answer to `question`.

    `progress(step, total)` reports work done; `should_cancel()` is asked between steps and
    True makes the describer raise generator.interface.Cancelled."""

    name = "describer"

    @abstractmethod
    def describe(self, frames: np.ndarray, question: Optional[str] = None,
                 progress: Optional[ProgressCallback] = None,
                 should_cancel: Optional[CancelCheck] = None) -> Description:
        ...


def sample_frames(source: Union[str, bytes], count: int = DEFAULT_NUM_FRAMES) -> np.ndarray:
    """Decode ~`count` evenly spaced frames (count x H x W x 3 uint8) of a video file or bytes.

    When the container states its frame count, only the chosen frames are kept while decoding
    (a long video is never held whole in memory)."""
    import av

    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with av.open(src) as container:
            if not container.streams.video:
                raise DescribeError("the file holds no video stream")
            stream = container.streams.video[0]
            total = stream.frames
            wanted = set(_evenly_spaced(total, count)) if total > 0 else None
            kept = []
            for index, frame in enumerate(container.decode(stream)):
                if wanted is None or index in wanted:
                    kept.append(frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as exc:
        raise DescribeError(f"not a readable video: {exc}") from None
    if not kept:
        raise DescribeError("the video holds no frames")
    if wanted is None or len(kept) > count:  # frame count unknown (or wrong): pick now
        kept = [kept[i] for i in _evenly_spaced(len(kept), count)]
    return np.stack(kept)


def _evenly_spaced(total: int, count: int) -> list:
    return sorted(set(np.linspace(0, total - 1, min(count, total)).round().astype(int).tolist()))
