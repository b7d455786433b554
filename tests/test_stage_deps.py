"""Every stage lists, as DVC deps, exactly the library code it runs.

A module a stage imports (directly or through another module, at the top or inside a
function) but does not list is code whose edit DVC would not notice: the stage would
not rerun. A listed module it never imports reruns it for nothing. Both are checked from
the source, statically, for every stage in dvc.yaml.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

# Decide how params are read and files written, not what is computed (README, "Pipeline").
NOT_DEPS = {
    "aerestore": "the package's __init__: a version string and an environment default",
    "aerestore.data": "a docstring",
    "aerestore.params": "the params schema, the package and its modules; every key is explicit in params.yaml",
    "aerestore.io": "atomic writes",
    "aerestore.stage": "argument parsing, error reporting, seeding",
    "aerestore.tracking": "MLflow logging, the package and its modules (tracking.run imports "
                          "mlflow_model to log the restorer)",
}
# Packages whose submodules are, all of them, no deps either (named here one by one, so
# that a submodule of another package in NOT_DEPS is still followed).
NOT_DEPS_PACKAGES = ("aerestore.params", "aerestore.tracking")


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


# --------------------------------------------------------------------------- params
# Params a stage reads that decide how it runs, not what it computes: not DVC params.
NOT_PARAMS = {
    "mlflow": "MLflow logging and registration",
    "runtime.node_rank": "the torchrun rendezvous: where the processes meet",
    "runtime.master_addr": "the torchrun rendezvous",
    "runtime.master_port": "the torchrun rendezvous",
    "prepare.workers": "processes (outputs identical for any value)",
    "prepare.chunk": "memory (outputs identical for any value)",
}
# Reads the scan cannot see: aerestore.distributed.rendezvous takes the ENV_OVERRIDES keys of
# the runtime with getattr (nnodes is the one that is a DVC param: it sets the processes).
UNSEEN = {"train": {"runtime.nnodes"}}
# Read only for a check that stops the stage, never changing what it writes: explore's argument
# (the matrix itself is over explore.architectures); prepare refuses an image larger than
# data.max_pixels, which the download already left out.
CHECKS = {"explore": {"architectures", "explore.architectures"}, "prepare": {"data.max_pixels"}}
# Calls on the Params (or on a train section) and the keys they read.
CALLS = {"train_for": ("train", "arch"), "arch_params": ("arch",), "latent_for": ("latent", "arch"),
         "peer_train": ("train", "arch", "peers.steps")}  # through train_for: unet_ae's settings
# Function parameters that hold a section: by annotation, else by name (``cfg``: in the
# stage scripts, the architecture's train section).
ANNOTATED = {"Params": "", "TrainParams": "train", "RuntimeParams": "runtime", "ClusterParams": "cluster"}
NAMED = {"params": "", "runtime": "runtime"}
SCRIPT_NAMED = {**NAMED, "cfg": "train"}


@functools.lru_cache(maxsize=None)
def param_keys() -> frozenset[str]:
    """Every dotted key of params.yaml and every mapping above one (``train.crops``)."""
    def walk(obj, prefix):
        out = {prefix} if prefix else set()
        if isinstance(obj, dict):
            for k, v in obj.items():
                out |= walk(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return frozenset(walk(yaml.safe_load((REPO / "params.yaml").read_text()), ""))


@functools.lru_cache(maxsize=None)
def functions_of(path: Path) -> tuple[ast.AST, ...]:
    tree = ast.parse(path.read_text())
    return tuple(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


@functools.lru_cache(maxsize=None)
def callables_of(path: Path) -> tuple[tuple[str, ast.AST], ...]:
    """(name a call reaches it by, function) of a module: each function by its name, and
    each method also by its class's name (building an object reaches its methods)."""
    out = [(fn.name, fn) for fn in functions_of(path)]
    for cls in ast.walk(ast.parse(path.read_text())):
        if isinstance(cls, ast.ClassDef):
            out += [(cls.name, fn) for fn in cls.body if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return tuple(out)


@functools.lru_cache(maxsize=None)
def registries_of(path: Path) -> dict[str, tuple[str, ...]]:
    """A module's registries: ``NAME = {key: callable, ...}`` at the top level (a track's job,
    :mod:`aerestore.tracks`; the clusterers), by the names of the callables (or of the
    functions that make them: ``head("ncut_head")``); and its imports under another name
    (``from ..tracks.clustering import codes as track_codes``)."""
    tree = ast.parse(path.read_text())
    out = {a.asname: (a.name,) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names if a.asname}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) else None
        value = node.value if target is not None else None
        names = [v.id if isinstance(v, ast.Name) else v.func.id
                 if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) else None
                 for v in (value.values if isinstance(value, ast.Dict) else [])]
        if isinstance(target, ast.Name) and names and None not in names:
            out[target.id] = tuple(names)
    return out


def called_names(nodes, registries: dict[str, tuple[str, ...]] | None = None) -> set[str]:
    """The names ``nodes`` call; an entry taken from a registry (``CODES[track](...)``,
    ``clusterer = CLUSTERERS[method]``) calls each of its entries."""
    out = set()
    for node in nodes:
        for n in ast.walk(node):
            if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name):
                out.update((registries or {}).get(n.value.id, ()))
            if isinstance(n, ast.Call):
                f = n.func
                if isinstance(f, ast.Name):
                    out.update((registries or {}).get(f.id, ()))
                out.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return out


def params_read(path: Path, functions: tuple, named: dict) -> tuple[set[str], set[str]]:
    """(params keys read, names called) by ``functions`` of ``path``: attribute chains from the
    Params (``params``), from a section held in a variable (``cp = params.cluster``,
    ``cfg = params.train_for(arch)``, ``self.params``) or in a parameter (``cfg: TrainParams``,
    ``runtime``), cut at the deepest key of params.yaml."""
    keys = param_keys()
    found: set[str] = set()
    held: dict[str, str] = {}  # self.<name>: shared by the methods of a class

    def path_of(node, scope):
        if isinstance(node, ast.Name):
            return scope.get(node.id)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return held.get(node.attr)
            base = path_of(node.value, scope)
            return None if base is None else (f"{base}.{node.attr}" if base else node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = path_of(node.func.value, scope)
            if base == "" and node.func.attr in CALLS:
                found.update(CALLS[node.func.attr][1:])
                return CALLS[node.func.attr][0]
            if base is not None and node.func.attr == "model_copy":
                return base
            if node.func.attr == "from_train" and node.args:  # LossConfig.from_train(cfg): its loss
                arg = path_of(node.args[0], scope)
                if arg is not None:
                    found.add(f"{arg}.loss")
        return None

    def deepest(dotted: str) -> str | None:
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in keys:
                return ".".join(parts[:n])
        return None

    def bind(func):
        scope: dict[str, str] = {}
        if not isinstance(func, ast.Module):
            for arg in func.args.args + func.args.kwonlyargs:
                ann = arg.annotation.id if isinstance(arg.annotation, ast.Name) else None
                if ann in ANNOTATED:
                    scope[arg.arg] = ANNOTATED[ann]
                elif arg.arg in named:
                    scope[arg.arg] = named[arg.arg]
        for node in ast.walk(func):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
                pairs = zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) \
                    and len(target.elts) == len(value.elts) else [(target, value)]  # a, b = x, y: one by one
                for target, value in pairs:
                    p = path_of(value, scope)
                    if p is not None and isinstance(target, ast.Name):
                        scope[target.id] = p
                    elif p is not None and isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                            and target.value.id == "self":
                        held[target.attr] = p
        return scope

    for _ in range(2):  # what a class holds on self (set in one method, read in another)
        for func in functions_of(path) if path.is_relative_to(SRC) else functions:
            bind(func)
    for func in functions:
        scope = bind(func)
        for node in ast.walk(func):
            if isinstance(node, (ast.Attribute, ast.Call)):
                p = path_of(node, scope)
                if p and deepest(p):
                    found.add(deepest(p))
    return found, called_names(functions, registries_of(path))


def stage_reads(name: str) -> set[str]:
    """The keys a stage's script reads, and the library functions it calls (by name, and so on
    through what those call) that take the Params or a section of it."""
    script = REPO / stages()[name]["cmd"].split()[1]
    own = functions_of(script)
    reads, called = params_read(script, own, SCRIPT_NAMED)
    called -= {fn.name for fn in own}  # the script's own functions, not the library's namesakes
    library = [module_file(m) for m in code_closure(script)]
    done: set[tuple[Path, str]] = set()
    while True:
        todo = [(f, fn) for f in library for name, fn in callables_of(f) if name in called and (f, fn) not in done]
        if not todo:
            break
        for f, fn in todo:
            done.add((f, fn))
            r, c = params_read(f, (fn,), NAMED)
            reads |= r
            called |= c
    reads |= UNSEEN.get(name, set())
    reads -= CHECKS.get(name, set())
    reads = {k for k in reads if not any(k == n or k.startswith(n + ".") for n in NOT_PARAMS)}
    # a section read only on the way to its keys is not itself read
    return {k for k in reads if not any(o.startswith(k + ".") for o in reads)}


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_lists_exactly_the_params_it_reads(name):
    """Each key in a stage's ``params:`` is read by its code (a mapping: every key under it, or
    the mapping whole), and each key its code reads is listed (a section handed on whole, as
    ``params.data`` to the download, is covered by its keys listed one by one)."""
    listed = {"arch" if p.startswith("arch.${") else p for p in stages()[name]["params"]}
    reads = stage_reads(name)
    leaves = {k for k in param_keys() if not any(o.startswith(k + ".") for o in param_keys())}
    unlisted = sorted(r for r in reads
                      if not any(r == k or r.startswith(k + ".") or k.startswith(r + ".") for k in listed))
    assert not unlisted, f"{name} reads {unlisted} but dvc.yaml does not list them"
    for key in listed:
        under = [leaf for leaf in leaves if leaf == key or leaf.startswith(key + ".")]
        read = key in reads or all(any(leaf == r or leaf.startswith(r + ".") for r in reads) for leaf in under)
        assert read, f"{name} lists {key} but reads only {sorted(r for r in reads if r.startswith(key))}"


def test_the_params_scan_follows_sections_held_in_variables():
    reads = stage_reads("decoders")
    assert {"decoders.min_blocks", "train.crops.size", "train.loss.recon", "runtime.amp", "arch"} <= reads
    assert "train.crops.steps" not in reads and "cluster.k" not in reads
    assert {"train.blocks.epochs", "train.crops.steps", "train.loss", "runtime.threads"} <= stage_reads("train")


def test_the_params_scan_follows_registries_and_renamed_imports():
    # cluster: run_cluster -> codes (imported as track_codes) -> CODES[track](...) -> BlockCodes,
    # which reads runtime.device; clusterer = CLUSTERERS[cp.method] -> soft_kmeans(cp: ClusterParams)
    assert {"runtime.device", "runtime.amp", "cluster.max_iter", "cluster.tol"} <= stage_reads("cluster")
    # train: TRAINING[track](params, arch, cfg, paths) -> CropTraining, the only reader of fresh_damage
    assert {"train.crops.fresh_damage", "train.crops.float_damage"} <= stage_reads("train")
    assert {"train.crops.fresh_damage", "train.crops.float_damage"} <= stage_reads("decoders")
