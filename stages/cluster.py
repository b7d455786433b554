"""cluster@<arch>: cluster the codes of the training data and label the clusters
(:mod:`aerestore.pipeline.cluster`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

from aerestore.pipeline.cluster import ClusterPaths, run_cluster  # noqa: E402
from aerestore.stage import arch_argument, main, stage_paths  # noqa: E402


def run(params, args):
    args, paths = stage_paths(args, ClusterPaths)
    run_cluster(params, arch_argument(params, args, "cluster"), paths)


if __name__ == "__main__":
    main("cluster", run)
