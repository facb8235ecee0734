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


DESCRIBE_MAX_SIDE = 512  # frames reach a describer at most this large (SmolVLM2 reads 384-512 px images)


# Opening a file probes its streams, and FFmpeg's probe decodes a first frame at the stated size (an
# 8192x8192 one: 180 MB, 1 s) before any cap is checked: the probe's decoders skip every frame.
OPEN_OPTIONS = {"skip_frame": "all"}


class VideoTooLarge(DescribeError):
    """The file's frames, or frames x pixels, exceed the caps given to sample_frames."""


def sample_frames(source: Union[str, bytes], count: int = DEFAULT_NUM_FRAMES, size: Optional[tuple] = None,
                  max_side: Optional[int] = DESCRIBE_MAX_SIDE, max_frame_pixels: Optional[int] = None,
                  max_total_pixels: Optional[int] = None) -> np.ndarray:
    """Decode ~`count` evenly spaced frames (count x H x W x 3 uint8) of a video file or bytes.

    Memory stays bounded whatever the file says: each kept frame is scaled down as it is converted
    (to `size` (height, width), else so that its longer side is at most `max_side`), and only
    chosen frames are kept: the stated frame count picks them, and without one at most
    max(4 x `count`, 32) are held (every stride-th frame, the stride doubling when they fill up). VideoTooLarge when a
    frame has more than `max_frame_pixels` pixels (checked before any decoding) or the frames
    decoded times their pixels exceed `max_total_pixels` (the stated count is checked first)."""
    import av

    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with av.open(src, options=OPEN_OPTIONS) as container:
            if not container.streams.video:
                raise DescribeError("the file holds no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            pixels = width * height
            check_video_size(width, height, stream.frames, max_frame_pixels, max_total_pixels)
            convert = _converter(width, height, size, max_side)
            total = stream.frames
            wanted = set(_evenly_spaced(total, count)) if total > 0 else None
            kept, stride = [], 1
            for index, frame in enumerate(container.decode(stream)):
                if max_total_pixels and (index + 1) * pixels > max_total_pixels:
                    raise VideoTooLarge(f"the video has more than {max_total_pixels // max(pixels, 1)} frames of "
                                        f"{width}x{height} (more than {max_total_pixels} pixels in all)")
                if wanted is not None:
                    if index in wanted:
                        kept.append(convert(frame))
                elif index % stride == 0:
                    kept.append(convert(frame))
                    if len(kept) >= max(4 * count, 32):
                        kept, stride = kept[::2], stride * 2
    except av.error.FFmpegError as exc:
        raise DescribeError(f"not a readable video: {exc}") from None
    if not kept:
        raise DescribeError("the video holds no frames")
    if wanted is None or len(kept) > count:  # frame count unknown (or wrong): pick now
        kept = [kept[i] for i in _evenly_spaced(len(kept), count)]
    return np.stack(kept)


def check_video_size(width: int, height: int, frames: int, max_frame_pixels: Optional[int],
                     max_total_pixels: Optional[int]) -> None:
    """VideoTooLarge when a frame, or the stated frames (0: not stated) times their pixels, exceed the caps."""
    if max_frame_pixels and width * height > max_frame_pixels:
        raise VideoTooLarge(f"video frames of {width}x{height} have more than {max_frame_pixels} pixels")
    if max_total_pixels and frames > 0 and frames * width * height > max_total_pixels:
        raise VideoTooLarge(f"{frames} frames of {width}x{height} are more than {max_total_pixels} pixels in all")


def _converter(width: int, height: int, size: Optional[tuple], max_side: Optional[int]) -> Callable:
    """A decoded frame -> H x W x 3 uint8 at the target size, scaled by FFmpeg while converting."""
    if size is not None:
        out_h, out_w = size
    elif max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        out_w, out_h = max(2, round(width * scale)), max(2, round(height * scale))
    else:
        return lambda frame: frame.to_ndarray(format="rgb24")
    return lambda frame: frame.to_ndarray(format="rgb24", width=out_w, height=out_h, interpolation="BICUBIC")


def _evenly_spaced(total: int, count: int) -> list:
    return sorted(set(np.linspace(0, total - 1, min(count, total)).round().astype(int).tolist()))
