"""What every stage script shares: argument parsing, params, threads, seeds, clean errors."""

from __future__ import annotations

import os
import random
import sys
import time
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
    import torch

    n = threads or cpu_count()
    torch.set_num_threads(n)
    return n


def arch_argument(params: Params, args: list[str], stage: str) -> str:
    """The architecture a per-architecture stage was called for (``stages/train.py conv_ae``)."""
    if len(args) != 1:
        raise StageError(f"usage: python stages/{stage}.py ARCH (one of {params.architectures})")
    arch = args[0]
    if arch not in params.architectures:
        raise StageError(f"{arch!r} is not in architectures {params.architectures} (params.yaml)")
    return arch


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
