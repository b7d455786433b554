"""Each loss against a value computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from aerestore.losses import (
    LossConfig,
    kl_divergence,
    max_variation,
    mse,
    neighbour_variations,
    pixel_kl,
    reconstruction,
    rmse,
    sharpness_loss,
    similarity_matrix,
    soft_ncut,
    weight_penalties,
)
from aerestore.params import TrainParams


def bright_pixel(side: int = 5) -> torch.Tensor:
    """A (1, 1, side, side) black block with one white pixel in the centre."""
    x = torch.zeros(1, 1, side, side)
    x[0, 0, side // 2, side // 2] = 1.0
    return x


# ------------------------------------------------------------------------ pixel losses
def test_mse_and_rmse_by_hand():
    out = torch.zeros(2, 1, 2, 2)
    target = torch.zeros(2, 1, 2, 2)
    target[0] = 0.5  # sample 0: every error 0.5 -> mse 0.25, rmse 0.5
    target[1, 0, 0, 0] = 1.0  # sample 1: one error of 1 in 4 -> mse 0.25, rmse 0.5
    target[1, 0, 1, 1] = 1.0  # now mse 0.5, rmse sqrt(0.5)
    assert mse(out, target).item() == pytest.approx((0.25 + 0.5) / 2)
    assert rmse(out, target).item() == pytest.approx((0.5 + math.sqrt(0.5)) / 2, abs=1e-6)
    assert reconstruction(out, target, "rmse").item() == pytest.approx(rmse(out, target).item())
    with pytest.raises(ValueError, match="rmsle"):
        reconstruction(out, target, "rmsle")
    with pytest.raises(ValueError, match="shape mismatch"):
        mse(out, target[:1])


def test_rmse_gradient_is_finite_at_a_perfect_reconstruction():
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    rmse(x, x.detach()).backward()
    assert torch.isfinite(x.grad).all()


# ------------------------------------------------------------------------------- KL
def test_kl_matches_the_closed_form_of_a_known_gaussian():
    # KL(N(mu, s^2) || N(0, 1)) = log(1 / s) + (s^2 + mu^2) / 2 - 1/2 per dimension
    mu = torch.tensor([[0.5, -1.0, 0.0]])
    s = torch.tensor([[2.0, 0.5, 1.0]])
    expected = sum(
        math.log(1 / sj) + (sj**2 + mj**2) / 2 - 0.5 for mj, sj in zip(mu[0].tolist(), s[0].tolist(), strict=True)
    )
    assert kl_divergence(mu, 2 * s.log()).item() == pytest.approx(expected, rel=1e-6)
    # per sample summed, batch averaged: a second, standard-normal sample halves it
    mu2 = torch.cat([mu, torch.zeros(1, 3)])
    logvar2 = torch.cat([2 * s.log(), torch.zeros(1, 3)])
    assert kl_divergence(mu2, logvar2).item() == pytest.approx(expected / 2, rel=1e-6)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, s), torch.distributions.Normal(0.0, 1.0))
    assert kl_divergence(mu, 2 * s.log()).item() == pytest.approx(ref.sum().item(), rel=1e-6)


# ------------------------------------------------------------------------ sharpness
def test_neighbour_variations_of_a_bright_pixel():
    d = neighbour_variations(bright_pixel())  # (1, 1, 8, 5, 5)
    assert d.shape == (1, 1, 8, 5, 5)
    assert torch.equal(d[0, 0, :, 2, 2], torch.full((8,), -1.0))  # centre: every neighbour darker by 1
    # pixel (1, 1) sees the centre at offset (+1, +1), the last of the 8 directions
    assert torch.equal(d[0, 0, :, 1, 1], torch.tensor([0, 0, 0, 0, 0, 0, 0, 1.0]))
    # pixel (2, 3) sees it at offset (0, -1), the 4th direction
    assert torch.equal(d[0, 0, :, 2, 3], torch.tensor([0, 0, 0, 1.0, 0, 0, 0, 0]))
    assert d[0, 0, :, 0, :].abs().sum() == 0  # the top row is two rows away
    m = max_variation(bright_pixel())
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = 1.0
    assert torch.equal(m[0, 0], expected)


def test_neighbour_variations_are_per_channel_and_zero_on_flat_borders():
    x = torch.cat([bright_pixel(), torch.full((1, 1, 5, 5), 0.3)], dim=1)
    d = neighbour_variations(x)
    assert d.shape == (1, 2, 8, 5, 5)
    assert d[0, 1].abs().sum() == 0  # a flat channel has no variation, borders included
    assert torch.equal(d[0, 0], neighbour_variations(bright_pixel())[0, 0])


def test_sharpness_variants_by_hand():
    target, output = bright_pixel(), torch.zeros(1, 1, 5, 5)
    # (b) max: mean over 25 pixels of (0 - m_t)^2, m_t = 1 on 9 pixels
    assert sharpness_loss(output, target, "max").item() == pytest.approx(9 / 25)
    # (a) mean_max: (0 - mean m_t)^2
    assert sharpness_loss(output, target, "mean_max").item() == pytest.approx((9 / 25) ** 2)
    # (c) mean_sq: mean d^2 of the target = (8 at the centre + 1 at each of 8 neighbours) / (25 * 8)
    assert sharpness_loss(output, target, "mean_sq").item() == pytest.approx((16 / 200) ** 2)
    for variant in ("max", "mean_max", "mean_sq"):
        assert sharpness_loss(target, target, variant).item() == 0.0
    with pytest.raises(ValueError, match="sharpness variant"):
        sharpness_loss(output, target, "sobel")


def test_sharpness_penalises_a_blurred_output_and_has_gradients():
    target = bright_pixel(7)
    out = torch.nn.functional.avg_pool2d(target, 3, 1, 1).requires_grad_()
    loss = sharpness_loss(out, target)
    loss.backward()
    assert loss.item() > 0.01
    assert out.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- n-cut
def test_soft_ncut_by_hand_on_two_points():
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0]])  # |z0 - z1|^2 = 2, D = 2, sigma = 1 -> w = e^-1
    w = math.exp(-1.0)
    assert similarity_matrix(z, 1.0)[0, 1].item() == pytest.approx(w)
    hard = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # each cluster: assoc = 1 (self), volume = 1 + w  ->  K - 2 / (1 + w)
    assert soft_ncut(z, hard, 1.0).item() == pytest.approx(2 - 2 / (1 + w), rel=1e-6)
    half = torch.full((2, 2), 0.5)
    # each cluster: assoc = 0.25 * (2 + 2w), volume = 0.5 * 2 * (1 + w) -> ratio 0.5
    assert soft_ncut(z, half, 1.0).item() == pytest.approx(1.0, rel=1e-6)


def test_soft_ncut_prefers_the_true_clusters():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 4, generator=g) * 0.1
    b = torch.randn(8, 4, generator=g) * 0.1 + 3.0
    z = torch.cat([a, b])
    truth = torch.cat([torch.tensor([[1.0, 0.0]]).repeat(8, 1), torch.tensor([[0.0, 1.0]]).repeat(8, 1)])
    random = torch.softmax(torch.randn(16, 2, generator=g) * 3, dim=1)
    perfect = soft_ncut(z, truth, 1.0).item()
    assert perfect < 1e-3  # no similarity crosses the two far-apart groups
    assert soft_ncut(z, random, 1.0).item() > perfect + 0.3
    with pytest.raises(ValueError, match="probs"):
        soft_ncut(z, truth[:3], 1.0)


def test_similarity_is_scale_free_in_the_latent_length():
    # the same per-dimension difference gives the same w whatever D
    z1 = torch.tensor([[0.0], [0.5]])
    z8 = torch.tensor([[0.0] * 8, [0.5] * 8])
    assert similarity_matrix(z1, 0.7)[0, 1].item() == pytest.approx(similarity_matrix(z8, 0.7)[0, 1].item())


# ------------------------------------------------------------------------- penalties
def test_weight_penalties_sum_conv_and_linear_weights_only():
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 1, 2), nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]]]))
        net[3].weight.copy_(torch.tensor([[3.0], [-1.0]]))
    l1, l2 = weight_penalties(net)
    assert l1.item() == pytest.approx(1 + 2 + 0.5 + 3 + 1)
    assert l2.item() == pytest.approx(1 + 4 + 0.25 + 9 + 1)
    l1, l2 = weight_penalties(net, exclude=(net[3],))
    assert l1.item() == pytest.approx(3.5)


# ---------------------------------------------------------------------------- config
def test_loss_config_from_train_params_and_dict():
    train = TrainParams(loss={"recon": "rmse", "beta": 0.25, "sharpness_weight": 0.1, "sharpness_start_epoch": 3,
                              "ncut_k": 4})
    cfg = LossConfig.from_train(train)
    got = (cfg.recon, cfg.beta, cfg.sharpness_weight, cfg.sharpness_start_epoch, cfg.ncut_k)
    assert got == ("rmse", 0.25, 0.1, 3, 4)
    assert LossConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="gamma"):
        LossConfig.from_dict({**cfg.to_dict(), "gamma": 1.0})
    with pytest.raises(ValueError, match="sharpness_variant"):
        LossConfig(sharpness_variant="sobel")
    with pytest.raises(ValueError, match="beta"):
        LossConfig(beta=-1.0)
    with pytest.raises(ValueError, match="ncut_k"):
        LossConfig(ncut_k=1)
    assert LossConfig.from_train(TrainParams(loss={"pixel_kl": 0.3})).pixel_kl == 0.3
    with pytest.raises(ValueError, match="pixel_kl"):
        LossConfig(pixel_kl=-1.0)


def test_pixel_kl_by_hand_as_keras_computes_it():
    # one sample, 2 channels, 1 x 2 pixels; t = clean target, y = output
    t = torch.tensor([[[[0.5, 0.0]], [[0.25, 1.0]]]])
    y = torch.tensor([[[[0.25, 0.5]], [[0.5, 1.0]]]])
    # pixel 1: 0.5*log(0.5/0.25) + 0.25*log(0.25/0.5) = 0.25*log 2
    # pixel 2: t = 0 is clamped to 1e-7: 1e-7*log(1e-7/0.5) + 1*log(1/1) ~ -1.5e-6
    p1 = 0.25 * math.log(2)
    p2 = 1e-7 * math.log(1e-7 / 0.5)
    assert pixel_kl(y, t).item() == pytest.approx((p1 + p2) / 2, rel=1e-5)  # sum over channels, mean over pixels
    assert pixel_kl(t, t).item() == pytest.approx(0.0, abs=1e-6)
    # finite at an output of exactly 0 (clamped), with finite gradients
    y0 = torch.zeros(1, 3, 4, 4, requires_grad=True)
    value = pixel_kl(y0, torch.full((1, 3, 4, 4), 0.5))
    value.backward()
    assert math.isfinite(value.item()) and torch.isfinite(y0.grad).all()


def test_pixel_kl_enters_every_model_loss():
    from aerestore.models import create_model

    torch.manual_seed(0)
    clean = torch.rand(4, 3, 16, 16)
    degraded = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1)
    for name, n in (("conv_ae", 1.0), ("vae", 3 * 16 * 16)):
        torch.manual_seed(1)
        model = create_model(name, latent=8, block=16, loss=LossConfig(pixel_kl=0.5, alpha=2.0))
        model.eval()
        terms = model.loss((degraded, clean))
        x_hat = model(degraded)
        assert terms["pixel_kl"].item() == pytest.approx(n * pixel_kl(x_hat, clean).item(), rel=1e-5)
        w_r = 2.0 if model.variational else 1.0
        expected = w_r * terms["recon"] + w_r * 0.5 * terms["pixel_kl"] + (terms["kl"] if "kl" in terms else 0)
        assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert "pixel_kl" not in create_model("conv_ae", latent=8, block=16).loss((degraded, clean))
