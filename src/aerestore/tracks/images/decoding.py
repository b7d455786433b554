"""``decoders@<arch>`` on the images track: decoders fine-tuned on crops with per-pixel
routing maps, or a learned gate (:mod:`aerestore.tracks.decoding`)."""

from __future__ import annotations

import sys

import numpy as np
import torch

from .dataset import ImageData, location_features


class MapDecoders:
    """``decoders@<arch>`` of a fully convolutional network: decoders fine-tuned on crops,
    the loss weighted per pixel by the routing maps; the control on all pixels for their
    summed updates (method ``clusters``, :func:`aerestore.tracks.images.decoders.train_map_decoders`)."""

    what = "per-cluster decoders (map-weighted)"

    def __init__(self, params, arch: str, restorer, paths):
        from ...data.degrade import crop_damage

        self.params, self.restorer = params, restorer
        dp = params.decoders
        tp = params.train_for(arch)
        self.crop, self.recon = tp.crops.size, tp.loss.recon  # fine-tune on the loss the shared decoder was trained on
        prepared = ImageData.load(paths.prepared, "train")
        z, _ = location_features(restorer.model, prepared)  # the cluster sizes: on the prepared copies
        # fine-tuned (control alike) on the damage the shared decoder was trained on
        self.train, self.val = crop_damage(prepared, ImageData.load(paths.prepared, "val"), params.prepare.degrade,
                                           params.seed, fresh=tp.crops.fresh_damage, float_damage=tp.crops.float_damage)
        with torch.no_grad():
            code = torch.from_numpy(z)[:, :, None, None]
            labels = restorer.route_maps(code)[:, :, 0, 0].argmax(1).numpy()
        self.k = int(restorer.route_maps(code[:1]).shape[1])
        self.sizes = [int((labels == c).sum()) for c in range(self.k)]
        self.eval_every = max(1, round(dp.eval_every / dp.crop_batch))  # decoders.eval_every counts samples
        self.title = f"{arch}: {self.what} and the control"

    def fit(self, mlrun):
        from .decoders import train_map_decoders

        dp, restorer = self.params.decoders, self.restorer
        return train_map_decoders(restorer.model, restorer.route_maps, self.k, self.train, self.val, steps=dp.steps,
                                  lr=dp.lr, batch_size=dp.crop_batch, crop=self.crop, eval_every=self.eval_every,
                                  min_locations=dp.min_blocks, seed=self.params.seed, sizes=self.sizes,
                                  recon=self.recon, ensemble=dp.ensemble)

    def log(self, result, mlrun) -> None:
        for name, hist in result.histories.items():
            for row in hist:
                mlrun.log_metrics({f"{name}.{key}": v for key, v in row.items()
                                   if key != "step" and np.isfinite(v)}, step=row["step"])
        mlrun.log_metrics({"val_loss": result.summary["val_loss"]})


class GateDecoders(MapDecoders):
    """``decoders.method: gate``: K decoders and a learned gate trained end to end
    (:func:`aerestore.tracks.images.gate_decoders.train_gate_decoders`)."""

    what = "a learned gate over K decoders"

    def fit(self, mlrun):
        from .gate_decoders import train_gate_decoders

        dp, restorer = self.params.decoders, self.restorer
        result = train_gate_decoders(restorer.model, initial_gate(restorer, self.k), self.train, self.val,
                                     steps=dp.steps, lr=dp.lr, gate_lr=dp.gate_lr, balance=dp.balance,
                                     batch_size=dp.crop_batch, crop=self.crop, eval_every=self.eval_every,
                                     seed=self.params.seed, recon=self.recon)
        log_gate_routing(result.summary["routing"], mlrun)
        return result


def initial_gate(restorer, k: int):
    """The gate before training: the damage head's logits when the routing was the damage
    head's (its K classes), else zero weights (uniform; noisy gating breaks the symmetry)."""
    from ...gate import Gate

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
