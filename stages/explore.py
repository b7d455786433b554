"""explore@<arch>: the latent space of a trained model: interpolation, arithmetic, samples,
chained AE, attribute directions (:mod:`aerestore.pipeline.explore`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

from aerestore.pipeline.explore import ExplorePaths, run_explore  # noqa: E402
from aerestore.stage import StageError, main, stage_paths  # noqa: E402


def run(params, args):
    args, paths = stage_paths(args, ExplorePaths)
    if len(args) != 1:
        raise StageError(f"usage: python stages/explore.py ARCH (one of explore.architectures {params.explore.architectures})")
    run_explore(params, args[0], paths)


if __name__ == "__main__":
    main("explore", run)
