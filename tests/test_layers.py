"""Imports point one way: signaling → conference → sfu; every module imports on its own."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("signaling", "conference", "sfu")
FORBIDDEN = {
    "sfu": {"conference", "signaling"},
    "conference": {"signaling"},
    "signaling": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def imported_names(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of every module ``source`` imports, TYPE_CHECKING blocks included."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            names.add(target)
    return names


def imports_of(path: Path) -> set[str]:
    return imported_names(path.read_text(), module_name(path),
                          is_package=path.name == "__init__.py")


def test_every_package_has_modules() -> None:
    for package in PACKAGES:
        assert REPO / package / "__init__.py" in modules(package)


@pytest.mark.parametrize("package", ["sfu", "conference"])
def test_lower_layer_does_not_import_a_higher_one(package: str) -> None:
    offending = []
    for path in modules(package):
        for name in imports_of(path):
            if name.split(".")[0] in FORBIDDEN[package]:
                offending.append(f"{path.relative_to(REPO)} imports {name}")
    assert offending == []


def test_relative_and_guarded_imports_are_seen() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import a\n"
        "from .x import c\n"
        "from ..signaling import b\n"
        "if TYPE_CHECKING:\n"
        "    import signaling.session\n"
    )
    names = imported_names(source, "conference.room")
    assert names == {"typing", "conference", "conference.x", "signaling",
                     "signaling.session"}
    assert imported_names("from .errors import E\n", "sfu", is_package=True) == {"sfu.errors"}


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
    names = [module_name(p) for package in PACKAGES for p in modules(package)]
    code = _IMPORT_EACH.format(packages=list(PACKAGES), names=names)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert sorted(results) == sorted(names)
    errors = {n: r["error"] for n, r in results.items() if "error" in r}
    assert errors == {}
    for name, outcome in results.items():
        layer = name.split(".")[0]
        assert not FORBIDDEN[layer] & set(outcome["loaded"]), (name, outcome["loaded"])
