"""The package's layout: which modules a fresh isolate loads, and which
modules import which (no new import cycle)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import subiso

PACKAGE = Path(subiso.__file__).resolve().parent

# What a fresh isolate imports of subiso to start (each costs every fresh
# isolate ~0.1 ms): a change to the layout keeps to this budget.
FRESH_ISOLATE_MODULES = {
    "subiso",
    "subiso._backend",
    "subiso._exceptions",
    "subiso._ports",
    "subiso._runtime",
    "subiso._wire",
}

# The import cycles left, each as its set of modules. The wire's codec
# (encode, decode) loads pickling and SharedBuffer when a message needs
# them, and both build on the wire's parts: the codec has to move above
# them, which a fresh isolate must not pay for with a module of its own.
KNOWN_CYCLES = [{"subiso._wire", "subiso._pickling", "subiso._shared"}]


def _module_name(path: Path) -> str:
    parts = path.with_suffix("").relative_to(PACKAGE.parent).parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports, at any level (functions
    included), but not under ``if TYPE_CHECKING:``."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                if node.module:
                    found.add(f"{base}.{node.module}")
                else:
                    found.update(f"{base}.{alias.name}" for alias in node.names)
            elif node.module and node.module.split(".")[0] == "subiso":
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "subiso")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {other for other in _imports(path) if other in modules and other != name}
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_import_graph_is_read_right():
    graph = _graph()
    assert "subiso._ports" in graph["subiso._runtime"]
    assert "subiso._mailbag" in graph["subiso._ports"]  # (a function-level import)
    assert "subiso._agent" not in graph["subiso"]  # (under TYPE_CHECKING only)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_new_import_cycle():
    cycles = _cycles(_graph())
    assert [c for c in cycles if c not in KNOWN_CYCLES] == []
    # A cycle that is gone leaves the list, so that it cannot come back.
    assert [c for c in KNOWN_CYCLES if c not in cycles] == []


def test_a_fresh_isolate_imports_no_more_of_subiso_than_its_budget():
    loaded = subiso.run(eval, "[m for m in __import__('sys').modules if m.startswith('subiso')]")
    assert set(loaded) == FRESH_ISOLATE_MODULES


def test_a_pool_worker_starts_without_the_pools_own_modules():
    # The pool's module pulls in concurrent.futures, logging, typing and
    # dataclasses: ~70 modules, tens of milliseconds and megabytes a worker.
    with subiso.Pool(1) as pool:
        loaded = set(pool.submit(eval, "list(__import__('sys').modules)").result(timeout=60))
    assert "subiso._pool_worker" in loaded
    heavy = {"subiso._pool", "subiso._hub", "concurrent.futures", "logging", "typing"}
    assert not loaded & heavy


def test_a_pool_warms_no_spares_beside_its_workers():
    # Spares serve fresh runs and spawns; a pool's workers live on, and two
    # idle interpreters would cost it memory and, at its start, the cores.
    # (A fresh process: the suite's hub has spares from earlier tests.)
    script = (
        "import subiso\n"
        "from subiso import _hub\n"
        "with subiso.Pool(2) as pool:\n"
        "    assert pool.submit(abs, -1).result(timeout=60) == 1\n"
        "assert _hub.settle(30)  # (it waits for the spares asked for, too)\n"
        "hub = _hub.current_hub()\n"
        "print(len(hub.spares), len(hub.warming))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0"]
