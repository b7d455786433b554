"""The fine-tuning loss of fully convolutional decoders follows the training loss
(``train.loss.recon``), weighted per pixel by a cluster's routing map."""

import pytest
import torch

from aerestore.losses import charbonnier, psnr_loss
from aerestore.tracks.images.decoders import weighted_mse, weighted_recon


def _pair(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, 3, 8, 8, generator=g)
    y_hat = (y + 0.1 * torch.randn(n, 3, 8, 8, generator=g)).clamp(0, 1)
    return y_hat, y


def test_without_weights_it_is_the_training_loss():
    y_hat, y = _pair()
    assert torch.allclose(weighted_recon(y_hat, y, None, "psnr"), psnr_loss(y_hat, y), atol=1e-5)
    assert torch.allclose(weighted_recon(y_hat, y, None, "charbonnier"), charbonnier(y_hat, y), atol=1e-6)
    assert torch.equal(weighted_recon(y_hat, y, None, "mse"), weighted_mse(y_hat, y, None))
    ones = torch.ones_like(y[:, :1])
    assert torch.allclose(weighted_recon(y_hat, y, ones, "psnr"), psnr_loss(y_hat, y), atol=1e-5)


def test_pixels_and_images_without_weight_have_no_say():
    y_hat, y = _pair(1)
    w = torch.zeros_like(y[:, :1])
    w[0, :, :4] = 1.0                       # half of image 0 only
    base = weighted_recon(y_hat, y, w, "psnr")
    spoiled = y_hat.clone()
    spoiled[0, :, 4:] = 1 - y[0, :, 4:]     # outside the weights
    spoiled[1:] = 1 - y[1:]                 # images with zero weight
    assert torch.allclose(weighted_recon(spoiled, y, w, "psnr"), base)
    expected = psnr_loss(y_hat[:1, :, :4], y[:1, :, :4])
    assert torch.allclose(base, expected, atol=1e-5)


def test_images_count_by_their_weight():
    y_hat, y = _pair(2, n=2)
    w = torch.ones_like(y[:, :1])
    w[1] *= 0.25
    per = [psnr_loss(y_hat[i : i + 1], y[i : i + 1]) for i in range(2)]
    expected = (per[0] * 1.0 + per[1] * 0.25) / 1.25
    assert torch.allclose(weighted_recon(y_hat, y, w, "psnr"), expected, atol=1e-5)


def test_unknown_kind_names_the_key():
    y_hat, y = _pair()
    with pytest.raises(ValueError, match="train.loss.recon"):
        weighted_recon(y_hat, y, None, "huber")
