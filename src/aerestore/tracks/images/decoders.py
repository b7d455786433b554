"""Per-location clustering and per-cluster decoders of fully convolutional models.

For ``unet_ae`` the latent is a map: every bottleneck location is a sample. The cluster
stage clusters the code vectors of every location of the training images (soft k-means),
or takes the damage head's classes (``cluster.method: damage_head``); the routing maps
(:func:`aerestore.tracks.images.restore.route_maps`) give each location its responsibilities.

Decoder ``k`` is a copy of the shared decoder fine-tuned, encoder frozen, on random crops
with the per-pixel squared error weighted by cluster ``k``'s routing map (bilinearly
upsampled): the training stage's loss (``train.loss.recon``, :func:`weighted_recon`; for ``mse``
``sum(w * (y_hat - y)^2) / (C * sum(w))``). The control is a copy fine-tuned on
all pixels (the unweighted loss) for as many updates as all cluster decoders together, with the
same learning rate (constant), batch, crop size and crop stream (seeded alike: the
control's first updates see the cluster decoders' crops). Without it "multi beats single"
could just mean "more training beats less".

The ensemble control (``decoders.ensemble``; see :mod:`aerestore.tracks.blocks.decoders`): decoder ``k``
of it is fine-tuned by the same :func:`fine_tune` (same steps, lr, batch, crop size, seed and
so crop stream) with the loss weighted by the damage-blind maps
(:func:`aerestore.restore.blind_maps`: every crop's own routing maps, each code location
taking another location's weights along a fixed cycle), and the restorer mixes the ensemble
decoders by those same blind maps. Per crop the routes keep their total weight (the
clusters' sizes), not where the damage is.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .dataset import ImageData, image_batches, location_features, sample_crops  # noqa: F401
from ..blocks.decoders import DecodersResult
from ...losses import check_finite
from ...models.device import channels_last, module_device
from ...restore import blind_maps
from .restore import upsample_maps


def weighted_mse(y_hat: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Per-pixel squared error weighted by ``w`` (N, 1, H, W); plain MSE when ``w`` is None."""
    se = (y_hat - y).pow(2)
    if w is None:
        return se.mean()
    return (w * se).sum() / (w.sum() * y.shape[1]).clamp_min(1e-8)


def weighted_recon(y_hat: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, kind: str = "mse") -> torch.Tensor:
    """The training stage's reconstruction loss ``kind`` (``train.loss.recon``), weighted per pixel
    by ``w`` (N, 1, H, W; all pixels when None), so that fine-tuning optimises what the shared
    decoder was trained on (a decoder trained on ``psnr`` and fine-tuned on MSE moved away from
    its own objective: the control ended below the shared decoder it started from).

    * ``mse``: :func:`weighted_mse` (unchanged);
    * ``charbonnier``: the weighted mean of the per-pixel Charbonnier term;
    * ``psnr`` / ``rmse``: per image i its weighted MSE ``m_i``, then ``10 log10(m_i + eps)``
      (:func:`aerestore.losses.psnr_loss`) or ``sqrt(m_i)``, averaged over the images with
      weights ``W_i = sum(w_i)``, so an image with few of cluster k's pixels has a small say
      in decoder k. With ``w`` None every ``W_i`` is equal: exactly the unweighted loss.
    """
    if kind == "mse":
        return weighted_mse(y_hat, y, w)
    from ...losses import CHARBONNIER_EPS, PSNR_LOSS_EPS

    if w is None:
        w = torch.ones_like(y[:, :1])
    if kind == "charbonnier":
        per = ((y_hat - y).pow(2) + CHARBONNIER_EPS**2).sqrt() - CHARBONNIER_EPS
        return (w * per).sum() / (w.sum() * y.shape[1]).clamp_min(1e-8)
    se = (w * (y_hat - y).pow(2)).flatten(1).sum(1)
    weight = w.flatten(1).sum(1)
    m = se / (weight * y.shape[1]).clamp_min(1e-8)
    if kind == "psnr":
        per_image = (10.0 / math.log(10.0)) * (m + PSNR_LOSS_EPS).log()
    elif kind == "rmse":
        per_image = m.clamp_min(1e-12).sqrt()
    else:
        raise ValueError(f"train.loss.recon must be one of mse, rmse, charbonnier, psnr; got {kind!r}")
    return (weight * per_image).sum() / weight.sum().clamp_min(1e-8)


class _Val:
    """Whole validation images, encoded once (the encoder is frozen), with their maps."""

    def __init__(self, model, maps_fn, data: ImageData, batch_size: int = 16) -> None:
        self.parts = []
        self.multiple = model.multiple
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
    def blended(self, decoders, hard: bool, gate=None) -> float:
        """MSE of the outputs blended by the (soft or one-hot argmax) maps; with a
        ``gate``, by its maps instead of the stored ones."""
        if not self.parts:
            return float("nan")
        num = n = 0.0
        for f, y, maps in self.parts:
            if gate is not None:
                maps = upsample_maps(gate(f.code), self.multiple, f.size)
            if hard:
                maps = F.one_hot(maps.argmax(1), maps.shape[1]).permute(0, 3, 1, 2).to(maps.dtype)
            out = sum(maps[:, k : k + 1] * d(f) for k, d in enumerate(decoders))
            num += float((out.clamp(0, 1) - y).pow(2).sum())
            n += y.numel()
        return num / max(n, 1)


@dataclass
class FineTune:
    """One decoder's fine-tuning in :func:`fine_tune_many`: ``steps`` Adam updates of
    ``decoder`` with the loss weighted by route ``cluster`` of ``maps_fn``'s maps (all
    pixels when ``cluster`` is None), validated on ``val``."""

    decoder: torch.nn.Module
    maps_fn: Callable | None
    cluster: int | None
    val: _Val
    steps: int
    desc: str


def fine_tune_many(
    jobs: list[FineTune], model, train: ImageData, lr: float, batch_size: int, crop: int, eval_every: int,
    seed: int, progress: bool = True, recon: str = "mse",
) -> list[list[dict]]:
    """Fine-tune every job's decoder in lockstep on one seeded crop stream; per job its
    history rows ``{step, train_loss, val_loss}``, from step 0.

    Every job would draw the same crops from the same seed if it ran alone (that is what
    makes the per-cluster decoders, the ensemble and the control comparable: the control's
    first updates see the cluster decoders' crops). So the crops, the frozen encoder's
    features and each routing function's maps are computed once per step and shared by
    every job still running (a job stops after its ``steps``). Each decoder's updates are
    exactly those of a run alone (same inputs, its own Adam; no random op in a decoder),
    bit for bit (tested), at a third of the encoder passes and crop draws of three
    sequential runs (the per-cluster decoders, the ensemble, the control)."""
    # NHWC on the CPU (models.device.channels_last), before the optimisers are made
    with channels_last([model, *(job.decoder for job in jobs)], module_device(model)):
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        opts, histories, totals = [], [], []
        for job in jobs:
            for p in job.decoder.parameters():
                p.requires_grad_(True)
            opts.append(torch.optim.Adam(job.decoder.parameters(), lr=lr))
            histories.append([{"step": 0, "train_loss": float("nan"), "val_loss": job.val.loss(job.decoder, job.cluster)}])
            totals.append([0.0, 0])
        last = max((job.steps for job in jobs), default=0)
        names = ", ".join(job.desc for job in jobs)
        bar = tqdm(total=sum(job.steps for job in jobs), desc=names if len(jobs) == 1 else f"{len(jobs)} decoders",
                   disable=not progress, leave=False, mininterval=0.5)
        for step in range(1, last + 1):
            deg, y, _ = sample_crops(train, batch_size, crop, rng)
            maps = {}
            with torch.no_grad():
                f = model.features(deg)
                for job in jobs:
                    if job.cluster is not None and step <= job.steps and job.maps_fn not in maps:
                        maps[job.maps_fn] = upsample_maps(job.maps_fn(f.code), model.multiple, f.size)
            for job, opt, history, total in zip(jobs, opts, histories, totals):
                if step > job.steps:
                    continue
                w = None if job.cluster is None else maps[job.maps_fn][:, job.cluster : job.cluster + 1]
                job.decoder.train()
                loss = weighted_recon(job.decoder(f), y, w, recon)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                value = float(loss.detach())
                check_finite({recon: value}, f"{job.desc}, step {step} of {job.steps}", f"lower decoders.lr ({lr:g})")
                total[0] += value
                total[1] += 1
                bar.update(1)
                if step % eval_every == 0 or step == job.steps:
                    history.append({"step": step, "train_loss": total[0] / total[1],
                                    "val_loss": job.val.loss(job.decoder, job.cluster)})
                    total[:] = [0.0, 0]
        bar.close()
        for job in jobs:
            job.decoder.eval()
        return histories


def fine_tune(
    decoder, model, maps_fn, cluster: int | None, train: ImageData, val: _Val, steps: int, lr: float,
    batch_size: int, crop: int, eval_every: int, seed: int, desc: str, progress: bool = True, recon: str = "mse",
) -> list[dict]:
    """``steps`` Adam updates of ``decoder`` on crops (weighted by cluster ``cluster``'s
    maps; all pixels when None); history rows ``{step, train_loss, val_loss}``, from step 0.
    One job of :func:`fine_tune_many`."""
    job = FineTune(decoder, maps_fn, cluster, val, steps, desc)
    return fine_tune_many([job], model, train, lr, batch_size, crop, eval_every, seed, progress, recon)[0]


def val_losses(vset: _Val, shared, control, routed: list) -> dict:
    """Validation MSE of the shared decoder, the control and the routed decoders blended
    (soft and hard), and per route, its pixels weighted by its routing map: the shared
    decoder, the control and its own decoder (where the routes should win if they pay)."""
    return {
        "val_loss": {
            "shared": vset.loss(shared, None),
            "control": vset.loss(control, None),
            "multi_soft": vset.blended(routed, hard=False),
            "multi_hard": vset.blended(routed, hard=True),
        },
        "val_loss_by_cluster": [
            {"shared": vset.loss(shared, c), "control": vset.loss(control, c), "own": vset.loss(routed[c], c)}
            for c in range(len(routed))
        ],
    }


def train_map_decoders(
    model, maps_fn, k: int, train: ImageData, val: ImageData, *, steps: int, lr: float, batch_size: int,
    crop: int, eval_every: int, min_locations: int, seed: int, sizes: list[int] | None = None,
    progress: bool = True, recon: str = "mse", ensemble: bool = True,
) -> DecodersResult:
    """Per-cluster decoders (``steps`` updates each), the equal-budget control and
    (``ensemble``) the ensemble control: a decoder wherever a cluster has one, fine-tuned
    alike on the damage-blind maps (the module docstring).

    ``maps_fn(code) -> (N, K, h, w)`` routing maps; ``sizes`` the training locations per
    cluster (argmax); a cluster with fewer than ``min_locations`` gets no decoder (the
    control decodes it)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    vset = _Val(model, maps_fn, val)
    sizes = list(sizes) if sizes is not None else [min_locations] * k
    clusters, fallback, jobs = [], [], {}
    for c in range(k):
        if sizes[c] < min_locations:
            warnings.warn(f"cluster {c} has {sizes[c]} training locations (< decoders.min_blocks = "
                          f"{min_locations}): its pixels use the control decoder", stacklevel=2)
            clusters.append(None)
            fallback.append(True)
            continue
        dec = copy.deepcopy(model.decoder)
        jobs[f"cluster_{c}"] = FineTune(dec, maps_fn, c, vset, steps, f"decoder {c}")
        clusters.append(dec)
        fallback.append(False)
    updates = steps * (len(fallback) - sum(fallback))
    ensemble_decoders, ensemble_updates = None, 0
    if ensemble:
        def blind_fn(code):
            return blind_maps(maps_fn(code))

        bset = _Val(model, blind_fn, val)
        ensemble_decoders = []
        for c in range(k):
            if fallback[c]:
                ensemble_decoders.append(None)
                continue
            dec = copy.deepcopy(model.decoder)
            jobs[f"ensemble_{c}"] = FineTune(dec, blind_fn, c, bset, steps, f"ensemble decoder {c}")
            ensemble_updates += steps
            ensemble_decoders.append(dec)
    control = copy.deepcopy(model.decoder)
    control_updates = updates or steps
    jobs["control"] = FineTune(control, maps_fn, None, vset, control_updates, "control decoder")
    # one crop stream for all (each would draw the same alone): computed once per step
    histories = dict(zip(jobs, fine_tune_many(list(jobs.values()), model, train, lr, batch_size, crop,
                                              eval_every, seed, progress, recon)))
    routed = [d if d is not None else control for d in clusters]
    summary = {
        "k": k,
        "sizes": sizes,
        "fallback": fallback,
        "updates": {"clusters": updates, "control": control_updates},
        "crop_updates": {"clusters": updates * batch_size, "control": control_updates * batch_size},
        **val_losses(vset, model.decoder, control, routed),
    }
    if ensemble:
        summary["updates"]["ensemble"] = ensemble_updates
        summary["crop_updates"]["ensemble"] = ensemble_updates * batch_size
        blended = [d if d is not None else control for d in ensemble_decoders]
        summary["val_loss"]["ensemble_soft"] = bset.blended(blended, hard=False)
        summary["val_loss"]["ensemble_hard"] = bset.blended(blended, hard=True)
    return DecodersResult(control, clusters, sizes, fallback, histories, summary, ensemble=ensemble_decoders)
