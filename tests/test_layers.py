"""Imports point one way: signaling → conference → sfu, and the client stands apart.

Read from the source with ``ast`` (imports under ``if TYPE_CHECKING:`` and inside
functions count too), and checked again by importing every module on its own:

- no package imports a module of its own that, directly or not, imports it back;
- ``sfu`` imports nothing of ours, ``conference`` only ``sfu``, ``signaling`` only
  ``conference`` (it reaches ``sfu`` through it);
- ``client`` imports nothing of the server, and the server nothing of ``client``,
  except ``parley loadtest`` (signaling/cli.py), which loads it inside the command.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("signaling", "conference", "sfu", "client")
FORBIDDEN = {
    "sfu": {"conference", "signaling", "client"},
    "conference": {"signaling", "client"},
    "signaling": {"sfu", "client"},
    "client": {"signaling", "conference", "sfu"},
}
"""Packages of ours that a package's modules may not import themselves."""
LAZY_EXCEPTIONS = {("signaling.cli", "client.loadtest")}
"""(module, module it imports) allowed despite FORBIDDEN, inside a function only."""
NEVER_LOADED = {
    "sfu": {"conference", "signaling", "client"},
    "conference": {"signaling", "client"},
    "signaling": {"client"},
    "client": {"signaling", "conference", "sfu"},
}
"""Packages that importing a module of a package may not load, even indirectly."""


@dataclass(frozen=True)
class Import:
    names: tuple[str, ...]
    """What the statement may import: ``a.b`` and, for ``from a.b import c``, ``a.b.c``."""
    lazy: bool
    """Inside a function: runs when it is called, not when the module is imported."""
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def parse_imports(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every import statement of ``source``, relative ones made absolute."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import((alias.name,), lazy, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            names = (target, *(f"{target}.{alias.name}" for alias in node.names))
            found.append(Import(names, lazy, node.lineno))
        in_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, lazy or in_function)

    visit(ast.parse(source), False)
    return found


def imports_of(path: Path) -> list[Import]:
    return parse_imports(path.read_text(), module_name(path),
                         is_package=path.name == "__init__.py")


def resolve(name: str, known: Iterable[str]) -> str | None:
    """The module of ours that ``name`` (a module or a name in one) refers to."""
    parts = name.split(".")
    known = set(known)
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in modules(package)}


def import_graph(package: str) -> dict[str, set[str]]:
    """Module → modules of the same package it imports."""
    known = {module_name(p) for p in modules(package)}
    graph: dict[str, set[str]] = {name: set() for name in known}
    for path in modules(package):
        module = module_name(path)
        for imp in imports_of(path):
            for name in imp.names:
                target = resolve(name, known)
                if target is not None and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, each sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def describe(component: list[str], graph: Mapping[str, set[str]]) -> str:
    edges = [f"{a} → {b}" for a in component for b in sorted(graph[a]) if b in component]
    return f"cycle among {', '.join(component)}: " + "; ".join(edges)


def forbidden_imports(package: str) -> list[str]:
    """``path:line imports name`` for each import FORBIDDEN to ``package``."""
    known = all_modules()
    offending = []
    for path in modules(package):
        module = module_name(path)
        for imp in imports_of(path):
            if imp.names[0].split(".")[0] not in FORBIDDEN[package]:
                continue
            targets = [t for t in (resolve(n, known) for n in imp.names) if t is not None]
            target = max(targets, key=len, default=imp.names[0])
            if imp.lazy and (module, target) in LAZY_EXCEPTIONS:
                continue
            offending.append(f"{path.relative_to(REPO)}:{imp.line} imports {target}")
    return offending


# -- the rules ---------------------------------------------------------------------
def test_layer_checks_cover_every_installed_package() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = config["tool"]["setuptools"]["packages"]
    assert sorted(p for p in listed if "." not in p) == sorted(PACKAGES)
    for sub in (p for p in listed if "." in p):  # subpackages are checked with their package
        assert sub.split(".")[0] in PACKAGES and (REPO / sub.replace(".", "/")).is_dir(), sub
    for package in PACKAGES:
        names = {p.name for p in modules(package)}
        assert "__init__.py" in names and len(names) > 2, (package, sorted(names))
        assert any(import_graph(package).values()), f"{package}: no import seen between modules"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_within_the_package(package: str) -> None:
    graph = import_graph(package)
    found = [describe(component, graph) for component in cycles(graph)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_the_layers_it_may(package: str) -> None:
    offending = forbidden_imports(package)
    assert offending == [], "\n".join(offending)


def test_the_loadtest_command_is_the_only_door_from_the_server_to_the_client() -> None:
    cli = REPO / "signaling" / "cli.py"
    client_imports = [imp for imp in imports_of(cli)
                      if any(n.split(".")[0] == "client" for n in imp.names)]
    assert client_imports, "parley loadtest no longer imports the client"
    eager = [f"signaling/cli.py:{imp.line} imports {imp.names[0]} at import time"
             for imp in client_imports if not imp.lazy]
    assert eager == [], "\n".join(eager)


# -- the checks check ----------------------------------------------------------------
def test_relative_guarded_and_lazy_imports_are_seen() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import a\n"
        "from .x import c\n"
        "from ..signaling import b\n"
        "if TYPE_CHECKING:\n"
        "    import signaling.session\n"
        "def f():\n"
        "    import client.loadtest\n"
    )
    found = {imp.names: imp.lazy for imp in parse_imports(source, "conference.room")}
    assert found == {
        ("typing", "typing.TYPE_CHECKING"): False,
        ("conference", "conference.a"): False,
        ("conference.x", "conference.x.c"): False,
        ("signaling", "signaling.b"): False,
        ("signaling.session",): False,
        ("client.loadtest",): True,
    }
    [init] = parse_imports("from .errors import E\n", "sfu", is_package=True)
    assert init.names == ("sfu.errors", "sfu.errors.E")


def test_names_resolve_to_the_module_that_holds_them() -> None:
    known = {"sfu", "sfu.hooks", "sfu.frames"}
    assert resolve("sfu.frames.EncodedFrame", known) == "sfu.frames"
    assert resolve("sfu.hooks", known) == "sfu.hooks"
    assert resolve("sfu.Router", known) == "sfu"
    assert resolve("aiortc.rtp", known) is None


def test_cycles_are_found_with_their_edges_and_trees_pass() -> None:
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a", "p.d"}, "p.d": set(),
             "p.e": {"p.f"}, "p.f": {"p.e"}}
    assert cycles(graph) == [["p.a", "p.b", "p.c"], ["p.e", "p.f"]]
    assert describe(["p.e", "p.f"], graph) == "cycle among p.e, p.f: p.e → p.f; p.f → p.e"
    assert cycles({"p.a": {"p.b", "p.c"}, "p.b": {"p.c"}, "p.c": set()}) == []


# -- importing for real ----------------------------------------------------------------
_IMPORT_EACH = """
import importlib, json, sys
ours = {packages!r}
results = {{}}
for name in {names!r}:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ours]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        results[name] = {{"error": f"{{type(exc).__name__}}: {{exc}}"}}
        continue
    results[name] = {{"loaded": sorted({{m.split(".")[0] for m in sys.modules
                                         if m.split(".")[0] in ours}})}}
print(json.dumps(results))
"""


def test_each_module_imports_alone_and_loads_no_higher_layer() -> None:
    names = sorted(all_modules())
    code = _IMPORT_EACH.format(packages=list(PACKAGES), names=names)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert sorted(results) == names
    errors = {n: r["error"] for n, r in results.items() if "error" in r}
    assert errors == {}
    loaded_too_much = {name: sorted(NEVER_LOADED[name.split(".")[0]] & set(r["loaded"]))
                       for name, r in results.items()}
    assert {n: extra for n, extra in loaded_too_much.items() if extra} == {}
