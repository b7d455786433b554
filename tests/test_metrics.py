"""Image-quality metrics and blur measures (aerestore.metrics)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from aerestore import metric_ops as K
from aerestore import metrics as M
from aerestore.damage import DAMAGE_KINDS
from aerestore.data.layout import damage_labels


def _rand_pair(shape, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    ref = rng.random(shape)
    x = np.clip(ref + rng.normal(0, noise, shape), 0, 1)
    return x, ref


@pytest.fixture(scope="module")
def camera64() -> np.ndarray:
    return (data.camera()[200:264, 200:264].astype(np.float64) / 255.0)[..., None]


@pytest.fixture(scope="module")
def blur_series(camera64):
    light = ndimage.gaussian_filter(camera64, (1, 1, 0), mode="reflect")
    heavy = ndimage.gaussian_filter(camera64, (3, 3, 0), mode="reflect")
    return camera64, light, heavy


def _sk_ssim(x, ref, full=False):
    return structural_similarity(
        x, ref, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
        channel_axis=-1, full=full,
    )


# ------------------------------------------------------------------------------ PSNR
@pytest.mark.parametrize("shape", [(20, 17, 1), (32, 32, 3)])
def test_psnr_equals_skimage(shape):
    x, ref = _rand_pair(shape, seed=1)
    assert M.psnr(x, ref) == pytest.approx(
        peak_signal_noise_ratio(ref, x, data_range=1), rel=1e-12
    )


def test_psnr_identical_is_inf_without_warning():
    x, _ = _rand_pair((16, 16, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.psnr(x, x) == math.inf
        assert M.batch_metrics(x[None], x[None])["psnr"][0] == math.inf


# ------------------------------------------------------------------------------ SSIM
@pytest.mark.parametrize("shape", [(40, 37, 1), (33, 48, 3)])
def test_ssim_matches_skimage_random(shape):
    x, ref = _rand_pair(shape, seed=2)
    assert abs(M.ssim(x, ref) - _sk_ssim(x, ref)) < 1e-3
    # the map is skimage's full=True map
    _, sk_map = _sk_ssim(x, ref, full=True)
    np.testing.assert_allclose(M.ssim_map(x, ref), sk_map, atol=1e-9)


def test_ssim_matches_skimage_on_real_image(blur_series):
    sharp, light, heavy = blur_series
    for img in (light, heavy):
        assert abs(M.ssim(img, sharp) - _sk_ssim(img, sharp)) < 1e-3
    assert M.ssim(sharp, sharp) == pytest.approx(1.0)
    assert M.ssim(light, sharp) > M.ssim(heavy, sharp)


def test_ssim_rejects_tiny_images():
    x, ref = _rand_pair((10, 10, 1))
    with pytest.raises(ValueError, match="at least 11x11"):
        M.ssim(x, ref)


# ------------------------------------------------------------------------------- UQI
def _two_level(a: float, b: float) -> np.ndarray:
    img = np.full((8, 8, 1), a)
    img[:, 4:] = b  # 32 pixels of a, 32 of b
    return img


def test_uqi_single_window_by_hand():
    # x: half 0.2 / half 0.6 -> mean 0.4, var 0.04; y: 0.3 / 0.5 aligned -> mean 0.4, var 0.01;
    # cov = 0.2 * 0.1 = 0.02. Q = 4 * 0.02 * 0.4 * 0.4 / ((0.04 + 0.01) * (0.16 + 0.16)) = 0.8
    x, y = _two_level(0.2, 0.6), _two_level(0.3, 0.5)
    assert M.uqi(x, y) == pytest.approx(0.8, abs=1e-12)
    # anti-correlated copy (y = 0.8 - x): cov = -0.04 -> Q = -1
    assert M.uqi(x, 0.8 - x) == pytest.approx(-1.0, abs=1e-12)
    # different means, same structure: x vs x + 0.2 (means 0.4, 0.6; vars 0.04; cov 0.04)
    # Q = 4 * 0.04 * 0.24 / (0.08 * 0.52) = 0.923076...
    assert M.uqi(x, x + 0.2) == pytest.approx(4 * 0.04 * 0.24 / (0.08 * 0.52), abs=1e-12)


def test_uqi_flat_windows():
    a, b = np.full((8, 8, 1), 0.3), np.full((8, 8, 1), 0.6)
    assert M.uqi(a, a) == pytest.approx(1.0)  # identical constants
    assert M.uqi(a, b) == pytest.approx(2 * 0.18 / (0.09 + 0.36))  # 0.8: luminance term only
    z = np.zeros((8, 8, 1))
    assert M.uqi(z, z) == 1.0


def test_uqi_slides_8x8_windows_and_averages_channels():
    rng = np.random.default_rng(3)
    x, y = rng.random((9, 8, 3)), rng.random((9, 8, 3))
    # two window positions (rows 0-7 and 1-8), three channels
    per = [
        M.uqi(x[r : r + 8, :, c : c + 1], y[r : r + 8, :, c : c + 1])
        for r in (0, 1) for c in range(3)
    ]
    assert M.uqi(x, y) == pytest.approx(np.mean(per), abs=1e-12)


# --------------------------------------------------------------------- blur measures
def test_blur_measures_order_sharp_light_heavy(blur_series):
    sharp, light, heavy = blur_series
    lv = [M.laplacian_variance(i) for i in (sharp, light, heavy)]
    hf = [M.hf_share(i) for i in (sharp, light, heavy)]
    bp = [M.blur_percent(i, sharp) for i in (sharp, light, heavy)]
    assert lv[0] > lv[1] > lv[2] > 0
    assert hf[0] > hf[1] > hf[2] >= 0
    assert bp[0] == 0.0 and 0 < bp[1] < bp[2] < 100


def test_laplacian_variance_by_hand():
    ramp = np.tile(np.linspace(0, 1, 6), (6, 1))[..., None]
    assert M.laplacian_variance(ramp) == pytest.approx(0.0, abs=1e-20)
    impulse = np.zeros((5, 5, 1))
    impulse[2, 2] = 1.0
    # interior 3x3 responses: -4 at the centre, 1 at its 4 neighbours, 0 at the corners
    assert M.laplacian_variance(impulse) == pytest.approx(20 / 9)


def test_blur_percent_by_hand():
    ref = np.zeros((3, 3, 1))
    ref[1, 1] = 1.0  # the only interior pixel: Z1 = 1
    x = ref * 0.5  # Z2 = 0.5
    assert M.blur_percent(x, ref) == pytest.approx(50.0)
    assert M.blur_percent(ref, x) == pytest.approx(-100.0)  # more contrast than the reference
    assert math.isnan(M.blur_percent(x, np.zeros((3, 3, 1))))  # flat reference


def test_hf_share_extremes():
    yy, xx = np.mgrid[0:32, 0:32]
    checker = ((yy + xx) % 2).astype(np.float64)[..., None]  # all energy at Nyquist
    slow = (0.5 + 0.5 * np.cos(2 * np.pi * xx / 16)).astype(np.float64)[..., None]  # 1/8 Nyquist
    assert M.hf_share(checker, window="none") == pytest.approx(1.0)
    assert M.hf_share(slow, window="none") == pytest.approx(0.0, abs=1e-12)
    assert M.hf_share(checker) > 0.95 and M.hf_share(slow) < 0.01
    assert M.hf_share(np.full((16, 16, 3), 0.4)) == 0.0


def test_luminance_bt601():
    px = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    np.testing.assert_allclose(K.luminance(px), [[0.299, 0.587, 0.114]])


# ---------------------------------------------------------------- masked / batch
def _damaged_camera(ref):
    """Blur a square (blur channel 255, a feathered rim of 80), add noise to a band (noise
    channel 200), leave the rest untouched: (x, mask uint8 (64, 64, K))."""
    rng = np.random.default_rng(5)
    blurred = ndimage.gaussian_filter(ref, (2, 2, 0))
    mask = np.zeros((64, 64, len(DAMAGE_KINDS)), np.uint8)
    b, n = DAMAGE_KINDS.index("blur"), DAMAGE_KINDS.index("noise")
    mask[16:40, 16:48, b] = 255
    mask[14:16, 16:48, b] = 80  # feathered rim: weight <= 127, in no region
    mask[48:60, :, n] = 200
    x = ref.copy()
    x[mask[..., b] > 0] = blurred[mask[..., b] > 0]
    band = mask[..., n] > 0
    x[band] = np.clip(x[band] + rng.normal(0, 0.1, x[band].shape), 0, 1)
    return x, mask


def test_region_metrics_per_damage_kind(camera64):
    ref = camera64
    x, mask = _damaged_camera(ref)
    out = M.image_metrics(x, ref, mask)
    labels = damage_labels(mask)
    for i, kind in enumerate(DAMAGE_KINDS):
        sel = labels == i + 1
        assert sel.any()
        mse = np.mean((x[sel] - ref[sel]) ** 2)
        assert out[f"psnr_{kind}"] == pytest.approx(10 * np.log10(1 / mse))
    assert out["psnr_clean"] == math.inf  # untouched pixels
    assert out["ssim_blur"] < out["ssim_clean"] <= 1.0 and out["ssim_noise"] < out["ssim_clean"]
    assert out["blur_percent_blur"] > 20 and abs(out["blur_percent_clean"]) < 10  # edges touch damage
    assert out["blur_percent_noise"] < -20  # noise: more local contrast than the clean image
    assert out["laplacian_var_blur"] < out["laplacian_var_clean"] < out["laplacian_var_noise"]
    # the feathered rim (weight 80) is in no region: the regions do not cover the image
    regions = K.damage_regions(mask.astype(np.float64))
    assert set(regions) == set(M.REGIONS) == set(DAMAGE_KINDS) | {"clean"}
    assert not any(r[14:16, 16:48].any() for r in regions.values())
    assert sum(r.astype(int) for r in regions.values()).max() == 1  # disjoint
    # float masks (weight / 255) give the same numbers
    assert M.image_metrics(x, ref, mask / 255.0) == pytest.approx(out)


def test_one_channel_masks_are_local_blur(camera64):
    ref = camera64
    x, mask = _damaged_camera(ref)
    blur = mask[..., DAMAGE_KINDS.index("blur")]
    only_blur = np.zeros_like(mask)
    only_blur[..., DAMAGE_KINDS.index("blur")] = blur
    expected = M.image_metrics(x, ref, only_blur)
    assert expected["psnr_noise"] is None  # no pixel records noise
    for legacy in (blur, blur[..., None], blur / 255.0):  # (H, W), (H, W, 1), float
        assert M.image_metrics(x, ref, legacy) == pytest.approx(expected)


def test_empty_region_is_none(camera64):
    x = np.clip(camera64 + 0.05, 0, 1)
    out = M.image_metrics(x, camera64, np.zeros((64, 64, len(DAMAGE_KINDS))))
    for region in DAMAGE_KINDS:
        assert all(out[f"{k}_{region}"] is None for k in M.REGION_METRICS)
    assert out["psnr_clean"] == pytest.approx(out["psnr"])
    assert "psnr_clean" not in M.image_metrics(x, camera64)
    assert M.region_keys(("psnr",)) == [f"psnr_{r}" for r in M.REGIONS]


def test_batch_matches_single_image_functions():
    rng = np.random.default_rng(4)
    ref = rng.random((3, 24, 20, 3))
    x = np.clip(ref + rng.normal(0, 0.05, ref.shape), 0, 1)
    masks = (rng.random((3, 24, 20, len(DAMAGE_KINDS))) * 255).astype(np.uint8)
    masks[rng.random(masks.shape) < 0.3] = 0
    masks[2] = 0
    res = M.batch_metrics(x, ref, masks, chunk=2)
    for i in range(3):
        single = M.image_metrics(x[i], ref[i], masks[i])
        assert res["psnr"][i] == pytest.approx(M.psnr(x[i], ref[i]))
        assert res["ssim"][i] == pytest.approx(M.ssim(x[i], ref[i]))
        assert res["uqi"][i] == pytest.approx(M.uqi(x[i], ref[i]))
        assert res["laplacian_var"][i] == pytest.approx(M.laplacian_variance(x[i]))
        assert res["hf_share"][i] == pytest.approx(M.hf_share(x[i]))
        assert res["blur_percent"][i] == pytest.approx(M.blur_percent(x[i], ref[i]))
        for k, v in single.items():
            if v is None:
                assert math.isnan(res[k][i])
            else:
                assert res[k][i] == pytest.approx(v)
    assert set(res) == set(M.METRICS) | {f"{k}_{r}" for k in M.REGION_METRICS for r in M.REGIONS}
    assert set(M.region_keys()) == set(res) - set(M.METRICS)


def test_bad_input_is_named():
    x, ref = _rand_pair((16, 16, 3))
    with pytest.raises(ValueError, match="restored"):
        M.batch_metrics(x[None] * 2, ref[None])
    with pytest.raises(ValueError, match="clean"):
        M.batch_metrics(x[None], ref[None, ..., :2])
    with pytest.raises(ValueError, match="NaN"):
        M.psnr(np.full_like(x, np.nan), ref)
    with pytest.raises(ValueError, match="masks"):
        M.batch_metrics(x[None], ref[None], np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="one channel per damage kind"):
        M.batch_metrics(x[None], ref[None], np.zeros((1, 16, 16, len(DAMAGE_KINDS) + 1)))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        M.batch_metrics(x[None], ref[None], np.full((1, 16, 16, len(DAMAGE_KINDS)), 2.0))
    with pytest.raises(ValueError, match="differ in shape"):
        M.psnr(x, ref[:8])
