"""The package's layers, read from its source: no import cycles (function-level imports
included, since a cycle patched with a local import is still a cycle), and lower layers never
import higher ones (``shared/DESIGN.md``, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "scheduler_app"

# Each layer, and the layers above it that it must never import.
ABOVE_ALL = ("store", "scheduler", "services", "api", "dashboard", "extension", "routes",
             "standalone", "cli")
LAYERS = [
    # Shared by every layer, so they import none of them.
    ("scheduler_app.errors", ABOVE_ALL + ("tasks", "settings", "logs")),
    ("scheduler_app.timeutil", ABOVE_ALL + ("tasks", "settings", "logs")),
    ("scheduler_app.settings", ABOVE_ALL + ("tasks", "logs")),
    ("scheduler_app.logs", ABOVE_ALL),
    ("scheduler_app.tasks", ("store", "scheduler", "services", "api", "dashboard", "extension",
                             "routes", "standalone", "cli")),
    ("scheduler_app.store", ("scheduler", "services", "api", "dashboard", "extension", "routes",
                             "standalone", "cli")),
    ("scheduler_app.scheduler", ("services", "api", "dashboard", "extension", "routes",
                                 "standalone", "cli")),
    ("scheduler_app.services", ("api", "dashboard", "extension", "routes", "standalone", "cli")),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "versions" in parts:  # Alembic revisions are scripts, not modules
            continue
        name = ".".join(parts).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path, *, external: bool = False) -> set[str]:
    """The package's modules ``name`` imports anywhere in its body, except under
    ``if TYPE_CHECKING:`` (``external``: the other packages' modules instead)."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree)
               if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
               for node in ast.walk(block)}
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    if external:
        return {m for m in found if not m.startswith("scheduler_app")}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    return components


def test_no_import_cycles() -> None:
    assert _cycles() == []


@pytest.mark.parametrize("layer, above", LAYERS, ids=[layer for layer, _ in LAYERS])
def test_lower_layers_never_import_higher_ones(layer: str, above: tuple[str, ...]) -> None:
    forbidden = tuple(f"scheduler_app.{name}" for name in above)
    wrong = sorted((module, target) for module, targets in GRAPH.items()
                   if module == layer or module.startswith(layer + ".")
                   for target in targets if target.startswith(forbidden))
    assert wrong == []


def test_the_checker_sees_a_cycle() -> None:
    """The check itself can fail: a two-module cycle is found."""
    GRAPH["scheduler_app.tasks"] = GRAPH["scheduler_app.tasks"] | {"scheduler_app.store"}
    GRAPH["scheduler_app.store"] = GRAPH["scheduler_app.store"] | {"scheduler_app.tasks"}
    try:
        assert ["scheduler_app.store", "scheduler_app.tasks"] in _cycles()
    finally:
        for name in ("scheduler_app.tasks", "scheduler_app.store"):
            GRAPH[name] = _imports(name, MODULES[name])


def test_apscheduler_is_held_in_one_adapter_package() -> None:
    """APScheduler 3 and Flask-APScheduler are used by ``scheduler_app.scheduler`` only; and
    there only APScheduler's parts and Flask-APScheduler's ``utils``, never its ``APScheduler``
    class, whose public surface this package cannot honour."""
    outside = sorted((name, target) for name, path in MODULES.items()
                     if not name.startswith("scheduler_app.scheduler")
                     for target in _imports(name, path, external=True)
                     if target.split(".")[0] in ("apscheduler", "flask_apscheduler"))
    assert outside == []
    inside = {target for name, path in MODULES.items()
              if name.startswith("scheduler_app.scheduler")
              for target in _imports(name, path, external=True)
              if target.startswith("flask_apscheduler")}
    assert inside <= {"flask_apscheduler.utils", "flask_apscheduler.utils.trigger_to_dict"}
