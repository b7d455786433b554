"""download: fetch or collect the images, check them, drop duplicates, split them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

from aerestore.data.download import run_download  # noqa: E402
from aerestore.stage import main, stage_paths  # noqa: E402


def run(params, args):
    _, paths = stage_paths(args, ("raw", "metrics"))
    run_download(params.data, params.seed, paths.raw, paths.metrics)


if __name__ == "__main__":
    main("download", run)
