"""Per-location clustering and per-cluster decoders of fully convolutional models.

For ``unet_ae`` the latent is a map: every bottleneck location is a sample. The cluster
stage clusters the code vectors of every location of the training images (soft k-means),
or takes the damage head's classes (``cluster.method: damage_head``); the routing maps
(:func:`aerestore.restore.route_maps`) give each location its responsibilities.

Decoder ``k`` is a copy of the shared decoder fine-tuned, encoder frozen, on random crops
with the per-pixel squared error weighted by cluster ``k``'s routing map (bilinearly
upsampled): ``sum(w * (y_hat - y)^2) / (C * sum(w))``. The control is a copy fine-tuned on
all pixels (plain MSE) for as many updates as all cluster decoders together, with the
same learning rate (constant), batch, crop size and crop stream (seeded alike: the
control's first updates see the cluster decoders' crops). Without it "multi beats single"
could just mean "more training beats less".
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .cropdata import ImageData, image_batches, location_features, sample_crops  # noqa: F401
from .decoders import DecodersResult
from .restore import upsample_maps


def weighted_mse(y_hat: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Per-pixel squared error weighted by ``w`` (N, 1, H, W); plain MSE when ``w`` is None."""
    se = (y_hat - y).pow(2)
    if w is None:
        return se.mean()
    return (w * se).sum() / (w.sum() * y.shape[1]).clamp_min(1e-8)


class _Val:
    """Whole validation images, encoded once (the encoder is frozen), with their maps."""

    def __init__(self, model, maps_fn, data: ImageData, batch_size: int = 16) -> None:
        self.parts = []
        with torch.no_grad():
            for deg, cln, _ in image_batches(data, batch_size):
                f = model.features(deg)
                maps = upsample_maps(maps_fn(f.code), model.multiple, f.size)
                self.parts.append((f, cln, maps))

    @torch.no_grad()
    def loss(self, decoder, cluster: int | None) -> float:
        if not self.parts:
            return float("nan")
        decoder.eval()
        num = den = 0.0
        for f, y, maps in self.parts:
            se = (decoder(f) - y).pow(2).sum(1, keepdim=True)
            w = torch.ones_like(se) if cluster is None else maps[:, cluster : cluster + 1]
            num += float((w * se).sum())
            den += float(w.sum()) * y.shape[1]
        return num / max(den, 1e-12)

    @torch.no_grad()
    def blended(self, decoders, hard: bool) -> float:
        """MSE of the outputs blended by the (soft or one-hot argmax) maps."""
        if not self.parts:
            return float("nan")
        num = n = 0.0
        for f, y, maps in self.parts:
            if hard:
                maps = F.one_hot(maps.argmax(1), maps.shape[1]).permute(0, 3, 1, 2).to(maps.dtype)
            out = sum(maps[:, k : k + 1] * d(f) for k, d in enumerate(decoders))
            num += float((out.clamp(0, 1) - y).pow(2).sum())
            n += y.numel()
        return num / max(n, 1)


def fine_tune(
    decoder, model, maps_fn, cluster: int | None, train: ImageData, val: _Val, steps: int, lr: float,
    batch_size: int, crop: int, eval_every: int, seed: int, desc: str, progress: bool = True,
) -> list[dict]:
    """``steps`` Adam updates of ``decoder`` on crops (weighted by cluster ``cluster``'s
    maps; all pixels when None); history rows ``{step, train_loss, val_loss}``, from step 0."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    for p in decoder.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    history = [{"step": 0, "train_loss": float("nan"), "val_loss": val.loss(decoder, cluster)}]
    total, count = 0.0, 0
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, mininterval=0.5)
    for step in range(1, steps + 1):
        deg, y, _ = sample_crops(train, batch_size, crop, rng)
        with torch.no_grad():
            f = model.features(deg)
            w = None if cluster is None else upsample_maps(maps_fn(f.code), model.multiple, f.size)[:, cluster : cluster + 1]
        decoder.train()
        loss = weighted_mse(decoder(f), y, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
        count += 1
        bar.update(1)
        if step % eval_every == 0 or step == steps:
            history.append({"step": step, "train_loss": total / count, "val_loss": val.loss(decoder, cluster)})
            total, count = 0.0, 0
    bar.close()
    decoder.eval()
    return history


def train_map_decoders(
    model, maps_fn, k: int, train: ImageData, val: ImageData, *, steps: int, lr: float, batch_size: int,
    crop: int, eval_every: int, min_locations: int, seed: int, sizes: list[int] | None = None,
    progress: bool = True,
) -> DecodersResult:
    """Per-cluster decoders (``steps`` updates each) and the equal-budget control.

    ``maps_fn(code) -> (N, K, h, w)`` routing maps; ``sizes`` the training locations per
    cluster (argmax); a cluster with fewer than ``min_locations`` gets no decoder (the
    control decodes it)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    vset = _Val(model, maps_fn, val)
    sizes = list(sizes) if sizes is not None else [min_locations] * k
    clusters, fallback, histories = [], [], {}
    updates = 0
    for c in range(k):
        if sizes[c] < min_locations:
            warnings.warn(f"cluster {c} has {sizes[c]} training locations (< decoders.min_blocks = "
                          f"{min_locations}): its pixels use the control decoder", stacklevel=2)
            clusters.append(None)
            fallback.append(True)
            continue
        dec = copy.deepcopy(model.decoder)
        histories[f"cluster_{c}"] = fine_tune(dec, model, maps_fn, c, train, vset, steps, lr, batch_size, crop,
                                              eval_every, seed, f"decoder {c}", progress)
        updates += steps
        clusters.append(dec)
        fallback.append(False)
    control = copy.deepcopy(model.decoder)
    control_updates = updates or steps
    histories["control"] = fine_tune(control, model, maps_fn, None, train, vset, control_updates, lr, batch_size,
                                     crop, eval_every, seed, "control decoder", progress)
    routed = [d if d is not None else control for d in clusters]
    summary = {
        "k": k,
        "sizes": sizes,
        "fallback": fallback,
        "updates": {"clusters": updates, "control": control_updates},
        "crop_updates": {"clusters": updates * batch_size, "control": control_updates * batch_size},
        "val_loss": {
            "shared": vset.loss(model.decoder, None),
            "control": vset.loss(control, None),
            "multi_soft": vset.blended(routed, hard=False),
            "multi_hard": vset.blended(routed, hard=True),
        },
        # per cluster, its pixels weighted by its routing map: the shared decoder, the
        # control and its own decoder (where the clusters should win if they pay at all)
        "val_loss_by_cluster": [
            {"shared": vset.loss(model.decoder, c), "control": vset.loss(control, c),
             "own": vset.loss(routed[c], c)} for c in range(k)
        ],
    }
    return DecodersResult(control, clusters, sizes, fallback, histories, summary)

