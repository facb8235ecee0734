"""Request validation shared by the websocket lobby and the HTTP API.

`validate_generate(data)` takes the decoded JSON object of a `generate` message (or the body of
`POST /api/jobs`) and returns a `GenerateRequest` with the model's defaults filled in, or raises
`RequestError(code, message, field)`. Error codes are stable (docs/protocol.md).
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from django.conf import settings

# stable error codes
INVALID_JSON = "invalid_json"
UNKNOWN_TYPE = "unknown_type"
INVALID_FIELD = "invalid_field"
UNKNOWN_FIELD = "unknown_field"
MISSING_FIELD = "missing_field"
UNKNOWN_MODEL = "unknown_model"
IMAGE_INVALID = "image_invalid"
TOO_LARGE = "too_large"
NOT_FOUND = "not_found"
FORBIDDEN = "forbidden"
NOT_CANCELLABLE = "not_cancellable"
QUEUE_FULL = "queue_full"
UNAVAILABLE = "unavailable"
AUTH_REQUIRED = "auth_required"
CSRF_FAILED = "csrf_failed"
RATE_LIMITED = "rate_limited"
METHOD_NOT_ALLOWED = "method_not_allowed"
INTERNAL_ERROR = "internal_error"
ERROR_CODES = (INVALID_JSON, UNKNOWN_TYPE, INVALID_FIELD, UNKNOWN_FIELD, MISSING_FIELD, UNKNOWN_MODEL,
               IMAGE_INVALID, TOO_LARGE, NOT_FOUND, FORBIDDEN, NOT_CANCELLABLE, QUEUE_FULL, UNAVAILABLE,
               AUTH_REQUIRED, CSRF_FAILED, RATE_LIMITED, METHOD_NOT_ALLOWED, INTERNAL_ERROR)

GENERATE_FIELDS = {"type", "prompt", "num_frames", "width", "height", "steps", "guidance_scale", "seed",
                   "model", "fps", "image", "request_id", "private",
                   # long videos (generator.longvideo.FIELDS)
                   "num_chunks", "duration_s", "overlap", "interpolate", "upscale",
                   "evaluate"}  # attach quality metrics (generator.metrics) to the finished job
CANCEL_FIELDS = {"type", "job_id", "request_id"}
PING_FIELDS = {"type", "request_id"}
MAX_SEED = 2**32 - 1
MIN_FPS, MAX_FPS = 1.0, 60.0
MAX_REQUEST_ID_CHARS = 100


class RequestError(Exception):
    def __init__(self, code: str, message: str, field: Optional[str] = None, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.field, self.status = code, message, field, status

    def as_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


@dataclass
class GenerateRequest:
    prompt: str
    model: str
    params: dict  # num_frames, width, height, steps, guidance_scale, seed, fps, model, image (bool),
    #               and the long-video fields that were given (num_chunks, duration_s, overlap, interpolate, upscale)
    private: bool = False
    image: Optional[np.ndarray] = field(default=None, repr=False)  # H x W x 3 uint8
    image_png: Optional[bytes] = field(default=None, repr=False)
    request_id: Any = None
    total_steps: int = 0  # denoising steps over all chunks of a long video


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text) -> Any:
    """Strict JSON: NaN / Infinity are refused (Python's json accepts them by default)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, TypeError, RecursionError) as exc:
        raise RequestError(INVALID_JSON, f"message is not valid JSON: {exc}") from None


def request_id_of(data: Any) -> Any:
    """The request_id to echo, if it is usable (a short string or an integer)."""
    if not isinstance(data, dict):
        return None
    rid = data.get("request_id")
    if isinstance(rid, str) and len(rid) <= MAX_REQUEST_ID_CHARS and _utf8(rid):
        return rid
    if isinstance(rid, int) and not isinstance(rid, bool):
        return rid
    return None


def check_fields(data: dict, allowed: set) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RequestError(UNKNOWN_FIELD, f"unknown field(s): {', '.join(unknown)}", unknown[0])
    if "request_id" in data and request_id_of(data) is None and data["request_id"] is not None:
        raise RequestError(INVALID_FIELD, f"request_id must be a string of at most {MAX_REQUEST_ID_CHARS} "
                                          "characters or an integer", "request_id")


def _int(data: dict, name: str, lo: Optional[int] = None, hi: Optional[int] = None) -> Optional[int]:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(INVALID_FIELD, f"{name} must be an integer", name)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise RequestError(INVALID_FIELD, f"{name} must be an integer", name)
        value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise RequestError(INVALID_FIELD, f"{name} must be between {lo} and {hi}", name)
    return value


def _number(data: dict, name: str, lo: float, hi: float) -> Optional[float]:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(INVALID_FIELD, f"{name} must be a finite number", name)
    if not lo <= value <= hi:
        raise RequestError(INVALID_FIELD, f"{name} must be between {lo:g} and {hi:g}", name)
    return float(value)


def decode_image(value: Any) -> tuple:
    """Base64 PNG/JPEG (optionally a data: URL) -> (H x W x 3 uint8 array, PNG bytes)."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(value, str):
        raise RequestError(INVALID_FIELD, "image must be a base64 string (PNG or JPEG)", "image")
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise RequestError(IMAGE_INVALID, "image data URL must be base64 encoded", "image")
    max_bytes = settings.MAX_IMAGE_BYTES
    if len(value) > (max_bytes * 4) // 3 + 4:
        raise RequestError(TOO_LARGE, f"image is larger than {max_bytes} bytes", "image")
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(IMAGE_INVALID, "image is not valid base64", "image") from None
    if len(raw) > max_bytes:
        raise RequestError(TOO_LARGE, f"image is larger than {max_bytes} bytes", "image")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.format not in ("PNG", "JPEG"):
                raise RequestError(IMAGE_INVALID, f"image must be PNG or JPEG, not {img.format}", "image")
            if img.width * img.height > settings.MAX_IMAGE_PIXELS:
                raise RequestError(TOO_LARGE, f"image has more than {settings.MAX_IMAGE_PIXELS} pixels", "image")
            if img.width < 8 or img.height < 8:
                raise RequestError(IMAGE_INVALID, "image must be at least 8x8 pixels", "image")
            rgb = img.convert("RGB")
            rgb.load()
    except RequestError:
        raise
    except Image.DecompressionBombError:  # Pillow's own cap (2 x its MAX_IMAGE_PIXELS), checked on open
        raise RequestError(TOO_LARGE, f"image has more than {settings.MAX_IMAGE_PIXELS} pixels", "image") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(IMAGE_INVALID, f"image could not be decoded: {exc}", "image") from None
    array = np.asarray(rgb, dtype=np.uint8).copy()
    png = io.BytesIO()
    rgb.save(png, format="PNG")
    return array, png.getvalue()


def validate_generate(data: Any) -> GenerateRequest:
    from generator.interface import DEFAULT_MODEL, get_info
    from generator.longvideo import FIELDS as LONG_FIELDS, final_shape, validate_options

    if not isinstance(data, dict):
        raise RequestError(INVALID_JSON, "the request must be a JSON object")
    check_fields(data, GENERATE_FIELDS)

    prompt = data.get("prompt")
    if prompt is None:
        raise RequestError(MISSING_FIELD, "prompt is required", "prompt")
    if not isinstance(prompt, str):
        raise RequestError(INVALID_FIELD, "prompt must be a string", "prompt")
    prompt = prompt.strip()
    if not prompt:
        raise RequestError(INVALID_FIELD, "prompt must not be empty", "prompt")
    if len(prompt) > settings.MAX_PROMPT_CHARS:
        raise RequestError(INVALID_FIELD, f"prompt is longer than {settings.MAX_PROMPT_CHARS} characters", "prompt")
    if "\x00" in prompt:
        raise RequestError(INVALID_FIELD, "prompt must not contain NUL characters", "prompt")
    if not _utf8(prompt):
        raise RequestError(INVALID_FIELD, "prompt must be valid Unicode (no lone surrogates)", "prompt")

    model = data.get("model")
    if model is None:
        model = DEFAULT_MODEL
    if not isinstance(model, str) or not model:
        raise RequestError(INVALID_FIELD, "model must be a model name (GET /api/models)", "model")
    info = get_info(model)
    if info is None:
        raise RequestError(UNKNOWN_MODEL, f"unknown model {model[:100]!r} (GET /api/models lists them)", "model")

    private = data.get("private", False)
    if private is None:
        private = False
    if not isinstance(private, bool):
        raise RequestError(INVALID_FIELD, "private must be true or false", "private")
    evaluate = data.get("evaluate", False)
    if evaluate is not None and not isinstance(evaluate, bool):
        raise RequestError(INVALID_FIELD, "evaluate must be true or false", "evaluate")

    num_frames = _int(data, "num_frames")
    width = _int(data, "width")
    height = _int(data, "height")
    steps = _int(data, "steps")
    guidance = _number(data, "guidance_scale", 0.0, 1000.0)
    seed = _int(data, "seed", 0, MAX_SEED)
    fps = _number(data, "fps", MIN_FPS, MAX_FPS)

    image = png = None
    if data.get("image") is not None:
        if not info.supports_image:
            raise RequestError(INVALID_FIELD, f"model {model} does not take a start image", "image")
        image, png = decode_image(data["image"])

    num_frames = num_frames if num_frames is not None else info.default_frames
    width = width if width is not None else info.default_width
    height = height if height is not None else info.default_height
    steps = steps if steps is not None else info.default_steps
    guidance = guidance if guidance is not None else float(info.default_guidance)
    problems = info.problems(num_frames, width, height, steps, guidance)
    if problems:
        fields = [p[0] if isinstance(p, (tuple, list)) else None for p in problems]
        messages = [p[1] if isinstance(p, (tuple, list)) else str(p) for p in problems]
        raise RequestError(INVALID_FIELD, "; ".join(messages), fields[0])
    fps = fps if fps is not None else float(info.default_fps)
    long_opts, problems = validate_options(data, info, num_frames=num_frames, width=width, height=height, fps=fps)
    if problems:
        raise RequestError(INVALID_FIELD, "; ".join(m for _, m in problems), problems[0][0])
    if seed is None:
        seed = random.SystemRandom().randrange(0, 2**31)
    params = {
        "model": model, "num_frames": num_frames, "width": width, "height": height, "steps": steps,
        "guidance_scale": guidance, "seed": seed, "fps": fps, "image": image is not None,
    }
    if evaluate:
        params["evaluate"] = True
    for name in LONG_FIELDS:  # only those given: absent ones mean a plain single-clip job
        if data.get(name) is not None:
            params[name] = getattr(long_opts, name)
    shape = final_shape(long_opts, num_frames, width, height, fps)
    chunks = shape["num_chunks"]
    budget = settings.MAX_VIDEO_PIXELS
    if shape["num_frames"] * shape["width"] * shape["height"] > budget:
        raise RequestError(INVALID_FIELD, f"the video would have {shape['num_frames']} frames of "
                                          f"{shape['width']}x{shape['height']} pixels, more than the "
                                          f"{budget} pixel budget (MAX_VIDEO_PIXELS)", "num_frames")
    return GenerateRequest(prompt=prompt, model=model, params=params, private=private, image=image,
                           image_png=png, request_id=request_id_of(data), total_steps=steps * chunks)


def validate_job_id(value: Any) -> str:
    import uuid

    if not isinstance(value, str):
        raise RequestError(INVALID_FIELD, "job_id must be a string", "job_id")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise RequestError(NOT_FOUND, "no such job", "job_id", status=404) from None
