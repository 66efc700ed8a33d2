"""The package layout: no import cycle, imports point down the stages, in-package imports at module top."""
from __future__ import annotations

import ast
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from deam_mamba.core.io import atomic_write_json, to_json

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
ig = importlib.util.module_from_spec(_spec)
sys.modules["import_graph"] = ig
_spec.loader.exec_module(ig)


def test_the_package_has_no_import_cycle_and_no_upward_import():
    graph = ig.import_graph()
    assert "deam_mamba.train.loop" in graph and "deam_mamba.evaluation.scoring" in graph["deam_mamba.train.loop"]
    assert ig.cycles(graph) == []
    assert ig.stage_violations(graph) == []


def test_the_checker_finds_cycles_and_upward_imports():
    graph = {"deam_mamba.features.a": {"deam_mamba.train.b"}, "deam_mamba.train.b": {"deam_mamba.features.a"},
             "deam_mamba.core.c": set()}
    assert ig.cycles(graph) == [["deam_mamba.features.a", "deam_mamba.train.b"]]
    assert ig.stage_violations(graph) == [
        "deam_mamba.features.a -> deam_mamba.train.b (stage features imports the later stage train)"]


def test_in_package_imports_sit_at_module_top():
    """Only the CLI imports the stage a subcommand needs inside that subcommand (start-up time), and the package
    root its Python API on first use (``deam_mamba.load``: ``import deam_mamba`` stays free of torch)."""
    late = []
    root = REPO / "src" / "deam_mamba"
    for path in sorted(root.rglob("*.py")):
        if path.name == "cli.py" or path == root / "__init__.py":
            continue
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("deam_")):
                        late.append(f"{path.name}:{node.lineno}")
    assert late == []


def test_json_is_strict(tmp_path):
    doc = {"a": float("nan"), "b": [1.0, float("inf"), np.float32(2.5)], "c": np.int64(3), "d": Path("x/y"),
           "e": np.array([0.5, np.nan])}
    text = to_json(doc)
    assert "NaN" not in text and "Infinity" not in text

    def refuse(name: str) -> float:
        raise ValueError(f"non-standard JSON constant {name}")

    back = json.loads(text, parse_constant=refuse)
    assert back == {"a": None, "b": [1.0, None, 2.5], "c": 3, "d": "x/y", "e": [0.5, None]}
    atomic_write_json(tmp_path / "m.json", {"ccc": math.nan})
    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse) == {"ccc": None}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        to_json({"x": object()})
