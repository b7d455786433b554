"""cluster@<arch>: cluster the latents of the training blocks and label the clusters."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

import numpy as np  # noqa: E402

from aerestore import cluster as C  # noqa: E402
from aerestore.artifacts import Clusters, ModelKey, write_clusters  # noqa: E402
from aerestore.io import write_json  # noqa: E402
from aerestore.models import check_model, load_model  # noqa: E402
from aerestore.models.device import autocast, resolve_device  # noqa: E402
from aerestore.stage import StageError, arch_argument, main, seed_everything, set_threads  # noqa: E402
from aerestore.stage import record_machine  # noqa: E402
from aerestore.tracking import stage_run  # noqa: E402
from aerestore.blockdata import BlockData  # noqa: E402


def run(params, args):
    arch = arch_argument(params, args, "cluster")
    cp = params.cluster
    set_threads(params.runtime.threads)
    seed_everything(params.seed)
    model_path = Path(f"models/{arch}/model.pt")
    model, _ = load_model(model_path)
    check_model(model, model_path, arch=arch)
    if getattr(model, "fully_conv", False):
        return run_locations(params, arch, model)
    train = BlockData.load("data/blocks", "train")
    check_model(model, model_path, block=train.degraded.shape[-1], where="data/blocks")
    if cp.k > len(train):
        raise StageError(f"cluster.k ({cp.k}) is larger than the number of training blocks ({len(train)})")
    rt = params.runtime  # where and how the encoder runs
    device = resolve_device(rt.device)
    model.to(device)

    with stage_run(f"cluster@{arch}", params, arch=arch) as mlrun:
        with autocast(device, rt.amp):
            z = C.encode_blocks(model, train.degraded)
        rng = np.random.default_rng(params.seed)
        fit_idx = np.sort(rng.choice(len(z), size=min(cp.max_blocks, len(z)), replace=False))
        if cp.method == "soft_kmeans":
            fitted = C.soft_kmeans(z[fit_idx], cp.k, cp.beta, cp.tol, cp.max_iter, params.seed)
            centroids, scale = fitted.centroids, fitted.scale
            labels = C.responsibilities(z, centroids, cp.beta, scale).argmax(1)
            iterations, converged = fitted.iterations, fitted.converged
        else:  # ncut_head / damage_head: the head's argmax; centroids = mean latent per head cluster
            with autocast(device, rt.amp):
                labels = C.head_assign(model, train.degraded, head=cp.method)
            scale = C.latent_scale(z)
            centroids = np.stack([z[labels == c].mean(0) if (labels == c).any() else z.mean(0)
                                  for c in range(cp.k)]).astype(np.float32)
            iterations, converged = 0, True
        info = C.describe_clusters(labels, cp.k, train.clean, train.degraded, train.mask)
        damage = C.damage_shares(train.mask) if train.mask is not None else None
        sil = C.silhouette(z, labels, seed=params.seed)
        write_clusters(Path(f"models/{arch}/clusters.npz"),
                       Clusters(ModelKey.of(model), centroids, scale, cp.beta, cp.method,
                                [i["label"] for i in info], [i["size"] for i in info]))
        metrics = {"method": cp.method, "k": cp.k, "silhouette": sil, "iterations": iterations,
                   "converged": converged, "clusters": info}
        if damage is not None:
            report = C.damage_report(labels, damage)
            metrics["ami_majority_damage"] = report["ami_majority_damage"]
            metrics["by_damage"] = report["by_damage"]
        write_json(Path(f"metrics/cluster/{arch}.json"), metrics)
        record_machine(f"cluster_{arch}", mlrun)
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


def run_locations(params, arch, model):
    """Fully convolutional models: every bottleneck location of the training images is a
    sample; soft k-means on its code vector, or the damage head's class."""
    from aerestore.cropdata import ImageData, location_features

    cp = params.cluster
    train = ImageData.load("data/prepared", "train")
    with stage_run(f"cluster@{arch}", params, arch=arch) as mlrun:
        z, damage = location_features(model, train)
        rng = np.random.default_rng(params.seed)
        fit_idx = np.sort(rng.choice(len(z), size=min(cp.max_blocks, len(z)), replace=False))
        if cp.method == "soft_kmeans":
            if cp.k > len(z):
                raise StageError(f"cluster.k ({cp.k}) is larger than the number of code locations ({len(z)})")
            fitted = C.soft_kmeans(z[fit_idx], cp.k, cp.beta, cp.tol, cp.max_iter, params.seed)
            centroids, scale, k = fitted.centroids, fitted.scale, cp.k
            labels = C.responsibilities(z, centroids, cp.beta, scale).argmax(1)
            iterations, converged = fitted.iterations, fitted.converged
        elif cp.method == "damage_head":  # K = the damage classes; centroids for the plot only
            import torch

            k = len(C.DAMAGE_CLASSES)
            with torch.no_grad():
                labels = model.damage_logits(torch.from_numpy(z)[:, :, None, None]).argmax(1)[:, 0, 0].numpy()
            scale = C.latent_scale(z[fit_idx])
            centroids = np.stack([z[labels == c].mean(0) if (labels == c).any() else z.mean(0)
                                  for c in range(k)]).astype(np.float32)
            iterations, converged = 0, True
        else:
            raise StageError(f"cluster.method {cp.method!r} does not apply to {arch} (fully convolutional): "
                             "use soft_kmeans or damage_head")
        sizes = [int((labels == c).sum()) for c in range(k)]
        info = [{"cluster": c, "size": sizes[c], "share": sizes[c] / max(len(labels), 1)} for c in range(k)]
        metrics = {"method": cp.method, "k": k, "samples": "code locations", "locations": len(z),
                   "silhouette": C.silhouette(z, labels, seed=params.seed), "iterations": iterations,
                   "converged": converged, "clusters": info}
        if damage is not None and hasattr(C, "damage_report"):
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
        write_clusters(Path(f"models/{arch}/clusters.npz"),
                       Clusters(ModelKey.of(model), centroids, scale, cp.beta, cp.method,
                                [i["label"] for i in info], sizes))
        write_json(Path(f"metrics/cluster/{arch}.json"), metrics)
        record_machine(f"cluster_{arch}", mlrun)
        plot = Path(f"metrics/cluster/{arch}_latent.png")
        C.scatter_plot(z, labels, info, plot, f"{arch}: code vectors per location (PCA), {cp.method} k={k}",
                       seed=params.seed, damage=damage)
        for row in info:
            print(f"  cluster {row['cluster']}: {row['label']:10s} {row['size']:8d} locations", file=sys.stderr)
        mlrun.log_metrics({"silhouette": metrics["silhouette"], "iterations": iterations,
                           "ami_majority_damage": metrics.get("ami_majority_damage"),
                           **{f"cluster_{i['cluster']}.size": i["size"] for i in info}})
        mlrun.log_artifact(plot)


if __name__ == "__main__":
    main("cluster", run)
