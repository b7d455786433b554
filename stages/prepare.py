"""prepare: resize, augment the training split, degrade the inputs (blur, noise, ...)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

from aerestore.data.prepare import run_prepare  # noqa: E402
from aerestore.stage import main, stage_paths  # noqa: E402


def run(params, args):
    _, paths = stage_paths(args, ("raw", "prepared", "metrics", "grid"))
    run_prepare(params, paths.raw, paths.prepared, paths.metrics, paths.grid)


if __name__ == "__main__":
    main("prepare", run)
