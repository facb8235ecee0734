"""Uploaded media: base64 (or data: URL) text -> checked bytes, a start image -> pixels, a source
video -> bytes PyAV can open. Refusals carry `image_invalid` / `video_invalid` / `too_large`."""
from __future__ import annotations

import base64
import binascii
import io
import struct
import zlib
from typing import Any

import av
import numpy as np
from django.conf import settings
from PIL import Image, UnidentifiedImageError
from pydantic_core import PydanticCustomError

from generator.understanding.base import OPEN_OPTIONS, VideoTooLarge, check_video_size
from videoservice.contract.errors import IMAGE_INVALID, INVALID_FIELD, TOO_LARGE, VIDEO_INVALID, refuse


def decode_base64(value: Any, field: str, invalid_code: str, what: str, max_bytes: int) -> bytes:
    """Base64 (optionally a data: URL) -> bytes, refusing what is over `max_bytes`."""
    if not isinstance(value, str) or not value:
        raise refuse(INVALID_FIELD, field, f"{field} must be a base64 string ({what})")
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise refuse(invalid_code, field, f"{field} data URL must be base64 encoded")
    if len(value) > (max_bytes * 4) // 3 + 4:
        raise refuse(TOO_LARGE, field, f"{field} is larger than {max_bytes} bytes")
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise refuse(invalid_code, field, f"{field} is not valid base64") from None
    if len(raw) > max_bytes:
        raise refuse(TOO_LARGE, field, f"{field} is larger than {max_bytes} bytes")
    return raw


def decode_image(value: Any) -> tuple:
    """Base64 PNG/JPEG (optionally a data: URL) -> (H x W x 3 uint8 array, PNG bytes)."""
    raw = decode_base64(value, "image", IMAGE_INVALID, "PNG or JPEG", settings.MAX_IMAGE_BYTES)
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.format not in ("PNG", "JPEG"):
                raise refuse(IMAGE_INVALID, "image", f"image must be PNG or JPEG, not {img.format}")
            if img.width * img.height > settings.MAX_IMAGE_PIXELS:
                raise refuse(TOO_LARGE, "image", f"image has more than {settings.MAX_IMAGE_PIXELS} pixels")
            if img.width < 8 or img.height < 8:
                raise refuse(IMAGE_INVALID, "image", "image must be at least 8x8 pixels")
            rgb = img.convert("RGB")
            rgb.load()
    except PydanticCustomError:
        raise
    except Image.DecompressionBombError:  # Pillow's own cap (2 x its MAX_IMAGE_PIXELS), checked on open
        raise refuse(TOO_LARGE, "image", f"image has more than {settings.MAX_IMAGE_PIXELS} pixels") from None
    # Pillow's decoders also raise SyntaxError (a broken PNG chunk), EOFError, struct.error, zlib.error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error) as exc:
        raise refuse(IMAGE_INVALID, "image", f"image could not be decoded: {exc}") from None
    array = np.asarray(rgb, dtype=np.uint8).copy()
    png = io.BytesIO()
    rgb.save(png, format="PNG")
    return array, png.getvalue()


def decode_video_upload(value: Any, field: str = "video") -> bytes:
    """Base64 (optionally a data: URL) of a video file PyAV can open and that holds a video stream
    whose stated frame size and frames x pixels fit MAX_INPUT_FRAME_PIXELS / MAX_INPUT_VIDEO_PIXELS
    (too_large: a few KB can declare frames that would need gigabytes to decode)."""
    data = decode_base64(value, field, VIDEO_INVALID, "or a data: URL of an MP4",
                         settings.WS_MAX_CLIENT_MESSAGE_BYTES)
    try:
        with av.open(io.BytesIO(data), options=OPEN_OPTIONS) as container:
            if not container.streams.video:
                raise refuse(VIDEO_INVALID, field, "the file holds no video stream")
            stream = container.streams.video[0]
            frames = stream.frames
            if frames <= 0 and container.duration and stream.average_rate:  # not stated (WebM, MKV): estimated
                frames = int(container.duration / av.time_base * float(stream.average_rate)) + 1
            check_video_size(stream.codec_context.width, stream.codec_context.height, frames,
                             settings.MAX_INPUT_FRAME_PIXELS, settings.MAX_INPUT_VIDEO_PIXELS)
    except VideoTooLarge as exc:
        raise refuse(TOO_LARGE, field, str(exc)) from None
    except av.error.FFmpegError as exc:
        raise refuse(VIDEO_INVALID, field, f"video could not be read: {exc}") from None
    return data
