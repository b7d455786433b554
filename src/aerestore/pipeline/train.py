"""``train@<arch>``: train an encoder and a shared decoder, degraded -> clean
(:func:`run_train`), on the architecture's track (:mod:`aerestore.tracks`).

With ``runtime.nproc * runtime.nnodes > 1`` the stage re-executes itself under torchrun
(``python -m torch.distributed.run``): every process trains on its share of each batch
(:mod:`aerestore.distributed`) and rank 0 alone writes the outputs and logs to MLflow.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import distributed
from ..io import write_csv, write_json
from ..stage import StageError, record_machine
from ..tracking import StageRun, stage_run
from ..tracks.training import training


@dataclass(frozen=True)
class TrainPaths:
    blocks: Path  # data/blocks (the blocks track)
    prepared: Path  # data/prepared (the images track)
    model: Path  # out: models/<arch>/model.pt
    metrics: Path  # out: metrics/train/<arch>.json
    curve: Path  # out: metrics/curves/train_<arch>.csv


def tracked(stage, params, arch):
    """The stage's MLflow run on rank 0; a no-op run on the other ranks."""
    if distributed.is_main():
        return stage_run(stage, params, arch=arch)
    return contextlib.nullcontext(StageRun(None))


def run_train(params, arch: str, paths: TrainPaths) -> None:
    """Train ``arch`` and write ``paths.model``, its metrics and its curve. Launches torchrun
    (re-executing this process's command line) when the params ask for several processes."""
    cfg = params.train_for(arch)
    rdzv = distributed.rendezvous(params.runtime)
    if rdzv.world_size > 1 and not distributed.under_launcher():
        cmd = distributed.launch_command(rdzv, str(Path(sys.argv[0]).resolve()), sys.argv[1:])
        print(f"train@{arch}: {' '.join(cmd[1:])}", file=sys.stderr)
        code = subprocess.run(cmd).returncode
        if code:
            raise StageError(f"torchrun exited with code {code}")
        return
    distributed.init(params.runtime.device)
    try:
        _train(params, arch, cfg, paths)
    finally:
        distributed.shutdown()


def _train(params, arch: str, cfg, paths: TrainPaths, stage: str = "train") -> None:
    """Train ``arch`` with ``cfg`` and write ``paths``; the MLflow run is ``<stage>@<arch>``
    (``peer@<name>`` trains a peer by this same code)."""
    job = training(params, arch, cfg, paths)
    with tracked(f"{stage}@{arch}", params, arch) as mlrun:
        result = job.fit(cfg, params.seed, mlrun.log_metrics, runtime=params.runtime)
        if not distributed.is_main():
            return
        job.save(paths.model, result)
        metrics = {
            "best_val_loss": result.best_val_loss,  # images track: pixel MSE on whole validation images
            "best_epoch": result.best_epoch,  # images track: the validation point (every train.crops.eval_every steps)
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "parameters": job.n_params,
            "latent": params.latent_for(arch),
            "seconds": round(result.seconds, 2),
            "blocks_per_second": round(result.blocks_per_second, 1),  # images track: crops per second
        }
        write_csv(paths.curve, result.history)
        write_json(paths.metrics, metrics)
        record_machine(f"train_{arch}", mlrun)  # the CPU, threads and versions these numbers come from
        mlrun.log_metrics({k: v for k, v in metrics.items() if k != "stopped_early"})
        mlrun.log_artifact(paths.curve)
        mlrun.log_torch_model(job.model, "model", input_example=job.example())
