"""The reconstruction losses unet_ae may train with (``train.loss.recon``): charbonnier and psnr,
against values computed by hand or by the metrics module, and the property each is for."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aerestore.losses import CHARBONNIER_EPS, LossConfig, charbonnier, mse, psnr_loss, reconstruction
from aerestore.metrics import psnr
from aerestore.models import create_model
from aerestore.params import ParamsError, TrainParams, parse_params
from test_params import repo_params


def test_charbonnier_by_hand():
    out = torch.zeros(2, 1, 2, 2)
    target = torch.zeros(2, 1, 2, 2)
    assert charbonnier(out, target).item() == pytest.approx(0.0, abs=1e-9)  # a perfect output: 0
    target[0, 0, 0, 0] = 0.5  # one error of 0.5 in 8 values
    expected = (math.sqrt(0.25 + CHARBONNIER_EPS**2) - CHARBONNIER_EPS) / 8
    assert charbonnier(out, target).item() == pytest.approx(expected, rel=1e-5)
    assert reconstruction(out, target, "charbonnier").item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="shape mismatch"):
        charbonnier(out, target[:1])


def test_charbonnier_gives_small_errors_the_pull_of_large_ones():
    """Why it is there: a pixel 0.01 off (light noise) and one 0.2 off (heavy noise) pull
    about equally (MSE: 20x less for the small one)."""
    target = torch.zeros(1, 1, 1, 2)
    out = torch.tensor([[[[0.01, 0.2]]]], requires_grad=True)
    charbonnier(out, target).backward()
    g = out.grad.flatten()
    assert g[0] / g[1] > 0.99
    out.grad = None
    mse(out, target).backward()
    g = out.grad.flatten()
    assert g[0] / g[1] == pytest.approx(0.05)


def test_psnr_loss_is_minus_the_mean_psnr_of_the_metrics():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(3, 3, 8, 8, generator=gen)
    noise = 0.05 * torch.randn(3, 3, 8, 8, generator=gen) * torch.tensor([1.0, 3.0, 0.3]).view(3, 1, 1, 1)
    out = (target + noise).clamp(0, 1)
    expected = -np.mean([psnr(out[i].permute(1, 2, 0).numpy(), target[i].permute(1, 2, 0).numpy()) for i in range(3)])
    assert psnr_loss(out, target).item() == pytest.approx(expected, abs=1e-3)
    assert reconstruction(out, target, "psnr").item() == pytest.approx(expected, abs=1e-3)


def test_psnr_loss_weighs_each_image_by_its_own_error():
    """Image 1 is 10x as far off as image 0: under the MSE its gradient is 10x larger; under
    the PSNR loss both images' gradients have the same size (each scaled by 1 / MSE_i)."""
    target = torch.zeros(2, 1, 2, 2)
    out = torch.full((2, 1, 2, 2), 0.01)
    out[1] = 0.1
    out.requires_grad_(True)
    psnr_loss(out, target).backward()
    g = out.grad.abs().flatten(1).sum(1)
    assert g[0].item() == pytest.approx(g[1].item() * 10, rel=1e-4)  # d/dy log(y^2) = 2 / y
    out.grad = None
    mse(out, target).backward()
    g = out.grad.abs().flatten(1).sum(1)
    assert g[1].item() == pytest.approx(g[0].item() * 10, rel=1e-4)


def test_unet_ae_trains_with_each_loss_and_params_validate_the_name():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    y = (x + 0.05).clamp(0, 1)
    for kind in ("charbonnier", "psnr"):
        cfg = LossConfig.from_train(TrainParams(loss={"recon": kind, "beta": 1.0, "damage_weight": 0.1}))
        model = create_model("unet_ae", latent=8, block=16, channels=3, loss=cfg, width=8)
        terms = model.loss((x, y))
        assert torch.isfinite(terms["loss"]) and terms["recon"].item() == pytest.approx(
            reconstruction(model.run(x).x_hat, y, kind).item(), rel=1e-5)
        terms["loss"].backward()
    raw = repo_params()
    raw["arch"]["unet_ae"]["train"]["loss"] = {**raw["arch"]["unet_ae"]["train"]["loss"], "recon": "l2"}
    with pytest.raises(ParamsError, match="recon"):
        parse_params(raw).train_for("unet_ae")
    with pytest.raises(ValueError, match="recon"):
        LossConfig(recon="l2")
