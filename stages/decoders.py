"""decoders@<arch>: one decoder per cluster, and the equal-budget control decoder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

from aerestore.artifacts import write_decoders  # noqa: E402
from aerestore.decoders import curve_rows, curves_plot, train_decoders  # noqa: E402
from aerestore.io import write_csv, write_json  # noqa: E402
from aerestore.models import check_model  # noqa: E402
from aerestore.restore import Restorer  # noqa: E402
from aerestore.models.device import autocast, resolve_device  # noqa: E402
from aerestore.stage import StageError, arch_argument, main, seed_everything, set_threads  # noqa: E402
from aerestore.stage import record_machine  # noqa: E402
from aerestore.tracking import stage_run  # noqa: E402
from aerestore.blockdata import BlockData  # noqa: E402


def run(params, args):
    arch = arch_argument(params, args, "decoders")
    dp = params.decoders
    set_threads(params.runtime.threads)
    seed_everything(params.seed)
    # model + clusters only (routing = nearest centroid); the old decoders.pt is being replaced
    restorer = Restorer.load(Path(f"models/{arch}"), decoders=False)
    check_model(restorer.model, Path(f"models/{arch}/model.pt"), arch=arch)
    if getattr(restorer.model, "fully_conv", False):
        return run_maps(params, arch, restorer)
    if dp.method == "gate":
        raise StageError(f"decoders.method 'gate' is built for fully convolutional models (unet_ae), not {arch}: "
                         "run it with architectures=[unet_ae]")
    train = BlockData.load("data/blocks", "train")
    val = BlockData.load("data/blocks", "val")
    check_model(restorer.model, Path(f"models/{arch}/model.pt"), block=train.degraded.shape[-1], where="data/blocks")
    if restorer.centroids is None:
        raise StageError(f"models/{arch}/clusters.npz: not found (run cluster@{arch} first)")
    k = len(restorer.centroids)
    rt = params.runtime  # where and how the networks run
    device = resolve_device(rt.device)
    restorer.to(device, rt.amp)

    with stage_run(f"decoders@{arch}", params, arch=arch) as mlrun:
        with autocast(device, rt.amp):
            result = train_decoders(restorer.model, restorer.route, k, train, val, dp.epochs, dp.lr,
                                    dp.batch_size, dp.min_blocks, params.seed, eval_every=dp.eval_every,
                                    ensemble=dp.ensemble)
        write_decoders(Path(f"models/{arch}/decoders.pt"), restorer.model, result)
        write_json(Path(f"metrics/decoders/{arch}.json"), result.summary)
        record_machine(f"decoders_{arch}", mlrun)
        plot = Path(f"metrics/decoders/{arch}_curve.png")
        curves_plot(result.histories, plot, f"{arch}: per-cluster decoders and the controls")
        write_csv(Path(f"metrics/decoders/{arch}_curve.csv"), curve_rows(result.histories))
        for name, hist in result.histories.items():
            for row in hist:  # step = block updates of that decoder so far
                mlrun.log_metrics({f"{name}.{k}": v for k, v in row.items() if k != "step"}, step=row["step"])
        mlrun.log_metrics({"val_loss": result.summary["val_loss"]})
        mlrun.log_metrics({f"val_loss_by_cluster.{c}": row for c, row in enumerate(result.summary["val_loss_by_cluster"])})
        mlrun.log_artifact(plot)
        mlrun.log_artifact(Path(f"metrics/decoders/{arch}_curve.csv"))
        for c, fb in enumerate(result.fallback):
            if fb:
                print(f"  cluster {c}: too few blocks, uses the control decoder", file=sys.stderr)


def run_maps(params, arch, restorer):
    """Fully convolutional models: decoders fine-tuned on crops, the loss weighted per
    pixel by the routing maps; the control on all pixels for their summed updates."""
    import numpy as np

    from aerestore.cropdata import ImageData, location_features
    from aerestore.data.degrade import degrader
    from aerestore.mapdecoders import train_gate_decoders, train_map_decoders

    dp = params.decoders
    tp = params.train_for(arch)
    crop, recon = tp.crops.size, tp.loss.recon  # fine-tune on the loss the shared decoder was trained on
    train = ImageData.load("data/prepared", "train")
    val = ImageData.load("data/prepared", "val")
    z, _ = location_features(restorer.model, train)  # the cluster sizes: on the prepared copies
    if tp.crops.fresh_damage:  # fine-tuned on fresh damage as the shared decoder was trained (control alike)
        train = train.fresh(degrader(params.prepare.degrade))
    import torch

    with torch.no_grad():
        code = torch.from_numpy(z)[:, :, None, None]
        labels = restorer.route_maps(code)[:, :, 0, 0].argmax(1).numpy()
    k = int(restorer.route_maps(code[:1]).shape[1])
    sizes = [int((labels == c).sum()) for c in range(k)]
    eval_every = max(1, round(dp.eval_every / dp.crop_batch))  # decoders.eval_every counts samples
    with stage_run(f"decoders@{arch}", params, arch=arch) as mlrun:
        if dp.method == "gate":
            result = train_gate_decoders(restorer.model, initial_gate(restorer, k), train, val, steps=dp.steps,
                                         lr=dp.lr, gate_lr=dp.gate_lr, balance=dp.balance, batch_size=dp.crop_batch,
                                         crop=crop, eval_every=eval_every, seed=params.seed, recon=recon)
            log_gate_routing(result.summary["routing"], mlrun)
        else:
            result = train_map_decoders(restorer.model, restorer.route_maps, k, train, val, steps=dp.steps,
                                        lr=dp.lr, batch_size=dp.crop_batch, crop=crop, eval_every=eval_every,
                                        min_locations=dp.min_blocks, seed=params.seed, sizes=sizes, recon=recon,
                                        ensemble=dp.ensemble)
        write_decoders(Path(f"models/{arch}/decoders.pt"), restorer.model, result)
        write_json(Path(f"metrics/decoders/{arch}.json"), result.summary)
        record_machine(f"decoders_{arch}", mlrun)
        plot = Path(f"metrics/decoders/{arch}_curve.png")
        what = "a learned gate over K decoders" if dp.method == "gate" else "per-cluster decoders (map-weighted)"
        curves_plot(result.histories, plot, f"{arch}: {what} and the control")
        write_csv(Path(f"metrics/decoders/{arch}_curve.csv"), curve_rows(result.histories))
        for name, hist in result.histories.items():
            for row in hist:
                mlrun.log_metrics({f"{name}.{key}": v for key, v in row.items()
                                   if key != "step" and np.isfinite(v)}, step=row["step"])
        mlrun.log_metrics({"val_loss": result.summary["val_loss"]})
        mlrun.log_artifact(plot)
        mlrun.log_artifact(Path(f"metrics/decoders/{arch}_curve.csv"))


def initial_gate(restorer, k: int):
    """The gate before training: the damage head's logits when the routing was the damage
    head's (its K classes), else zero weights (uniform; noisy gating breaks the symmetry)."""
    from aerestore.gate import Gate

    model = restorer.model
    if restorer.method == "damage_head" and int(model.damage_head.out_channels) == k:
        return Gate.from_damage_head(model)
    return Gate(int(model.latent_dim), k)


def log_gate_routing(routing: dict, mlrun) -> None:
    """Do the gate's routes follow the damage? Printed and logged to MLflow, per split."""
    for split, rep in routing.items():
        if "ami_majority_damage" not in rep:
            continue
        for row in rep["clusters"]:
            print(f"  gate route {row['cluster']} ({split}): {row['size']:8d} locations"
                  + "".join(f", {n} {row[n]:.0%}" for n in row if n.endswith("_share")), file=sys.stderr)
        print(f"  gate routes vs majority damage ({split}): AMI {rep['ami_majority_damage']:.3f}", file=sys.stderr)
        mlrun.log_metrics({f"gate_{split}": {"ami_majority_damage": rep["ami_majority_damage"],
                                             "by_damage": rep["by_damage"],
                                             **{f"route_{row['cluster']}": row for row in rep["clusters"]}}})


if __name__ == "__main__":
    main("decoders", run)
