"""blocks: cut every prepared image into overlapping blocks (clean, degraded, mask)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

from aerestore.blocks import run_blocks  # noqa: E402
from aerestore.stage import main  # noqa: E402


def run(params, args):
    run_blocks(params, Path("data/prepared"), Path("data/blocks"), Path("metrics/blocks.json"))


if __name__ == "__main__":
    main("blocks", run)
