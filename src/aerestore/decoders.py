"""One decoder per latent cluster, and the equal-budget control (``decoders@<arch>``).

Every decoder starts as a copy of the shared decoder that ``train@<arch>`` trained and
learns, with the encoder frozen, to map latents of degraded blocks to clean blocks
(mean squared error, Adam at ``decoders.lr``):

- cluster decoder ``k``: only the training blocks routed to cluster ``k`` (nearest
  centroid), ``decoders.epochs`` passes over them;
- the control: the shared decoder trained further on ALL blocks for the same number of
  block updates as all cluster decoders together. Without it, "multi beats single" could
  just mean "more training beats less".

A cluster with fewer than ``decoders.min_blocks`` training blocks gets no decoder of its
own: its blocks use the control decoder, and the stage says so.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .io import atomic_path
from .blockdata import BlockData, to_float


@torch.no_grad()
def encode_all(model, blocks: np.ndarray, batch_size: int = 2048) -> torch.Tensor:
    """Latents (native shape, float32) of uint8 blocks, encoder in eval mode."""
    model.eval()
    parts = [model.encode(to_float(blocks[s : s + batch_size])) for s in range(0, len(blocks), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0)


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
        y = to_float(clean[s : s + batch_size])
        total += float(F.mse_loss(decoder(z[s : s + len(y)]), y, reduction="sum")) / y[0].numel()
    return total / len(z)


def train_decoder(
    decoder: torch.nn.Module,
    z: torch.Tensor,
    clean: np.ndarray,
    updates: int,
    batch_size: int,
    lr: float,
    rng: np.random.Generator,
    val: tuple[torch.Tensor, np.ndarray] | None,
    updates_per_epoch: int,
    desc: str,
    progress: bool = True,
) -> list[dict]:
    """Train ``decoder`` for ``updates`` block updates drawn from (z, clean); per-epoch losses."""
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    history = []
    done = 0
    epoch = 0
    n = len(z)
    bar = tqdm(total=updates, desc=desc, unit="block", disable=not progress, leave=False, mininterval=0.5)
    while done < updates:
        epoch += 1
        decoder.train()
        todo = min(updates_per_epoch, updates - done)
        order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(todo / n))])[:todo]
        total = 0.0
        for s in range(0, todo, batch_size):
            idx = np.sort(order[s : s + batch_size])
            y = to_float(clean[idx])
            loss = F.mse_loss(decoder(z[idx]), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            bar.update(len(idx))
        done += todo
        row = {"epoch": epoch, "train_loss": total / todo}
        if val is not None and len(val[0]):
            row["val_loss"] = decoder_loss(decoder, val[0], val[1])
        history.append(row)
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
) -> DecodersResult:
    """Train the per-cluster decoders and the control; ``route(z) -> (N, K)`` responsibilities."""
    for p in model.parameters():
        p.requires_grad_(False)
    z_train = encode_all(model, train.degraded)
    z_val = encode_all(model, val.degraded)
    lab_train = assign(route, z_train)
    lab_val = assign(route, z_val)
    sizes = [int((lab_train == c).sum()) for c in range(k)]
    clusters: list[torch.nn.Module | None] = []
    fallback: list[bool] = []
    histories: dict[str, list[dict]] = {}
    budget = 0
    for c in range(k):
        if sizes[c] < min_blocks:
            warnings.warn(
                f"cluster {c} has {sizes[c]} training blocks (< decoders.min_blocks = {min_blocks}): "
                "its blocks use the control decoder",
                stacklevel=2,
            )
            clusters.append(None)
            fallback.append(True)
            continue
        torch.manual_seed(seed + 1 + c)
        rng = np.random.default_rng([seed, c + 1])
        sel = np.flatnonzero(lab_train == c)
        vsel = np.flatnonzero(lab_val == c)
        dec = copy.deepcopy(model.decoder)
        for p in dec.parameters():
            p.requires_grad_(True)
        updates = epochs * len(sel)
        budget += updates
        histories[f"cluster_{c}"] = train_decoder(
            dec, z_train[sel], train.clean[sel], updates, batch_size, lr, rng,
            (z_val[vsel], val.clean[vsel]), len(sel), f"decoder {c} ({len(sel)} blocks)", progress,
        )
        clusters.append(dec)
        fallback.append(False)
    # the control: the same number of block updates as all cluster decoders together
    control = copy.deepcopy(model.decoder)
    for p in control.parameters():
        p.requires_grad_(True)
    torch.manual_seed(seed)
    control_updates = budget if budget else epochs * len(z_train)
    histories["control"] = train_decoder(
        control, z_train, train.clean, control_updates, batch_size, lr,
        np.random.default_rng([seed, 0]), (z_val, val.clean), len(z_train),
        f"control decoder ({control_updates} block updates)", progress,
    )
    summary = {
        "k": k,
        "sizes": sizes,
        "fallback": fallback,
        "block_updates": {"clusters": budget, "control": control_updates},
        "val_loss": {
            "shared": decoder_loss(model.decoder, z_val, val.clean),
            "control": decoder_loss(control, z_val, val.clean),
        },
    }
    # validation loss of the routed multi-decoder on all validation blocks
    if len(z_val):
        total = 0.0
        for c in range(k):
            vsel = np.flatnonzero(lab_val == c)
            if len(vsel):
                dec = clusters[c] if clusters[c] is not None else control
                total += decoder_loss(dec, z_val[vsel], val.clean[vsel]) * len(vsel)
        summary["val_loss"]["multi"] = total / len(z_val)
    return DecodersResult(control, clusters, sizes, fallback, histories, summary)


def save_decoders(result: DecodersResult, path, extra: dict | None = None) -> None:
    state = {
        "control": result.control.state_dict(),
        "clusters": [None if d is None else d.state_dict() for d in result.clusters],
        "fallback": list(result.fallback),
        "sizes": list(result.sizes),
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def curves_plot(histories: dict[str, list[dict]], path, title: str) -> None:
    """Per-epoch train (solid) and validation (dashed) loss of every decoder, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
    for i, (name, hist) in enumerate(histories.items()):
        color = f"C{i}"
        ep = [h["epoch"] for h in hist]
        ax.plot(ep, [h["train_loss"] for h in hist], "-o", color=color, label=f"{name} train", ms=3)
        if hist and "val_loss" in hist[0]:
            ax.plot(ep, [h["val_loss"] for h in hist], "--", color=color, label=f"{name} val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
