"""What the server sends: one model per websocket event `type` (`events.publish` sends them), the
job body (`JobBody`: `GET /api/jobs/<id>`'s `job` and a webhook's `job`, one schema for both), and
`websocket_schema()`, the JSON Schema of every websocket message (/api/schema/websocket.json)."""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from videoservice.contract.requests import ClientMessage

JobKind = Literal["generate", "describe"]


class TimelineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_frame: int
    prompt: str


class JobBody(BaseModel):
    """A job as the HTTP API shows it (`job` in its answers) and as webhooks send it (`Job.as_dict`)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    job_id: str
    kind: JobKind
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    prompt: str
    model: str
    params: dict
    private: bool
    mine: bool
    progress: float
    step: int
    total_steps: int
    error: Optional[str]
    worker: Optional[str]
    created_at: Optional[str]
    started_at: Optional[str]
    finished_at: Optional[str]
    url: Optional[str]
    mime: Optional[str]
    size_bytes: Optional[int]
    fps: Optional[float]
    num_frames: Optional[int]
    width: Optional[int]
    height: Optional[int]
    seed: Optional[int]
    elapsed_s: Optional[float]
    result: Optional[dict]
    queue: str
    priority: int
    retry_of: Optional[str]
    has_audio: bool
    hdr_url: Optional[str] = Field(None, description="HDR models: the HDR10 master (HEVC Main 10, PQ, BT.2020) "
                                                     "beside the SDR MP4 at `url`")
    live: bool = Field(False, description="a live job: endless video, steered while it plays")
    timeline: Optional[list["TimelineEntry"]] = Field(None, description="live jobs: the prompt in force from each "
                                                                        "frame on")


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
    kind: JobKind = "generate"
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
    kind: JobKind = "generate"
    step: int
    total_steps: int
    percent: float
    eta_s: Optional[float] = None
    preview: Optional[str] = Field(None, description="base64 image of the current estimate")
    preview_mime: Optional[str] = None


class SteeringEvent(JobEvent):
    """To the steering connection: the new prompt is taken (it shows with `steered`)."""
    type: Literal["steering"] = "steering"
    prompt: str
    request_id: Optional[Union[str, int]] = None


class SteeredEvent(JobEvent):
    """To the job's audience, when the first frame made under a new prompt is streamed."""
    type: Literal["steered"] = "steered"
    prompt: str
    from_frame: int = Field(description="the first frame made under it (frame numbers of video_chunk)")


class StoppingEvent(JobEvent):
    """To the stopping connection: the live job ends after its current chunk (generation_complete follows)."""
    type: Literal["stopping"] = "stopping"
    request_id: Optional[Union[str, int]] = None


class LiveStatusEvent(JobEvent):
    """A live job's pace, every LIVE_STATUS_EVERY chunks."""
    type: Literal["live_status"] = "live_status"
    realtime_factor: float = Field(description="seconds of video made per wall-clock second since it started")
    lead_s: float = Field(description="seconds of video made ahead of real-time playback from the first chunk")
    frames: int = Field(description="frames streamed so far")
    chunk_s: Optional[float] = Field(None, description="seconds the model took to make the last chunk")
    prompt: str = Field(description="the prompt the newest streamed frames were made under (named after its "
                                    "`steered`)")


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
    hdr_url: Optional[str] = Field(None, description="HDR models: the HDR10 master (HEVC Main 10, PQ, BT.2020) "
                                                     "beside the SDR MP4 at `url`")
    evaluation: Optional[dict] = None
    timeline: Optional[list[TimelineEntry]] = Field(None, description="live jobs: the prompt in force from "
                                                                       "each frame on")


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


ServerMessage = Annotated[Union[QueuedEvent, StartedEvent, ProgressEvent, VideoChunkEvent, GenerationCompleteEvent,
                                FailedEvent, RequeuedEvent, CancelledEvent, CancellingEvent, DescriptionCompleteEvent,
                                SteeringEvent, SteeredEvent, StoppingEvent, LiveStatusEvent,
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
