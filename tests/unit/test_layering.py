"""The package graph you can see: library packages import each other without cycles, no library
package imports a command module, and the doors the architecture names hold (the gateway never
imports the stack; the stack never imports the picker's internals, only the gateway's door)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import inferstack

SRC = Path(inferstack.__file__).parent
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").exists())


def _imports() -> dict[str, dict[str, set[str]]]:
    """package -> imported module -> the files importing it (every import, local ones included)."""
    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if len(rel.parts) < 2:
            continue  # top-level modules (cli, errors, paths, process, wire, configfile): the base
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name.startswith("inferstack."):
                    out[rel.parts[0]][name].add(str(rel))
    return out


def _package(module: str) -> str | None:
    part = module.split(".")[1]
    return part if part in PACKAGES else None


def test_library_packages_have_no_import_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    for pkg, modules in _imports().items():
        if pkg == "commands":
            continue
        for module in modules:
            target = _package(module)
            if target and target != pkg:
                graph[pkg].add(target)
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif len(path) < len(PACKAGES):
                visit(nxt, path + [nxt])

    for pkg in sorted(graph):
        visit(pkg, [pkg])
    assert not cycles, "import cycles between packages:\n" + "\n".join(sorted(set(cycles)))


def test_no_library_package_imports_a_command():
    bad = {f"{pkg}: {sorted(files)}" for pkg, modules in _imports().items() if pkg != "commands"
           for module, files in modules.items() if module.startswith("inferstack.commands")}
    assert not bad


def test_the_doors_hold():
    imports = _imports()
    assert not [m for m in imports["gateway"] if _package(m) in ("stack", "batch")]
    behind_the_door = [m for m in imports["stack"] if m.startswith("inferstack.gateway.")]
    assert not behind_the_door, f"the stack uses the gateway through `inferstack.gateway` only: {behind_the_door}"
