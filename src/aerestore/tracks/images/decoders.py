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

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .dataset import ImageData, image_batches, location_features, sample_crops  # noqa: F401
from ..blocks.decoders import DecodersResult
from ...losses import check_finite
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


def fine_tune(
    decoder, model, maps_fn, cluster: int | None, train: ImageData, val: _Val, steps: int, lr: float,
    batch_size: int, crop: int, eval_every: int, seed: int, desc: str, progress: bool = True, recon: str = "mse",
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
        loss = weighted_recon(decoder(f), y, w, recon)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        check_finite({recon: value}, f"{desc}, step {step} of {steps}", f"lower decoders.lr ({lr:g})")
        total += value
        count += 1
        bar.update(1)
        if step % eval_every == 0 or step == steps:
            history.append({"step": step, "train_loss": total / count, "val_loss": val.loss(decoder, cluster)})
            total, count = 0.0, 0
    bar.close()
    decoder.eval()
    return history


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
                                              eval_every, seed, f"decoder {c}", progress, recon)
        updates += steps
        clusters.append(dec)
        fallback.append(False)
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
            histories[f"ensemble_{c}"] = fine_tune(dec, model, blind_fn, c, train, bset, steps, lr, batch_size,
                                                   crop, eval_every, seed, f"ensemble decoder {c}", progress, recon)
            ensemble_updates += steps
            ensemble_decoders.append(dec)
    control = copy.deepcopy(model.decoder)
    control_updates = updates or steps
    histories["control"] = fine_tune(control, model, maps_fn, None, train, vset, control_updates, lr, batch_size,
                                     crop, eval_every, seed, "control decoder", progress, recon)
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



# ------------------------------------------------------------------ the learned gate
def gate_routing(model, gate, data: ImageData) -> dict:
    """Whether the gate's routes follow the damage, as for clusters
    (:func:`aerestore.cluster.damage_report`): every code location of ``data``'s images
    goes to the gate's argmax; per route its size and clean / blur / noise shares, the AMI
    with the locations' majority damage, and per damage class its route's purity and recall
    (``{"locations", "sizes"}`` only, without masks)."""
    from ...cluster import damage_report

    z, damage = location_features(model, data)
    with torch.no_grad():
        labels = gate(torch.from_numpy(z)[:, :, None, None])[:, :, 0, 0].argmax(1).numpy()
    out = {"locations": int(len(z)), "sizes": [int((labels == c).sum()) for c in range(gate.k)]}
    if damage is not None and len(z):
        out.update(damage_report(labels, damage))
    return out


def train_gate_decoders(
    model, gate, train: ImageData, val: ImageData, *, steps: int, lr: float, gate_lr: float, balance: float,
    batch_size: int, crop: int, eval_every: int, seed: int, progress: bool = True, recon: str = "mse",
) -> DecodersResult:
    """K decoders and a learned gate (:class:`aerestore.gate.Gate`) trained end to end, a
    mixture of experts (``decoders.method: gate``), and the equal-budget control.

    The K decoders start as copies of the shared decoder. Each of ``steps`` steps: a batch
    of crops (the same seeded stream as every fine-tuning here), the frozen encoder's
    features, the gate's noisy weights per code location upsampled to the pixels, the
    mixture ``sum_k g_k * decoder_k(f)``, and one Adam update of every decoder (``lr``)
    and the gate (``gate_lr``) on ``recon(mixture, clean) + balance * CV(importance)^2``
    (:func:`aerestore.gate.balance_loss`). Each decoder gets ``steps`` updates, as a
    per-cluster decoder does, so the control (:func:`fine_tune` on all pixels, same lr,
    batch, crop size and crop stream) gets ``K * steps``: the rule of the per-cluster
    decoders, equal decoder updates, and the same control for the same seed.

    Histories: ``gate`` (step = decoder updates so far, K per step, the control's unit):
    ``train_loss`` (the mixture's MSE), ``val_loss`` (the soft mixture on the validation
    images), ``balance`` (CV^2, mean over the interval) and, with masks, ``val_ami`` (the
    gate's routes against the validation locations' majority damage); ``control``.
    ``result.summary["gate"]`` holds the training settings; the trained gate is
    ``result.gate`` (saved by :func:`aerestore.artifacts.write_decoders`)."""
    from ...gate import balance_loss

    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    k = gate.k
    vset = _Val(model, lambda code: gate(code), val)  # stored maps: the initial gate's
    z_val, dmg_val = location_features(model, val)
    code_val = torch.from_numpy(z_val)[:, :, None, None]

    def val_ami() -> float:
        from ...cluster import damage_report

        if dmg_val is None or not len(z_val):
            return float("nan")
        with torch.no_grad():
            labels = gate(code_val)[:, :, 0, 0].argmax(1).numpy()
        return damage_report(labels, dmg_val)["ami_majority_damage"]

    decoders = [copy.deepcopy(model.decoder) for _ in range(k)]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    noise = torch.Generator().manual_seed(seed)
    for p in [*gate.parameters(), *(q for d in decoders for q in d.parameters())]:
        p.requires_grad_(True)
    opt = torch.optim.Adam([{"params": [q for d in decoders for q in d.parameters()], "lr": lr},
                            {"params": list(gate.parameters()), "lr": gate_lr}])

    def point(step: int, train_loss: float, bal: float) -> dict:
        gate.eval()
        return {"step": step * k, "train_loss": train_loss, "val_loss": vset.blended(decoders, False, gate),
                "balance": bal, "val_ami": val_ami()}

    history = [point(0, float("nan"), float("nan"))]
    total = total_bal = 0.0
    count = 0
    bar = tqdm(total=steps, desc=f"gate + {k} decoders", disable=not progress, leave=False, mininterval=0.5)
    for step in range(1, steps + 1):
        deg, y, _ = sample_crops(train, batch_size, crop, rng)
        with torch.no_grad():
            f = model.features(deg)
        gate.train()
        for d in decoders:
            d.train()
        g = gate(f.code, noise)
        maps = upsample_maps(g, model.multiple, f.size)
        out = sum(maps[:, j : j + 1] * d(f) for j, d in enumerate(decoders))
        mse = weighted_recon(out, y, None, recon)
        bal = balance_loss(g)
        opt.zero_grad(set_to_none=True)
        (mse + balance * bal).backward()
        opt.step()
        values = {recon: float(mse.detach()), "balance": float(bal.detach())}
        check_finite(values, f"gate + {k} decoders, step {step} of {steps}",
                     f"lower decoders.lr ({lr:g}) or decoders.gate_lr ({gate_lr:g})")
        total += values[recon]
        total_bal += values["balance"]
        count += 1
        bar.update(1)
        if step % eval_every == 0 or step == steps:
            history.append(point(step, total / count, total_bal / count))
            total = total_bal = 0.0
            count = 0
    bar.close()
    gate.eval()
    for d in decoders:
        d.eval()
    for p in gate.parameters():
        p.requires_grad_(False)

    control = copy.deepcopy(model.decoder)
    control_updates = k * steps
    control_history = fine_tune(control, model, None, None, train, vset, control_updates, lr, batch_size, crop,
                                eval_every, seed, "control decoder", progress, recon)
    final = _Val(model, lambda code: gate(code), val)  # the trained gate's maps
    routes = gate_routing(model, gate, train)
    summary = {
        "method": "gate",
        "k": k,
        "sizes": routes["sizes"],
        "fallback": [False] * k,
        "updates": {"clusters": k * steps, "control": control_updates},
        "crop_updates": {"clusters": k * steps * batch_size, "control": control_updates * batch_size},
        "gate": {"steps": steps, "lr": gate_lr, "balance_weight": balance,
                 "balance_end": history[-1]["balance"]},
        **val_losses(final, model.decoder, control, decoders),
        # do the gate's routes follow the damage? (the cluster stage's measures)
        "routing": {"train": routes, "val": gate_routing(model, gate, val)},
    }
    return DecodersResult(control, list(decoders), routes["sizes"], [False] * k,
                          {"gate": history, "control": control_history}, summary, gate=gate)
