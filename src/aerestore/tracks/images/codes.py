"""``cluster@<arch>`` on the images track: every bottleneck location is a sample
(:mod:`aerestore.tracks.clustering`)."""

from __future__ import annotations

import sys

import numpy as np
import torch

from ... import cluster as C
from ...stage import StageError
from .dataset import ImageData, location_features


class LocationCodes:
    """``cluster@<arch>`` of a fully convolutional network: every bottleneck location of the
    training images is a sample (its code vector)."""

    samples = "code locations"

    def __init__(self, params, arch: str, model, paths):
        self.arch, self.model = arch, model
        self.train = ImageData.load(paths.prepared, "train")
        self.damage = None

    def encode(self) -> np.ndarray:
        z, self.damage = location_features(self.model, self.train)
        return z

    def head_labels(self, z: np.ndarray, head: str) -> np.ndarray:
        if head != "damage_head":
            raise StageError(f"cluster.method {head!r} does not apply to {self.arch} (fully convolutional): "
                             "use soft_kmeans or damage_head")
        with torch.no_grad():
            return self.model.damage_logits(torch.from_numpy(z)[:, :, None, None]).argmax(1)[:, 0, 0].numpy()

    def head_scale(self, z: np.ndarray, fit_idx: np.ndarray) -> float:
        return C.latent_scale(z[fit_idx])

    def describe(self, z, labels, fitted, cp, seed):
        k, damage = len(fitted.centroids), self.damage
        sizes = [int((labels == c).sum()) for c in range(k)]
        info = [{"cluster": c, "size": sizes[c], "share": sizes[c] / max(len(labels), 1)} for c in range(k)]
        metrics = {"method": cp.method, "k": k, "samples": "code locations", "locations": len(z),
                   "silhouette": C.silhouette(z, labels, seed=seed), "iterations": fitted.iterations,
                   "converged": fitted.converged, "clusters": info}
        if damage is not None:
            report = C.damage_report(labels, damage)
            metrics["ami_majority_damage"] = report["ami_majority_damage"]
            metrics["by_damage"] = report["by_damage"]
            for c, row in enumerate(info):
                sel = labels == c
                for j, name in enumerate(C.DAMAGE_CLASSES[: damage.shape[1]]):
                    row[f"{name}_share"] = float(damage[sel, j].mean()) if sel.any() else None
        for row in info:  # as the block clusters are labelled (cluster.describe_clusters)
            here = [row.get(f"{n}_share") for n in C.DAMAGE_CLASSES]
            row["label"] = ("unlabelled" if damage is None else "empty" if None in here
                            else C.damage_label(np.array(here), damage.mean(0)))
        return info, metrics, damage

    def plot_title(self, arch: str, method: str, k: int) -> str:
        return f"{arch}: code vectors per location (PCA), {method} k={k}"

    def log(self, info, metrics, mlrun) -> None:
        for row in info:
            print(f"  cluster {row['cluster']}: {row['label']:10s} {row['size']:8d} locations", file=sys.stderr)
        mlrun.log_metrics({"silhouette": metrics["silhouette"], "iterations": metrics["iterations"],
                           "ami_majority_damage": metrics.get("ami_majority_damage"),
                           **{f"cluster_{i['cluster']}.size": i["size"] for i in info}})
