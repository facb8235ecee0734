"""`python manage.py api_schema [--out docs]`: write the OpenAPI document of the HTTP API and the
JSON Schema of the websocket messages, both generated from videoservice/contract/ (the copies in
docs/ are these files; tests/test_contract.py fails when they are stale)."""
from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand

from videoservice.api import api
from videoservice.contract import websocket_schema

FILES = {"openapi.json": "the HTTP API (OpenAPI 3.1)", "websocket.schema.json": "the websocket lobby (JSON Schema)"}


def documents() -> dict:
    return {"openapi.json": api.get_openapi_schema(), "websocket.schema.json": websocket_schema()}


def dumps(document: dict) -> str:
    plain = json.loads(json.dumps(document))  # (ninja keys responses by int status)
    return json.dumps(plain, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


class Command(BaseCommand):
    help = "Write docs/openapi.json and docs/websocket.schema.json from the typed contract."

    def add_arguments(self, parser):
        parser.add_argument("--out", default="docs", help="folder to write them to (default: docs)")

    def handle(self, *args, **options):
        out = Path(options["out"])
        for name, document in documents().items():
            (out / name).write_text(dumps(document))
            self.stdout.write(f"wrote {out / name}: {FILES[name]}")
