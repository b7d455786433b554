"""blocks: cut every prepared image into overlapping blocks (clean, degraded, mask)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

from aerestore.blocks import run_blocks  # noqa: E402
from aerestore.stage import main, stage_paths  # noqa: E402


def run(params, args):
    _, paths = stage_paths(args, ("prepared", "blocks", "metrics"))
    run_blocks(params, paths.prepared, paths.blocks, paths.metrics)


if __name__ == "__main__":
    main("blocks", run)
