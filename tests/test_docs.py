"""Docs the tests check: docs/architecture.md names the job's path as `module:function` entries that
exist, and the environment tables in README.md and docs/deploy.md are the ones generated from the
typed settings (videoservice/environment.py)."""
from __future__ import annotations

import importlib
import re

from tests.support.stack import ROOT


def path_entries() -> list:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    section = doc.split("## One job", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"`([a-z_][a-z0-9_.]*):([A-Za-z_][A-Za-z0-9_.]*)`", section)


def test_architecture_doc_names_the_jobs_path_as_functions_that_exist():
    entries = path_entries()
    assert len(entries) >= 15, entries
    for module, qualname in entries:
        target = importlib.import_module(module)
        for part in qualname.split("."):
            assert hasattr(target, part), f"docs/architecture.md names {module}:{qualname}, which does not exist"
            target = getattr(target, part)
        assert callable(target), f"{module}:{qualname} is not a function or class"
    modules = {module.split(".")[0] for module, _ in entries}
    assert modules == {"videoservice", "worker", "generator"}, modules


def test_environment_tables_are_generated_from_the_typed_settings():
    from videoservice.environment import ServeEnvironment, ServiceEnvironment, stale_tables, table

    assert stale_tables() == [], "run: python -m videoservice.environment --write"
    settings = (ROOT / "videoservice" / "settings.py").read_text()
    assert "os.environ" not in settings  # every variable goes through ServiceEnvironment
    for name in ServiceEnvironment.model_fields:  # and each one is used
        assert f"ENV.{name}" in settings, name
    assert "`PORT`" in table(ServeEnvironment) and "`MAX_VIDEO_PIXELS`" in table(ServiceEnvironment)
