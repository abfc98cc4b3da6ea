"""The layering that docs/architecture.md states, checked on the source (an ``ast`` walk, no imports run).

Calls go one way: ``webui`` -> ``tasks`` -> ``engine``.  The jobs share the
web tier's data layer: its rows (``webui.models``), the push to browsers
(``webui.live``) and the rights model (``webui.access``, ``webui.privileges``,
``webui.nic_rights``: a job re-checks what its user may do against a config
only the node can read, such as an archive's).  That layer imports nothing
else of the web tier; nothing else of the web tier is the jobs' business.  Every import
counts, the ones inside functions too: a lazy import still makes the
dependency, it only hides it from a reader.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "tasks", "webui")
THIRD_PARTY_WEB = ("django", "celery", "kombu", "channels", "rest_framework", "drf_spectacular", "redis")

# The web tier's data layer, which the jobs share (module prefixes).
SHARED = (
    "webui.models",
    "webui.live",
    "webui.filestream",
    "webui.access",
    "webui.privileges",
    "webui.nic_rights",
    "webui.userid",
)
# What each layer may import from the project's other layers (module prefixes).
ALLOWED = {
    "engine": (),
    "tasks": ("engine", *SHARED),
    "webui": ("engine", "tasks.celery", "tasks.console_protocol"),
}
# Modules of the engine that are command lines: only they (and each other) may import ``engine.cli``.
CLI_MODULES = ("engine.cli", "engine.__main__")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_cli(module: str) -> bool:
    return module.startswith(CLI_MODULES) or module.endswith((".cli", ".__main__"))


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement names, absolute, with its line."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from pkg import submodule`` depends on the submodule, not on what ``pkg/__init__`` re-exports.
            submodules = [f"{target}.{alias.name}" for alias in node.names if _is_module(f"{target}.{alias.name}")]
            found += [(node.lineno, name) for name in submodules or [target]]
    return found


def _is_module(name: str) -> bool:
    path = ROOT / Path(*name.split("."))
    return path.with_suffix(".py").exists() or path.is_dir()


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_each_layer_imports_only_what_it_may():
    wrong = []
    for path in sources():
        module = module_name(path)
        layer = module.split(".")[0]
        for line, target in imports_of(path):
            top = target.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if layer == "engine" and top in THIRD_PARTY_WEB:
                wrong.append(f"{where} (the engine never imports the web stack)")
            elif top in PACKAGES and top != layer and not within(target, ALLOWED[layer]):
                wrong.append(f"{where} ({layer} may import only {', '.join(ALLOWED[layer]) or 'itself'})")
            elif within(target, ("engine.cli",)) and not is_cli(module):
                wrong.append(f"{where} (library code never imports the command line)")
            elif within(module, SHARED) and top == "webui" and not within(target, SHARED):
                wrong.append(f"{where} (the data layer the jobs share imports only itself of the web tier)")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def _graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in sources()}
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for _, target in imports_of(path):
            # The longest known module the import names (``tasks.node.engine`` is ``tasks.node``).
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != module:
                graph[module].add(".".join(parts))
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# A package's __init__ that re-exports its submodules, and those submodules importing a sibling through the
# package, form a cycle only in name: Python resolves it by importing the submodule first.
def _real(component: list[str]) -> bool:
    packages = {m for m in component if (ROOT / Path(*m.split("."))).is_dir()}
    rest = [m for m in component if m not in packages]
    return len(rest) > 1


@pytest.mark.parametrize("package", ["engine", "tasks"])
def test_no_import_cycles(package):
    cycles = [c for c in _cycles(_graph()) if c[0].startswith(package) and _real(c)]
    assert not cycles, "modules that import each other:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_a_wrong_way_import(tmp_path, monkeypatch):
    """The walk itself works: a planted engine module importing Django is reported."""
    planted = ROOT / "engine" / "_layers_probe.py"
    planted.write_text("def f():\n    from django.conf import settings\n    return settings\n")
    try:
        with pytest.raises(AssertionError, match="_layers_probe.py:2 imports django.conf"):
            test_each_layer_imports_only_what_it_may()
    finally:
        planted.unlink()
