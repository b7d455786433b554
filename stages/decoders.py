"""decoders@<arch>: one decoder per cluster, and the equal-budget controls
(:mod:`aerestore.pipeline.decoders`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

from aerestore.pipeline.decoders import DecoderPaths, run_decoders  # noqa: E402
from aerestore.stage import arch_argument, main, stage_paths  # noqa: E402


def run(params, args):
    args, paths = stage_paths(args, DecoderPaths)
    run_decoders(params, arch_argument(params, args, "decoders"), paths)


if __name__ == "__main__":
    main("decoders", run)
