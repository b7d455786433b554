"""evaluate: every restorer on the test images, whole-image metrics, the summary table
(:func:`aerestore.pipeline.evaluate.run_evaluation`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

from aerestore.pipeline.evaluate import EvaluatePaths, run_evaluation  # noqa: E402
from aerestore.stage import main, stage_paths  # noqa: E402


def run(params, args):
    _, paths = stage_paths(args, EvaluatePaths)
    run_evaluation(params, paths)


if __name__ == "__main__":
    main("evaluate", run)
