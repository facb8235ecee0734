"""The job contract: one typed definition (pydantic 2) of every request, every stored parameter set
and every event, read by the websocket lobby, the HTTP API, the CLI commands and the worker alike.

- Requests: `GenerateRequest` (websocket `generate`, `POST /api/jobs`, `manage.py generate`),
  `DescribeRequest` (`describe`, `POST /api/describe`, `manage.py describe`), `CancelRequest`,
  `PingRequest`. `parse(Model, data)` validates a decoded JSON object and raises `RequestError`
  with the stable codes of docs/protocol.md (every problem found is in `.problems`).
- Stored parameters: `GenerationParams` / `DescribeParams`, what `Job.params` holds: the request
  with the model's defaults filled in (from its `ModelInfo`, the one source of defaults and limits).
  The worker reads them back through the same models.
- Events (server -> client): one model per `type`; `events.publish` sends them.
- `websocket_schema()`: the JSON Schema of every websocket message, served at
  /api/schema/websocket.json; the HTTP API's OpenAPI document is generated from these models too
  (videoservice/api.py).
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import random
import re
import struct
import uuid
import zlib
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
from django.conf import settings
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError,
                      ValidationInfo, model_validator)
from pydantic_core import PydanticCustomError

from generator import longvideo
from generator.interface import DEFAULT_STRENGTH

# ---------------------------------------------------------------- stable error codes
INVALID_JSON = "invalid_json"
UNKNOWN_TYPE = "unknown_type"
INVALID_FIELD = "invalid_field"
UNKNOWN_FIELD = "unknown_field"
MISSING_FIELD = "missing_field"
UNKNOWN_MODEL = "unknown_model"
IMAGE_INVALID = "image_invalid"
VIDEO_INVALID = "video_invalid"
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
               IMAGE_INVALID, VIDEO_INVALID, TOO_LARGE, NOT_FOUND, FORBIDDEN, NOT_CANCELLABLE, QUEUE_FULL,
               UNAVAILABLE, AUTH_REQUIRED, CSRF_FAILED, RATE_LIMITED, METHOD_NOT_ALLOWED, INTERNAL_ERROR)

MAX_SEED = 2**32 - 1
MIN_FPS, MAX_FPS = 1.0, 60.0
MAX_REQUEST_ID_CHARS = 100
MAX_QUESTION_CHARS = 500
MAX_PRIORITY = 10
MAX_JSON_VALUES = 4096  # a message holds a dozen values; its size is in its strings (prompt, base64)
# JSON Schema patterns of our text rules: no NUL (lone surrogates are refused too, but JSON Schema
# tools cannot express them), and for prompts some non-space character
_NO_NUL = "^[^\\x00]*$"
_NOT_BLANK = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"


def printable(text: str) -> str:
    """What an error message may echo back: no object reprs with memory addresses (they tell an
    attacker about the heap), and lone surrogates escaped (they are not valid UTF-8)."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", str(text))
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class RequestError(Exception):
    """A refusal with a stable `code`, a message for people and the `field` at fault; `status` is
    the HTTP status; `problems` every (code, field, message) found (the first is this one)."""

    def __init__(self, code: str, message: str, field: Optional[str] = None, status: int = 400,
                 problems: Optional[list] = None, retry_after: Optional[int] = None):
        message = printable(message)
        super().__init__(message)
        self.code, self.message, self.status, self.retry_after = code, message, status, retry_after
        self.field = printable(field) if field is not None else None
        self.problems = problems or [(code, self.field, message)]

    def as_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text) -> Any:
    """Strict JSON: NaN / Infinity are refused (Python's json accepts them by default), and so is a
    message of more than MAX_JSON_VALUES values: JSON parsing holds the GIL (a thread would not
    help), and a megabyte list of numbers takes the event loop ~35 ms to parse, while a megabyte
    string takes ~1 ms. Counting separators is a C-speed scan; commas inside strings count too,
    which only makes the bound safe."""
    import json

    if isinstance(text, (str, bytes)) and len(text) > MAX_JSON_VALUES:
        sep = (",", "[", "{") if isinstance(text, str) else (b",", b"[", b"{")
        if sum(text.count(c) for c in sep) > MAX_JSON_VALUES:
            raise RequestError(INVALID_JSON, f"message holds more than {MAX_JSON_VALUES} JSON values")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, TypeError, RecursionError) as exc:
        raise RequestError(INVALID_JSON, f"message is not valid JSON: {exc}") from None


def _refuse(code: str, field: Optional[str], message: str) -> PydanticCustomError:
    # the message travels in the context: a template would treat braces in user input as placeholders
    return PydanticCustomError(code, "{message}", {"message": message, "field": field})


def parse(model: type, data: Any, context: Optional[dict] = None):
    """`model` validated from a decoded JSON object, or RequestError (first problem + all of them)."""
    if not isinstance(data, dict):
        raise RequestError(INVALID_JSON, "the request must be a JSON object")
    unknown = sorted(set(data) - set(model.model_fields))
    if unknown:  # (before pydantic, which refuses keys that are not valid Unicode with a vaguer message)
        raise RequestError(UNKNOWN_FIELD, f"unknown field(s): {', '.join(unknown)}", unknown[0])
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise _as_request_error(exc) from None


def _as_request_error(exc: ValidationError) -> RequestError:
    problems = []
    for err in exc.errors():
        kind = err["type"]
        ctx = err.get("ctx") or {}
        field = ctx.get("field") if "field" in ctx else (str(err["loc"][0]) if err["loc"] else None)
        if "problems" in ctx:  # several model-level problems found at once
            problems += [tuple(p) for p in ctx["problems"]]
        elif kind == "missing":
            problems.append((MISSING_FIELD, field, f"{field} is required"))
        else:
            problems.append((kind if kind in ERROR_CODES else INVALID_FIELD, field, ctx.get("message", err["msg"])))
    code, field, message = problems[0]
    return RequestError(code, message, field, status=STATUS.get(code, 400), problems=problems)


STATUS = {NOT_FOUND: 404, UNAVAILABLE: 503}  # of refusals found while validating (the rest: 400)


# ---------------------------------------------------------------- field rules (with our messages)
def _integer(lo: Optional[int] = None, hi: Optional[int] = None, allowed: Optional[tuple] = None):
    def check(value, info: ValidationInfo):
        name = info.field_name
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and (not math.isfinite(value) or not value.is_integer())):
            raise _refuse(INVALID_FIELD, name, f"{name} must be an integer")
        value = int(value)
        if allowed is not None and value not in allowed:
            raise _refuse(INVALID_FIELD, name, f"{name} must be one of {', '.join(map(str, allowed))}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _refuse(INVALID_FIELD, name, f"{name} must be between {lo} and {hi}")
        return value
    return BeforeValidator(check)


def _number(lo: float, hi: float, low_open: bool = False, unit: str = ""):
    def check(value, info: ValidationInfo):
        name = info.field_name
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _refuse(INVALID_FIELD, name, f"{name} must be a finite number")
        if (value <= lo if low_open else value < lo) or value > hi:
            rule = f"more than {lo:g} and at most {hi:g}" if low_open else f"between {lo:g} and {hi:g}"
            raise _refuse(INVALID_FIELD, name, f"{name} must be {rule}{unit}")
        return float(value)
    return BeforeValidator(check)


def _boolean(value, info: ValidationInfo):
    if value is not None and not isinstance(value, bool):
        raise _refuse(INVALID_FIELD, info.field_name, f"{info.field_name} must be true or false")
    return value


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(max_chars_setting: Optional[str] = None, max_chars: Optional[int] = None, required: bool = False):
    """A string with at most the given characters, no NUL, valid UTF-8; required ones not blank."""
    def check(value, info: ValidationInfo):
        name = info.field_name
        limit = getattr(settings, max_chars_setting) if max_chars_setting else max_chars
        if value is None:
            if required:
                raise _refuse(MISSING_FIELD, name, f"{name} is required")
            return None
        if not isinstance(value, str):
            raise _refuse(INVALID_FIELD, name, f"{name} must be a string")
        if len(value) > limit:
            raise _refuse(INVALID_FIELD, name, f"{name} is longer than {limit} characters")
        if "\x00" in value:
            raise _refuse(INVALID_FIELD, name, f"{name} must not contain NUL characters")
        if not _utf8(value):
            raise _refuse(INVALID_FIELD, name, f"{name} must be valid Unicode (no lone surrogates)")
        value = value.strip()
        if required and not value:
            raise _refuse(INVALID_FIELD, name, f"{name} must not be empty")
        return value or None
    return BeforeValidator(check)


def _request_id(value, info: ValidationInfo):
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_REQUEST_ID_CHARS and _utf8(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _refuse(INVALID_FIELD, "request_id", f"request_id must be a string of at most {MAX_REQUEST_ID_CHARS} "
                                               "characters or an integer")


def _job_id(value, info: ValidationInfo):
    if value is None:
        return None
    if not isinstance(value, str):
        raise _refuse(INVALID_FIELD, info.field_name, f"{info.field_name} must be a string")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _refuse(NOT_FOUND, info.field_name, "no such job") from None


def _model_name(value, info: ValidationInfo):
    from generator.interface import DEFAULT_MODEL, get_info

    if value is None:
        return DEFAULT_MODEL
    if not isinstance(value, str) or not value:
        raise _refuse(INVALID_FIELD, "model", "model must be a model name (GET /api/models)")
    if get_info(value) is None:
        from generator.interface import list_models

        known = ", ".join(sorted(info.name for info in list_models()))
        raise _refuse(UNKNOWN_MODEL, "model", f"unknown model {value[:100]!r}; known models: {known}")
    return value


def request_id_of(data: Any) -> Any:
    """The request_id of a message that may be invalid, to echo in its error (None if unusable)."""
    if not isinstance(data, dict):
        return None
    try:
        return _request_id(data.get("request_id"), None)
    except PydanticCustomError:
        return None


RequestId = Annotated[Optional[Union[Annotated[str, Field(max_length=MAX_REQUEST_ID_CHARS,
                                                          pattern=_NO_NUL)], int]],
                      Field(description="echoed in the answer (`queued` / `error`)"), BeforeValidator(_request_id)]
Flag = Annotated[Optional[bool], BeforeValidator(_boolean)]


# ---------------------------------------------------------------- base64 inputs
def _base64_text(what: str):
    def check(value, info: ValidationInfo):
        if value is not None and (not isinstance(value, str) or not value):
            raise _refuse(INVALID_FIELD, info.field_name, f"{info.field_name} must be a base64 string ({what})")
        return value
    return BeforeValidator(check)


def decode_base64(value: Any, field: str, invalid_code: str, what: str, max_bytes: int) -> bytes:
    """Base64 (optionally a data: URL) -> bytes, refusing what is over `max_bytes`."""
    if not isinstance(value, str) or not value:
        raise _refuse(INVALID_FIELD, field, f"{field} must be a base64 string ({what})")
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise _refuse(invalid_code, field, f"{field} data URL must be base64 encoded")
    if len(value) > (max_bytes * 4) // 3 + 4:
        raise _refuse(TOO_LARGE, field, f"{field} is larger than {max_bytes} bytes")
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _refuse(invalid_code, field, f"{field} is not valid base64") from None
    if len(raw) > max_bytes:
        raise _refuse(TOO_LARGE, field, f"{field} is larger than {max_bytes} bytes")
    return raw


def decode_image(value: Any) -> tuple:
    """Base64 PNG/JPEG (optionally a data: URL) -> (H x W x 3 uint8 array, PNG bytes)."""
    from PIL import Image, UnidentifiedImageError

    raw = decode_base64(value, "image", IMAGE_INVALID, "PNG or JPEG", settings.MAX_IMAGE_BYTES)
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.format not in ("PNG", "JPEG"):
                raise _refuse(IMAGE_INVALID, "image", f"image must be PNG or JPEG, not {img.format}")
            if img.width * img.height > settings.MAX_IMAGE_PIXELS:
                raise _refuse(TOO_LARGE, "image", f"image has more than {settings.MAX_IMAGE_PIXELS} pixels")
            if img.width < 8 or img.height < 8:
                raise _refuse(IMAGE_INVALID, "image", "image must be at least 8x8 pixels")
            rgb = img.convert("RGB")
            rgb.load()
    except PydanticCustomError:
        raise
    except Image.DecompressionBombError:  # Pillow's own cap (2 x its MAX_IMAGE_PIXELS), checked on open
        raise _refuse(TOO_LARGE, "image", f"image has more than {settings.MAX_IMAGE_PIXELS} pixels") from None
    # Pillow's decoders also raise SyntaxError (a broken PNG chunk), EOFError, struct.error, zlib.error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error) as exc:
        raise _refuse(IMAGE_INVALID, "image", f"image could not be decoded: {exc}") from None
    array = np.asarray(rgb, dtype=np.uint8).copy()
    png = io.BytesIO()
    rgb.save(png, format="PNG")
    return array, png.getvalue()


def decode_video_upload(value: Any, field: str = "video") -> bytes:
    """Base64 (optionally a data: URL) of a video file PyAV can open and that holds a video stream
    whose stated frame size and frames x pixels fit MAX_INPUT_FRAME_PIXELS / MAX_INPUT_VIDEO_PIXELS
    (too_large: a few KB can declare frames that would need gigabytes to decode)."""
    import av

    from generator.understanding.base import OPEN_OPTIONS, VideoTooLarge, check_video_size

    data = decode_base64(value, field, VIDEO_INVALID, "or a data: URL of an MP4",
                         settings.WS_MAX_CLIENT_MESSAGE_BYTES)
    try:
        with av.open(io.BytesIO(data), options=OPEN_OPTIONS) as container:
            if not container.streams.video:
                raise _refuse(VIDEO_INVALID, field, "the file holds no video stream")
            stream = container.streams.video[0]
            frames = stream.frames
            if frames <= 0 and container.duration and stream.average_rate:  # not stated (WebM, MKV): estimated
                frames = int(container.duration / av.time_base * float(stream.average_rate)) + 1
            check_video_size(stream.codec_context.width, stream.codec_context.height, frames,
                             settings.MAX_INPUT_FRAME_PIXELS, settings.MAX_INPUT_VIDEO_PIXELS)
    except VideoTooLarge as exc:
        raise _refuse(TOO_LARGE, field, str(exc)) from None
    except av.error.FFmpegError as exc:
        raise _refuse(VIDEO_INVALID, field, f"video could not be read: {exc}") from None
    return data


# ---------------------------------------------------------------- generate
POSITIVE = {"minimum": 1}  # a JSON Schema bound that pydantic does not check (the model's rules do)


class GenerationParams(BaseModel):
    """What a generation job runs with (`Job.params`): the request with every default filled in."""

    model_config = ConfigDict(extra="forbid")

    model: str
    num_frames: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    fps: float
    image: bool = Field(False, description="a start image was given (stored with the job)")
    # video-to-video: an uploaded source (stored with the job) or a finished job's video
    video: bool = Field(False, description="a source video was uploaded (stored with the job)")
    source_job_id: Optional[str] = None
    strength: Optional[float] = None
    evaluate: Optional[bool] = Field(None, description="attach quality metrics to the finished job")
    # long videos: only those given (absent = a plain single-clip job)
    num_chunks: Optional[int] = None
    duration_s: Optional[float] = None
    overlap: Optional[int] = None
    interpolate: Optional[int] = None
    upscale: Optional[int] = None

    def stored(self) -> dict:
        """The JSON stored in Job.params (and shown as `params`): absent options left out."""
        return self.model_dump(exclude_none=True, exclude=None if self.evaluate else {"evaluate"})

    def long_video(self) -> longvideo.LongVideoOptions:
        return longvideo.LongVideoOptions(num_chunks=self.num_chunks or 1, duration_s=self.duration_s,
                                          overlap=self.overlap, interpolate=self.interpolate or 1,
                                          upscale=self.upscale or 1)

    def final_shape(self) -> dict:
        """num_chunks, num_frames, width, height, fps of the video the job makes."""
        return longvideo.final_shape(self.long_video(), self.num_frames, self.width, self.height, self.fps)

    @property
    def total_steps(self) -> int:
        """Denoising steps over all chunks of a long video."""
        return self.steps * self.final_shape()["num_chunks"]

    def generation_request(self, prompt: str, image: Optional[np.ndarray] = None,
                           video: Optional[np.ndarray] = None):
        from generator.interface import GenerationRequest

        return GenerationRequest(prompt=prompt, num_frames=self.num_frames, width=self.width, height=self.height,
                                 steps=self.steps, guidance_scale=self.guidance_scale, seed=self.seed, fps=self.fps,
                                 image=image, video=video, strength=self.strength)


def _webhook(value, info: ValidationInfo):
    from videoservice.webhooks import url_problem

    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2000:
        raise _refuse(INVALID_FIELD, "webhook", "webhook must be a URL of at most 2000 characters")
    problem = url_problem(value)
    if problem:
        raise _refuse(INVALID_FIELD, "webhook", problem)
    return value


def _webhook_events(value, info: ValidationInfo):
    from videoservice.webhooks import EVENTS

    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v in EVENTS for v in value):
        raise _refuse(INVALID_FIELD, "webhook_events", f"webhook_events must be a non-empty list of {', '.join(EVENTS)}")
    return list(dict.fromkeys(value))


class _Submission(BaseModel):
    """Fields of every job submission: who sees it, its place in the queue, who hears of it."""

    private: Annotated[Flag, Field(description="events go only to the submitter")] = None
    request_id: RequestId = None
    priority: Annotated[Optional[int], Field(ge=-MAX_PRIORITY, le=MAX_PRIORITY,
                                             description="higher runs first (default 0); above 0 for staff "
                                                         "and API tokens allowed to"),
                        _integer(-MAX_PRIORITY, MAX_PRIORITY)] = None
    webhook: Annotated[Optional[str], Field(max_length=2000, description="POSTed the job's JSON on its events, "
                                                                         "signed (signed-in users)"),
                       BeforeValidator(_webhook)] = None
    webhook_events: Annotated[Optional[list[Literal["start", "progress", "completed", "failed", "cancelled"]]],
                              Field(min_length=1, description="which events (default: all but progress)"),
                              BeforeValidator(_webhook_events)] = None


class GenerateRequest(_Submission):
    """A `generate` message, the body of `POST /api/jobs`, the arguments of `manage.py generate`.
    Absent fields take the model's defaults; the model's limits are in `GET /api/models`."""

    model_config = ConfigDict(extra="forbid", title="GenerateRequest", regex_engine="python-re")

    type: Literal["generate"] = Field("generate", description="websocket messages carry it; optional over HTTP")
    # (in each Annotated: the schema's constraints first, then the check that words our refusals; the
    # model's own limits, checked in _resolve, are only documented in the schema: POSITIVE)
    prompt: Annotated[str, Field(min_length=1, max_length=settings.MAX_PROMPT_CHARS, pattern=_NOT_BLANK,
                                 description="what the video shows (at most MAX_PROMPT_CHARS characters)"),
                      _text("MAX_PROMPT_CHARS", required=True)]
    model: Annotated[Optional[str], Field(validate_default=True, description="a name from GET /api/models "
                                                                             "(default: the built-in model)"),
                     BeforeValidator(_model_name)] = None
    num_frames: Annotated[Optional[int], Field(json_schema_extra=POSITIVE, description="the model's frame rule"),
                          _integer()] = None
    width: Annotated[Optional[int], Field(json_schema_extra=POSITIVE, description="a multiple of size_multiple"),
                     _integer()] = None
    height: Annotated[Optional[int], Field(json_schema_extra=POSITIVE, description="a multiple of size_multiple"),
                      _integer()] = None
    steps: Annotated[Optional[int], Field(json_schema_extra=POSITIVE, description="denoising steps, 1..max_steps"),
                     _integer()] = None
    guidance_scale: Annotated[Optional[float], Field(ge=0, le=1000), _number(0.0, 1000.0)] = None
    seed: Annotated[Optional[int], Field(ge=0, le=MAX_SEED, description="random when absent"),
                    _integer(0, MAX_SEED)] = None
    fps: Annotated[Optional[float], Field(ge=MIN_FPS, le=MAX_FPS), _number(MIN_FPS, MAX_FPS)] = None
    image: Annotated[Optional[str], Field(min_length=1, description="start frame: base64 PNG/JPEG or a data: URL "
                                                                    "(image-to-video models only)"),
                     _base64_text("PNG or JPEG")] = None
    video: Annotated[Optional[str], Field(min_length=1, description="video-to-video: the source clip, base64 "
                                                                    "MP4/WebM or a data: URL (models with "
                                                                    "supports_video)"),
                     _base64_text("or a data: URL of an MP4")] = None
    source_job_id: Annotated[Optional[str], Field(description="video-to-video: a finished job's video as the "
                                                              "source (instead of `video`)"),
                             BeforeValidator(_job_id)] = None
    strength: Annotated[Optional[float], Field(ge=0, le=1, description="video-to-video: 0 returns the source, 1 "
                                                                       f"ignores it (default {DEFAULT_STRENGTH})"),
                        _number(0.0, 1.0)] = None
    evaluate: Annotated[Flag, Field(description="attach quality metrics to the finished job")] = None
    num_chunks: Annotated[Optional[int], Field(ge=1, le=longvideo.MAX_CHUNKS,
                                               description="long video: chunks, each continuing the previous one"),
                          _integer(1, longvideo.MAX_CHUNKS)] = None
    duration_s: Annotated[Optional[float], Field(gt=0, le=longvideo.MAX_DURATION_S,
                                                 description="long video: seconds wanted (instead of num_chunks)"),
                          _number(0.0, longvideo.MAX_DURATION_S, low_open=True, unit=" seconds")] = None
    overlap: Annotated[Optional[int], Field(ge=1, le=longvideo.MAX_OVERLAP,
                                            description="frames shared by consecutive chunks (below num_frames)"),
                       _integer(1, longvideo.MAX_OVERLAP)] = None
    interpolate: Annotated[Optional[Literal[longvideo.INTERPOLATE_FACTORS]],
                           Field(description="optical-flow frame interpolation factor (fps multiplies)"),
                           _integer(allowed=longvideo.INTERPOLATE_FACTORS)] = None
    upscale: Annotated[Optional[Literal[longvideo.UPSCALE_FACTORS]],
                       Field(description="per-frame super-resolution factor"),
                       _integer(allowed=longvideo.UPSCALE_FACTORS)] = None

    _params: GenerationParams = PrivateAttr()
    _image: Optional[tuple] = PrivateAttr(None)
    _video: Optional[bytes] = PrivateAttr(None)

    @model_validator(mode="after")
    def _resolve(self):
        """The model's defaults and limits, the long-video rules and the pixel budget."""
        from generator.interface import get_info

        info = get_info(self.model)
        if self.image is not None:
            if not info.supports_image:
                raise _refuse(INVALID_FIELD, "image", f"model {self.model} does not take a start image")
            self._image = decode_image(self.image)
        self._check_source(info)
        num_frames = info.default_frames if self.num_frames is None else self.num_frames
        width = info.default_width if self.width is None else self.width
        height = info.default_height if self.height is None else self.height
        steps = info.default_steps if self.steps is None else self.steps
        guidance = float(info.default_guidance) if self.guidance_scale is None else self.guidance_scale
        fps = float(info.default_fps) if self.fps is None else self.fps
        problems = [(INVALID_FIELD, field, message)
                    for field, message in info.problems(num_frames, width, height, steps, guidance)]
        if problems:
            raise _many(problems)
        params = GenerationParams(
            model=self.model, num_frames=num_frames, width=width, height=height, steps=steps,
            guidance_scale=guidance, fps=fps, image=self.image is not None, evaluate=self.evaluate or None,
            seed=self.seed if self.seed is not None else random.SystemRandom().randrange(0, 2**31),
            num_chunks=self.num_chunks, duration_s=self.duration_s, overlap=self.overlap,
            interpolate=self.interpolate, upscale=self.upscale, video=self.video is not None,
            source_job_id=self.source_job_id,
            strength=(DEFAULT_STRENGTH if self.strength is None else self.strength) if self.has_source else None)
        problems = _long_video_problems(params)
        if problems:
            raise _many(problems)
        self._params = params
        return self

    def _check_source(self, info) -> None:
        """Video-to-video: one source, for a model that takes one, as a single clip."""
        if not self.has_source:
            if self.strength is not None:
                raise _refuse(INVALID_FIELD, "strength", "strength needs a source video (video or source_job_id)")
            return
        field = "video" if self.video is not None else "source_job_id"
        if not info.supports_video:
            raise _refuse(INVALID_FIELD, field, f"model {self.model} does not take a source video")
        if self.video is not None and self.source_job_id is not None:
            raise _refuse(INVALID_FIELD, "video", "give either video or source_job_id, not both")
        if self.image is not None:
            raise _refuse(INVALID_FIELD, "image", "give a start image or a source video, not both")
        long_options = [name for name in ("num_chunks", "duration_s", "interpolate", "upscale")
                        if getattr(self, name) not in (None, 1)]
        if long_options:
            raise _refuse(INVALID_FIELD, long_options[0], f"{long_options[0]} does not apply to video-to-video "
                                                          "(one clip of the source's length)")
        if self.video is not None:
            self._video = decode_video_upload(self.video, field="video")

    @property
    def has_source(self) -> bool:
        return self.video is not None or self.source_job_id is not None

    @property
    def video_bytes(self) -> Optional[bytes]:
        return self._video

    @property
    def params(self) -> GenerationParams:
        return self._params

    @property
    def image_array(self) -> Optional[np.ndarray]:
        return self._image[0] if self._image else None

    @property
    def image_png(self) -> Optional[bytes]:
        return self._image[1] if self._image else None


def _many(problems: list) -> PydanticCustomError:
    """Several model-level problems at once: the first as the error, all in its context."""
    code, field, message = problems[0]
    return PydanticCustomError(code, "{message}", {"message": message, "field": field,
                                                   "problems": [list(p) for p in problems]})


def _long_video_problems(p: GenerationParams) -> list:
    opts = p.long_video()
    problems = []
    if p.overlap is not None and p.overlap >= p.num_frames:
        most = min(longvideo.MAX_OVERLAP, p.num_frames - 1)
        problems.append((INVALID_FIELD, "overlap", f"overlap must be between 1 and {most}"))
    if p.duration_s is not None and p.num_chunks is not None:
        problems.append((INVALID_FIELD, "duration_s", "give either duration_s or num_chunks, not both"))
    if problems:
        return problems
    shape = p.final_shape()
    if p.duration_s is not None and shape["num_chunks"] > longvideo.MAX_CHUNKS:
        ov = opts.overlap_for(p.num_frames)
        longest = longvideo.extended_length(longvideo.MAX_CHUNKS, p.num_frames, ov) / p.fps
        return [(INVALID_FIELD, "duration_s", f"duration_s {p.duration_s:g} needs {shape['num_chunks']} chunks of "
                                              f"{p.num_frames} frames at {p.fps:g} fps; at most "
                                              f"{longvideo.MAX_CHUNKS} chunks ({longest:.1f} s) - raise num_frames "
                                              "or lower duration_s")]
    length_field = "duration_s" if p.duration_s is not None else "num_chunks"
    if shape["num_frames"] > longvideo.MAX_FINAL_FRAMES:
        problems.append((INVALID_FIELD, "interpolate" if opts.interpolate > 1 else length_field,
                         f"the video would have {shape['num_frames']} frames; at most {longvideo.MAX_FINAL_FRAMES}"))
    if max(shape["width"], shape["height"]) > longvideo.MAX_FINAL_SIDE:
        problems.append((INVALID_FIELD, "upscale", f"upscale {opts.upscale} makes a {shape['width']}x"
                                                   f"{shape['height']} video; the longest side may be at most "
                                                   f"{longvideo.MAX_FINAL_SIDE}"))
    budget = settings.MAX_VIDEO_PIXELS
    if not problems and shape["num_frames"] * shape["width"] * shape["height"] > budget:
        field = "upscale" if opts.upscale > 1 else length_field if opts.active else "num_frames"
        problems.append((INVALID_FIELD, field, f"the video would have {shape['num_frames']} frames of "
                                               f"{shape['width']}x{shape['height']} pixels, more than the {budget} "
                                               "pixel budget (MAX_VIDEO_PIXELS)"))
    return problems


# ---------------------------------------------------------------- describe, cancel, ping
class DescribeParams(BaseModel):
    """What a describe job runs with (`Job.params`)."""

    model_config = ConfigDict(extra="forbid")

    question: Optional[str] = None
    source_job_id: Optional[str] = None


def _describer(value, info: ValidationInfo):
    from generator.understanding import DEFAULT_DESCRIBER, DescribeError, describer_names

    value = value or DEFAULT_DESCRIBER
    try:
        known = describer_names()
    except DescribeError as exc:  # the operator's describer configuration is broken
        raise _refuse(UNAVAILABLE, None, str(exc)) from None
    if not isinstance(value, str) or value not in known:
        raise _refuse(UNKNOWN_MODEL, "model", f"unknown describer {str(value)[:100]!r} (known: {', '.join(known)})")
    return value


class DescribeRequest(_Submission):
    """A `describe` message, the body of `POST /api/describe`: caption a video (a finished job's or
    an uploaded one) or answer a question about it."""

    model_config = ConfigDict(extra="forbid", title="DescribeRequest", regex_engine="python-re", json_schema_extra={
        "oneOf": [{"required": [name], "properties": {name: {"type": "string"}}} for name in ("job_id", "video")]})

    type: Literal["describe"] = "describe"
    job_id: Annotated[Optional[str], Field(description="a finished generation you can see (or give `video`)"),
                      BeforeValidator(_job_id)] = None
    video: Annotated[Optional[str], Field(min_length=1, description="base64 of a video file, or a data: URL "
                                                                    "(or give `job_id`)"),
                     _base64_text("or a data: URL of an MP4")] = None
    question: Annotated[Optional[str], Field(max_length=MAX_QUESTION_CHARS, pattern=_NO_NUL,
                                             description="ask this instead of asking for a caption"),
                        _text(max_chars=MAX_QUESTION_CHARS)] = None
    model: Annotated[Optional[str], Field(validate_default=True, description="a describer (default: builtin)"),
                     BeforeValidator(_describer)] = None

    _video: Optional[bytes] = PrivateAttr(None)

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo):
        local = (info.context or {}).get("video")  # manage.py describe reads a file, no base64
        if local is not None and self.job_id is None and self.video is None:
            self._video = local
            return self
        if (self.job_id is None) == (self.video is None):
            code = MISSING_FIELD if self.job_id is None else INVALID_FIELD
            raise _refuse(code, "job_id", "give either job_id (a finished job) or video (base64 MP4), not both")
        if self.video is not None:
            self._video = decode_video_upload(self.video)
        return self

    @property
    def video_bytes(self) -> Optional[bytes]:
        return self._video

    def params(self, source_job_id: Optional[str]) -> DescribeParams:
        return DescribeParams(question=self.question, source_job_id=source_job_id)


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", title="CancelRequest", regex_engine="python-re")

    type: Literal["cancel"] = "cancel"
    job_id: Annotated[Optional[str], Field(description="the job to cancel"), BeforeValidator(_job_id)]
    request_id: RequestId = None

    @model_validator(mode="after")
    def _given(self):
        if self.job_id is None:
            raise _refuse(MISSING_FIELD, "job_id", "job_id is required")
        return self


class PingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", title="PingRequest", regex_engine="python-re")

    type: Literal["ping"] = "ping"
    request_id: RequestId = None


# ---------------------------------------------------------------- events (server -> client)
class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def payload(self) -> dict:
        """The message as sent: its type and the fields it was built with (a field set to None is
        sent as null; one not given is left out, e.g. `kind` of a generation's events)."""
        return {"type": self.type, **self.model_dump(exclude_unset=True)}


class JobEvent(Event):
    job_id: str


class _JobAnnouncement(JobEvent):
    """What a job is: a generation's prompt and params, or a describe job's question and source."""
    kind: Literal["generate", "describe"] = "generate"
    model: str
    private: bool
    prompt: Optional[str] = None
    params: Optional[dict] = None
    question: Optional[str] = None
    source_job_id: Optional[str] = None


class QueuedEvent(_JobAnnouncement):
    """To the submitting connection, once the job is saved and on the queue."""
    type: Literal["queued"] = "queued"
    request_id: Optional[Union[str, int]] = None
    position: int = Field(description="jobs for the same model ahead of this one (queued or running)")


class StartedEvent(_JobAnnouncement):
    type: Literal["started"] = "started"
    worker: str


class ProgressEvent(JobEvent):
    type: Literal["progress"] = "progress"
    kind: Literal["generate", "describe"] = "generate"
    step: int
    total_steps: int
    percent: float
    eta_s: Optional[float] = None
    preview: Optional[str] = Field(None, description="base64 image of the current estimate")
    preview_mime: Optional[str] = None


class GenerationCompleteEvent(JobEvent):
    type: Literal["generation_complete"] = "generation_complete"
    prompt: str
    model: str
    video: Optional[str] = Field(description="base64 MP4; null when larger than INLINE_VIDEO_MAX_BYTES")
    url: str
    mime: str
    num_frames: int
    fps: float
    width: int
    height: int
    seed: int
    elapsed_s: float
    size_bytes: int
    private: bool
    has_audio: bool = Field(False, description="the MP4 carries a sound track (models with has_audio)")
    evaluation: Optional[dict] = None


class VideoChunkEvent(JobEvent):
    """Frames of the video that no later step can change, as fragmented MP4: the init segment (seq 0
    only) followed by every chunk's data, in order, is a playable MP4 of exactly the final frames."""
    type: Literal["video_chunk"] = "video_chunk"
    seq: int = Field(description="0, 1, 2 ... in order")
    first_frame: int
    num_frames: int
    mime: str = Field(description='for Media Source Extensions, e.g. video/mp4; codecs="avc1.64001F"')
    init: Optional[str] = Field(None, description="base64 init segment (ftyp + moov), on seq 0 only")
    data: str = Field(description="base64 fragments (moof + mdat per frame)")


class FailedEvent(JobEvent):
    type: Literal["generation_failed", "description_failed"] = "generation_failed"
    error: str
    retriable: bool = False


class RequeuedEvent(JobEvent):
    type: Literal["requeued"] = "requeued"
    reason: str
    attempts: int
    max_attempts: int


class CancelledEvent(JobEvent):
    type: Literal["cancelled"] = "cancelled"


class CancellingEvent(JobEvent):
    type: Literal["cancelling"] = "cancelling"
    request_id: Optional[Union[str, int]] = None


class DescriptionCompleteEvent(JobEvent):
    model_config = ConfigDict(extra="allow")  # the describer's own result fields
    type: Literal["description_complete"] = "description_complete"
    kind: Literal["describe"] = "describe"
    model: str
    source_job_id: Optional[str] = None
    question: Optional[str] = None
    caption: str
    answer: Optional[str] = None
    elapsed_s: float
    private: bool


class PongEvent(Event):
    type: Literal["pong"] = "pong"
    request_id: Optional[Union[str, int]] = None


class ErrorEvent(Event):
    type: Literal["error"] = "error"
    code: str = Field(description="a stable code (docs/protocol.md)")
    message: str
    field: Optional[str] = None
    request_id: Optional[Union[str, int]] = None


ClientMessage = Annotated[Union[GenerateRequest, DescribeRequest, CancelRequest, PingRequest],
                          Field(discriminator="type")]
ServerMessage = Annotated[Union[QueuedEvent, StartedEvent, ProgressEvent, VideoChunkEvent, GenerationCompleteEvent,
                                FailedEvent, RequeuedEvent, CancelledEvent, CancellingEvent, DescriptionCompleteEvent,
                                PongEvent, ErrorEvent], Field(discriminator="type")]


def websocket_schema() -> dict:
    """JSON Schema of the websocket lobby: what a client may send and what the server sends."""
    client = TypeAdapter(ClientMessage).json_schema(ref_template="#/$defs/{model}")
    server = TypeAdapter(ServerMessage).json_schema(ref_template="#/$defs/{model}")
    defs = {**client.pop("$defs", {}), **server.pop("$defs", {})}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "/api/schema/websocket.json",
        "title": "videoservice websocket lobby (/ws/lobby/)",
        "description": "Every message is one JSON object in a text frame. clientMessage: what a client sends; "
                       "serverMessage: what the server sends. Errors use the codes of docs/protocol.md.",
        "$defs": {**defs, "clientMessage": client, "serverMessage": server},
        "oneOf": [{"$ref": "#/$defs/clientMessage"}, {"$ref": "#/$defs/serverMessage"}],
    }
