"""The typed contract against the real service (tests/support): the same invalid values get the same
refusal from the websocket, the HTTP API and the CLI; the worker reads a stored job's params back
through the same model; /api/openapi.json is valid OpenAPI 3 and Schemathesis (a client nobody here
wrote) finds no server error and no response that breaks the schema; every event of a real job
matches the websocket JSON Schema (the import rules: tests/test_imports.py)."""
from __future__ import annotations

import json
import os
import subprocess

import jsonschema
import pytest

from tests.support.client import Client, run
from tests.support.stack import ROOT, http
from videoservice.launch import BIN

SMALL = {"num_frames": 8, "width": 64, "height": 64, "steps": 2}
# (request fields, the CLI's arguments for them); each is refused the same way everywhere
INVALID = [
    ({"num_frames": 7}, ["--frames", "7"]),
    ({"fps": 61}, ["--fps", "61"]),
    ({"interpolate": 5}, ["--interpolate", "5"]),
    ({"num_chunks": 2, "duration_s": 2}, ["--num-chunks", "2", "--duration", "2"]),
    ({"model": "no-such-model"}, ["--model", "no-such-model"]),
    ({"num_frames": 32, "width": 512, "height": 512, "num_chunks": 8, "upscale": 4},
     ["--frames", "32", "--width", "512", "--height", "512", "--num-chunks", "8", "--upscale", "4"]),
]

def cli_refusal(*args) -> str:
    """`manage.py generate`'s refusal, run in this process (tests/test_generator_cli.py runs it as a
    subprocess): the CommandError it stops with."""
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError) as refused:
        call_command("generate", "a red circle moving left", *args, "--output", "/nonexistent/never.mp4")
    return str(refused.value)


def test_the_same_invalid_values_get_the_same_refusal_everywhere(live_service):
    async def websocket() -> list:
        async with Client(live_service) as c:
            return [await c.submit(prompt="a red circle moving left", **fields) for fields, _ in INVALID]
    ws_answers = run(websocket())
    for (fields, args), ws in zip(INVALID, ws_answers):
        status, _, body = http("POST", live_service.base + "/api/jobs",
                               {"prompt": "a red circle moving left", **fields})
        refusal = json.loads(body)
        assert ws["type"] == "error" and status == 400, (fields, ws, refusal)
        assert (ws["code"], ws.get("field"), ws["message"]) == (refusal["code"], refusal.get("field"),
                                                                refusal["message"]), fields
        refused = cli_refusal(*args)
        # (the known models listed are this test process's: it does not serve tiny-ltx)
        assert ws["message"].partition("; known models")[0] in refused, (fields, ws["message"], refused)


def test_a_stored_jobs_params_read_back_through_the_contract(live_service):
    from videoservice.contract import GenerationParams

    fields = {"prompt": "a blue square moving up", **SMALL, "num_chunks": 2, "seed": 9, "evaluate": False}
    status, _, body = http("POST", live_service.base + "/api/jobs", fields)
    assert status == 201, body
    stored = json.loads(body)["job"]["params"]
    params = GenerationParams.model_validate(stored)  # as worker/generation.py reads them
    assert params.stored() == stored and "evaluate" not in stored
    assert (params.num_chunks, params.seed, params.total_steps) == (2, 9, 4)
    row = live_service.row(json.loads(body)["job"]["id"])
    assert GenerationParams.model_validate(json.loads(row["params"])) == params
    assert row["total_steps"] == params.total_steps


def test_openapi_document_is_valid_and_describes_every_status(live_service):
    from openapi_spec_validator import validate

    status, headers, body = http("GET", live_service.base + "/api/openapi.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    spec = json.loads(body)
    validate(spec)
    ops = {(path, method): op for path, item in spec["paths"].items() for method, op in item.items()}
    create = ops[("/api/jobs", "post")]
    assert {"201", "400", "401", "403", "413", "415", "429", "503"} <= set(create["responses"])
    body_schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["additionalProperties"] is False and "prompt" in body_schema["required"]
    assert {"200", "206", "404"} <= set(ops[("/api/jobs/{job_id}/video", "get")]["responses"])
    status, _, page = http("GET", live_service.base + "/api/docs")
    assert status == 200 and b"openapi.json" in page


def test_too_many_requests_and_unavailable_carry_retry_after(strict_service):
    """SUBMISSIONS_PER_MINUTE=4 on the strict server: the fifth submission is a 429 with Retry-After."""
    token = {"Authorization": f"Bearer {strict_service.tokens['erin']}"}
    answers = [http("POST", strict_service.base + "/api/jobs", {"prompt": "retry after", **SMALL, "steps": 1},
                    headers=token) for _ in range(6)]
    limited = [(s, h) for s, h, _ in answers if s == 429]
    assert limited and all(int(h["Retry-After"]) >= 1 for _, h in limited), [s for s, _, _ in answers]


@pytest.fixture
def api_only(live_service, tmp_path):
    """A Daphne with a database and a broker of its own (on the live Redis, another DB number) that
    no worker reads: the jobs a fuzzer submits stay queued there instead of filling the live queue."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'fuzz.sqlite3'}",
           "REDIS_URL": f"redis://127.0.0.1:{live_service.redis_port}/7", "MAX_QUEUED_JOBS": "100000",
           "MAX_QUEUED_PER_OWNER": "100000", "MAX_QUEUED_PER_ADDRESS": "100000"}
    live_service.migrate(env["DATABASE_URL"])
    web = live_service.start_web("api-only", env=env)
    try:
        live_service.wait_healthy(web="api-only")
        yield live_service.url("api-only")
    finally:
        web.stop(grace=5)


def test_schemathesis_finds_no_server_error_and_no_response_breaking_the_schema(api_only, tmp_path):
    """A short pass; SCHEMATHESIS_SECONDS=300 makes a long one (examples without bound).
    schemathesis.toml says which expectations JSON Schema cannot express (a model's own limits)."""
    report = tmp_path / "junit.xml"
    seconds = int(os.environ.get("SCHEMATHESIS_SECONDS", "15"))
    examples = ["--max-examples", "30"] if seconds <= 15 else ["--max-examples", "100000"]
    done = subprocess.run([str(BIN / "schemathesis"), "run", api_only + "/api/openapi.json", "--checks", "all",
                           "--max-time", str(seconds), *examples, "--report", "junit",
                           "--report-junit-path", str(report), "--no-color"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240 + 2 * seconds)
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert report.exists() and 'failures="0"' in report.read_text()


def test_every_event_of_a_real_job_matches_the_websocket_schema(live_service):
    status, _, body = http("GET", live_service.base + "/api/schema/websocket.json")
    schema = json.loads(body)
    jsonschema.Draft202012Validator.check_schema(schema)
    server = jsonschema.Draft202012Validator({**schema, "$ref": "#/$defs/serverMessage"})
    client = jsonschema.Draft202012Validator({**schema, "$ref": "#/$defs/clientMessage"})
    message = {"type": "generate", "prompt": "a yellow circle moving down", **SMALL}
    assert not list(client.iter_errors(message))
    assert list(client.iter_errors({**message, "colour": "red"}))  # unknown fields: additionalProperties false

    async def scenario():
        async with Client(live_service) as c:
            queued = await c.submit(**message)
            await c.events_for(queued["job_id"])
            await c.submit(prompt="")  # an error
            await c.ping_ok()
            return c.seen
    seen = run(scenario())
    assert {"queued", "started", "progress", "generation_complete", "error", "pong"} <= {m["type"] for m in seen}
    for msg in seen:
        errors = [e.message for e in server.iter_errors(msg)]
        assert not errors, (msg["type"], errors[:3])


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-test.txt", "requirements-bench.txt"])
def test_requirements_are_split_and_bounded(name):
    lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
    reqs = [line for line in lines if line and not line.startswith(("-r", "-e ./"))]  # (-e ./: this repository's)
    assert all(any(op in r for op in ("==", "<")) for r in reqs), [r for r in reqs if "==" not in r and "<" not in r]
    names = {r.split("[")[0].split("=")[0].split(">")[0].split("<")[0].lower() for r in reqs}
    if name == "requirements.txt":
        assert {"redis", "pydantic", "django-ninja", "dj-database-url"} <= names
        assert not names & {"pytest", "hypothesis", "playwright", "schemathesis", "imageio"}  # the image gets no tests


def test_the_schemas_in_docs_are_the_generated_ones():
    from videoservice.management.commands.api_schema import documents, dumps

    for name, document in documents().items():
        committed = (ROOT / "docs" / name).read_text()
        assert committed == dumps(document), f"docs/{name} is stale: run python manage.py api_schema"
