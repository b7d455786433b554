"""evaluate: every restorer on the test images, whole-image metrics, the summary table."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

from aerestore.evaluate import run_evaluate  # noqa: E402
from aerestore.stage import main, seed_everything, set_threads  # noqa: E402
from aerestore.stage import record_machine  # noqa: E402
from aerestore.tracking import stage_run  # noqa: E402


def run(params, args):
    set_threads(params.runtime.threads)
    seed_everything(params.seed)
    with stage_run("evaluate", params) as mlrun:
        result, summary = run_evaluate(
            params, Path("data/prepared"), Path("models"), Path("metrics/evaluate.json"),
            Path("metrics/evaluate_details.json"), Path("metrics/summary.md"), Path("metrics/evaluate"),
        )
        mlrun.log_metrics(result)
        record_machine("evaluate", mlrun)
        for path in [Path("metrics/summary.md"), *sorted(Path("metrics/evaluate").glob("*.png"))]:
            mlrun.log_artifact(path)
        mlrun.add_note("\n\n".join(summary.split("\n\n")[:3]))  # the title, the table, the best classical
        if params.mlflow.register_models:  # versions tagged with their test and validation figures;
            # the alias champion goes to the best by validation PSNR (the test split only reports)
            mlrun.register_restorers(Path("models"), params.architectures, result, routing=params.evaluate.routing,
                                     prepared=Path("data/prepared"), max_images=params.evaluate.max_images)
    print(summary)


if __name__ == "__main__":
    main("evaluate", run)
