"""train@<arch>: train an encoder and a shared decoder, degraded blocks -> clean blocks.

With ``runtime.nproc * runtime.nnodes > 1`` the script re-executes itself under torchrun
(``python -m torch.distributed.run``): every process trains on its share of each batch
(:mod:`aerestore.distributed`) and rank 0 alone writes the outputs and logs to MLflow.
"""

import contextlib
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

import numpy as np  # noqa: E402

from aerestore.io import write_csv, write_json  # noqa: E402
from aerestore.losses import LossConfig  # noqa: E402
from aerestore.models import create_model, model_class, save_model  # noqa: E402
from aerestore import distributed  # noqa: E402
from aerestore.stage import StageError, arch_argument, main, seed_everything  # noqa: E402
from aerestore.stage import record_machine  # noqa: E402
from aerestore.tracking import StageRun, stage_run  # noqa: E402
from aerestore.blockdata import BlockData  # noqa: E402
from aerestore.train import fit  # noqa: E402
from aerestore.blocks import read_geometry  # noqa: E402


def run(params, args):
    arch = arch_argument(params, args, "train")
    cfg = params.train_for(arch)
    rdzv = distributed.rendezvous(params.runtime)
    if rdzv.world_size > 1 and not distributed.under_launcher():
        cmd = distributed.launch_command(rdzv, str(Path(__file__).resolve()), args)
        print(f"train@{arch}: {' '.join(cmd[1:])}", file=sys.stderr)
        code = subprocess.run(cmd).returncode
        if code:
            raise StageError(f"torchrun exited with code {code}")
        return
    distributed.init(params.runtime.device)
    try:
        if getattr(model_class(arch), "fully_conv", False):
            return run_crops(params, arch, cfg)
        return run_blocks(params, arch, cfg)
    finally:
        distributed.shutdown()


def tracked(stage, params, arch):
    """The stage's MLflow run on rank 0; a no-op run on the other ranks."""
    if distributed.is_main():
        return stage_run(stage, params, arch=arch)
    return contextlib.nullcontext(StageRun(None))


def run_blocks(params, arch, cfg):
    train = BlockData.load("data/blocks", "train")
    val = BlockData.load("data/blocks", "val")
    _, channels, block, _ = train.degraded.shape
    seed_everything(params.seed)
    model = create_model(arch, latent=params.latent_for(arch), block=block, channels=channels,
                         loss=LossConfig.from_train(cfg), **params.arch_params(arch).model)
    n_params = sum(p.numel() for p in model.parameters())
    if distributed.is_main():
        print(f"train@{arch}: {n_params:,} parameters, {len(train):,} training blocks of {block} px", file=sys.stderr)

    with tracked(f"train@{arch}", params, arch) as mlrun:
        result = fit(model, train, val, cfg, params.seed,
                     on_epoch=lambda row: mlrun.log_metrics(row, step=int(row["epoch"])), runtime=params.runtime)
        if not distributed.is_main():
            return
        geometry = read_geometry("data/blocks")  # as the blocks stage cut them
        save_model(model, Path(f"models/{arch}/model.pt"), overlap=geometry.overlap,
                   image_size=geometry.image_size,  # what `aerestore interpolate` resizes to
                   extra={"best_epoch": result.best_epoch})
        metrics = {
            "best_val_loss": result.best_val_loss,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "parameters": n_params,
            "latent": params.latent_for(arch),
            "seconds": round(result.seconds, 2),
            "blocks_per_second": round(result.blocks_per_second, 1),
        }
        curve = Path(f"metrics/curves/train_{arch}.csv")
        write_csv(curve, result.history)
        write_json(Path(f"metrics/train/{arch}.json"), metrics)
        record_machine(f"train_{arch}", mlrun)  # the CPU, threads and versions these numbers come from
        mlrun.log_metrics({k: v for k, v in metrics.items() if k != "stopped_early"})
        mlrun.log_artifact(curve)
        example = np.ascontiguousarray(val.degraded[:2] if len(val) else train.degraded[:2]).astype(np.float32) / 255
        mlrun.log_torch_model(model, "model", input_example=example)


def run_crops(params, arch, cfg):
    """Fully convolutional models: random crops of data/prepared, whole validation images."""
    from aerestore.cropdata import ImageData
    from aerestore.croptrain import fit_crops
    from aerestore.data.degrade import degrader

    train = ImageData.load("data/prepared", "train")
    if cfg.crops.fresh_damage:  # each crop degraded anew, as prepare degrades (train.crops.fresh_damage)
        train = train.fresh(degrader(params.prepare.degrade))
    val = ImageData.load("data/prepared", "val")
    seed_everything(params.seed)
    model = create_model(arch, latent=params.latent_for(arch), block=cfg.crops.size, channels=train.channels,
                         loss=LossConfig.from_train(cfg), **params.arch_params(arch).model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"train@{arch}: {n_params:,} parameters, {cfg.crops.steps} steps of {cfg.batch_size} random "
          f"{cfg.crops.size} px crops from {len(train):,} training images"
          + (", each degraded anew" if cfg.crops.fresh_damage else ""), file=sys.stderr)
    with tracked(f"train@{arch}", params, arch) as mlrun:
        result = fit_crops(model, train, val, cfg, params.seed,
                           on_eval=lambda row: mlrun.log_metrics(row, step=int(row["step"])), runtime=params.runtime)
        if not distributed.is_main():
            return
        save_model(model, Path(f"models/{arch}/model.pt"), extra={"best_epoch": result.best_epoch})
        metrics = {
            "best_val_loss": result.best_val_loss,  # pixel MSE on whole validation images
            "best_epoch": result.best_epoch,  # the validation point (every train.crops.eval_every steps)
            "epochs_run": result.epochs_run,
            "stopped_early": False,
            "parameters": n_params,
            "latent": params.latent_for(arch),
            "seconds": round(result.seconds, 2),
            "blocks_per_second": round(result.blocks_per_second, 1),  # crops per second
        }
        curve = Path(f"metrics/curves/train_{arch}.csv")
        write_csv(curve, result.history)
        write_json(Path(f"metrics/train/{arch}.json"), metrics)
        record_machine(f"train_{arch}", mlrun)  # the CPU, threads and versions these numbers come from
        mlrun.log_metrics({k: v for k, v in metrics.items() if k != "stopped_early"})
        mlrun.log_artifact(curve)
        example = (val.degraded[:2] if len(val) else train.degraded[:2]).numpy().astype(np.float32) / 255
        mlrun.log_torch_model(model, "model", input_example=example)


if __name__ == "__main__":
    main("train", run)
