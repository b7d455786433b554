"""What every stage script shares: argument parsing, params, threads, seeds, clean errors,
and the record of the machine a stage computed on (:func:`record_machine`)."""

from __future__ import annotations

import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .params import Params, ParamsError, load_params


class StageError(RuntimeError):
    """A failure with a message meant for the user (bad data, missing input...)."""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_threads(threads: int = 0) -> int:
    """Use ``threads`` CPU threads in torch and in numpy's BLAS (0 = every core) -> the count.

    Floating-point sums are split between the threads, so the count is part of what is
    computed: a fixed count (``runtime.threads``, 2 by default) gives the same numbers on a
    2-core and a 16-core machine of the same CPU, and more threads than cores gives the same
    numbers too, only slower. 0 follows the machine, and so do its results."""
    import torch

    n = threads or cpu_count()
    torch.set_num_threads(n)
    try:  # numpy's BLAS (clustering, PCA, statistics) starts with one thread per core
        from threadpoolctl import threadpool_limits

        threadpool_limits(n, user_api="blas")
    except ImportError:  # pragma: no cover - scikit-learn, a dependency, brings it
        pass
    return n


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, object]:
    """What a stage's floating point depends on, besides the code, the data and the params:
    the CPU and the instruction set torch's kernels use, the threads, the library versions
    (and the GPU, when the process used one). Nothing that changes from run to run, so the
    same machine writes the same record; written beside each stage's metrics by
    :func:`record_machine`."""
    import torch

    info: dict[str, object] = {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "isa": torch.backends.cpu.get_cpu_capability(),  # the kernels torch dispatches to: AVX2, AVX512...
        "cores": cpu_count(),  # logical cores this process may use (for information: results do not depend on it)
        "threads": torch.get_num_threads(),  # torch's intra-op threads: these do change the results
        "processes": int(os.environ.get("WORLD_SIZE", "1")),  # data-parallel training (torchrun)
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
    }
    try:
        from threadpoolctl import threadpool_info

        blas = [b for b in threadpool_info() if b.get("user_api") == "blas"]
        info["blas"] = ", ".join(sorted(  # sorted: the libraries load in another order from run to run
            f"{b.get('internal_api')} {b.get('version') or ''} {b.get('architecture') or ''}"
            .replace("  ", " ").strip() + f" ({b.get('num_threads')} threads)" for b in blas))
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # this process used the GPU
        info["cuda"] = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})"
    return info


MACHINE_DIR = "metrics/machine"


def record_machine(name: str, run=None) -> dict[str, object]:
    """Write :func:`machine_info` to ``metrics/machine/<name>.json`` (a plain output of the
    stage, not a DVC metric: its strings would fill ``dvc metrics diff`` and ``dvc exp show``)
    and set it as ``machine.*`` tags of the stage's MLflow run ``run`` (a
    :class:`aerestore.tracking.run.StageRun`; nothing when tracking is off). -> the record."""
    from .io import write_json

    info = machine_info()
    write_json(Path(MACHINE_DIR) / f"{name}.json", info)
    if run is not None:  # through the run, so that a locked or corrupt store is its one-line error
        run.set_tags({f"machine.{k}": v for k, v in info.items()})
    return info


def arch_argument(params: Params, args: list[str], stage: str) -> str:
    """The architecture a per-architecture stage was called for (``stages/train.py conv_ae``)."""
    if len(args) != 1:
        raise StageError(f"usage: python stages/{stage}.py ARCH (one of {params.architectures})")
    arch = args[0]
    if arch not in params.architectures:
        raise StageError(f"{arch!r} is not in architectures {params.architectures} (params.yaml)")
    return arch


def stage_paths(args: list[str], paths_cls) -> tuple[list[str], object]:
    """Split a stage's arguments (``dvc.yaml``'s ``cmd``) into the positional ones and its
    paths, from ``--field-name path`` options: ``paths_cls`` is a dataclass of paths (or a
    tuple of names: a namespace). Every path is required, so each is written in ``dvc.yaml``
    alone."""
    import dataclasses
    import types

    if isinstance(paths_cls, tuple):
        fields, build = paths_cls, types.SimpleNamespace
    else:
        fields, build = tuple(f.name for f in dataclasses.fields(paths_cls)), paths_cls
    i = next((j for j, a in enumerate(args) if a.startswith("--")), len(args))
    names = {f"--{name.replace('_', '-')}": name for name in fields}
    values: dict[str, Path] = {}
    options = iter(args[i:])
    for key in options:
        if key not in names:
            raise StageError(f"unknown option {key} (this stage takes {', '.join(names)})")
        value = next(options, None)
        if value is None or value.startswith("--"):
            raise StageError(f"{key} needs a path")
        values[names[key]] = Path(value)
    missing = [key for key, name in names.items() if name not in values]
    if missing:
        raise StageError(f"missing {', '.join(missing)} (dvc.yaml's cmd gives every path of the stage)")
    return args[:i], build(**values)


def main(stage: str, fn: Callable[[Params, list[str]], None], argv: list[str] | None = None) -> None:
    """Run ``fn(params, args)`` with params validated first; errors become one clear line."""
    args = list(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    try:
        params = load_params(os.environ.get("AERESTORE_PARAMS", "params.yaml"))
        fn(params, args)
    except (ParamsError, StageError, ValueError, OSError) as exc:
        if os.environ.get("AERESTORE_DEBUG"):
            raise
        kind = "" if isinstance(exc, (ParamsError, StageError)) else f"{type(exc).__name__}: "
        print(f"error in stage {stage}: {kind}{exc}", file=sys.stderr)
        print("(set AERESTORE_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(2)
    print(f"{stage}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
