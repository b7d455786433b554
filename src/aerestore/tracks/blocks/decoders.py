"""One decoder per latent cluster, and the equal-budget control (``decoders@<arch>``).

Every decoder starts as a copy of the shared decoder that ``train@<arch>`` trained and
learns, with the encoder frozen, to map latents of degraded blocks to clean blocks
(mean squared error, Adam at ``decoders.lr``):

- cluster decoder ``k``: only the training blocks routed to cluster ``k`` (nearest
  centroid), ``decoders.epochs`` passes over them;
- the control: the shared decoder trained further on ALL blocks for the same number of
  block updates as all cluster decoders together. Without it, "multi beats single" could
  just mean "more training beats less".

Both sides are fine-tuned by the same function under the same conditions: a fresh Adam
at ``decoders.lr``, batches of ``decoders.batch_size``, no schedule, the final weights
kept (no checkpoint is picked on the validation blocks, for either side), and **batch
norm frozen** (:func:`fine_tune_mode`): every batch-norm layer stays in eval mode, so it
normalises with the running statistics the shared decoder learned on all blocks and
does not update them; its affine weights (and every other weight) still learn.

Why frozen: in train mode a batch-norm layer normalises each batch with that batch's own
mean and variance. The shared decoder (and the control) always see mixed batches, but a
cluster decoder sees batches from one cluster only, whose statistics are skewed (that is
what makes it a cluster). In train mode its very first forward pass is therefore already
a different function from the shared decoder it was copied from, its running statistics
drift to its cluster's, and the small fine-tuning budget is spent undoing that shift
instead of specialising: the per-cluster decoders came out worse on their own clusters'
validation blocks than the shared decoder they started from (0.00422 against 0.00332
for conv_ae). With the statistics frozen, a cluster decoder before its first update is
exactly the shared decoder (same loss on the same blocks), and its updates start from
there and specialise it on its cluster. The control gets the same treatment, so the
comparison stays fair: same starting function, same optimiser, same number of block
updates, same batch-norm handling.

Curves: every ``decoders.eval_every`` block updates (and at step 0, before the first
update, and at the end) each decoder's history gets a row ``{"step": block updates so
far, "train_loss": mean training loss since the previous row, "val_loss": loss on the
validation blocks of its cluster (all of them for the control)}``. At step 0
``train_loss`` is the loss, before any update, on the blocks of the first interval.

A cluster with fewer than ``decoders.min_blocks`` training blocks gets no decoder of its
own: its blocks use the control decoder, and the stage says so.

The ensemble control (``decoders.ensemble``, the third arm): with soft routing the
per-cluster output mixes several decoders, and where a cluster is too small its blocks go
to the control, so "per-cluster beats control" may be ensembling rather than decoders that
learned a damage. The ensemble control has the per-cluster arm's decoders minus what
the damage could give them: the training blocks are split at random into groups of
exactly the clusters' sizes (seeded, whatever the blocks' content or masks), group ``k``
gets a decoder where cluster ``k`` has one (same fallback to the control), fine-tuned by
the same :func:`train_decoder` with the same seed, updates (``epochs`` passes over its
group: the clusters' total budget), batch size and lr; at inference the restorer mixes
them as it mixes the cluster decoders, by damage-blind weights
(:func:`aerestore.restore.blind_maps`). Only what the per-cluster decoders gain over the
ensemble control can be credited to damage-specific decoders.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm import tqdm

from ...io import atomic_path
from .dataset import BlockData, to_float
from ...losses import check_finite
from ...models.device import module_device


@torch.no_grad()
def encode_all(model, blocks: np.ndarray, batch_size: int = 2048) -> torch.Tensor:
    """Latents (native shape, float32) of uint8 blocks, encoder in eval mode."""
    model.eval()
    device = module_device(model)  # the latents stay on the model's device
    parts = [model.encode(to_float(blocks[s : s + batch_size], device)).float()
             for s in range(0, len(blocks), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, device=device)


@torch.no_grad()
def assign(restorer_route, z: torch.Tensor, batch_size: int = 8192) -> np.ndarray:
    return np.concatenate(
        [restorer_route(z[s : s + batch_size]).argmax(1).cpu().numpy() for s in range(0, len(z), batch_size)]
    ) if len(z) else np.zeros(0, np.int64)


@torch.no_grad()
def decoder_loss(decoder, z: torch.Tensor, clean: np.ndarray, batch_size: int = 2048) -> float:
    if len(z) == 0:
        return float("nan")
    decoder.eval()
    total = 0.0
    for s in range(0, len(z), batch_size):
        y = to_float(clean[s : s + batch_size], z.device)
        total += float(F.mse_loss(decoder(z[s : s + len(y)]).float(), y, reduction="sum")) / y[0].numel()
    return total / len(z)


def fine_tune_mode(decoder: torch.nn.Module) -> torch.nn.Module:
    """Train mode with every batch-norm layer in eval mode: running statistics frozen
    (used to normalise, never updated), affine weights still trainable."""
    decoder.train()
    for m in decoder.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
    return decoder


@torch.no_grad()
def _mean_loss(decoder, z: torch.Tensor, clean: np.ndarray, idx: np.ndarray, batch_size: int) -> float:
    """Mean per-block MSE of ``decoder`` as it is (no mode change) on the blocks ``idx``."""
    total = 0.0
    for s in range(0, len(idx), batch_size):
        i = np.sort(idx[s : s + batch_size])
        y = to_float(clean[i], z.device)
        total += float(F.mse_loss(decoder(z[i]).float(), y, reduction="sum")) / y[0].numel()
    return total / len(idx)


def train_decoder(
    decoder: torch.nn.Module,
    z: torch.Tensor,
    clean: np.ndarray,
    updates: int,
    batch_size: int,
    lr: float,
    rng: np.random.Generator,
    val: tuple[torch.Tensor, np.ndarray] | None,
    eval_every: int,
    desc: str,
    progress: bool = True,
) -> list[dict]:
    """Fine-tune ``decoder`` for ``updates`` block updates drawn from (z, clean), batch
    norm frozen (:func:`fine_tune_mode`); the loss curve, one row per ``eval_every``
    block updates plus step 0 and the end (see the module docstring)."""
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    n = len(z)
    # passes over the blocks, each in a fresh random order, cut at ``updates``
    order = (np.concatenate([rng.permutation(n) for _ in range(math.ceil(updates / n))])[:updates]
             if updates and n else np.zeros(0, np.int64))
    has_val = val is not None and len(val[0]) > 0
    history: list[dict] = []

    def point(step: int, train_loss: float) -> None:
        row = {"step": step, "train_loss": train_loss}
        if has_val:
            row["val_loss"] = decoder_loss(decoder, val[0], val[1])
        history.append(row)
        fine_tune_mode(decoder)

    fine_tune_mode(decoder)
    first = order[:eval_every]
    point(0, _mean_loss(decoder, z, clean, first, batch_size) if len(first) else float("nan"))
    bar = tqdm(total=len(order), desc=desc, unit="block", disable=not progress, leave=False, mininterval=0.5)
    done = 0
    total = 0.0
    since = 0
    next_point = eval_every
    for s in range(0, len(order), batch_size):
        idx = np.sort(order[s : s + batch_size])
        y = to_float(clean[idx], z.device)
        loss = F.mse_loss(decoder(z[idx]), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        check_finite({"mse": value}, f"{desc or 'decoder fine-tuning'}, block update {done + len(idx)}",
                     f"lower decoders.lr ({lr:g})")
        total += value * len(idx)
        since += len(idx)
        done += len(idx)
        bar.update(len(idx))
        if done >= next_point or done == len(order):
            point(done, total / since)
            total, since = 0.0, 0
            next_point = (done // eval_every + 1) * eval_every
    bar.close()
    decoder.eval()
    return history


@dataclass
class DecodersResult:
    control: torch.nn.Module
    clusters: list[torch.nn.Module | None]
    sizes: list[int]
    fallback: list[bool]
    histories: dict[str, list[dict]] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    gate: torch.nn.Module | None = None  # decoders.method 'gate': the learned gate (aerestore.gate.Gate)
    # the ensemble control (decoders.ensemble): one per cluster, None where the control stands in
    ensemble: list[torch.nn.Module | None] | None = None


ENSEMBLE_STREAM = 0xE5  # the random partition's seed stream: [seed, ENSEMBLE_STREAM]


def blind_labels(sizes: list[int], n: int, seed: int) -> np.ndarray:
    """Damage-blind routes for the ensemble control: ``n`` samples split at random into
    groups of ``sizes`` (a seeded permutation cut at their cumulative sums; samples beyond
    ``sum(sizes)``, if any, get label -1). Depends on the sizes and seed only, never on the
    samples' content or masks."""
    if sum(sizes) > n:
        raise ValueError(f"group sizes {sizes} add up to more than the {n} samples")
    perm = np.random.default_rng([seed, ENSEMBLE_STREAM]).permutation(n)
    labels = np.full(n, -1, np.int64)
    for c, (a, b) in enumerate(zip(np.cumsum([0, *sizes[:-1]]), np.cumsum(sizes))):
        labels[perm[a:b]] = c
    return labels


def train_decoders(
    model,
    route,
    k: int,
    train: BlockData,
    val: BlockData,
    epochs: int,
    lr: float,
    batch_size: int,
    min_blocks: int,
    seed: int,
    progress: bool = True,
    eval_every: int = 2048,
    ensemble: bool = True,
) -> DecodersResult:
    """Train the per-cluster decoders, the control and (``ensemble``) the ensemble control,
    all with :func:`train_decoder` (same optimiser, lr, batch size, frozen batch norm);
    ``route(z) -> (N, K)`` responsibilities. A curve point every ``eval_every`` block updates."""
    for p in model.parameters():
        p.requires_grad_(False)
    z_train = encode_all(model, train.degraded)
    z_val = encode_all(model, val.degraded)
    lab_train = assign(route, z_train)
    lab_val = assign(route, z_val)
    sizes = [int((lab_train == c).sum()) for c in range(k)]
    fallback = [n < min_blocks for n in sizes]
    for c in np.flatnonzero(fallback):
        warnings.warn(
            f"cluster {c} has {sizes[c]} training blocks (< decoders.min_blocks = {min_blocks}): "
            "its blocks use the control decoder",
            stacklevel=2,
        )
    histories: dict[str, list[dict]] = {}

    def fine_tune_routes(labels: np.ndarray, val_labels: np.ndarray, name: str) -> tuple[list, int]:
        """One decoder per route with a decoder (not ``fallback``), each ``epochs`` passes
        over its training blocks: the per-cluster arm and the ensemble control alike."""
        decoders: list[torch.nn.Module | None] = []
        budget = 0
        for c in range(k):
            if fallback[c]:
                decoders.append(None)
                continue
            torch.manual_seed(seed + 1 + c)
            rng = np.random.default_rng([seed, c + 1])
            sel = np.flatnonzero(labels == c)
            vsel = np.flatnonzero(val_labels == c)
            dec = copy.deepcopy(model.decoder)
            for p in dec.parameters():
                p.requires_grad_(True)
            updates = epochs * len(sel)
            budget += updates
            histories[f"{name}_{c}"] = train_decoder(
                dec, z_train[sel], train.clean[sel], updates, batch_size, lr, rng,
                (z_val[vsel], val.clean[vsel]), eval_every, f"{name} decoder {c} ({len(sel)} blocks)", progress,
            )
            decoders.append(dec)
        return decoders, budget

    clusters, budget = fine_tune_routes(lab_train, lab_val, "cluster")
    ensemble_decoders, ensemble_budget = None, 0
    if ensemble:  # the same sizes, routes drawn at random: see the module docstring
        val_sizes = [int((lab_val == c).sum()) for c in range(k)]
        ensemble_decoders, ensemble_budget = fine_tune_routes(
            blind_labels(sizes, len(z_train), seed), blind_labels(val_sizes, len(z_val), seed), "ensemble")
    # the control: the same number of block updates as all cluster decoders together
    control = copy.deepcopy(model.decoder)
    for p in control.parameters():
        p.requires_grad_(True)
    torch.manual_seed(seed)
    control_updates = budget if budget else epochs * len(z_train)
    histories["control"] = train_decoder(
        control, z_train, train.clean, control_updates, batch_size, lr,
        np.random.default_rng([seed, 0]), (z_val, val.clean), eval_every,
        f"control decoder ({control_updates} block updates)", progress,
    )
    summary = {
        "k": k,
        "sizes": sizes,
        "fallback": fallback,
        "block_updates": {"clusters": budget, "control": control_updates,
                          **({"ensemble": ensemble_budget} if ensemble else {})},
        "val_loss": {
            "shared": decoder_loss(model.decoder, z_val, val.clean),
            "control": decoder_loss(control, z_val, val.clean),
        },
    }
    # validation loss of the routed multi-decoder on all validation blocks, and per cluster
    # the shared, control and cluster decoders on that cluster's validation blocks
    by_cluster = []
    if len(z_val):
        total = 0.0
        for c in range(k):
            vsel = np.flatnonzero(lab_val == c)
            row = {"val_blocks": int(len(vsel))}
            if len(vsel):
                zc, yc = z_val[vsel], val.clean[vsel]
                dec = clusters[c] if clusters[c] is not None else control
                row.update(shared=decoder_loss(model.decoder, zc, yc), control=decoder_loss(control, zc, yc),
                           cluster=decoder_loss(dec, zc, yc))
                if ensemble_decoders is not None:  # the ensemble decoder of the same size's random route
                    row["ensemble"] = decoder_loss(ensemble_decoders[c] or control, zc, yc)
                total += row["cluster"] * len(vsel)
            by_cluster.append(row)
        summary["val_loss"]["multi"] = total / len(z_val)
    summary["val_loss_by_cluster"] = by_cluster
    return DecodersResult(control, clusters, sizes, fallback, histories, summary, ensemble=ensemble_decoders)


def curve_rows(histories: dict[str, list[dict]]) -> list[dict]:
    """The histories as one table (``metrics/decoders/<arch>_curve.csv``): a row per
    decoder and curve point, columns decoder, step, train_loss, val_loss."""
    return [{"decoder": name, "step": h["step"], "train_loss": h["train_loss"], "val_loss": h.get("val_loss")}
            for name, hist in histories.items() for h in hist]


def curves_plot(histories: dict[str, list[dict]], path, title: str) -> None:
    """Train (solid) and validation (dashed) loss of every decoder against block
    updates, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
    for i, (name, hist) in enumerate(histories.items()):
        color = f"C{i}"
        step = [h["step"] for h in hist]
        ax.plot(step, [h["train_loss"] for h in hist], "-o", color=color, label=f"{name} train", ms=3)
        if hist and "val_loss" in hist[0]:
            ax.plot(step, [h["val_loss"] for h in hist], "--", color=color, label=f"{name} val")
    ax.set_xlabel("block updates")
    ax.set_ylabel("MSE")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
