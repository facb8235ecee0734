"""Property-based fuzzing (hypothesis) of the typed contract (videoservice/contract/) that the
websocket, the HTTP API, the CLI and the worker share: for any JSON value, `parse(GenerateRequest, ...)`
and `parse_json` either accept it or raise `RequestError` with a documented code; no other exception
escapes (one would become `internal_error`). What is accepted respects the limits, and its stored
params read back through `GenerationParams` as the worker reads them. Deterministic (derandomize):
the same examples on every run. tests/test_fuzz.py sends such messages to the real service."""
from __future__ import annotations

import base64
import io
import json
import math
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from django.conf import settings
from PIL import Image

from videoservice.contract import ERROR_CODES, GenerateRequest, GenerationParams, RequestError, parse, parse_json

GENERATE_FIELDS = set(GenerateRequest.model_fields)


def validate_generate(data):
    return parse(GenerateRequest, data)

PROFILE = dict(max_examples=400, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=False) | st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
near_limits = (st.integers(min_value=-3, max_value=1100) | st.sampled_from([0, 1, 7, 8, 9, 16, 17, 31, 32, 33, 63, 64,
                                                                               65, 512, 513, 2**32 - 1, 2**32])
               | st.floats(min_value=-2, max_value=130, allow_nan=False))


def png_b64(size=(16, 16)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


PNG = base64.b64decode(png_b64())


@st.composite
def mutated_png(draw) -> str:
    raw = bytearray(PNG)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(raw) - 1))
        raw[pos] = draw(st.integers(0, 255))
    cut = draw(st.integers(8, len(raw)))
    return base64.b64encode(bytes(raw[:cut])).decode()


image_values = (json_values | st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()) | mutated_png()
                | st.just(png_b64()) | st.text(alphabet=string.ascii_letters + string.digits + "+/=", max_size=100))
field_values = {name: (near_limits | json_values) for name in GENERATE_FIELDS - {"type", "prompt", "image", "model",
                                                                               "private", "request_id"}}
field_values.update({
    "prompt": st.text(max_size=60) | json_values,
    "model": st.sampled_from(["builtin", "tiny-ltx", "nope", "", "BUILTIN"]) | json_values,
    "private": st.booleans() | json_values,
    "request_id": st.text(max_size=120) | st.integers() | json_values,
    "image": image_values,
})
generate_messages = st.fixed_dictionaries(
    {"prompt": field_values["prompt"]},
    optional={**{k: v for k, v in field_values.items() if k != "prompt"}, "type": st.just("generate")})
# (unknown fields: test_check_fields_names_the_unknown_field)


def _accepted(req: GenerateRequest) -> None:
    from generator.interface import get_info

    assert 0 < len(req.prompt) <= settings.MAX_PROMPT_CHARS
    p = req.params
    info = get_info(p.model)
    assert info is not None
    assert not info.problems(p.num_frames, p.width, p.height, p.steps, p.guidance_scale)
    assert 0 <= p.seed <= 2**32 - 1 and math.isfinite(p.fps) and 1 <= p.fps <= 60
    shape = p.final_shape()
    assert shape["num_frames"] * shape["width"] * shape["height"] <= settings.MAX_VIDEO_PIXELS
    assert p.total_steps >= p.steps >= 1
    stored = p.stored()
    json.dumps(stored, allow_nan=False)  # what is stored and sent back is strict JSON
    assert GenerationParams.model_validate(json.loads(json.dumps(stored))) == p  # as the worker reads it back
    if req.image is not None:
        image = req.image_array
        assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 8


@hsettings(**PROFILE)
@given(generate_messages)
def test_validate_generate_accepts_or_refuses_with_a_stable_code(data):
    try:
        req = validate_generate(data)
    except RequestError as err:
        assert err.code in ERROR_CODES, err.code
        assert err.message and 400 <= err.status < 600
        if err.field is not None:
            assert isinstance(err.field, str)
        json.dumps(err.as_dict())
        return
    _accepted(req)


@hsettings(**PROFILE)
@given(json_values)
def test_validate_generate_on_any_json_value(value):
    try:
        req = validate_generate(value)
    except RequestError as err:
        assert err.code in ERROR_CODES
        return
    _accepted(req)


@hsettings(**PROFILE)
@given(st.text(max_size=200) | json_values.map(json.dumps)
       | st.sampled_from(["NaN", "[Infinity]", '{"a": -Infinity}', "1e999", "[" * 5000, '"\\ud800"']))
def test_parse_json_is_strict(text):
    try:
        value = parse_json(text)
    except RequestError as err:
        assert err.code == "invalid_json"
        return
    json.dumps(value, allow_nan=True)
    assert "NaN" not in text or '"' in text


@hsettings(**{**PROFILE, "max_examples": 300})
@given(image_values)
def test_start_images_are_decoded_or_refused_never_crash(value):
    try:
        req = validate_generate({"prompt": "x", "image": value})
    except RequestError as err:
        assert err.code in ("invalid_field", "image_invalid", "too_large"), err.code
        assert err.field == "image"
        return
    array, png = req.image_array, req.image_png
    if value is None:  # no start image
        assert array is None and png is None
        return
    assert array.dtype.name == "uint8" and array.shape[2] == 3 and png.startswith(b"\x89PNG")


def test_truncated_and_damaged_pngs_are_refused_as_images():
    """The property above found a damaged PNG on which Pillow raised SyntaxError, which escaped as a
    crash; PNGs cut or zeroed at several places are all refused as images."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    whole = buf.getvalue()
    damaged = [whole[:n] for n in (40, 41, 60, len(whole) // 2, len(whole) - 30)]  # (Pillow takes a cut IEND)
    damaged.append(whole[:50] + bytes(len(whole) - 50))  # zeros from inside the image data on
    for raw in damaged:
        with pytest.raises(RequestError) as refused:
            validate_generate({"prompt": "x", "image": base64.b64encode(raw).decode()})
        assert refused.value.code == "image_invalid" and refused.value.field == "image", raw[:60]


@hsettings(**PROFILE)
@given(st.dictionaries(st.text(max_size=10) | st.sampled_from(sorted(GENERATE_FIELDS)), json_values, max_size=6))
def test_unknown_fields_are_named(data):
    try:
        validate_generate({"prompt": "x", **data})
    except RequestError as err:
        if err.code == "unknown_field":
            unknown = sorted(set(data) - GENERATE_FIELDS)
            assert err.field == unknown[0] and all(name in err.message for name in unknown[:3])
        else:
            assert set(data) <= GENERATE_FIELDS, err.code
        return
    assert set(data) <= GENERATE_FIELDS


def test_hypothesis_is_a_declared_test_requirement():
    reqs = (Path(__file__).resolve().parent.parent / "requirements-test.txt").read_text().split()
    assert any(r.startswith("hypothesis") for r in reqs)
    with pytest.raises(RequestError):
        validate_generate({"prompt": "x", "width": float("nan")})
