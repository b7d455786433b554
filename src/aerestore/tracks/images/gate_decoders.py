"""The learned gate of ``unet_ae`` (``decoders.method: gate``): K decoders and a gate trained
end to end as a mixture of experts, beside the equal-budget control
(:func:`aerestore.tracks.images.decoders.fine_tune`), and whether the gate's routes follow
the damage."""

from __future__ import annotations

import copy

import numpy as np
import torch
from tqdm import tqdm

from ..blocks.decoders import DecodersResult
from ...losses import check_finite
from .dataset import ImageData, location_features, sample_crops
from .decoders import _Val, fine_tune, val_losses, weighted_recon
from .restore import upsample_maps


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
