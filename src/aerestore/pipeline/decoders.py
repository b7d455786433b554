"""``decoders@<arch>``: one decoder per cluster and the equal-budget controls
(:func:`run_decoders`). ``decoders.method`` picks the job of the architecture's
track from :data:`aerestore.tracks.decoding.DECODER_METHODS`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..artifacts import write_decoders
from ..io import write_csv, write_json
from ..models import check_model
from ..restore import Restorer
from ..stage import record_machine, seed_everything, set_threads
from ..tracking import stage_run
from ..tracks.blocks.decoders import curve_rows, curves_plot
from ..tracks.decoding import fine_tune_decoders


@dataclass(frozen=True)
class DecoderPaths:
    model_dir: Path  # models/<arch>: reads model.pt and clusters.npz, writes decoders.pt
    blocks: Path  # data/blocks (the blocks track)
    prepared: Path  # data/prepared (the images track)
    metrics: Path  # out: metrics/decoders/<arch>.json
    plot: Path  # out: metrics/decoders/<arch>_curve.png
    curve: Path  # out: metrics/decoders/<arch>_curve.csv


def run_decoders(params, arch: str, paths: DecoderPaths) -> None:
    """Fine-tune ``arch``'s decoders; write ``decoders.pt`` beside its model, the summary and the curves."""
    set_threads(params.runtime.threads)
    seed_everything(params.seed)
    # model + clusters only (routing = nearest centroid); the old decoders.pt is being replaced
    restorer = Restorer.load(paths.model_dir, decoders=False)
    check_model(restorer.model, paths.model_dir / "model.pt", arch=arch)
    job = fine_tune_decoders(params, arch, restorer, paths)
    with stage_run(f"decoders@{arch}", params, arch=arch) as mlrun:
        result = job.fit(mlrun)
        write_decoders(paths.model_dir / "decoders.pt", restorer.model, result)
        write_json(paths.metrics, result.summary)
        record_machine(f"decoders_{arch}", mlrun)
        curves_plot(result.histories, paths.plot, job.title)
        write_csv(paths.curve, curve_rows(result.histories))
        job.log(result, mlrun)
        mlrun.log_artifact(paths.plot)
        mlrun.log_artifact(paths.curve)
