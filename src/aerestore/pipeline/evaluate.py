"""``evaluate``: every restorer on the test images, whole-image metrics, the summary table
(:func:`run_evaluation`, around :func:`aerestore.evaluate.run_evaluate`), logged to MLflow
and (``mlflow.register_models``) registered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..evaluate import run_evaluate
from ..stage import record_machine, seed_everything, set_threads
from ..tracking import stage_run


@dataclass(frozen=True)
class EvaluatePaths:
    prepared: Path  # data/prepared
    models: Path  # models: one folder per architecture
    metrics: Path  # out: metrics/evaluate.json
    details: Path  # out: metrics/evaluate_details.json
    summary: Path  # out: metrics/summary.md
    plots: Path  # out: metrics/evaluate (a folder of PNG)


def run_evaluation(params, paths: EvaluatePaths) -> dict:
    """Evaluate every architecture of ``params`` and write the outputs; -> the results."""
    set_threads(params.runtime.threads)
    seed_everything(params.seed)
    with stage_run("evaluate", params) as mlrun:
        result, summary = run_evaluate(params, paths.prepared, paths.models, paths.metrics, paths.details,
                                       paths.summary, paths.plots)
        mlrun.log_metrics(result)
        record_machine("evaluate", mlrun)
        for path in [paths.summary, *sorted(paths.plots.glob("*.png"))]:
            mlrun.log_artifact(path)
        mlrun.add_note("\n\n".join(summary.split("\n\n")[:3]))  # the title, the table, the best classical
        if params.mlflow.register_models:  # versions tagged with their test and validation figures;
            # the alias champion goes to the best by validation PSNR (the test split only reports)
            mlrun.register_restorers(paths.models, params.architectures, result, routing=params.evaluate.routing,
                                     prepared=paths.prepared, max_images=params.evaluate.max_images)
    print(summary)
    return result
