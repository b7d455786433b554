"""download: fetch or collect the images, check them, drop duplicates, split them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

from aerestore.data.download import run_download  # noqa: E402
from aerestore.stage import main  # noqa: E402


def run(params, args):
    run_download(params.data, params.seed, Path("data/raw"), Path("metrics/download.json"))


if __name__ == "__main__":
    main("download", run)
