"""Degradation ops (aerestore.data.degrade)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from pydantic import TypeAdapter

from aerestore.data.degrade import degrade_image
from aerestore.data.localops import disc_kernel, motion_kernel
from aerestore.damage import DAMAGE_KINDS
from aerestore.params import DegradeOp

OP = TypeAdapter(DegradeOp)


def op(**kw):
    return OP.validate_python(kw)


def textured(h: int = 40, w: int = 40, c: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus texture, away from 0 and 255 so every op shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 60 + 60 * np.sin(x / 3.0)[..., None] + 40 * np.cos(y / 4.0)[..., None]
    img = base + rng.uniform(-30, 30, (h, w, c))
    return np.clip(img, 0, 255).astype(np.uint8)


# Every op with params that visibly change a textured image.
ALL_OPS = [
    op(op="gaussian_blur", sigma=[1.0, 2.0]),
    op(op="motion_blur", length=[5, 9], angle=[0.0, 180.0]),
    op(op="defocus", radius=[1.5, 3.0]),
    op(op="bilateral", diameter=7, sigma_color=50.0, sigma_space=5.0),
    op(op="gaussian_noise", std=[0.03, 0.08]),
    op(op="salt_pepper", amount=0.1),
    op(op="coarse_dropout", holes=[2, 3], size=[0.2, 0.3], fill=0),
    op(op="grayscale"),
    op(op="jpeg", quality=[10, 30]),
    op(op="local_blur", regions=[2, 3], radius=[0.2, 0.3], strength=[2.0, 3.0]),
    op(op="local_noise", regions=[2, 3], radius=[0.2, 0.3], std=[0.1, 0.2]),
]
BLUR, NOISE = DAMAGE_KINDS.index("blur"), DAMAGE_KINDS.index("noise")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("the_op", ALL_OPS, ids=lambda o: o.op)
def test_each_op_changes_input_not_target(the_op, channels):
    clean = textured(c=channels)
    before = clean.copy()
    degraded, mask = degrade_image(clean, [the_op], np.random.default_rng(1))
    np.testing.assert_array_equal(clean, before)  # the target is untouched
    assert degraded.dtype == np.uint8 and degraded.shape == clean.shape
    assert mask.dtype == np.uint8 and mask.shape == clean.shape[:2] + (len(DAMAGE_KINDS),)
    if the_op.op == "grayscale" and channels == 1:
        np.testing.assert_array_equal(degraded, clean)  # nothing to remove
    else:
        assert np.abs(degraded.astype(int) - clean).mean() > 0.5
    if the_op.op == "local_blur":
        assert mask[..., BLUR].any() and not mask[..., NOISE].any()
    elif the_op.op == "local_noise":
        assert mask[..., NOISE].any() and not mask[..., BLUR].any()
    else:
        assert not mask.any()


def test_grayscale_is_bt601_luma_replicated():
    clean = textured(8, 8)
    degraded, _ = degrade_image(clean, [op(op="grayscale")], np.random.default_rng(0))
    luma = np.rint(clean.astype(np.float64) @ [0.299, 0.587, 0.114])
    for ch in range(3):
        np.testing.assert_allclose(degraded[..., ch], luma, atol=1)
    assert (degraded[..., 0] == degraded[..., 2]).all()


def test_prob_zero_is_identity_and_prob_half_applies_sometimes():
    clean = textured()
    ops = [op(op="gaussian_noise", std=0.1, prob=0.0)]
    degraded, mask = degrade_image(clean, ops, np.random.default_rng(0))
    np.testing.assert_array_equal(degraded, clean)
    half = [op(op="gaussian_noise", std=0.1, prob=0.5)]
    applied = [
        not np.array_equal(degrade_image(clean, half, np.random.default_rng(s))[0], clean) for s in range(40)
    ]
    assert 5 < sum(applied) < 35


def test_deterministic_per_generator_and_ops_draw_independently():
    clean = textured()
    ops = [op(op="gaussian_noise", std=0.05), op(op="local_blur")]
    a = degrade_image(clean, ops, np.random.default_rng(7))
    b = degrade_image(clean, ops, np.random.default_rng(7))
    c = degrade_image(clean, ops, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # switching the first op off does not change what the local blur draws
    off = [op(op="gaussian_noise", std=0.05, prob=0.0), op(op="local_blur")]
    np.testing.assert_array_equal(degrade_image(clean, off, np.random.default_rng(7))[1], a[1])


def test_noise_std_and_salt_pepper_amount():
    grey = np.full((100, 100, 3), 128, np.uint8)
    noisy, _ = degrade_image(grey, [op(op="gaussian_noise", std=0.04)], np.random.default_rng(0))
    assert abs((noisy.astype(float) - 128).std() - 0.04 * 255) < 0.05 * 0.04 * 255
    sp, _ = degrade_image(grey, [op(op="salt_pepper", amount=0.2, salt_ratio=0.25)], np.random.default_rng(0))
    hit = sp != 128  # channel values: salt and pepper is channel-wise
    assert hit.sum() == int(100 * 100 * 3 * 0.2)  # SaltAndPepper hits exactly floor(H W C amount)
    assert set(np.unique(sp[hit])) == {0, 255}
    assert abs((sp[hit] == 255).mean() - 0.25) < 0.01
    # the channels are hit apart: a pixel's three values are all hit about amount^3 of the time
    assert abs(hit.all(axis=2).mean() - 0.2**3) < 0.004 and abs(hit.any(axis=2).mean() - (1 - 0.8**3)) < 0.02


def test_a_salt_pepper_hit_changes_one_channel():
    """The bottleneck study (004), 3.1.3: "Channel-wise salt and pepper noise"."""
    grey = np.full((10, 10, 3), 128, np.uint8)
    one_hit = op(op="salt_pepper", amount=0.004)  # floor(300 * 0.004) = 1 channel value
    for seed in range(10):
        sp, _ = degrade_image(grey, [one_hit], np.random.default_rng(seed))
        changed = sp != grey
        assert changed.sum() == 1  # one value of one pixel
        assert changed.any(axis=2).sum() == 1 and sp[changed][0] in (0, 255)


# The ops that are albumentations transforms (data/degrade.py, "Whose code")
ALBUMENTATIONS_OPS = [
    op(op="gaussian_noise", std=[0.02, 0.1], impl="albumentations"),
    op(op="salt_pepper", amount=[0.02, 0.05], salt_ratio=0.5),
    op(op="coarse_dropout", holes=[1, 3], size=[0.1, 0.2], fill=0),
    op(op="grayscale"),
]


@pytest.mark.parametrize("the_op", ALBUMENTATIONS_OPS, ids=lambda o: o.op)
def test_albumentations_ops_are_seeded_by_the_generator_alone(the_op):
    import random

    import cv2

    clean = textured()
    outs = []
    for state in (0, 1):  # the global NumPy, Python and OpenCV generators play no part
        np.random.seed(state)
        random.seed(state)
        cv2.setRNGSeed(state)
        outs.append(degrade_image(clean, [the_op], np.random.default_rng(3))[0])
    np.testing.assert_array_equal(outs[0], outs[1])
    other = degrade_image(clean, [the_op], np.random.default_rng(4))[0]
    assert (the_op.op == "grayscale") == np.array_equal(other, outs[0])  # only grey draws nothing


def test_albumentations_gauss_noise_std():
    grey = np.full((100, 100, 3), 128, np.uint8)
    noisy, _ = degrade_image(grey, [op(op="gaussian_noise", std=0.04, impl="albumentations")],
                             np.random.default_rng(0))
    diff = noisy.astype(float) - 128
    assert abs(diff.std() - 0.04 * 255) < 0.05 * 0.04 * 255
    assert abs(np.corrcoef(diff[..., 0].ravel(), diff[..., 1].ravel())[0, 1]) < 0.05  # per channel
    ours, _ = degrade_image(grey, [op(op="gaussian_noise", std=0.04)], np.random.default_rng(0))
    assert not np.array_equal(noisy, ours)  # why the default keeps its own draw (byte-identical)


def test_grayscale_is_the_colourisers_grey():
    """The colouriser's input (``to_grey``, float32 ``@ LUMA``) is the ``grayscale`` op's
    output (albumentations' ToGray, OpenCV's RGB2GRAY on the image / 255 in float32, times
    255, rounded half to even), grey level for grey level, except on an exact tie: where
    0.299 R + 0.587 G + 0.114 B is exactly n + 0.5, each side's float32 result lands on it or
    an ulp or two off it, by the CPU's SIMD kernel (the op: 98.5 exactly on an AMD EPYC, so 98;
    above it on the Intel Xeons, so 99; to_grey: 98.50001 on both, so 99). There either grey
    level is right. Ties are found in integers (no rounding)."""
    from aerestore.colour import to_grey

    clean = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    degraded, _ = degrade_image(clean, [op(op="grayscale")], np.random.default_rng(0))
    grey = to_grey(clean)
    assert (degraded == degraded[..., :1]).all() and (grey == grey[..., :1]).all()  # grey in every channel
    luma_x1000 = clean.astype(np.int64) @ np.array([299, 587, 114])  # BT.601 luma, exactly, times 1000
    tie = luma_x1000 % 1000 == 500
    assert 0 < tie.sum() < 0.01 * tie.size  # this image has ties, and few: the rest of the test is not vacuous
    ok = ~tie
    np.testing.assert_array_equal(degraded[ok], grey[ok])
    np.testing.assert_array_equal(grey[ok][..., 0], (luma_x1000[ok] + 500) // 1000)  # round half up, exact
    below = luma_x1000[tie] // 1000
    for side in (degraded[tie][..., 0], grey[tie][..., 0]):
        assert np.isin(side.astype(np.int64) - below, [0, 1]).all()  # n or n + 1


def test_coarse_dropout_hole_size_and_fill():
    clean = np.full((50, 50, 1), 100, np.uint8)
    out, _ = degrade_image(clean, [op(op="coarse_dropout", holes=1, size=0.2, fill=7)], np.random.default_rng(3))
    ys, xs = np.nonzero(out[..., 0] == 7)
    assert len(ys) == 100  # one 10 x 10 hole
    assert ys.max() - ys.min() == 9 and xs.max() - xs.min() == 9
    assert set(np.unique(out)) == {7, 100}


def test_coarse_dropout_the_bottleneck_studys_squares():
    """004, 3.1.3: "Random cutout/occlusion of the image with three 12x12 black squares"."""
    clean = np.full((64, 64, 3), 100, np.uint8)
    for seed in range(5):
        one, _ = degrade_image(clean, [op(op="coarse_dropout", holes=1, size=0.1875)], np.random.default_rng(seed))
        ys, xs = np.nonzero((one == 0).all(axis=2))
        assert len(ys) == 144 and np.ptp(ys) == 11 and np.ptp(xs) == 11  # one black 12 x 12 square
        three, _ = degrade_image(clean, [op(op="coarse_dropout", holes=3, size=0.1875)], np.random.default_rng(seed))
        assert 144 <= (three == 0).all(axis=2).sum() <= 3 * 144  # three squares, which may overlap


def test_jpeg_lower_quality_loses_more():
    clean = textured(48, 48)
    err = []
    for q in (90, 10):
        out, _ = degrade_image(clean, [op(op="jpeg", quality=q)], np.random.default_rng(0))
        err.append(np.abs(out.astype(int) - clean).mean())
    assert err[1] > err[0] > 0


def test_kernels():
    for length, angle in [(5, 0.0), (4, 90.0), (7.5, 33.0), (1, 10.0)]:
        k = motion_kernel(length, angle)
        assert abs(k.sum() - 1) < 1e-5 and (k >= 0).all()
        assert k.shape[0] % 2 == 1
    horiz = motion_kernel(5, 0.0)
    assert np.count_nonzero(horiz.sum(axis=1)) == 1  # one row
    vert = motion_kernel(5, 90.0)
    assert np.count_nonzero(vert.sum(axis=0) > 1e-6) == 1  # one column
    np.testing.assert_allclose(horiz, np.rot90(vert), atol=1e-6)
    d = disc_kernel(2.0)
    assert abs(d.sum() - 1) < 1e-5
    np.testing.assert_allclose(d, d.T)
    np.testing.assert_allclose(d, d[::-1])
    assert d[d.shape[0] // 2, d.shape[1] // 2] == d.max()


@pytest.mark.parametrize("kernel", ["gaussian", "motion", "defocus"])
def test_local_blur_mask_matches_changes_with_soft_edges(kernel):
    rng = np.random.default_rng(5)
    clean = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # every pixel textured
    lb = op(op="local_blur", kernel=kernel, regions=2, radius=0.25, strength=3.0, feather=0.5)
    out, mask = degrade_image(clean, [lb], np.random.default_rng(2))
    mask = mask[..., BLUR]
    changed = (out != clean).any(axis=2)
    assert not changed[mask == 0].any()  # outside the blobs nothing moves
    assert changed[mask >= 64].mean() > 0.9  # inside, (nearly) everything does
    assert 0.05 < (mask > 0).mean() < 0.9
    assert (mask == 255).any()
    assert ((mask > 0) & (mask < 255)).any()  # soft edge


def test_local_blur_strength_rises_towards_the_centre():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (96, 96, 1), dtype=np.uint8)
    lb = op(op="local_blur", regions=1, radius=0.4, strength=3.0, feather=1.0)
    out, mask = degrade_image(clean, [lb], np.random.default_rng(4))
    mask = mask[..., BLUR]
    diff = np.abs(out.astype(float) - clean)[..., 0]
    weak = diff[(mask > 0) & (mask < 64)].mean()
    mid = diff[(mask >= 96) & (mask < 160)].mean()
    strong = diff[mask >= 224].mean()
    assert weak < mid < strong


def test_local_blur_hard_edge_and_combined_mask():
    clean = textured(32, 32)
    hard = op(op="local_blur", regions=3, feather=0.0)
    _, mask = degrade_image(clean, [hard], np.random.default_rng(1))
    assert set(np.unique(mask[..., BLUR])) == {0, 255}
    a = op(op="local_blur", regions=1)
    b = op(op="local_blur", regions=1, radius=0.3)
    _, m_a = degrade_image(clean, [a, op(op="local_blur", regions=1, prob=0.0)], np.random.default_rng(9))
    _, m_b = degrade_image(clean, [op(op="local_blur", regions=1, prob=0.0), b], np.random.default_rng(9))
    _, m_ab = degrade_image(clean, [a, b], np.random.default_rng(9))
    np.testing.assert_array_equal(m_ab, np.maximum(m_a, m_b))


def test_local_noise_mask_matches_changes_and_keeps_off_blur():
    rng = np.random.default_rng(5)
    clean = np.full((64, 64, 3), 128, np.uint8)  # flat: only noise can change a pixel
    ln = op(op="local_noise", regions=2, radius=0.3, std=0.2, feather=0.5, exclusive=False)
    out, mask = degrade_image(clean, [ln], np.random.default_rng(2))
    changed = (out != clean).any(axis=2)
    noise = mask[..., NOISE]
    assert not changed[noise == 0].any()  # outside the noisy blobs nothing moves
    assert changed[noise >= 128].mean() > 0.9
    assert 0.05 < (noise > 0).mean() < 0.9 and not mask[..., BLUR].any()
    # the noise amplitude follows the weight: the centre is noisier than the rim
    diff = np.abs(out.astype(float) - clean).mean(2)
    assert diff[(noise > 0) & (noise < 64)].mean() < diff[noise >= 224].mean()
    # exclusive: noisy regions keep off the blurred ones, so each pixel has one kind
    lb = op(op="local_blur", regions=2, radius=0.35, feather=0.5)
    excl = op(op="local_noise", regions=3, radius=0.35, std=0.2, feather=0.5)
    for seed in range(5):
        _, m = degrade_image(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), [lb, excl],
                             np.random.default_rng(seed))
        both = m[..., BLUR].astype(int) * m[..., NOISE] / 255.0
        assert m[..., BLUR].any() and m[..., NOISE].any()
        assert (m[..., BLUR][m[..., NOISE] > 0] < 255).all()  # no noise where fully blurred
        assert (both <= 255 / 4 + 1).all()  # w_n <= 1 - w_b, so w_b * w_n <= 1/4


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        degrade_image(np.zeros((4, 4, 3), np.float32), [], np.random.default_rng(0))
    with pytest.raises(ValueError):
        degrade_image(np.zeros((4, 4), np.uint8), [], np.random.default_rng(0))


# The default pipeline's damage (params.yaml prepare.degrade), pinned: its prepared images
# must stay byte-identical whatever else changes here (e.g. the study presets' ops moving
# to albumentations). The hash was taken from the implementation of commit fb69b6b.
DEFAULT_DAMAGE = [
    op(op="local_blur", kernel="gaussian", regions=[1, 2], radius=[0.2, 0.35], strength=[1.5, 3.0],
       feather=0.5, prob=1.0),
    op(op="local_noise", regions=[1, 2], radius=[0.2, 0.35], std=[0.1, 0.2], feather=0.5, exclusive=True,
       prob=1.0),
    op(op="gaussian_noise", std=[0.01, 0.03], prob=1.0),
]
DEFAULT_DAMAGE_SHA256 = "a683b148929f6fd5469e2270b389f49df5949b40f9a1c8eb7bc8f77ac3e35a9b"


def test_default_damage_is_params_yaml_and_byte_identical():
    from pathlib import Path

    from aerestore.params import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    assert list(params.prepare.degrade) == DEFAULT_DAMAGE  # the pinned list is the default's
    digest = hashlib.sha256()
    for seed in range(4):
        degraded, mask = degrade_image(textured(64, 64, 3, seed=seed), DEFAULT_DAMAGE, np.random.default_rng(seed))
        digest.update(degraded.tobytes())
        digest.update(mask.tobytes())
    assert digest.hexdigest() == DEFAULT_DAMAGE_SHA256


def test_float_damage_is_the_same_draw_neither_clipped_nor_rounded():
    """``quantise=False`` (``train.crops.float_damage``): the degraded image stays float32 in
    the 0..255 scale, ``clean + noise`` exactly, below 0 and above 255 where the noise takes a
    saturated pixel, and the quantised output is the same draw clipped and rounded."""
    clean = np.zeros((32, 32, 3), np.uint8)
    clean[:, 16:] = 255  # half black, half white: the noise crosses both bounds
    ops = [op(op="gaussian_noise", std=0.1, prob=1.0)]
    as_float, mask = degrade_image(clean, ops, np.random.default_rng(3), quantise=False)
    as_uint8, mask8 = degrade_image(clean, ops, np.random.default_rng(3))
    assert as_float.dtype == np.float32 and as_float.shape == clean.shape
    assert as_float.min() < -10 and as_float.max() > 265  # not clipped
    assert not np.allclose(as_float, np.rint(as_float))  # not rounded
    noise = np.random.default_rng(3).spawn(1)[0]
    noise.random()  # the prob draw
    want = clean + noise.standard_normal(clean.shape, dtype=np.float32) * np.float32(0.1 * 255.0)
    np.testing.assert_array_equal(as_float, want)
    np.testing.assert_array_equal(np.clip(np.rint(as_float), 0, 255).astype(np.uint8), as_uint8)
    np.testing.assert_array_equal(mask, mask8)
    # the default damage: the same masks (the same draws), float output
    img = textured(48, 48, 3, seed=1)
    f, fm = degrade_image(img, DEFAULT_DAMAGE, np.random.default_rng(7), quantise=False)
    q, qm = degrade_image(img, DEFAULT_DAMAGE, np.random.default_rng(7))
    np.testing.assert_array_equal(fm, qm)
    assert f.dtype == np.float32 and np.abs(f - q.astype(np.float32)).max() > 0.5
