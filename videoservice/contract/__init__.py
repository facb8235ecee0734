"""The job contract: one typed definition (pydantic 2) of every request, every stored parameter set
and every event, read by the websocket lobby, the HTTP API, the CLI commands and the worker alike.

- `errors`: the stable codes of docs/protocol.md, `RequestError`, `parse(Model, data)` (validates a
  decoded JSON object; every problem found is in `.problems`), strict `parse_json`.
- `fields`: field types whose bounds are declared once, for the JSON Schema and our refusal alike.
- `media`: base64 uploads -> a start image's pixels, a source video's bytes.
- `requests`: what clients send (`GenerateRequest`, `DescribeRequest`, `CancelRequest`,
  `PingRequest`) and what a job runs with (`GenerationParams`, `DescribeParams`: `Job.params`).
- `events`: what the server sends (one model per `type`), the job body of the HTTP API and
  webhooks (`JobBody`), and `websocket_schema()` (/api/schema/websocket.json). The HTTP API's
  OpenAPI document is generated from these models too (videoservice/api.py).

Everything is importable from here: `from videoservice.contract import GenerateRequest, parse`.
"""
from videoservice.contract.errors import (
                                          AUTH_REQUIRED,
                                          CSRF_FAILED,
                                          ERROR_CODES,
                                          FORBIDDEN,
                                          IMAGE_INVALID,
                                          INTERNAL_ERROR,
                                          INVALID_FIELD,
                                          INVALID_JSON,
                                          METHOD_NOT_ALLOWED,
                                          MISSING_FIELD,
                                          NOT_CANCELLABLE,
                                          NOT_FOUND,
                                          NOT_LIVE,
                                          QUEUE_FULL,
                                          RATE_LIMITED,
                                          TOO_LARGE,
                                          UNAVAILABLE,
                                          UNKNOWN_FIELD,
                                          UNKNOWN_MODEL,
                                          UNKNOWN_TYPE,
                                          VIDEO_INVALID,
                                          RequestError,
                                          parse,
                                          parse_json,
)
from videoservice.contract.events import (
                                          CancelledEvent,
                                          CancellingEvent,
                                          DescriptionCompleteEvent,
                                          ErrorEvent,
                                          Event,
                                          FailedEvent,
                                          GenerationCompleteEvent,
                                          JobBody,
                                          JobEvent,
                                          LiveStatusEvent,
                                          PongEvent,
                                          ProgressEvent,
                                          QueuedEvent,
                                          RequeuedEvent,
                                          ServerMessage,
                                          StartedEvent,
                                          SteeredEvent,
                                          SteeringEvent,
                                          StoppingEvent,
                                          TimelineEntry,
                                          VideoChunkEvent,
                                          websocket_schema,
)
from videoservice.contract.fields import request_id_of
from videoservice.contract.requests import (
                                          CancelRequest,
                                          ClientMessage,
                                          DescribeParams,
                                          DescribeRequest,
                                          GenerateRequest,
                                          GenerationParams,
                                          PingRequest,
                                          SteerBody,
                                          SteerRequest,
                                          StopRequest,
)

__all__ = [
    "AUTH_REQUIRED", "CSRF_FAILED", "ERROR_CODES", "FORBIDDEN", "IMAGE_INVALID", "INTERNAL_ERROR", "INVALID_FIELD",
    "INVALID_JSON", "METHOD_NOT_ALLOWED", "MISSING_FIELD", "NOT_CANCELLABLE", "NOT_FOUND", "NOT_LIVE", "QUEUE_FULL",
    "RATE_LIMITED", "TOO_LARGE", "UNAVAILABLE", "UNKNOWN_FIELD", "UNKNOWN_MODEL", "UNKNOWN_TYPE", "VIDEO_INVALID",
    "RequestError", "parse", "parse_json",
    "CancelledEvent", "CancellingEvent", "DescriptionCompleteEvent", "ErrorEvent", "Event", "FailedEvent",
    "GenerationCompleteEvent", "JobBody", "JobEvent", "LiveStatusEvent", "PongEvent", "ProgressEvent", "QueuedEvent",
    "RequeuedEvent",
    "ServerMessage", "StartedEvent", "SteeredEvent", "SteeringEvent", "StoppingEvent", "TimelineEntry",
    "VideoChunkEvent", "websocket_schema",
    "request_id_of", "CancelRequest", "ClientMessage", "DescribeParams", "DescribeRequest", "GenerateRequest",
    "GenerationParams", "PingRequest", "SteerBody", "SteerRequest", "StopRequest",
]
