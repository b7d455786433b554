"""Every stage lists, as DVC deps, exactly the library code it runs.

A module a stage imports (directly or through another module, at the top or inside a
function) but does not list is code whose edit DVC would not notice: the stage would
not rerun. A listed module it never imports reruns it for nothing. Both are checked from
the source, statically, for every stage in dvc.yaml.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

# Decide how params are read and files written, not what is computed (README, "Pipeline").
NOT_DEPS = {
    "aerestore": "the package's __init__: a version string and an environment default",
    "aerestore.data": "a docstring",
    "aerestore.params": "the params schema; every key is explicit in params.yaml",
    "aerestore.io": "atomic writes",
    "aerestore.stage": "argument parsing, error reporting, seeding",
    "aerestore.tracking": "MLflow logging, the package and its modules (tracking.run imports "
                          "mlflow_model to log the restorer)",
}
# Packages whose submodules are, all of them, no deps either (named here one by one, so
# that a submodule of another package in NOT_DEPS is still followed).
NOT_DEPS_PACKAGES = ("aerestore.tracking",)


def not_dep(name: str) -> bool:
    """``name`` is in NOT_DEPS, or a submodule of a package in NOT_DEPS_PACKAGES."""
    return name in NOT_DEPS or any(name.startswith(f"{package}.") for package in NOT_DEPS_PACKAGES)


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The aerestore modules a file imports anywhere (also inside functions), with
    the packages each import runs (``import aerestore.a.b`` runs ``aerestore/a/__init__``)."""
    package = module_name(path) if path.is_relative_to(SRC) else ""
    if path.is_relative_to(SRC) and path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in candidates:
            if name.split(".")[0] != "aerestore" or module_file(name) is None:
                continue  # not ours, or an attribute rather than a module
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def code_closure(script: Path) -> set[str]:
    """Modules the stage script runs, not following the modules in NOT_DEPS."""
    seen: set[str] = set()
    todo = list(imports_of(script))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if not not_dep(name):
            todo.extend(imports_of(module_file(name)))
    return {name for name in seen if not not_dep(name)}


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_lists_exactly_the_code_it_runs(name):
    stage = stages()[name]
    script = REPO / stage["cmd"].split()[1]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]]
    assert script.relative_to(REPO).as_posix() in deps, f"{name}: its script is not a dep"
    modules = code_closure(script)
    files = {m: module_file(m) for m in modules}
    missing = sorted(m for m, f in files.items() if not covered(f, deps))
    assert not missing, f"{name} runs {missing} but dvc.yaml does not list them as deps"
    code_deps = [d for d in deps if d.startswith("src/")]
    unused = [d for d in code_deps if not any(covered(f, [d]) for f in files.values())]
    assert not unused, f"{name} lists {unused} as deps but never imports them"


def test_the_closure_follows_imports_inside_functions():
    # evaluate imports classical and restore inside functions; both must be found
    assert {"aerestore.classical", "aerestore.restore"} <= code_closure(REPO / "stages/evaluate.py")
    # and through other modules: the cluster stage loads models through the registry
    assert "aerestore.models.registry" in code_closure(REPO / "stages/cluster.py")


def test_not_deps_cover_the_tracking_modules_only(tmp_path):
    # a stage importing a tracking module directly follows none of them (nor mlflow_model,
    # which tracking.run imports), but a module of aerestore.data is still followed
    script = tmp_path / "stage.py"
    script.write_text("from aerestore.tracking.run import stage_run\nfrom aerestore.data import images\n")
    closure = code_closure(script)
    assert "aerestore.data.images" in closure
    assert not any(m.startswith("aerestore.tracking") for m in closure)
    assert "aerestore.mlflow_model" not in closure
