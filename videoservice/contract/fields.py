"""Field types whose rule is declared once: each helper takes the bounds (or allowed values, or a
length) and returns an `Annotated` type that carries them both into the JSON Schema (pydantic's
constraints) and into the check that words our refusal (`must be between 0 and 4294967295`). The
check runs first, so a client sees our code and message, never pydantic's."""
from __future__ import annotations

import math
import uuid
from typing import Annotated, Any, Literal, Optional, Union

from django.conf import settings
from pydantic import BeforeValidator, Field, ValidationInfo
from pydantic_core import PydanticCustomError

from videoservice.contract.errors import INVALID_FIELD, MISSING_FIELD, NOT_FOUND, refuse

MAX_REQUEST_ID_CHARS = 100
# JSON Schema patterns of our text rules: no NUL (lone surrogates are refused too, but JSON Schema
# tools cannot express them), and for required text some non-space character
NO_NUL = "^[^\\x00]*$"
NOT_BLANK = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"
POSITIVE = {"minimum": 1}  # a bound for the JSON Schema only: the model's own rules check it (ModelInfo)


def _schema(description: Optional[str], **constraints) -> Any:
    return Field(description=description, **{k: v for k, v in constraints.items() if v is not None})


def integer(lo: Optional[int] = None, hi: Optional[int] = None, *, allowed: Optional[tuple] = None,
            description: Optional[str] = None, schema: Optional[dict] = None):
    """An optional integer in [lo, hi], or one of `allowed` (floats with no fraction are taken)."""
    def check(value, info: ValidationInfo):
        name = info.field_name
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and (not math.isfinite(value) or not value.is_integer())):
            raise refuse(INVALID_FIELD, name, f"{name} must be an integer")
        value = int(value)
        if allowed is not None and value not in allowed:
            raise refuse(INVALID_FIELD, name, f"{name} must be one of {', '.join(map(str, allowed))}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise refuse(INVALID_FIELD, name, f"{name} must be between {lo} and {hi}")
        return value
    kind = Optional[Literal[allowed]] if allowed is not None else Optional[int]
    return Annotated[kind, _schema(description, ge=lo, le=hi, json_schema_extra=schema), BeforeValidator(check)]


def number(lo: float, hi: float, *, low_open: bool = False, unit: str = "", description: Optional[str] = None):
    """An optional finite number in [lo, hi] (or (lo, hi] with low_open)."""
    def check(value, info: ValidationInfo):
        name = info.field_name
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise refuse(INVALID_FIELD, name, f"{name} must be a finite number")
        if (value <= lo if low_open else value < lo) or value > hi:
            rule = f"more than {lo:g} and at most {hi:g}" if low_open else f"between {lo:g} and {hi:g}"
            raise refuse(INVALID_FIELD, name, f"{name} must be {rule}{unit}")
        return float(value)
    bounds = {"gt": lo} if low_open else {"ge": lo}
    return Annotated[Optional[float], _schema(description, le=hi, **bounds), BeforeValidator(check)]


def utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text(max_chars: Optional[int] = None, *, setting: Optional[str] = None, required: bool = False,
         description: Optional[str] = None):
    """A string of at most `max_chars` (or the Django setting named `setting`, read on each check),
    no NUL, valid UTF-8, stripped; a required one must not be blank."""
    def check(value, info: ValidationInfo):
        name = info.field_name
        limit = getattr(settings, setting) if setting else max_chars
        if value is None:
            if required:
                raise refuse(MISSING_FIELD, name, f"{name} is required")
            return None
        if not isinstance(value, str):
            raise refuse(INVALID_FIELD, name, f"{name} must be a string")
        if len(value) > limit:
            raise refuse(INVALID_FIELD, name, f"{name} is longer than {limit} characters")
        if "\x00" in value:
            raise refuse(INVALID_FIELD, name, f"{name} must not contain NUL characters")
        if not utf8(value):
            raise refuse(INVALID_FIELD, name, f"{name} must be valid Unicode (no lone surrogates)")
        value = value.strip()
        if required and not value:
            raise refuse(INVALID_FIELD, name, f"{name} must not be empty")
        return value or None
    schema = _schema(description, max_length=getattr(settings, setting) if setting else max_chars,
                     min_length=1 if required else None, pattern=NOT_BLANK if required else NO_NUL)
    return Annotated[str if required else Optional[str], schema, BeforeValidator(check)]


def base64_text(what: str, description: Optional[str] = None, media_type: Optional[str] = None):
    """An optional non-empty string holding base64 (decoded later: videoservice/contract/media.py);
    the schema says so (contentEncoding, contentMediaType: JSON Schema's annotations for it)."""
    def check(value, info: ValidationInfo):
        if value is not None and (not isinstance(value, str) or not value):
            raise refuse(INVALID_FIELD, info.field_name, f"{info.field_name} must be a base64 string ({what})")
        return value
    content = {"contentEncoding": "base64", **({"contentMediaType": media_type} if media_type else {})}
    return Annotated[Optional[str], _schema(description, min_length=1, json_schema_extra=content),
                     BeforeValidator(check)]


def _job_id(value, info: ValidationInfo):
    if value is None:
        return None
    if not isinstance(value, str):
        raise refuse(INVALID_FIELD, info.field_name, f"{info.field_name} must be a string")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise refuse(NOT_FOUND, info.field_name, "no such job") from None


def job_reference(description: str):
    """An optional job id (a UUID; anything else is `not_found`, as a job that does not exist is)."""
    return Annotated[Optional[str], _schema(description), BeforeValidator(_job_id)]


def _boolean(value, info: ValidationInfo):
    if value is not None and not isinstance(value, bool):
        raise refuse(INVALID_FIELD, info.field_name, f"{info.field_name} must be true or false")
    return value


def flag(description: str):
    """An optional boolean (no 0/1 or "true": JSON has booleans)."""
    return Annotated[Optional[bool], _schema(description), BeforeValidator(_boolean)]


def _request_id(value, info: Optional[ValidationInfo]):
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_REQUEST_ID_CHARS and utf8(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise refuse(INVALID_FIELD, "request_id", f"request_id must be a string of at most {MAX_REQUEST_ID_CHARS} "
                                              "characters or an integer")


def request_id_of(data: Any) -> Any:
    """The request_id of a message that may be invalid, to echo in its error (None if unusable)."""
    if not isinstance(data, dict):
        return None
    try:
        return _request_id(data.get("request_id"), None)
    except PydanticCustomError:
        return None


RequestId = Annotated[Optional[Union[Annotated[str, Field(max_length=MAX_REQUEST_ID_CHARS, pattern=NO_NUL)], int]],
                      Field(description="echoed in the answer (`queued` / `error`)"), BeforeValidator(_request_id)]
