"""Latent clustering of blocks (``cluster@<arch>``).

Soft k-means as in the CelebA block study: responsibilities

    r_ik = exp(-beta * d_ik^2 / s^2) / sum_j exp(-beta * d_ij^2 / s^2)

with ``d_ik`` the Euclidean distance of latent ``z_i`` to centroid ``c_k`` and ``s^2``
the latents' total variance (mean squared distance to their mean), so ``beta`` does not
depend on the latent size or scale. Centroids are the responsibility-weighted means;
iterate until no centroid moves more than ``tol * s``. As in deterministic annealing,
a small ``beta`` (about < 0.5) makes every centroid collapse onto the mean, a large one
approaches hard k-means. Initialisation: seeded k-means++.

``ncut_head`` instead takes the argmax of the soft n-cut head trained with the model;
its centroids are the mean latent of each head cluster (used for routing at restore time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from .damage import DAMAGE_CLASSES
from .data.layout import damage_shares  # noqa: F401  (damage_shares: re-exported)
from .io import atomic_path

LABEL_MARGIN = 1.25  # a cluster is 'blurred' / 'clear' only if it departs this much from all blocks
LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float32)


@torch.no_grad()
def encode_blocks(model, blocks: np.ndarray, batch_size: int = 2048, flatten: bool = True) -> np.ndarray:
    """Latent vectors (the mean for VAEs) of uint8 blocks (N, C, s, s), float32 (N, D)."""
    from .tracks.blocks.dataset import to_float

    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(blocks), batch_size):
        x = to_float(blocks[start : start + batch_size], device)
        z = model.latent_vector(x) if flatten else model.encode(x)
        out.append(z.float().cpu().numpy())
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def latent_scale(z: np.ndarray) -> float:
    """Total variance of the latents: mean squared distance to their mean (>0)."""
    s2 = float(((z - z.mean(0)) ** 2).sum(1).mean()) if len(z) else 1.0
    return s2 if s2 > 1e-12 else 1.0


def squared_distances(z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    zz = (z.astype(np.float64) ** 2).sum(1)[:, None]
    cc = (centroids.astype(np.float64) ** 2).sum(1)[None, :]
    return np.maximum(zz + cc - 2.0 * z.astype(np.float64) @ centroids.T.astype(np.float64), 0.0)


def responsibilities(z: np.ndarray, centroids: np.ndarray, beta: float, scale: float) -> np.ndarray:
    """Soft assignments (N, K), rows summing to 1."""
    logits = -beta * squared_distances(z, centroids) / scale
    logits -= logits.max(1, keepdims=True)
    r = np.exp(logits)
    return r / r.sum(1, keepdims=True)


def kmeans_pp_init(z: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centroids = [z[rng.integers(len(z))]]
    d2 = squared_distances(z, np.stack(centroids))[:, 0]
    for _ in range(1, k):
        total = d2.sum()
        idx = rng.integers(len(z)) if total <= 0 else rng.choice(len(z), p=d2 / total)
        centroids.append(z[idx])
        d2 = np.minimum(d2, squared_distances(z, z[idx][None])[:, 0])
    return np.stack(centroids).astype(np.float64)


@dataclass
class SoftKMeansResult:
    centroids: np.ndarray  # (K, D) float32
    scale: float  # s^2 used to normalise distances
    iterations: int
    converged: bool


def soft_kmeans(
    z: np.ndarray, k: int, beta: float, tol: float = 1e-4, max_iter: int = 100, seed: int = 0
) -> SoftKMeansResult:
    """Fit soft k-means centroids on latents ``z`` (N, D)."""
    if k < 1:
        raise ValueError(f"cluster.k must be >= 1, got {k}")
    if len(z) < k:
        raise ValueError(f"cluster.k ({k}) is larger than the number of blocks ({len(z)})")
    rng = np.random.default_rng(seed)
    z64 = z.astype(np.float64)
    scale = latent_scale(z64)
    centroids = kmeans_pp_init(z64, k, rng)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        r = responsibilities(z64, centroids, beta, scale)
        weight = r.sum(0)
        new = (r.T @ z64) / np.maximum(weight[:, None], 1e-12)
        empty = weight < 1e-9  # keep a centroid that lost every point where it was
        new[empty] = centroids[empty]
        shift = np.sqrt(((new - centroids) ** 2).sum(1)).max()
        centroids = new
        if shift <= tol * np.sqrt(scale):
            converged = True
            break
    return SoftKMeansResult(centroids.astype(np.float32), scale, it, converged)


def laplacian_variance(blocks: np.ndarray) -> np.ndarray:
    """Variance of the 3x3 Laplacian of each block's luminance; blocks uint8 (N, C, s, s)."""
    x = blocks.astype(np.float32) / 255.0
    lum = x.mean(1) if x.shape[1] != 3 else 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    lap = ndimage.convolve(lum, LAPLACIAN[None], mode="reflect")
    return lap.reshape(len(lap), -1).var(1)


def describe_clusters(
    labels: np.ndarray, k: int, clean: np.ndarray, degraded: np.ndarray, mask: np.ndarray | None
) -> list[dict]:
    """Per cluster: size, mean Laplacian variance of clean and degraded blocks, the share of
    its pixels of each damage class (``clean_share``, ``blur_share``, ``noise_share``, from
    the masks ``(N, K, s, s)``) and a label.

    The label compares the cluster with all blocks: with masks, the damage class whose
    share in the cluster is at least ``LABEL_MARGIN`` times its share over all blocks
    (the largest such ratio wins), e.g. 'blur'; without masks (or when no block is
    damaged) 'blurred' / 'clear' from the ratio of degraded to clean Laplacian variance
    (blur lowers it, noise raises it). Otherwise 'mixed': the clustering did not separate
    the damage (it may have separated content instead).
    """
    lv_clean = laplacian_variance(clean)
    lv_deg = laplacian_variance(degraded)
    shares = None
    if mask is not None and mask.size and mask.max() > 0:
        shares = damage_shares(mask)
        names = DAMAGE_CLASSES[: shares.shape[1]]
        overall = shares.mean(0)
    overall_ratio = float(lv_deg.mean() / max(lv_clean.mean(), 1e-12))
    out = []
    for c in range(k):
        sel = labels == c
        n = int(sel.sum())
        info: dict = {"cluster": c, "size": n, "share": n / max(len(labels), 1)}
        if n:
            info["laplacian_var_clean"] = float(lv_clean[sel].mean())
            info["laplacian_var_degraded"] = float(lv_deg[sel].mean())
            ratio = info["laplacian_var_degraded"] / max(info["laplacian_var_clean"], 1e-12)
            info["sharpness_ratio"] = ratio
            if shares is not None:
                here = shares[sel].mean(0)
                for j, name in enumerate(names):
                    info[f"{name}_share"] = float(here[j])
                info["label"] = damage_label(here, overall, names)
            else:
                rel = overall_ratio / max(ratio, 1e-12)  # > 1: sharper detail lost than overall
                info["label"] = ("blurred" if rel >= LABEL_MARGIN else "clear" if rel <= 1 / LABEL_MARGIN
                                 else "mixed")
        else:
            info["label"] = "empty"
        out.append(info)
    return out


def damage_label(here: np.ndarray, overall: np.ndarray, names=DAMAGE_CLASSES) -> str:
    """The damage class whose share in a cluster (``here``) is the largest multiple of its
    share over all samples (``overall``), if that multiple is at least ``LABEL_MARGIN``;
    else 'mixed'."""
    rel = np.asarray(here) / np.maximum(np.asarray(overall), 1e-12)
    best = int(np.argmax(np.where(np.asarray(overall) > 0, rel, -np.inf)))
    return names[best] if rel[best] >= LABEL_MARGIN else "mixed"


def silhouette(z: np.ndarray, labels: np.ndarray, max_points: int = 4000, seed: int = 0) -> float | None:
    """Silhouette score on a seeded subsample (None when fewer than 2 clusters are used)."""
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2 or len(z) < 3:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(z), size=min(max_points, len(z)), replace=False)
    if len(np.unique(labels[idx])) < 2:
        return None
    return float(silhouette_score(z[idx], labels[idx]))


def pca_2d(z: np.ndarray) -> np.ndarray:
    zc = z - z.mean(0)
    if zc.shape[1] == 1:
        return np.concatenate([zc, np.zeros_like(zc)], 1)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    return zc @ vt[:2].T


def scatter_plot(
    z: np.ndarray, labels: np.ndarray, info: list[dict], path: str | Path, title: str,
    max_points: int = 5000, seed: int = 0, damage: np.ndarray | None = None,
) -> None:
    """2-D PCA scatter of the latents, coloured by cluster and, when ``damage`` (N, classes)
    shares are given, beside it the same points coloured by each block's majority damage
    class: if the clusters follow the damage, the two panels look alike. Written
    atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(z), size=min(max_points, len(z)), replace=False)
    p = pca_2d(z[idx])
    panels = 1 if damage is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), dpi=110, squeeze=False)
    ax = axes[0, 0]
    for c, meta in enumerate(info):
        sel = labels[idx] == c
        if sel.any():
            extra = "".join(f", {name} {meta[f'{name}_share']:.0%}" for name in DAMAGE_CLASSES
                            if f"{name}_share" in meta)
            ax.scatter(p[sel, 0], p[sel, 1], s=3, alpha=0.5,
                       label=f"{c}: {meta['label']} (n={meta['size']}{extra})")
    ax.set_title("by cluster", fontsize=9)
    if damage is not None:
        ax2 = axes[0, 1]
        major = damage[idx].argmax(1)
        colours = {"clean": "0.6", "blur": "#ff8c00", "noise": "#2878ff"}
        for j, name in enumerate(DAMAGE_CLASSES[: damage.shape[1]]):
            sel = major == j
            if sel.any():
                ax2.scatter(p[sel, 0], p[sel, 1], s=3, alpha=0.5, color=colours.get(name),
                            label=f"mostly {name} (n={int((damage.argmax(1) == j).sum())})")
        ax2.set_title("by majority damage of the block", fontsize=9)
    for a in axes[0]:
        a.set_xlabel("PC 1")
        a.set_ylabel("PC 2")
        a.legend(markerscale=4, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


@torch.no_grad()
def mean_centroids(z: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The mean code of each of the ``k`` clusters (the mean of all codes for an empty one),
    float32 ``(k, D)``: the centroids of a head's clusters, used for routing at restore time."""
    return np.stack([z[labels == c].mean(0) if (labels == c).any() else z.mean(0)
                     for c in range(k)]).astype(np.float32)


def head_assign(model, blocks: np.ndarray, batch_size: int = 2048, head: str = "ncut_head") -> np.ndarray:
    """Argmax of the n-cut cluster head (``head='ncut_head'``) or of the damage head
    (``'damage_head'``: cluster c = damage class c of DAMAGE_CLASSES) for uint8 blocks."""
    from .tracks.blocks.dataset import to_float

    module = getattr(model, "cluster_head" if head == "ncut_head" else "damage_head", None)
    if module is None:
        need = "train.loss.ncut_weight" if head == "ncut_head" else "train.loss.damage_weight"
        raise ValueError(f"cluster.method {head!r} needs a model trained with {need} > 0")
    model.eval()
    out = []
    for start in range(0, len(blocks), batch_size):
        x = to_float(blocks[start : start + batch_size], next(model.parameters()).device)
        out.append(module(model.latent_vector(x)).argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


# ------------------------------------------------------------- do clusters follow damage?
def damage_report(labels: np.ndarray, damage: np.ndarray, classes: tuple[str, ...] = DAMAGE_CLASSES) -> dict:
    """Whether clusters follow the damage: per cluster, the share of its pixels of each
    damage class, and over all samples the adjusted mutual information (AMI, sklearn)
    between the cluster labels and each sample's majority damage class.

    ``labels`` (N,) int cluster of each sample (a block, or a location of a feature map);
    ``damage`` (N, C) the share of each damage class among its pixels (rows sum to 1).
    AMI is 0 for labels independent of the damage (chance level) and 1 when the clusters
    are exactly the damage classes. ``by_damage``: per class, its cluster (the one whose
    pixels are most of that class), that cluster's ``purity`` (share of its pixels of the
    class), ``recall`` (share of the class's pixels it holds) and ``max_share_elsewhere``
    (the largest share of the class in any other non-empty cluster).
    """
    from sklearn.metrics import adjusted_mutual_info_score

    labels = np.asarray(labels)
    damage = np.asarray(damage, dtype=np.float64)
    if damage.ndim != 2 or len(damage) != len(labels):
        raise ValueError(f"damage must be (N, classes) for {len(labels)} labels, got {damage.shape}")
    names = list(classes)[: damage.shape[1]]
    k = int(labels.max()) + 1 if len(labels) else 0
    clusters = []
    for c in range(k):
        sel = labels == c
        n = int(sel.sum())
        shares = damage[sel].mean(0) if n else np.zeros(damage.shape[1])
        clusters.append({
            "cluster": c,
            "size": n,
            **{f"{name}_share": float(shares[j]) for j, name in enumerate(names)},
            "majority": names[int(np.argmax(shares))] if n else "empty",
        })
    majority = damage.argmax(1) if len(damage) else np.zeros(0, np.int64)
    ami = float(adjusted_mutual_info_score(majority, labels)) if len(labels) > 1 else 0.0
    # each class's cluster: the one whose pixels are most of that class; how pure it is,
    # how much of the class it gathers, and the largest share of the class elsewhere
    totals = damage.sum(0)
    best = {}
    for j, name in enumerate(names):
        if totals[j] <= 0 or not k:
            continue
        shares = np.array([cl[f"{name}_share"] for cl in clusters])
        top = int(shares.argmax())
        gathered = damage[labels == top, j].sum() / totals[j]
        others = [float(s) for c, s in enumerate(shares) if c != top and clusters[c]["size"]]
        best[name] = {"cluster": top, "purity": float(shares[top]), "recall": float(gathered),
                      "max_share_elsewhere": max(others) if others else 0.0}
    return {"clusters": clusters, "ami_majority_damage": ami, "by_damage": best}
