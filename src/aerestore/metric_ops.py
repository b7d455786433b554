"""The vectorised computations behind :mod:`aerestore.metrics`.

Each function works on a batch that :mod:`aerestore.metrics` has already checked and converted:
float64 images ``(N, H, W, C)`` in [0, 1], damage weights ``(N, H, W, K)`` on the 0..255 scale.
The definitions (and the conventions: luminance, regions, borders) are in the docstring of
:mod:`aerestore.metrics`; :func:`chunk_metrics` computes all of them for one chunk of images.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from aerestore.damage import DAMAGE_KINDS
from aerestore.data.layout import damage_labels

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_PAD = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5: the window is 11 x 11
UQI_WINDOW = 8
HF_WINDOWS = ("hann", "none")
UQI_FLAT_EPS = 1e-10
LUMA = np.array([0.299, 0.587, 0.114])


def damage_regions(weights: np.ndarray) -> dict[str, np.ndarray]:
    """``{region: bool (..., H, W)}`` for every region of :data:`aerestore.metrics.REGIONS`, from damage weights
    ``(..., H, W, K)`` on the 0..255 scale: ``<kind>`` where :func:`damage_labels` gives that
    kind (largest weight > ``DAMAGE_THRESHOLD``), ``clean`` where every weight is 0."""
    labels = damage_labels(weights, axis=-1)
    out = {kind: labels == i + 1 for i, kind in enumerate(DAMAGE_KINDS)}
    out["clean"] = np.all(weights == 0, axis=-1)
    return out



# ------------------------------------------------------------------------- helpers
def luminance(x: np.ndarray) -> np.ndarray:
    """``(..., H, W, C)`` -> ``(..., H, W)``: BT.601 luma for C = 3, the channel for C = 1."""
    if x.shape[-1] == 1:
        return x[..., 0]
    return x @ LUMA


def _interior(a: np.ndarray) -> np.ndarray:
    return a[:, 1:-1, 1:-1]


def _region_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-image mean of ``values`` (N, ...) over the pixels where ``weights`` (0/1) is 1."""
    axes = tuple(range(1, values.ndim))
    count = weights.sum(axis=axes)
    total = (values * weights).sum(axis=axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ------------------------------------------------------------- batch computations
def psnr_from_mse(mse: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(mse > 0, -10.0 * np.log10(np.where(mse > 0, mse, 1.0)), np.inf)


def ssim_maps(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """SSIM map ``(N, H, W, C)`` (Gaussian 11-tap window, as skimage with gaussian_weights)."""
    sigma = (0.0, SSIM_SIGMA, SSIM_SIGMA, 0.0)

    def f(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=sigma, truncate=SSIM_TRUNCATE, mode="reflect")

    ux, uy = f(x), f(ref)
    vx = f(x * x) - ux * ux
    vy = f(ref * ref) - uy * uy
    vxy = f(x * ref) - ux * uy
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def check_ssim_size(shape: tuple[int, ...]) -> None:
    if min(shape[1], shape[2]) < 2 * SSIM_PAD + 1:
        raise ValueError(
            f"SSIM needs images of at least {2 * SSIM_PAD + 1}x{2 * SSIM_PAD + 1} pixels, "
            f"got {shape[1]}x{shape[2]}"
        )


def _box_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Means over every k x k window (valid positions only) of axes 1, 2 of ``(N, H, W, C)``."""
    h = k // 2  # uniform_filter1d's window for output i is [i - h, i - h + k)
    b = ndimage.uniform_filter1d(a, k, axis=1)[:, h : a.shape[1] - k + 1 + h]
    return ndimage.uniform_filter1d(b, k, axis=2)[:, :, h : a.shape[2] - k + 1 + h]


def uqi_batch(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    k = UQI_WINDOW
    if min(x.shape[1], x.shape[2]) < k:
        raise ValueError(f"UQI needs images of at least {k}x{k} pixels, got {x.shape[1]}x{x.shape[2]}")
    # moments about the per-image, per-channel mean: same (co)variances, less cancellation
    cx = x.mean(axis=(1, 2), keepdims=True)
    cy = ref.mean(axis=(1, 2), keepdims=True)
    xc, yc = x - cx, ref - cy
    mxc, myc = _box_mean(xc, k), _box_mean(yc, k)
    mx, my = mxc + cx, myc + cy
    vx = np.maximum(_box_mean(xc * xc, k) - mxc * mxc, 0.0)
    vy = np.maximum(_box_mean(yc * yc, k) - myc * myc, 0.0)
    vxy = _box_mean(xc * yc, k) - mxc * myc
    den1 = vx + vy
    den2 = mx * mx + my * my
    flat = den1 <= UQI_FLAT_EPS
    dark = den2 <= UQI_FLAT_EPS**2
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(
            ~flat & ~dark,
            4 * vxy * mx * my / (den1 * den2),
            np.where(
                flat & ~dark,
                2 * mx * my / den2,
                np.where(~flat & dark, 2 * vxy / den1, 1.0),
            ),
        )
    return q.mean(axis=(1, 2, 3))


def laplacian(lum: np.ndarray) -> np.ndarray:
    """3x3 Laplacian of ``(N, H, W)`` at the interior pixels -> ``(N, H-2, W-2)``."""
    return (
        lum[:, :-2, 1:-1] + lum[:, 2:, 1:-1] + lum[:, 1:-1, :-2] + lum[:, 1:-1, 2:]
        - 4.0 * lum[:, 1:-1, 1:-1]
    )


def _weighted_var(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    mean = _region_mean(values, weights)
    return _region_mean((values - mean[:, None, None]) ** 2, weights)


def max_neighbour_diff(lum: np.ndarray) -> np.ndarray:
    """Largest ``|I(p) - I(q)|`` over the 8 neighbours q of each interior pixel p -> (N, H-2, W-2)."""
    h, w = lum.shape[1], lum.shape[2]
    centre = lum[:, 1:-1, 1:-1]
    out = np.zeros_like(centre)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            nb = lum[:, 1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]
            np.maximum(out, np.abs(centre - nb), out=out)
    return out


def blur_percent_from_z(z1: np.ndarray, z2: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(z1 > 0, 100.0 * (z1 - z2) / np.where(z1 > 0, z1, 1.0), np.nan)


def hf_share_batch(lum: np.ndarray, cutoff: float, window: str = "hann") -> np.ndarray:
    h, w = lum.shape[1], lum.shape[2]
    fy = np.fft.fftfreq(h)[:, None] / 0.5
    fx = np.fft.fftfreq(w)[None, :] / 0.5
    radius = np.sqrt(fy * fy + fx * fx)
    a = lum - lum.mean(axis=(1, 2), keepdims=True)
    if window == "hann":
        a = a * np.outer(np.hanning(h), np.hanning(w))
    elif window != "none":
        raise ValueError(f"hf_share window must be one of {HF_WINDOWS}, got {window!r}")
    power = np.abs(np.fft.fft2(a, axes=(1, 2))) ** 2
    total = power[:, radius > 0].sum(axis=1)
    high = power[:, radius > cutoff].sum(axis=1)
    # a flat image has (numerically almost) no AC energy: report a high-frequency share of 0
    tiny = total <= 1e-24 * h * w
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tiny, 0.0, high / np.where(tiny, 1.0, total))


def chunk_metrics(
    x: np.ndarray, ref: np.ndarray, m: np.ndarray | None, cutoff: float, hf_window: str
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    sq = (x - ref) ** 2
    out["psnr"] = psnr_from_mse(sq.mean(axis=(1, 2, 3)))
    smap = ssim_maps(x, ref)
    p = SSIM_PAD
    out["ssim"] = smap[:, p:-p, p:-p, :].mean(axis=(1, 2, 3))
    out["uqi"] = uqi_batch(x, ref)
    lum_x, lum_r = luminance(x), luminance(ref)
    lap = laplacian(lum_x)
    out["laplacian_var"] = lap.var(axis=(1, 2))
    out["hf_share"] = hf_share_batch(lum_x, cutoff, hf_window)
    zmap_x, zmap_r = max_neighbour_diff(lum_x), max_neighbour_diff(lum_r)
    out["blur_percent"] = blur_percent_from_z(zmap_r.mean(axis=(1, 2)), zmap_x.mean(axis=(1, 2)))
    if m is not None:
        spix = smap.mean(axis=3)
        sq_pix = sq.mean(axis=3)
        for region, sel in damage_regions(m).items():
            wgt = sel.astype(np.float64)
            w_in = _interior(wgt)
            out[f"psnr_{region}"] = np.where(
                wgt.sum(axis=(1, 2)) > 0, psnr_from_mse(_region_mean(sq_pix, wgt)), np.nan
            )
            out[f"ssim_{region}"] = _region_mean(spix, wgt)
            out[f"laplacian_var_{region}"] = _weighted_var(lap, w_in)
            out[f"blur_percent_{region}"] = blur_percent_from_z(
                _region_mean(zmap_r, w_in), _region_mean(zmap_x, w_in)
            )
    return out

