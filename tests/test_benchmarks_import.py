"""The benchmark scripts (``benchmarks/``) are run by hand, not by the suite; each name they
import from ``aerestore`` must still exist, or a script fails only when a user runs it (as
``bench_train_step.py`` did after the tracks redesign moved ``route_maps``)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_every_name_a_benchmark_imports_from_aerestore_exists(script):
    missing = []
    for node in ast.walk(ast.parse(script.read_text(), str(script))):
        if isinstance(node, ast.Import):
            pairs = [(a.name, None) for a in node.names if a.name.split(".")[0] == "aerestore"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "aerestore":
            pairs = [(node.module, a.name) for a in node.names]
        else:
            continue
        for module, name in pairs:
            mod = importlib.import_module(module)
            if name is not None and not hasattr(mod, name):
                try:  # a submodule
                    importlib.import_module(f"{module}.{name}")
                except ModuleNotFoundError:
                    missing.append(f"line {node.lineno}: from {module} import {name}")
    assert not missing, f"{script.name}: " + "; ".join(missing)


def test_the_check_finds_a_missing_name(tmp_path, monkeypatch):
    bad = tmp_path / "bench_bad.py"
    bad.write_text("from aerestore.restore import route_maps\n")
    with pytest.raises(AssertionError, match="line 1: from aerestore.restore import route_maps"):
        test_every_name_a_benchmark_imports_from_aerestore_exists(bad)
