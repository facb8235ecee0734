"""What clients send: `GenerateRequest` (websocket `generate`, `POST /api/jobs`, `manage.py
generate`), `DescribeRequest` (`describe`, `POST /api/describe`, `manage.py describe`),
`CancelRequest`, `PingRequest`; and what a job runs with, `GenerationParams` / `DescribeParams`
(`Job.params`: the request with the model's defaults filled in, from its `ModelInfo`, the one source
of defaults and limits; the worker reads them back through the same models)."""
import random
from typing import Annotated, Literal, Optional, Union

import numpy as np
from django.conf import settings
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationInfo, model_validator

from generator import shape
from generator.interface import DEFAULT_MODEL, DEFAULT_STRENGTH, GenerationRequest, get_info, list_models
from generator.understanding import DEFAULT_DESCRIBER, DescribeError, describer_names
from videoservice.contract.errors import INVALID_FIELD, MISSING_FIELD, UNAVAILABLE, UNKNOWN_MODEL, refuse, refuse_all
from videoservice.contract.fields import POSITIVE, RequestId, base64_text, flag, integer, job_reference, number, text
from videoservice.contract.media import decode_image, decode_video_upload
from videoservice.webhooks import EVENTS, url_problem

MAX_SEED = 2**32 - 1
MIN_FPS, MAX_FPS = 1.0, 60.0
MAX_GUIDANCE = 1000.0
MAX_QUESTION_CHARS = 500
MAX_WEBHOOK_CHARS = 2000
MAX_PRIORITY = 10
MP4_TEXT = "or a data: URL of an MP4"


# ---------------------------------------------------------------- generate
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
    # live jobs: endless video until stopped or max_duration_s (worker/live.py)
    live: Optional[bool] = None
    max_duration_s: Optional[float] = None

    def stored(self) -> dict:
        """The JSON stored in Job.params (and shown as `params`): absent options left out."""
        return self.model_dump(exclude_none=True, exclude=None if self.evaluate else {"evaluate"})

    def long_video(self) -> shape.LongVideoOptions:
        return shape.LongVideoOptions(num_chunks=self.num_chunks or 1, duration_s=self.duration_s,
                                      overlap=self.overlap, interpolate=self.interpolate or 1,
                                      upscale=self.upscale or 1)

    def final_shape(self) -> dict:
        """num_chunks, num_frames, width, height, fps of the video the job makes."""
        return shape.final_shape(self.long_video(), self.num_frames, self.width, self.height, self.fps)

    @property
    def total_steps(self) -> int:
        """Denoising steps over all chunks of a long video (a live job's are not known in advance: one chunk's)."""
        return self.steps * (1 if self.live else self.final_shape()["num_chunks"])

    def generation_request(self, prompt: str, image: Optional[np.ndarray] = None,
                           video: Optional[np.ndarray] = None) -> GenerationRequest:
        return GenerationRequest(prompt=prompt, num_frames=self.num_frames, width=self.width, height=self.height,
                                 steps=self.steps, guidance_scale=self.guidance_scale, seed=self.seed, fps=self.fps,
                                 image=image, video=video, strength=self.strength)


def _model_name(value, info: ValidationInfo):
    if value is None:
        return DEFAULT_MODEL
    if not isinstance(value, str) or not value:
        raise refuse(INVALID_FIELD, "model", "model must be a model name (GET /api/models)")
    if get_info(value) is None:
        known = ", ".join(sorted(model.name for model in list_models()))
        raise refuse(UNKNOWN_MODEL, "model", f"unknown model {value[:100]!r}; known models: {known}")
    return value


def _webhook(value, info: ValidationInfo):
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_WEBHOOK_CHARS:
        raise refuse(INVALID_FIELD, "webhook", f"webhook must be a URL of at most {MAX_WEBHOOK_CHARS} characters")
    problem = url_problem(value)
    if problem:
        raise refuse(INVALID_FIELD, "webhook", problem)
    return value


def _webhook_events(value, info: ValidationInfo):
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v in EVENTS for v in value):
        raise refuse(INVALID_FIELD, "webhook_events", f"webhook_events must be a non-empty list of {', '.join(EVENTS)}")
    return list(dict.fromkeys(value))


class _Submission(BaseModel):
    """Fields of every job submission: who sees it, its place in the queue, who hears of it."""

    private: flag("events go only to the submitter") = None
    request_id: RequestId = None
    priority: integer(-MAX_PRIORITY, MAX_PRIORITY, description="higher runs first (default 0); above 0 for staff "
                                                               "and API tokens allowed to") = None
    webhook: Annotated[Optional[str], Field(max_length=MAX_WEBHOOK_CHARS, description="POSTed the job's JSON on its "
                                                                                      "events, signed (signed-in "
                                                                                      "users)"),
                       BeforeValidator(_webhook)] = None
    webhook_events: Annotated[Optional[list[Literal[EVENTS]]],
                              Field(min_length=1, description="which events (default: all but progress)"),
                              BeforeValidator(_webhook_events)] = None


class GenerateRequest(_Submission):
    """A `generate` message, the body of `POST /api/jobs`, the arguments of `manage.py generate`.
    Absent fields take the model's defaults; the model's limits are in `GET /api/models`."""

    model_config = ConfigDict(extra="forbid", title="GenerateRequest", regex_engine="python-re")

    type: Literal["generate"] = Field("generate", description="websocket messages carry it; optional over HTTP")
    prompt: text(setting="MAX_PROMPT_CHARS", required=True,
                 description="what the video shows (at most MAX_PROMPT_CHARS characters)")
    model: Annotated[Optional[str], Field(validate_default=True, description="a name from GET /api/models "
                                                                             "(default: the built-in model)"),
                     BeforeValidator(_model_name)] = None
    # the model's own limits, checked in _resolve, are only documented in the schema (POSITIVE)
    num_frames: integer(schema=POSITIVE, description="the model's frame rule") = None
    width: integer(schema=POSITIVE, description="a multiple of size_multiple") = None
    height: integer(schema=POSITIVE, description="a multiple of size_multiple") = None
    steps: integer(schema=POSITIVE, description="denoising steps, 1..max_steps") = None
    guidance_scale: number(0.0, MAX_GUIDANCE) = None
    seed: integer(0, MAX_SEED, description="random when absent") = None
    fps: number(MIN_FPS, MAX_FPS) = None
    image: base64_text("PNG or JPEG", "start frame: base64 PNG/JPEG or a data: URL (image-to-video models only)",
                       "image/*") = None
    video: base64_text(MP4_TEXT, "video-to-video: the source clip, base64 MP4/WebM or a data: URL (models with "
                                 "supports_video; frames capped by MAX_INPUT_FRAME_PIXELS and MAX_INPUT_VIDEO_PIXELS)",
                       "video/*") = None
    source_job_id: job_reference("video-to-video: a finished job's video as the source (instead of `video`)") = None
    strength: number(0.0, 1.0, description="video-to-video: 0 returns the source, 1 ignores it "
                                           f"(default {DEFAULT_STRENGTH})") = None
    evaluate: flag("attach quality metrics to the finished job") = None
    num_chunks: integer(1, shape.MAX_CHUNKS, description="long video: chunks, each continuing the previous one") = None
    duration_s: number(0.0, shape.MAX_DURATION_S, low_open=True, unit=" seconds",
                       description="long video: seconds wanted (instead of num_chunks); at most what 8 chunks of "
                                   "num_frames at fps make (docs/protocol.md, rules across fields)") = None
    overlap: integer(1, shape.MAX_OVERLAP, description="frames shared by consecutive chunks (below num_frames)") = None
    interpolate: integer(allowed=shape.INTERPOLATE_FACTORS,
                         description="optical-flow frame interpolation factor (fps multiplies)") = None
    upscale: integer(allowed=shape.UPSCALE_FACTORS, description="per-frame super-resolution factor") = None
    live: flag("live video: generated chunk after chunk while it streams, until `stop`, max_duration_s, a cancel or "
               "LIVE_IDLE_S without viewers; its owner steers it with `steer`") = None
    max_duration_s: number(0.0, settings.LIVE_MAX_DURATION_S, low_open=True, unit=" seconds",
                           description="live video: seconds of video at most (default LIVE_DEFAULT_DURATION_S)") = None

    _params: GenerationParams = PrivateAttr()
    _image: Optional[tuple] = PrivateAttr(None)
    _video: Optional[bytes] = PrivateAttr(None)

    @model_validator(mode="after")
    def _resolve(self):
        """The model's defaults and limits, the long-video rules and the pixel budget."""
        info = get_info(self.model)
        if self.image is not None:
            if not info.supports_image:
                raise refuse(INVALID_FIELD, "image", f"model {self.model} does not take a start image")
            self._image = decode_image(self.image)
        self._check_source(info)
        self._check_required_inputs(info)
        num_frames = info.default_frames if self.num_frames is None else self.num_frames
        width = info.default_width if self.width is None else self.width
        height = info.default_height if self.height is None else self.height
        steps = info.default_steps if self.steps is None else self.steps
        guidance = float(info.default_guidance) if self.guidance_scale is None else self.guidance_scale
        fps = float(info.default_fps) if self.fps is None else self.fps
        problems = [(INVALID_FIELD, field, message)
                    for field, message in info.problems(num_frames, width, height, steps, guidance)]
        if problems:
            raise refuse_all(problems)
        params = GenerationParams(
            model=self.model, num_frames=num_frames, width=width, height=height, steps=steps,
            guidance_scale=guidance, fps=fps, image=self.image is not None, evaluate=self.evaluate or None,
            seed=self.seed if self.seed is not None else random.SystemRandom().randrange(0, 2**31),
            num_chunks=self.num_chunks, duration_s=self.duration_s, overlap=self.overlap,
            interpolate=self.interpolate, upscale=self.upscale, video=self.video is not None,
            source_job_id=self.source_job_id,
            strength=(DEFAULT_STRENGTH if self.strength is None else self.strength) if self.has_source else None,
            **self._live_params())
        problems = _long_video_problems(params)
        if problems:
            raise refuse_all(problems)
        self._params = params
        return self

    def _live_params(self) -> dict:
        """A live job's fields; a clip's options that do not apply to endless video are refused."""
        if not self.live:
            if self.max_duration_s is not None:
                raise refuse(INVALID_FIELD, "max_duration_s", "max_duration_s applies to live jobs (live: true)")
            return {}
        fixed = [name for name in ("num_chunks", "duration_s", "overlap", "interpolate", "upscale", "video",
                                   "source_job_id", "evaluate") if getattr(self, name) not in (None, False)]
        if fixed:
            raise refuse(INVALID_FIELD, fixed[0], f"{fixed[0]} does not apply to a live job (endless video, chunk "
                                                  "after chunk)")
        return {"live": True, "max_duration_s": self.max_duration_s or settings.LIVE_DEFAULT_DURATION_S}

    def _check_required_inputs(self, info) -> None:
        """A model that cannot make a video from a prompt alone says what it needs (GET /api/models extra)."""
        if info.extra.get("requires_image") and self.image is None:
            raise refuse(INVALID_FIELD, "image", f"model {self.model} needs a start image (image)")
        if info.extra.get("requires_video") and not self.has_source:
            raise refuse(INVALID_FIELD, "video", f"model {self.model} needs a source video (video or source_job_id)")

    def _check_source(self, info) -> None:
        """Video-to-video: one source, for a model that takes one, as a single clip."""
        if not self.has_source:
            if self.strength is not None:
                raise refuse(INVALID_FIELD, "strength", "strength needs a source video (video or source_job_id)")
            return
        field = "video" if self.video is not None else "source_job_id"
        if not info.supports_video:
            raise refuse(INVALID_FIELD, field, f"model {self.model} does not take a source video")
        if self.video is not None and self.source_job_id is not None:
            raise refuse(INVALID_FIELD, "video", "give either video or source_job_id, not both")
        if self.image is not None and "animate" not in info.extra.get("tasks", ()):
            raise refuse(INVALID_FIELD, "image", "give a start image or a source video, not both (only a model "
                                                 "that animates an image with a video takes both)")
        long_options = [name for name in ("num_chunks", "duration_s", "interpolate", "upscale")
                        if getattr(self, name) not in (None, 1)]
        if long_options:
            raise refuse(INVALID_FIELD, long_options[0], f"{long_options[0]} does not apply to video-to-video "
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


def _long_video_problems(p: GenerationParams) -> list:
    """The rules that join fields: overlap below num_frames, one length option, and the caps on the
    final video (chunks, frames, longest side, the MAX_VIDEO_PIXELS budget)."""
    opts = p.long_video()
    problems = []
    if p.overlap is not None and p.overlap >= p.num_frames:
        most = min(shape.MAX_OVERLAP, p.num_frames - 1)
        problems.append((INVALID_FIELD, "overlap", f"overlap must be between 1 and {most}"))
    if p.duration_s is not None and p.num_chunks is not None:
        problems.append((INVALID_FIELD, "duration_s", "give either duration_s or num_chunks, not both"))
    if problems:
        return problems
    final = p.final_shape()
    if p.duration_s is not None and final["num_chunks"] > shape.MAX_CHUNKS:
        ov = opts.overlap_for(p.num_frames)
        longest = shape.extended_length(shape.MAX_CHUNKS, p.num_frames, ov) / p.fps
        return [(INVALID_FIELD, "duration_s", f"duration_s {p.duration_s:g} needs {final['num_chunks']} chunks of "
                                              f"{p.num_frames} frames at {p.fps:g} fps; at most "
                                              f"{shape.MAX_CHUNKS} chunks ({longest:.1f} s) - raise num_frames "
                                              "or lower duration_s")]
    length_field = "duration_s" if p.duration_s is not None else "num_chunks"
    if final["num_frames"] > shape.MAX_FINAL_FRAMES:
        problems.append((INVALID_FIELD, "interpolate" if opts.interpolate > 1 else length_field,
                         f"the video would have {final['num_frames']} frames; at most {shape.MAX_FINAL_FRAMES}"))
    if max(final["width"], final["height"]) > shape.MAX_FINAL_SIDE:
        problems.append((INVALID_FIELD, "upscale", f"upscale {opts.upscale} makes a {final['width']}x"
                                                   f"{final['height']} video; the longest side may be at most "
                                                   f"{shape.MAX_FINAL_SIDE}"))
    budget = settings.MAX_VIDEO_PIXELS
    if not problems and final["num_frames"] * final["width"] * final["height"] > budget:
        field = "upscale" if opts.upscale > 1 else length_field if opts.active else "num_frames"
        problems.append((INVALID_FIELD, field, f"the video would have {final['num_frames']} frames of "
                                               f"{final['width']}x{final['height']} pixels, more than the {budget} "
                                               "pixel budget (MAX_VIDEO_PIXELS)"))
    return problems


# ---------------------------------------------------------------- describe, cancel, ping
class DescribeParams(BaseModel):
    """What a describe job runs with (`Job.params`)."""

    model_config = ConfigDict(extra="forbid")

    question: Optional[str] = None
    source_job_id: Optional[str] = None


def _describer(value, info: ValidationInfo):
    value = value or DEFAULT_DESCRIBER
    try:
        known = describer_names()
    except DescribeError as exc:  # the operator's describer configuration is broken
        raise refuse(UNAVAILABLE, None, str(exc)) from None
    if not isinstance(value, str) or value not in known:
        raise refuse(UNKNOWN_MODEL, "model", f"unknown describer {str(value)[:100]!r} (known: {', '.join(known)})")
    return value


class DescribeRequest(_Submission):
    """A `describe` message, the body of `POST /api/describe`: caption a video (a finished job's or
    an uploaded one) or answer a question about it."""

    model_config = ConfigDict(extra="forbid", title="DescribeRequest", regex_engine="python-re", json_schema_extra={
        "oneOf": [{"required": [name], "properties": {name: {"type": "string"}}} for name in ("job_id", "video")]})

    type: Literal["describe"] = "describe"
    job_id: job_reference("a finished generation you can see (or give `video`)") = None
    video: base64_text(MP4_TEXT, "base64 of a video file, or a data: URL (or give `job_id`)", "video/*") = None
    question: text(MAX_QUESTION_CHARS, description="ask this instead of asking for a caption") = None
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
            raise refuse(code, "job_id", "give either job_id (a finished job) or video (base64 MP4), not both")
        if self.video is not None:
            self._video = decode_video_upload(self.video)
        return self

    @property
    def video_bytes(self) -> Optional[bytes]:
        return self._video

    def params(self, source_job_id: Optional[str]) -> DescribeParams:
        return DescribeParams(question=self.question, source_job_id=source_job_id)


class _JobCommand(BaseModel):
    """A message about one job (cancel, steer, stop): its job_id is required."""

    @model_validator(mode="after")
    def _given(self):
        if self.job_id is None:
            raise refuse(MISSING_FIELD, "job_id", "job_id is required")
        return self


class CancelRequest(_JobCommand):
    model_config = ConfigDict(extra="forbid", title="CancelRequest", regex_engine="python-re")

    type: Literal["cancel"] = "cancel"
    job_id: job_reference("the job to cancel")
    request_id: RequestId = None


class SteerBody(BaseModel):
    """A live job's new prompt (its owner or staff): it applies from the next chunk not yet started
    (`POST /api/jobs/<id>/steer`; the websocket's `steer` adds the job)."""
    model_config = ConfigDict(extra="forbid", title="SteerBody", regex_engine="python-re")

    prompt: text(setting="MAX_PROMPT_CHARS", required=True, description="the prompt from the next chunk on")


class SteerRequest(SteerBody, _JobCommand):
    model_config = ConfigDict(extra="forbid", title="SteerRequest", regex_engine="python-re")

    type: Literal["steer"] = "steer"
    job_id: job_reference("the live job to steer")
    request_id: RequestId = None


class StopRequest(CancelRequest):
    """End a live job gracefully: the frames made so far become its video (cancel discards them)."""
    model_config = ConfigDict(extra="forbid", title="StopRequest", regex_engine="python-re")

    type: Literal["stop"] = "stop"
    job_id: job_reference("the live job to stop")


class PingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", title="PingRequest", regex_engine="python-re")

    type: Literal["ping"] = "ping"
    request_id: RequestId = None


ClientMessage = Annotated[Union[GenerateRequest, DescribeRequest, CancelRequest, SteerRequest, StopRequest,
                                PingRequest],
                          Field(discriminator="type")]
