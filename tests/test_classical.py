"""Classical restorers (aerestore.classical)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from aerestore.classical import (
    RESTORERS,
    RestorerUnavailable,
    dropout_mask,
    gaussian_psf,
    noise_sigma,
    restore_all,
)
from aerestore.metrics import psnr
from aerestore.params import CLASSICAL

# the restorers of the default install; bm3d needs the optional extra (non-commercial licence)
OPTIONAL = {name for name, r in RESTORERS.items() if r.requires}


def _needs(name: str) -> None:
    if name in OPTIONAL:
        pytest.importorskip(RESTORERS[name].requires)


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    ast = data.astronaut().astype(np.float64) / 255.0
    cam = data.camera().astype(np.float64) / 255.0
    return {"rgb": ast[100:148, 200:248], "grey": cam[200:248, 200:248][..., None]}


def _degrade(name: str, clean: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    if name in ("nlmeans", "bm3d", "tv", "bilateral"):
        return np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
    if name in ("wiener", "richardson_lucy"):
        return ndimage.gaussian_filter(clean, (1.0, 1.0, 0), mode="reflect")
    if name == "biharmonic":
        holed = clean.copy()
        holed[10:20, 14:24] = 0.0  # a black square, as coarse_dropout with fill 0
        return holed
    raise AssertionError(name)


def test_names_match_params():
    assert tuple(RESTORERS) == CLASSICAL
    for name, r in RESTORERS.items():
        assert r.name == name and r.settings


@pytest.mark.parametrize("name", CLASSICAL)
@pytest.mark.parametrize("kind", ["rgb", "grey"])
def test_restorer_improves_matching_degradation(name, kind, crops):
    _needs(name)
    clean = crops[kind]
    degraded = _degrade(name, clean)
    out = RESTORERS[name](degraded)
    assert out.shape == clean.shape and out.dtype == np.float64
    assert out.min() >= 0.0 and out.max() <= 1.0
    gain = psnr(out, clean) - psnr(degraded, clean)
    assert gain > 1.0, f"{name} on {kind}: PSNR gain {gain:.2f} dB"
    np.testing.assert_array_equal(RESTORERS[name](degraded), out)  # deterministic


def test_biharmonic_without_holes_is_identity(crops):
    img = np.clip(crops["rgb"], 1 / 255, 1)
    assert not dropout_mask(img).any()
    np.testing.assert_array_equal(RESTORERS["biharmonic"](img), img)
    # a pixel that is 0 in only some channels is not a hole
    img[5, 5, 0] = 0.0
    assert not dropout_mask(img).any()


def test_gaussian_psf():
    k = gaussian_psf(1.0)
    assert k.shape == (7, 7) and k.sum() == pytest.approx(1.0)
    assert k[3, 3] == k.max()
    with pytest.raises(ValueError):
        gaussian_psf(0.0)


def test_restore_all_shapes_and_errors(crops):
    imgs = (np.stack([crops["rgb"][:32, :32], crops["rgb"][16:, 16:]]) * 255).round().astype(np.uint8)
    out = restore_all(imgs, ["tv", "bilateral"], progress=False)
    assert set(out) == {"tv", "bilateral"}
    for name, arr in out.items():
        assert arr.shape == imgs.shape and arr.dtype == np.float64
        np.testing.assert_allclose(arr[1], RESTORERS[name](imgs[1] / 255.0))
    with pytest.raises(KeyError, match="unknown classical"):
        restore_all(imgs, ["tv", "median"], progress=False)
    with pytest.raises(ValueError, match="images"):
        restore_all(imgs[0], ["tv"], progress=False)


def test_bm3d_beats_nlmeans_on_a_noisy_crop(crops):
    pytest.importorskip("bm3d")
    clean = crops["rgb"]
    noisy = _degrade("bm3d", clean)
    gain = {n: psnr(RESTORERS[n](noisy), clean) - psnr(noisy, clean) for n in ("bm3d", "nlmeans")}
    assert gain["bm3d"] > 4.0 and gain["bm3d"] > gain["nlmeans"], gain


def test_bm3d_is_the_packages_bm3d_rgb_and_survives_grey_rgb(crops):
    bm3d = pytest.importorskip("bm3d")
    noisy = _degrade("bm3d", crops["rgb"])
    profile = bm3d.BM3DProfile()
    profile.num_threads = 1
    expected = np.clip(bm3d.bm3d_rgb(noisy, noise_sigma(noisy), profile), 0, 1)
    np.testing.assert_allclose(RESTORERS["bm3d"](noisy), expected, atol=1e-12)
    # R = G = B: bm3d_rgb divides by the constant chroma channels' range 0 and gives NaN
    grey = np.repeat(_degrade("bm3d", crops["grey"]), 3, axis=2)
    out = RESTORERS["bm3d"](grey)
    assert np.isfinite(out).all() and psnr(out, np.repeat(crops["grey"], 3, axis=2)) > psnr(
        grey, np.repeat(crops["grey"], 3, axis=2)) + 1
    flat = np.full((32, 32, 3), 0.25)
    np.testing.assert_array_equal(RESTORERS["bm3d"](flat), flat)
    with pytest.raises(ValueError, match="at least 11x11"):
        RESTORERS["bm3d"](np.random.default_rng(0).random((8, 8, 3)))  # would crash the C library


def test_missing_optional_package_is_reported_not_crashed(monkeypatch, crops):
    monkeypatch.setitem(sys.modules, "bm3d", None)  # `import bm3d` now raises ImportError
    r = RESTORERS["bm3d"]
    assert r.slow and r.requires == "bm3d"
    why = r.missing()
    assert why and "not installed" in why and ".[bm3d]" in why
    with pytest.raises(RestorerUnavailable, match="bm3d"):
        r(crops["rgb"])
    with pytest.raises(RestorerUnavailable, match="bm3d"):
        restore_all(crops["rgb"][None], ["tv", "bm3d"], progress=False)
    assert RESTORERS["nlmeans"].missing() is None and not RESTORERS["nlmeans"].slow


def test_noise_sigma_skips_constant_channels():
    rng = np.random.default_rng(1)
    img = np.clip(0.5 + rng.normal(0, 0.1, (64, 64, 3)), 0, 1)
    assert noise_sigma(img) == pytest.approx(0.1, rel=0.15)
    img[..., 1] = 0.0  # no non-zero wavelet detail: skimage's average_sigmas=True gives NaN
    assert noise_sigma(img) == pytest.approx(noise_sigma(img[..., [0, 2]]))
    assert noise_sigma(np.zeros((16, 16, 3))) == 0.0  # no estimate at all
    assert noise_sigma(np.full((16, 16, 3), 0.2)) < 1e-12
    assert np.isfinite(RESTORERS["nlmeans"](img)).all()
