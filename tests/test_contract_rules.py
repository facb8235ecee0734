"""The contract's rules in-process (no stack): the JSON Schema's bounds are the bounds the refusals
enforce (one declaration each), the long-video rules that join fields, the job body shared by the
HTTP API and webhooks, and a web tier that loads neither torch nor OpenCV."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.stack import ROOT
from videoservice.contract import GenerateRequest, JobBody, RequestError, parse

PROMPT = {"prompt": "a red circle moving left"}


def refusal(**fields) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse(GenerateRequest, {**PROMPT, **fields})
    return caught.value


def test_every_schema_bound_is_the_bound_the_refusal_enforces():
    """For each field whose schema has a minimum/maximum or an enum, the values just outside are
    refused for that field and the bounds themselves pass that field's check."""
    properties = GenerateRequest.model_json_schema()["properties"]
    checked = []
    for name, prop in properties.items():
        for rule in prop.get("anyOf", [prop]):
            lo = rule.get("minimum", rule.get("exclusiveMinimum"))
            hi = rule.get("maximum")
            if rule.get("enum"):
                allowed = rule["enum"]
                outside = max(allowed) + 1 if max(allowed) + 1 not in allowed else max(allowed) + 2
                assert refusal(**{name: outside}).field == name
                checked.append(name)
            if hi is None or lo is None:
                continue
            step = 1 if rule.get("type") == "integer" else 1e-6
            beyond = refusal(**{name: hi + step})
            assert beyond.field == name and refusal(**{name: lo - step}).message == beyond.message, name
            if "exclusiveMinimum" in rule:
                assert refusal(**{name: lo}).message == beyond.message
            for value in (hi,) if "exclusiveMinimum" in rule else (lo, hi):
                try:
                    parse(GenerateRequest, {**PROMPT, name: value})
                except RequestError as exc:  # the model's own limits may refuse it, never the field's bound
                    assert exc.message != beyond.message, (name, value)
            checked.append(name)
    assert {"seed", "fps", "guidance_scale", "strength", "priority", "num_chunks", "duration_s", "overlap",
            "interpolate", "upscale"} <= set(checked)


@pytest.mark.parametrize("fields, field, words", [
    ({"num_chunks": 9}, "num_chunks", "between 1 and 8"),
    ({"overlap": 0}, "overlap", "between 1 and 8"),
    ({"interpolate": 5}, "interpolate", "one of 1, 2, 3, 4, 6"),
    ({"upscale": 3}, "upscale", "one of 1, 2, 4"),
    ({"num_chunks": "2"}, "num_chunks", "must be an integer"),
    ({"num_chunks": True}, "num_chunks", "must be an integer"),
    ({"overlap": 8, "num_frames": 8}, "overlap", "between 1 and 7"),
    ({"duration_s": 0}, "duration_s", "more than 0"),
    ({"duration_s": 3, "num_chunks": 2}, "duration_s", "not both"),
    ({"duration_s": 100, "fps": 8}, "duration_s", "at most 8 chunks"),
    ({"upscale": 4, "width": 512, "height": 512, "num_frames": 32, "num_chunks": 2}, "upscale", "pixel budget"),
    ({"num_chunks": 8, "interpolate": 6, "num_frames": 32}, "interpolate", "at most 1024"),
])
def test_long_video_rules(fields, field, words):
    refused = refusal(**fields)
    assert (refused.code, refused.field) == ("invalid_field", field) and words in refused.message, refused.message


def test_long_video_options_within_the_caps_are_kept(settings):
    settings.MAX_VIDEO_PIXELS = 10 ** 12
    params = parse(GenerateRequest, {**PROMPT, "num_frames": 16, "num_chunks": 3, "overlap": 2, "interpolate": 4,
                                     "upscale": 2}).params
    assert (params.num_chunks, params.overlap, params.interpolate, params.upscale) == (3, 2, 4, 2)
    assert params.final_shape()["num_frames"] == (3 * 16 - 2 * 2 - 1) * 4 + 1
    assert parse(GenerateRequest, {**PROMPT, "duration_s": 5.0, "fps": 8}).params.duration_s == 5.0


@pytest.mark.django_db
def test_the_http_job_body_and_the_webhook_body_are_one_schema():
    from videoservice.api import api
    from videoservice.models import Job

    job = Job.objects.create(prompt="a cat", model="builtin", params={"seed": 3}, owner="u:alice")
    body = job.as_dict("u:alice")
    assert JobBody.model_validate(body).model_dump() == body and body["mine"] and body["seed"] == 3
    openapi = api.get_openapi_schema()["components"]["schemas"]
    assert set(openapi["JobBody"]["properties"]) == set(body) == set(JobBody.model_fields)


def test_the_web_tier_imports_neither_torch_nor_opencv():
    """Daphne's process: the ASGI application and the model registry (registered at start-up,
    AppConfig.ready) validate requests without torch or OpenCV (both load seconds and hundreds of MB)."""
    probe = ("import sys; import videoservice.asgi; from generator.interface import _infos; "
             "assert 'builtin' in _infos; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'cv2', 'diffusers'}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"DJANGO_SETTINGS_MODULE": "videoservice.settings", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
