#!/usr/bin/env python3
"""The import graph of ``src/deam_mamba`` (module level AND inside functions), its cycles and stage order.

    python scripts/import_graph.py            # edges, then cycles / stage-order violations; exit 1 if any
    python scripts/import_graph.py --quiet    # only the problems

Stages, lowest first; a module may import only from its own stage or a lower one:
core < config < data < synth < features < models < runs < inference < serve < evaluation < train < experiments < cli.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "deam_mamba"
STAGES = ("core", "config", "data", "synth", "features", "models", "runs", "inference", "serve", "evaluation", "train",
          "experiments", "cli", "__main__")


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """``{module: {imported package modules}}`` over every import statement, wherever it is."""
    mods = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    out.add(sub if sub in mods else target)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        graph[name] = {m for m in out if m in mods and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.remove(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def stage(module: str) -> int | None:
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else None


def stage_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up the stage order (e.g. ``features`` importing ``train``)."""
    bad = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            s, d = stage(src), stage(dst)
            if s is not None and d is not None and d > s:
                bad.append(f"{src} -> {dst} (stage {STAGES[s]} imports the later stage {STAGES[d]})")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    graph = import_graph()
    if not a.quiet:
        for m in sorted(graph):
            print(f"{m} -> {', '.join(sorted(graph[m])) or '-'}")
    cyc, up = cycles(graph), stage_violations(graph)
    for c in cyc:
        print("cycle: " + " <-> ".join(c))
    for v in up:
        print("upward import: " + v)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports, {len(cyc)} cycles, "
          f"{len(up)} upward imports")
    return 1 if cyc or up else 0


if __name__ == "__main__":
    sys.exit(main())
