"""No import cycle in ``notifications/``: every module imports first, alone, and
the graph of the imports that run when a module is imported has no cycle.

A cycle that happens to import in one order breaks in another (a module
found half-initialized), and it hides which module depends on which: the
gates' registry is read by the configuration, so the gates must not import
the configuration when they run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import notifications

PACKAGE = Path(notifications.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_time_statements(body: list[ast.stmt]):
    """The import statements that run when the module is imported.

    Imports inside functions run later, when called (a deliberate way to
    defer one); those under ``if TYPE_CHECKING:`` never run.
    """
    for statement in body:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            yield statement
        elif isinstance(statement, ast.If):
            if not _is_type_checking(statement.test):
                yield from import_time_statements(statement.body)
            yield from import_time_statements(statement.orelse)
        elif isinstance(statement, ast.Try):
            for block in (statement.body, statement.orelse, statement.finalbody):
                yield from import_time_statements(block)
            for handler in statement.handlers:
                yield from import_time_statements(handler.body)
        elif isinstance(statement, ast.With):
            yield from import_time_statements(statement.body)


def imported_modules(name: str, path: Path) -> set[str]:
    """The modules of the package that ``name`` imports when it is imported."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for statement in import_time_statements(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(statement, ast.Import):
            candidates = [alias.name for alias in statement.names]
        else:
            if statement.level:
                base = package.split(".")[: len(package.split(".")) - statement.level + 1]
                module = ".".join([*base, statement.module] if statement.module else base)
            else:
                module = statement.module or ""
            # "from . import x" imports the module x when there is one.
            candidates = [module] + [f"{module}.{alias.name}" for alias in statement.names]
        for candidate in candidates:
            # Importing a.b.c runs a and a.b first.
            parts = candidate.split(".")
            found.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    # The packages that hold ``name`` are imported before it, whatever it imports.
    ancestors = {".".join(name.split(".")[:end]) for end in range(1, name.count(".") + 1)}
    return {module for module in found if module in MODULES and module not in {name, *ancestors}}


def import_graph() -> dict[str, set[str]]:
    return {name: imported_modules(name, path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, as the list of its modules (first repeated last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return [*stack[stack.index(child) :], child]
            if child not in state and (cycle := visit(child)) is not None:
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert graph["notifications.config"] >= {"notifications.gates"}  # the graph is read
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


def test_a_cycle_is_found():
    # The check above can fail.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_type_checking_and_function_imports_do_not_count():
    tree = ast.parse(
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import hidden\n"
        "def later():\n    import deferred\n"
        "try:\n    import tried\nexcept ImportError:\n    import fallback\n"
    )
    names = [
        alias.name for statement in import_time_statements(tree.body) for alias in statement.names
    ]
    assert names == ["os", "TYPE_CHECKING", "tried", "fallback"]


def test_every_module_imports_first_in_a_fresh_interpreter():
    # One interpreter; before each module, every module of the package is
    # forgotten, so that each is the first one imported, as when a program
    # (twistd, the command, a test) starts from it.
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'notifications']:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failed.append(f'{name}: {error!r}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    # __main__ would run the command.
    names = sorted(name for name in MODULES if not name.endswith(".__main__"))
    result = subprocess.run(
        [sys.executable, "-c", script, *names],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PACKAGE.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
