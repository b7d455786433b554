"""``cluster@<arch>`` on the blocks track: one code per training block (:mod:`aerestore.tracks.clustering`)."""

from __future__ import annotations

import sys

import numpy as np

from ... import cluster as C
from ...models import check_model
from ...models.device import autocast, resolve_device
from ...stage import StageError
from .dataset import BlockData


class BlockCodes:
    """``cluster@<arch>`` of a block network: one code (the latent vector) per training block."""

    samples = "training blocks"

    def __init__(self, params, arch: str, model, paths):
        cp = params.cluster
        self.model = model
        self.train = BlockData.load(paths.blocks, "train")
        check_model(model, paths.model_dir / "model.pt", block=self.train.degraded.shape[-1], where=str(paths.blocks))
        if cp.k > len(self.train):
            raise StageError(f"cluster.k ({cp.k}) is larger than the number of training blocks ({len(self.train)})")
        rt = params.runtime  # where and how the encoder runs
        self.device, self.amp = resolve_device(rt.device), rt.amp
        model.to(self.device)

    def encode(self) -> np.ndarray:
        with autocast(self.device, self.amp):
            return C.encode_blocks(self.model, self.train.degraded)

    def head_labels(self, z: np.ndarray, head: str) -> np.ndarray:
        with autocast(self.device, self.amp):
            return C.head_assign(self.model, self.train.degraded, head=head)

    def head_scale(self, z: np.ndarray, fit_idx: np.ndarray) -> float:
        return C.latent_scale(z)

    def describe(self, z, labels, fitted, cp, seed):
        train = self.train
        info = C.describe_clusters(labels, cp.k, train.clean, train.degraded, train.mask)
        damage = C.damage_shares(train.mask) if train.mask is not None else None
        metrics = {"method": cp.method, "k": cp.k, "silhouette": C.silhouette(z, labels, seed=seed),
                   "iterations": fitted.iterations, "converged": fitted.converged, "clusters": info}
        if damage is not None:
            report = C.damage_report(labels, damage)
            metrics["ami_majority_damage"] = report["ami_majority_damage"]
            metrics["by_damage"] = report["by_damage"]
        return info, metrics, damage

    def plot_title(self, arch: str, method: str, k: int) -> str:
        return f"{arch}: latent of training blocks (PCA), {method} k={k}"

    def log(self, info, metrics, mlrun) -> None:
        for line in info:
            print(f"  cluster {line['cluster']}: {line['label']:8s} {line['size']:7d} blocks"
                  + "".join(f", {name} {line[f'{name}_share']:.0%}" for name in C.DAMAGE_CLASSES
                            if f"{name}_share" in line), file=sys.stderr)
        if "ami_majority_damage" in metrics:
            print(f"  adjusted mutual information with the blocks' majority damage: "
                  f"{metrics['ami_majority_damage']:.3f}", file=sys.stderr)
        mlrun.log_metrics({"silhouette": metrics["silhouette"], "iterations": metrics["iterations"],
                           "ami_majority_damage": metrics.get("ami_majority_damage"),
                           "by_damage": metrics.get("by_damage", {}),
                           **{f"cluster_{i['cluster']}.size": i["size"] for i in info},
                           **{f"cluster_{i['cluster']}.{name}_share": i.get(f"{name}_share")
                              for i in info for name in C.DAMAGE_CLASSES}})
