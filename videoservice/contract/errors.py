"""Refusals: the stable error codes of docs/protocol.md, `RequestError`, strict JSON parsing, and
`parse(Model, data)`, which turns pydantic's validation errors into our codes and messages."""
from __future__ import annotations

import json
import re
from typing import Any, Optional

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

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
NOT_LIVE = "not_live"
QUEUE_FULL = "queue_full"
UNAVAILABLE = "unavailable"
AUTH_REQUIRED = "auth_required"
CSRF_FAILED = "csrf_failed"
RATE_LIMITED = "rate_limited"
METHOD_NOT_ALLOWED = "method_not_allowed"
INTERNAL_ERROR = "internal_error"
ERROR_CODES = (INVALID_JSON, UNKNOWN_TYPE, INVALID_FIELD, UNKNOWN_FIELD, MISSING_FIELD, UNKNOWN_MODEL,
               IMAGE_INVALID, VIDEO_INVALID, TOO_LARGE, NOT_FOUND, FORBIDDEN, NOT_CANCELLABLE, NOT_LIVE, QUEUE_FULL,
               UNAVAILABLE, AUTH_REQUIRED, CSRF_FAILED, RATE_LIMITED, METHOD_NOT_ALLOWED, INTERNAL_ERROR)
STATUS = {NOT_FOUND: 404, UNAVAILABLE: 503}  # of refusals found while validating (the rest: 400)

MAX_JSON_VALUES = 4096  # a message holds a dozen values; its size is in its strings (prompt, base64)


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
    if isinstance(text, (str, bytes)) and len(text) > MAX_JSON_VALUES:
        sep = (",", "[", "{") if isinstance(text, str) else (b",", b"[", b"{")
        if sum(text.count(c) for c in sep) > MAX_JSON_VALUES:
            raise RequestError(INVALID_JSON, f"message holds more than {MAX_JSON_VALUES} JSON values")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, TypeError, RecursionError) as exc:
        raise RequestError(INVALID_JSON, f"message is not valid JSON: {exc}") from None


def refuse(code: str, field: Optional[str], message: str) -> PydanticCustomError:
    """A refusal raised inside validation (parse turns it into a RequestError)."""
    # the message travels in the context: a template would treat braces in user input as placeholders
    return PydanticCustomError(code, "{message}", {"message": message, "field": field})


def refuse_all(problems: list) -> PydanticCustomError:
    """Several model-level problems at once: the first as the error, all in its context."""
    code, field, message = problems[0]
    return PydanticCustomError(code, "{message}", {"message": message, "field": field,
                                                   "problems": [list(p) for p in problems]})


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
