"""train@<arch>: train an encoder and a shared decoder, degraded -> clean (on several
processes under torchrun when runtime.nproc * runtime.nnodes > 1; :mod:`aerestore.pipeline.train`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

from aerestore.pipeline.train import TrainPaths, run_train  # noqa: E402
from aerestore.stage import arch_argument, main, stage_paths  # noqa: E402


def run(params, args):
    args, paths = stage_paths(args, TrainPaths)
    run_train(params, arch_argument(params, args, "train"), paths)


if __name__ == "__main__":
    main("train", run)
