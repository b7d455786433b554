"""The generative side (aerestore.explore, aerestore.colour): interpolation, arithmetic,
prior samples, plausibility, colourfulness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aerestore import explore as X
from aerestore.colour import colour_bias, colourfulness, to_grey
from aerestore.restore import Restorer

from helpers import fit_to, photo_images, tiny_model


@pytest.fixture(scope="module")
def images():
    return X.to_tensor(photo_images(4, 32, seed=1))


def fitted(name: str, block: int, images: torch.Tensor, overlap: int = 0, steps: int = 30):
    """A tiny model fitted for a few steps to the images' blocks, so that its outputs
    depend on its codes (an untrained decoder gives about 0.5 everywhere)."""
    from aerestore.blocks import split_blocks

    return fit_to(tiny_model(name, block=block), split_blocks(images, block, overlap), steps)


@pytest.mark.parametrize("name,block,overlap,method", [
    ("vae", 32, 0, "auto"),  # a whole-image VAE: one code per image, spherical
    ("vae", 32, 0, "linear"),
    ("conv_ae", 16, 4, "auto"),  # a block model: codes per block, merged like the restorer
])
def test_interpolation_endpoints_are_exactly_the_reconstructions(images, name, block, overlap, method):
    model = fitted(name, block, images, overlap)
    codec = X.LatentCodec(model, overlap=overlap)
    a, b = images[:2], images[2:]
    frames = X.interpolate(codec, a, b, steps=5, method=method)
    assert frames.shape == (2, 5, 3, 32, 32)
    assert torch.equal(frames[:, 0], codec.reconstruct(a))
    assert torch.equal(frames[:, -1], codec.reconstruct(b))
    # what the restorer's base mode (the shared decoder) gives, up to batching order
    base = Restorer(model, arch=name, overlap=overlap).restore_float(a, mode="base")
    torch.testing.assert_close(frames[:, 0], base, atol=1e-5, rtol=0)
    assert not torch.allclose(frames[:, 2], frames[:, 0], atol=1e-3)  # the middle is elsewhere


def test_slerp_properties():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 16, generator=gen), torch.randn(6, 16, generator=gen)
    assert torch.equal(X.slerp(a, b, 0.0), a) and torch.equal(X.slerp(a, b, 1.0), b)
    ua, ub = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.arccos((ua * ub).sum(1))
    for t in (0.25, 0.5, 0.8):
        s = X.slerp(ua, ub, t)
        torch.testing.assert_close(s.norm(dim=1), torch.ones(6), atol=1e-5, rtol=0)  # on the sphere
        torch.testing.assert_close(torch.arccos((s * ua).sum(1).clamp(-1, 1)), t * omega, atol=1e-4, rtol=0)
        # equal norms are kept; a straight line would shrink them
        assert (X.lerp(ua, ub, t).norm(dim=1) < 1 - 1e-3).all()
    # parallel vectors: linear, no division by zero
    torch.testing.assert_close(X.slerp(a, 2 * a, 0.5), 1.5 * a)
    assert torch.isfinite(X.slerp(torch.zeros(3), torch.ones(3), 0.3)).all()


def test_lerp_endpoints_exact():
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.equal(X.lerp(a, b, 0.0), a) and torch.equal(X.lerp(a, b, 1.0), b)


def test_auto_method_follows_the_model():
    assert X.resolve_method(tiny_model("vae"), "auto") == "spherical"
    assert X.resolve_method(tiny_model("conv_ae"), "auto") == "linear"
    with pytest.raises(ValueError, match="interpolation must be one of"):
        X.resolve_method(tiny_model("vae"), "cubic")


def test_sampling_with_a_seed_is_deterministic():
    model = tiny_model("vae", block=16)
    first = X.sample(model, 6, seed=3)
    assert first.shape == (6, 3, 16, 16) and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, X.sample(model, 6, seed=3))
    assert torch.equal(first[:2], X.sample(model, 2, seed=3))  # a prefix of the same draws
    assert not torch.allclose(first, X.sample(model, 6, seed=4))
    with pytest.raises(ValueError, match="not variational"):
        X.sample(tiny_model("conv_ae"), 2)


def test_arithmetic_with_b_equal_c_is_the_reconstruction(images):
    codec = X.LatentCodec(fitted("vae", 32, images), overlap=0)
    a, b = images[:2], images[2:]
    assert torch.equal(X.arithmetic(codec, a, b, b), codec.reconstruct(a))
    assert not torch.allclose(X.arithmetic(codec, a, b, a), codec.reconstruct(a), atol=1e-3)


def test_codec_refuses_what_it_cannot_do(images):
    codec = X.LatentCodec(tiny_model("vae", block=32))
    with pytest.raises(ValueError, match="smaller than"):
        codec.encode(images[:, :, :16, :16])
    with pytest.raises(ValueError, match="differ in shape"):
        X.interpolate(codec, images[:1], images[:2])


def test_plausibility_is_zero_on_the_references(images):
    frames = images[None].repeat(2, 1, 1, 1, 1)  # (2, 4, C, H, W): every frame a reference
    p = X.plausibility(frames, images)
    assert p.endpoints == 0 and p.midpoints == 0
    noisy = (images + 0.1 * torch.randn_like(images)).clamp(0, 1)
    assert X.nearest_mse(noisy, images).gt(0).all()


def test_grid_and_fit_image():
    imgs = photo_images(3, 20, seed=2)
    g = X.grid([imgs, imgs[:2]], min_tile=40, gap=2)
    assert g.shape == (2 * (40 + 2) + 2, 3 * (40 + 2) + 2, 3)
    assert (g[2:42, 2:42] == imgs[0].repeat(2, 0).repeat(2, 1)).all()
    wide = np.zeros((30, 50, 3), np.uint8)
    wide[:, 10:40] = 200  # the centre square
    assert (X.fit_image(wide, 30) == 200).all()
    assert X.fit_image(wide, 12).shape == (12, 12, 3)


def test_colourfulness():
    grey = to_grey(photo_images(2, 16))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    np.testing.assert_allclose(colourfulness(grey), 0.0, atol=1e-9)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255  # rg = 255, yb = 127.5, no spread: 0.3 * sqrt(255^2 + 127.5^2)
    assert colourfulness(red) == pytest.approx(0.3 * math.hypot(255, 127.5))
    assert colourfulness(red.astype(np.float32) / 255) == pytest.approx(colourfulness(red))
    photos = photo_images(4, 32)
    assert (colourfulness(photos) > colourfulness(to_grey(photos))).all()


def test_colour_bias_is_the_mean_channel_shift():
    """A cast of +6 steps in red and -3 in blue is (6 + 0 + 3) / 3 = 3 steps; noise that
    averages out is no cast; uint8 and float images agree; mismatched stacks are refused."""
    clean = np.clip(photo_images(3, 16).astype(np.int16), 10, 240)  # room for the shifts: they are exact
    cast = clean + np.array([6, 0, -3], np.int16)
    np.testing.assert_allclose(colour_bias(cast.astype(np.uint8), clean.astype(np.uint8)), 3.0, atol=1e-9)
    flip = clean.copy()
    flip[:, ::2] += 5
    flip[:, 1::2] -= 5  # +-5 on alternate rows: no cast on the average
    np.testing.assert_allclose(colour_bias(flip.astype(np.uint8), clean.astype(np.uint8)), 0.0, atol=1e-9)
    as_float = cast.astype(np.float64) / 255, clean.astype(np.float64) / 255
    np.testing.assert_allclose(colour_bias(*as_float), 3.0, atol=1e-9)
    with pytest.raises(ValueError, match="colour_bias"):
        colour_bias(clean[:2].astype(np.uint8), clean.astype(np.uint8))
