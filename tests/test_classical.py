"""Classical restorers (aerestore.classical)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from aerestore.classical import RESTORERS, dropout_mask, gaussian_psf, restore_all
from aerestore.metrics import psnr
from aerestore.params import CLASSICAL


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    ast = data.astronaut().astype(np.float64) / 255.0
    cam = data.camera().astype(np.float64) / 255.0
    return {"rgb": ast[100:148, 200:248], "grey": cam[200:248, 200:248][..., None]}


def _degrade(name: str, clean: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    if name in ("nlmeans", "tv", "bilateral"):
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
