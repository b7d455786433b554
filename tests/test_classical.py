"""Classical restorers (aerestore.classical)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from aerestore.classical import RESTORERS, RestorerUnavailable, restore_all
from aerestore.classical_methods import dropout_mask, gaussian_psf
from aerestore.metrics import psnr
from aerestore.noisemap import noise_sigma
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
    if name in ("nlmeans", "nlmeans_map", "bm3d", "bm3d_map", "tv", "bilateral"):
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


# ------------------------------------------------------------- noise map, map rows, oracle
def _local_noise_image(size: int = 64, sigma: float = 0.15, camera: float = 0.02, seed: int = 0):
    """The astronaut's face region at ``size`` px, camera noise everywhere and a disc (radius
    size/4, centred) of extra noise ``sigma``: (clean, noisy, disc mask, true sigma map)."""
    from skimage.transform import resize

    clean = resize(data.astronaut()[:256, 96:352].astype(np.float64) / 255.0, (size, size), anti_aliasing=True)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    true = np.where(disc, np.hypot(sigma, camera), camera)
    rng = np.random.default_rng(seed)
    return clean, clean + rng.normal(0, 1, clean.shape) * true[..., None], disc, true


def test_noise_map_on_synthetic_local_noise():
    from aerestore.noisemap import noise_map

    rng = np.random.default_rng(3)
    for sigma in (0.02, 0.1, 0.2):  # pure Gaussian noise: the 6 in Immerkaer's kernel calibrates exactly
        ratios = [noise_map(0.5 + rng.normal(0, sigma, (64, 64, 3))).mean() / sigma for _ in range(4)]
        assert all(abs(r - 1) < 0.08 for r in ratios) and abs(np.mean(ratios) - 1) < 0.04, (sigma, ratios)
    assert noise_map(np.zeros((16, 16, 3))).shape == (16, 16)
    clean, noisy, disc, true = _local_noise_image()
    est = noise_map(noisy)
    assert abs(np.median(est[disc]) / true[disc][0] - 1) < 0.15, np.median(est[disc])
    assert abs(np.median(est[~disc]) / 0.02 - 1) < 0.5, np.median(est[~disc])  # texture biases low levels up
    # the estimate follows the damage: every pixel deep inside the disc above every pixel far outside
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    assert est[r < 10].min() > est[r > 26].max()
    with pytest.raises(ValueError, match="window"):
        noise_map(noisy, window=1)


def test_blend_by_map_interpolates_between_runs():
    from aerestore.noisemap import blend_by_map, map_levels

    outs = [np.full((1, 5, 1), v) for v in (10.0, 20.0, 30.0)]
    got = blend_by_map(np.array([[0.5, 1.0, 1.5, 2.5, 4.0]]), np.array([1.0, 2.0, 3.0]), outs)
    np.testing.assert_allclose(got[0, :, 0], [10, 10, 15, 25, 30])
    assert len(map_levels(np.full((8, 8), 0.05), 3)) == 1  # uniform noise: one run, at its level
    lv = map_levels(np.r_[np.full(90, 0.02), np.full(10, 0.15)].reshape(10, 10), 3)
    assert len(lv) == 3 and lv[0] == pytest.approx(0.02) and lv[-1] == pytest.approx(0.15)


@pytest.mark.parametrize("name", ["nlmeans", "bm3d"])
def test_map_rows_restore_local_noise_the_global_rows_leave(name):
    _needs(name)
    clean, noisy, disc, _ = _local_noise_image()
    noisy = np.clip(noisy, 0, 1)
    glob, local = RESTORERS[name](noisy), RESTORERS[f"{name}_map"](noisy)
    inside = {k: 10 * np.log10(1 / np.mean((v[disc] - clean[disc]) ** 2))
              for k, v in (("input", noisy), ("global", glob), ("map", local))}
    # the global sigma is the camera noise's: the disc is left nearly as noisy as it came
    assert inside["map"] > inside["global"] + 3.0 and inside["map"] > inside["input"] + 3.0, inside
    assert psnr(local, clean) > psnr(glob, clean) + 2.0
    np.testing.assert_array_equal(RESTORERS[f"{name}_map"](noisy), local)  # deterministic


def test_with_settings_checks_names_and_types():
    r = RESTORERS["richardson_lucy"].with_settings(psf_sigma=2, num_iter=20.0)
    assert r.tunable == {"psf_sigma": 2.0, "num_iter": 20} and type(r.tunable["num_iter"]) is int
    assert r.settings["num_iter"] == 20 and RESTORERS["richardson_lucy"].tunable["num_iter"] == 10
    with pytest.raises(KeyError, match="weight"):
        RESTORERS["wiener"].with_settings(weight=0.1)
    with pytest.raises(ValueError, match="num_iter"):
        RESTORERS["richardson_lucy"].with_settings(num_iter=2.5)


def test_choose_settings_picks_the_best_on_the_images_given(crops):
    from aerestore.classical import choose_settings

    clean = np.stack([crops["rgb"], crops["rgb"][::-1]])
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.1, clean.shape), 0, 1)
    r, rec = choose_settings(RESTORERS["tv"], {"weight": [0.001, 0.1, 5.0]}, clean, noisy)
    assert rec["chosen"] == {"weight": 0.1} and r.tunable["weight"] == 0.1 and rec["images"] == 2
    expected = np.mean([psnr(RESTORERS["tv"].with_settings(weight=0.1)(d), c) for d, c in zip(noisy, clean)])
    assert rec["val_psnr"] == pytest.approx(expected)
    # a blurred set wants the deconvolver's PSF near its blur
    blurred = ndimage.gaussian_filter(clean, (0, 2.0, 2.0, 0), mode="reflect")
    _, rec = choose_settings(RESTORERS["wiener"], {"psf_sigma": [0.5, 2.0], "balance": [0.01]}, clean, blurred)
    assert rec["chosen"]["psf_sigma"] == 2.0


def test_oracle_is_told_the_true_damage():
    from aerestore.classical import oracle_restore
    from aerestore.data.degrade import degrade_image
    from aerestore.params import parse_params

    ops = [{"op": "local_blur", "kernel": "gaussian", "regions": 1, "radius": 0.3, "strength": 2.0,
            "feather": 0.5, "prob": 1.0},
           {"op": "local_noise", "regions": 1, "radius": 0.3, "std": 0.15, "feather": 0.5, "exclusive": True,
            "prob": 1.0},
           {"op": "gaussian_noise", "std": 0.02, "prob": 1.0}]
    degrade = parse_params({"prepare": {"degrade": ops}}).prepare.degrade
    clean_f, _, _, _ = _local_noise_image()
    clean = np.rint(clean_f * 255).astype(np.uint8)
    degraded, mask = degrade_image(clean, degrade, np.random.default_rng(1))
    x, c = degraded / 255.0, clean / 255.0
    out, told = oracle_restore(x, c, mask, denoiser="nlmeans")
    assert told["blur_strength"] == pytest.approx(2.0, abs=0.125)
    assert told["sigma_camera"] == pytest.approx(0.02, rel=0.1)
    # the noisy region's level measured after the clipping at 0 and 1, which removes some noise
    assert told["sigma_noise"] == pytest.approx(np.hypot(0.15, 0.02), rel=0.15)
    assert out.shape == x.shape and psnr(out, c) > psnr(x, c) + 3.0
    assert psnr(out, c) > psnr(RESTORERS["nlmeans_map"](x), c)  # knowing the damage helps


def test_bm3d_in_worker_processes_equals_the_serial_loop(monkeypatch):
    # the slow rows run their images, and their noise-map levels, in a pool of processes
    # (aerestore.workers): the numbers must be the serial loop's, bit for bit
    pytest.importorskip("bm3d")
    from aerestore import workers
    from aerestore.classical import oracle_restore
    from aerestore.damage import DAMAGE_KINDS

    rng = np.random.default_rng(3)
    clean = data.astronaut()[96:176:4, 192:272:4].astype(np.float64) / 255.0  # 20 x 20 px
    noisy = np.stack([np.clip(clean + rng.normal(0, s, clean.shape) * (np.arange(20) > 9)[:, None, None], 0, 1)
                      for s in (0.05, 0.2)])
    mask = np.zeros((20, 20, 2), np.uint8)
    mask[10:, :, DAMAGE_KINDS.index("noise")] = 255  # the noisy half
    with monkeypatch.context() as m:
        m.setattr(workers, "_IN_WORKER", True)  # as inside a worker: everything serial, here
        serial = {name: np.stack([RESTORERS[name](x) for x in noisy]) for name in ("bm3d_map",)}
        oracle = oracle_restore(noisy[1], clean, mask, "bm3d")
    for name, expected in serial.items():
        assert np.array_equal(RESTORERS[name].batch(noisy, workers=1), expected), name  # levels in the pool
        assert np.array_equal(RESTORERS[name].batch(noisy, workers=2), expected), name  # images in the pool
    got = oracle_restore(noisy[1], clean, mask, "bm3d", workers=2)
    assert np.array_equal(got[0], oracle[0]) and got[1] == oracle[1]
