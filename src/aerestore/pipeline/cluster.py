"""``cluster@<arch>``: cluster the codes of the training data and label the clusters
(:func:`run_cluster`).

The samples and their codes come from the architecture's track (blocks, or code locations
of whole images: :data:`aerestore.tracks.clustering.CODES`); ``cluster.method`` picks a
clusterer from :data:`CLUSTERERS`. A clusterer is a function ``(codes, z, fit_idx, cp, seed)
-> Fitted``: ``codes`` the track's :class:`~aerestore.tracks.registry.Codes`, ``z`` their
float32 ``(N, D)`` codes, ``fit_idx`` the sorted indices of at most ``cluster.max_blocks``
of them drawn for fitting, ``cp`` the ``cluster`` params; every sample gets a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import cluster as C
from ..artifacts import Clusters, ModelKey, write_clusters
from ..io import write_json
from ..models import check_model, load_model
from ..params import ClusterParams
from ..stage import StageError, record_machine, seed_everything, set_threads
from ..tracking import stage_run
from ..tracks.clustering import codes as track_codes


@dataclass(frozen=True)
class ClusterPaths:
    model_dir: Path  # models/<arch>: reads model.pt, writes clusters.npz
    blocks: Path  # data/blocks (the blocks track)
    prepared: Path  # data/prepared (the images track)
    metrics: Path  # out: metrics/cluster/<arch>.json
    plot: Path  # out: metrics/cluster/<arch>_latent.png


@dataclass
class Fitted:
    """What a clusterer found: centroids (K, D) and the scale saved for routing, a label per sample."""

    centroids: np.ndarray
    scale: float
    labels: np.ndarray
    iterations: int = 0
    converged: bool = True


def soft_kmeans(codes, z: np.ndarray, fit_idx: np.ndarray, cp: ClusterParams, seed: int) -> Fitted:
    """Soft k-means (:func:`aerestore.cluster.soft_kmeans`) on the drawn codes; every code
    labelled by its largest responsibility."""
    if cp.k > len(z):
        raise StageError(f"cluster.k ({cp.k}) is larger than the number of {codes.samples} ({len(z)})")
    fitted = C.soft_kmeans(z[fit_idx], cp.k, cp.beta, cp.tol, cp.max_iter, seed)
    labels = C.responsibilities(z, fitted.centroids, cp.beta, fitted.scale).argmax(1)
    return Fitted(fitted.centroids, fitted.scale, labels, fitted.iterations, fitted.converged)


def head(name: str) -> Callable[..., Fitted]:
    """A clusterer taking the argmax of the model's head ``name``; the centroids are the
    mean code per head cluster (:func:`aerestore.cluster.mean_centroids`)."""
    def fit(codes, z: np.ndarray, fit_idx: np.ndarray, cp: ClusterParams, seed: int) -> Fitted:
        labels = codes.head_labels(z, name)
        return Fitted(C.mean_centroids(z, labels, cp.k), codes.head_scale(z, fit_idx), labels)

    fit.__name__ = name
    return fit


# cluster.method -> clusterer
CLUSTERERS: dict[str, Callable[..., Fitted]] = {
    "soft_kmeans": soft_kmeans,
    "ncut_head": head("ncut_head"),  # the soft n-cut head trained with the model (block networks)
    "damage_head": head("damage_head"),  # the damage head's classes: K = clean / blur / noise
}


def run_cluster(params, arch: str, paths: ClusterPaths) -> None:
    """Cluster ``arch``'s codes; write ``clusters.npz`` beside its model, the metrics and the plot."""
    cp = params.cluster
    set_threads(params.runtime.threads)
    seed_everything(params.seed)
    model_path = paths.model_dir / "model.pt"
    model, _ = load_model(model_path)
    check_model(model, model_path, arch=arch)
    codes = track_codes(params, arch, model, paths)
    clusterer = CLUSTERERS[cp.method]
    with stage_run(f"cluster@{arch}", params, arch=arch) as mlrun:
        z = codes.encode()
        rng = np.random.default_rng(params.seed)
        fit_idx = np.sort(rng.choice(len(z), size=min(cp.max_blocks, len(z)), replace=False))
        fitted = clusterer(codes, z, fit_idx, cp, params.seed)
        info, metrics, damage = codes.describe(z, fitted.labels, fitted, cp, params.seed)
        write_clusters(paths.model_dir / "clusters.npz",
                       Clusters(ModelKey.of(model), fitted.centroids, fitted.scale, cp.beta, cp.method,
                                [i["label"] for i in info], [i["size"] for i in info]))
        write_json(paths.metrics, metrics)
        record_machine(f"cluster_{arch}", mlrun)
        C.scatter_plot(z, fitted.labels, info, paths.plot, codes.plot_title(arch, cp.method, len(fitted.centroids)),
                       seed=params.seed, damage=damage)
        codes.log(info, metrics, mlrun)
        mlrun.log_artifact(paths.plot)
