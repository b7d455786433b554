"""cluster@<arch>: cluster the latents of the training blocks and label the clusters."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

import numpy as np  # noqa: E402

from aerestore import cluster as C  # noqa: E402
from aerestore.io import atomic_path, write_json  # noqa: E402
from aerestore.models import load_model  # noqa: E402
from aerestore.stage import StageError, arch_argument, main, seed_everything, set_threads  # noqa: E402
from aerestore.tracking import stage_run  # noqa: E402
from aerestore.blockdata import BlockData  # noqa: E402


def run(params, args):
    arch = arch_argument(params, args, "cluster")
    cp = params.cluster
    set_threads(params.train_for(arch).threads)
    seed_everything(params.seed)
    model, _ = load_model(Path(f"models/{arch}/model.pt"))
    train = BlockData.load("data/blocks", "train")
    if cp.k > len(train):
        raise StageError(f"cluster.k ({cp.k}) is larger than the number of training blocks ({len(train)})")

    with stage_run(f"cluster@{arch}", params, arch=arch) as mlrun:
        z = C.encode_blocks(model, train.degraded)
        rng = np.random.default_rng(params.seed)
        fit_idx = np.sort(rng.choice(len(z), size=min(cp.max_blocks, len(z)), replace=False))
        if cp.method == "soft_kmeans":
            fitted = C.soft_kmeans(z[fit_idx], cp.k, cp.beta, cp.tol, cp.max_iter, params.seed)
            centroids, scale = fitted.centroids, fitted.scale
            labels = C.responsibilities(z, centroids, cp.beta, scale).argmax(1)
            iterations, converged = fitted.iterations, fitted.converged
        else:  # ncut_head: the head's argmax; centroids = mean latent per head cluster
            labels = C.head_assign(model, train.degraded)
            scale = C.latent_scale(z)
            centroids = np.stack([z[labels == c].mean(0) if (labels == c).any() else z.mean(0)
                                  for c in range(cp.k)]).astype(np.float32)
            iterations, converged = 0, True
        info = C.describe_clusters(labels, cp.k, train.clean, train.degraded, train.mask)
        damage = C.damage_shares(train.mask) if train.mask is not None else None
        sil = C.silhouette(z, labels, seed=params.seed)
        with atomic_path(Path(f"models/{arch}/clusters.npz")) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, centroids=centroids, scale=np.float64(scale), beta=np.float64(cp.beta),
                         method=np.str_(cp.method), labels=np.array([i["label"] for i in info]),
                         sizes=np.array([i["size"] for i in info]))
        metrics = {"method": cp.method, "k": cp.k, "silhouette": sil, "iterations": iterations,
                   "converged": converged, "clusters": info}
        if damage is not None:
            report = C.damage_report(labels, damage)
            metrics["ami_majority_damage"] = report["ami_majority_damage"]
            metrics["by_damage"] = report["by_damage"]
        write_json(Path(f"metrics/cluster/{arch}.json"), metrics)
        plot = Path(f"metrics/cluster/{arch}_latent.png")
        C.scatter_plot(z, labels, info, plot, f"{arch}: latent of training blocks (PCA), {cp.method} k={cp.k}",
                       seed=params.seed, damage=damage)
        for line in info:
            print(f"  cluster {line['cluster']}: {line['label']:8s} {line['size']:7d} blocks"
                  + "".join(f", {name} {line[f'{name}_share']:.0%}" for name in C.DAMAGE_CLASSES
                            if f"{name}_share" in line), file=sys.stderr)
        if damage is not None:
            print(f"  adjusted mutual information with the blocks' majority damage: "
                  f"{metrics['ami_majority_damage']:.3f}", file=sys.stderr)
        mlrun.log_metrics({"silhouette": sil, "iterations": iterations,
                           "ami_majority_damage": metrics.get("ami_majority_damage"),
                           "by_damage": metrics.get("by_damage", {}),
                           **{f"cluster_{i['cluster']}.size": i["size"] for i in info},
                           **{f"cluster_{i['cluster']}.{name}_share": i.get(f"{name}_share")
                              for i in info for name in C.DAMAGE_CLASSES}})
        mlrun.log_artifact(plot)


if __name__ == "__main__":
    main("cluster", run)
