"""Image-quality metrics and blur measures of the ``evaluate`` stage.

Conventions (whole module)
--------------------------
* An image is a float numpy array in ``[0, 1]`` of shape ``(H, W, C)`` with ``C`` = 1 or 3; a
  batch is ``(N, H, W, C)``. ``uint8`` input is accepted too and divided by 255. Metrics are
  computed on **whole images**, never on blocks.
* ``x`` is the image under test (restored or degraded), ``ref`` the clean reference.
* The data range is 1 everywhere (PSNR peak, SSIM constants).
* Blur measures work on the luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, as
  OpenCV's ``cvtColor``); a grey image is its own luminance.
* A damage mask is ``(H, W, K)`` with one channel per kind of local damage, ``K =
  len(DAMAGE_KINDS)`` in the order of :data:`aerestore.damage.DAMAGE_KINDS` (``blur``,
  ``noise``): the weight (``uint8`` 0..255, or float in [0, 1] = weight / 255) with which that
  kind was applied at each pixel. For backwards compatibility ``(H, W)`` and ``(H, W, 1)`` are
  a one-kind mask of local blur (the other kinds 0). Region metrics are reported per region of
  :data:`REGIONS`: ``<kind>`` = the pixels whose damage class
  (:func:`aerestore.data.layout.damage_labels`) is that kind, i.e. whose largest weight exceeds
  ``DAMAGE_THRESHOLD`` (127 of 255) and belongs to that kind; ``clean`` = the pixels with every
  channel 0. Pixels with a small non-zero weight (the feathered rims) belong to no region.

Metrics (per image)
-------------------
``psnr``
    ``10 log10(1 / MSE)``, MSE over all pixels and channels; equals
    ``skimage.metrics.peak_signal_noise_ratio(ref, x, data_range=1)``. Identical images give
    ``inf`` (no cap: aggregate with :func:`aerestore.stats.mean_finite`, which drops it, and
    count the infinities separately). Higher is better.
``ssim``
    Wang et al. 2004: Gaussian window (sigma 1.5, truncated at 3.5 sigma, i.e. 11 taps),
    K1 = 0.01, K2 = 0.03, population (co)variances, ``reflect`` padding; the SSIM map is
    averaged over the pixels at least 5 px from the border, then over channels. Identical (to
    floating point) to ``skimage.metrics.structural_similarity(x, ref, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)``, computed here
    vectorised over a batch. Needs H, W >= 11. Higher is better (1 = identical).
``uqi``
    Universal quality index (Wang & Bovik 2002),
    ``Q = 4 s_xy m_x m_y / ((s_x^2 + s_y^2)(m_x^2 + m_y^2))`` in every 8x8 window sliding by
    one pixel over the image (valid positions only, (H-7)(W-7) of them), averaged over windows
    and channels. Degenerate windows follow the authors' reference code ``img_qi.m``: both flat
    (s_x^2 + s_y^2 = 0) -> ``2 m_x m_y / (m_x^2 + m_y^2)`` (so 1 for two identical constants,
    < 1 for two different constants); both means 0 -> ``2 s_xy / (s_x^2 + s_y^2)``; both zero ->
    1. "Flat" means s_x^2 + s_y^2 <= 1e-10 (far below one uint8 step in one pixel of 64,
    ~2.4e-7), to absorb floating-point rounding. In [-1, 1], higher is better.
``laplacian_var``
    Variance of the 3x3 Laplacian ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` of the luminance over
    the interior pixels (no padding). No reference. Higher = sharper (noise raises it too).
``hf_share``
    Share of the luminance's spectral energy ``|FFT|^2`` (DC excluded) at radial frequencies
    above ``cutoff`` (default 0.25) of the Nyquist frequency, where the radial frequency is
    ``sqrt((f_y / 0.5)^2 + (f_x / 0.5)^2)`` with f in cycles per pixel (so the corners of the
    spectrum reach sqrt(2)). Before the FFT the mean is removed and a separable 2-D Hann window
    applied: without it the jump between opposite borders of the (implicitly periodic) image
    puts broadband energy in the spectrum that blur does not remove (64x64 camera crop, Gaussian
    blur sigma 0 / 1 / 3: 0.058 / 0.017 / 0.00007 with the window, 0.101 / 0.050 / 0.037
    without). ``window="none"`` gives the plain FFT. A flat image (no AC energy) gives 0. In
    [0, 1], no reference. Higher = sharper (noise raises it too).
``blur_percent``
    Full-reference blur: ``100 (Z1 - Z2) / Z1`` with ``Z`` the mean over the interior pixels of
    the largest absolute luminance difference between a pixel and its 8 neighbours, ``Z1`` of
    the reference, ``Z2`` of the image under test. 0 = as sharp as the reference, positive =
    blurrier (100 = flat), negative = more local contrast than the reference (over-sharpened
    or noisy). ``nan`` when the reference is flat (Z1 = 0). Lower (closer to 0) is better.

Region metrics (with a mask): ``psnr`` (MSE over the region's pixels, all channels), ``ssim``
(mean of the full SSIM map over the region's pixels and the channels; here the map is used up to
the border, where skimage's reflect padding applies, so the regions' SSIMs do not average to
``ssim``), ``laplacian_var`` (variance of the Laplacian response over the region's interior
pixels) and ``blur_percent`` (Z1, Z2 averaged over the region's interior pixels). The keys are
``<metric>_<region>`` (``psnr_blur``, ``ssim_noise``, ``psnr_clean``, ...) for every region of
:data:`REGIONS`; a region without pixels gives ``None`` (:func:`image_metrics`) or ``nan``
(:func:`batch_metrics`). UQI and hf_share are global only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from aerestore.damage import DAMAGE_KINDS
from aerestore.data.layout import damage_labels

__all__ = [
    "METRICS",
    "REGION_METRICS",
    "REGIONS",
    "region_keys",
    "damage_regions",
    "HIGHER_IS_BETTER",
    "CLOSER_TO_ZERO_IS_BETTER",
    "as_float_images",
    "luminance",
    "psnr",
    "ssim",
    "ssim_map",
    "uqi",
    "laplacian_variance",
    "hf_share",
    "blur_percent",
    "image_metrics",
    "batch_metrics",
]

METRICS = ("psnr", "ssim", "uqi", "laplacian_var", "hf_share", "blur_percent")
REGION_METRICS = ("psnr", "ssim", "laplacian_var", "blur_percent")
# The regions of the region metrics: one per kind of local damage, then the undamaged pixels.
REGIONS = tuple(DAMAGE_KINDS) + ("clean",)
# Direction of "better" for the comparisons in aerestore.stats (share_better's
# higher_is_better). None: no direction by itself. The two no-reference blur measures have no
# "better" without a target (noise raises them too); blur_percent is best at 0 (negative means
# over-sharpened or noisy), so compare abs(blur_percent) with higher_is_better=False.
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "psnr": True,
    "ssim": True,
    "uqi": True,
    "laplacian_var": None,
    "hf_share": None,
    "blur_percent": None,
}
CLOSER_TO_ZERO_IS_BETTER = ("blur_percent",)

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_PAD = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5: the window is 11 x 11
UQI_WINDOW = 8
HF_WINDOWS = ("hann", "none")
UQI_FLAT_EPS = 1e-10
LUMA = np.array([0.299, 0.587, 0.114])
_RANGE_TOL = 1e-6
_CHUNK_PIXELS = 16_384  # pixels per vectorised step in batch_metrics: arrays stay in cache


# ---------------------------------------------------------------------------- input
def as_float_images(a: Any, name: str = "images", ndim: int = 4) -> np.ndarray:
    """Check and convert images to float64 in [0, 1].

    ``uint8`` is divided by 255; a float array must be finite and within [0, 1] (a rounding
    overshoot of up to 1e-6 is clipped). ``ndim`` is 4 for ``(N, H, W, C)``, 3 for ``(H, W, C)``.
    Raises ``ValueError`` naming ``name``.
    """
    arr = np.asarray(a)
    shape_txt = "(N, H, W, C)" if ndim == 4 else "(H, W, C)"
    if arr.ndim != ndim or arr.shape[-1] not in (1, 3):
        raise ValueError(f"{name}: expected shape {shape_txt} with C = 1 or 3, got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name}: expected float in [0, 1] or uint8, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.size:
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
            raise ValueError(f"{name}: values must be in [0, 1], got [{lo:.6g}, {hi:.6g}]")
        if lo < 0 or hi > 1:
            arr = np.clip(arr, 0.0, 1.0)
    return arr


def _as_masks(m: Any, shape: tuple[int, ...], name: str = "masks") -> np.ndarray:
    """Damage masks to float64 weights on the 0..255 scale, ``(N, H, W, K)`` with ``K =
    len(DAMAGE_KINDS)``, for images of ``shape`` (N, H, W, C).

    Accepts ``(N, H, W, K)`` and, as a one-kind mask of local blur, ``(N, H, W)`` or
    ``(N, H, W, 1)``; ``uint8`` 0..255, bool, or float in [0, 1] (multiplied by 255).
    """
    arr = np.asarray(m)
    k = len(DAMAGE_KINDS)
    base = tuple(shape[:-1])
    if arr.shape == base + (k,):
        legacy = False
    elif arr.shape == base or arr.shape == base + (1,):
        legacy = True
        if "blur" not in DAMAGE_KINDS:
            raise ValueError(f"{name}: a one-channel mask means local blur, not one of {DAMAGE_KINDS}")
    else:
        raise ValueError(
            f"{name}: expected shape {base + (k,)} (one channel per damage kind {DAMAGE_KINDS}) or, "
            f"for a local-blur mask, {base} or {base + (1,)}, to match the images {tuple(shape)}; "
            f"got {arr.shape}"
        )
    if arr.dtype == np.uint8:
        w = arr.astype(np.float64)
    elif arr.dtype == np.bool_:
        w = arr.astype(np.float64) * 255.0
    elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
        w = arr.astype(np.float64)
        if w.size and (not np.isfinite(w).all() or w.min() < 0 or w.max() > 1):
            raise ValueError(f"{name}: values must be finite and in [0, 1] (or uint8 0..255)")
        w = w * 255.0
    else:
        raise ValueError(f"{name}: expected float in [0, 1] or uint8, got dtype {arr.dtype}")
    if not legacy:
        return w
    if w.ndim == len(base) + 1:
        w = w[..., 0]
    out = np.zeros(base + (k,), dtype=np.float64)
    out[..., DAMAGE_KINDS.index("blur")] = w
    return out


def damage_regions(weights: np.ndarray) -> dict[str, np.ndarray]:
    """``{region: bool (..., H, W)}`` for every region of :data:`REGIONS`, from damage weights
    ``(..., H, W, K)`` on the 0..255 scale: ``<kind>`` where :func:`damage_labels` gives that
    kind (largest weight > ``DAMAGE_THRESHOLD``), ``clean`` where every weight is 0."""
    labels = damage_labels(weights, axis=-1)
    out = {kind: labels == i + 1 for i, kind in enumerate(DAMAGE_KINDS)}
    out["clean"] = np.all(weights == 0, axis=-1)
    return out


def region_keys(metrics: tuple[str, ...] = REGION_METRICS) -> list[str]:
    """The region metric names ``<metric>_<region>``, region by region (``psnr_blur``,
    ``ssim_blur``, ..., ``psnr_clean``, ...)."""
    return [f"{k}_{r}" for r in REGIONS for k in metrics]


def _pair(x: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    xb = as_float_images(x, "x", ndim=3)[None]
    rb = as_float_images(ref, "ref", ndim=3)[None]
    if xb.shape != rb.shape:
        raise ValueError(f"x and ref differ in shape: {xb.shape[1:]} vs {rb.shape[1:]}")
    return xb, rb


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
def _psnr_from_mse(mse: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(mse > 0, -10.0 * np.log10(np.where(mse > 0, mse, 1.0)), np.inf)


def _ssim_maps(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
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


def _check_ssim_size(shape: tuple[int, ...]) -> None:
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


def _uqi_batch(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
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


def _laplacian(lum: np.ndarray) -> np.ndarray:
    """3x3 Laplacian of ``(N, H, W)`` at the interior pixels -> ``(N, H-2, W-2)``."""
    return (
        lum[:, :-2, 1:-1] + lum[:, 2:, 1:-1] + lum[:, 1:-1, :-2] + lum[:, 1:-1, 2:]
        - 4.0 * lum[:, 1:-1, 1:-1]
    )


def _weighted_var(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    mean = _region_mean(values, weights)
    return _region_mean((values - mean[:, None, None]) ** 2, weights)


def _max_neighbour_diff(lum: np.ndarray) -> np.ndarray:
    """Largest |I(p) - I(q)| over the 8 neighbours q of each interior pixel p -> (N, H-2, W-2)."""
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


def _blur_percent(z1: np.ndarray, z2: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(z1 > 0, 100.0 * (z1 - z2) / np.where(z1 > 0, z1, 1.0), np.nan)


def _hf_share_batch(lum: np.ndarray, cutoff: float, window: str = "hann") -> np.ndarray:
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


def _chunk_metrics(
    x: np.ndarray, ref: np.ndarray, m: np.ndarray | None, cutoff: float, hf_window: str
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    sq = (x - ref) ** 2
    out["psnr"] = _psnr_from_mse(sq.mean(axis=(1, 2, 3)))
    smap = _ssim_maps(x, ref)
    p = SSIM_PAD
    out["ssim"] = smap[:, p:-p, p:-p, :].mean(axis=(1, 2, 3))
    out["uqi"] = _uqi_batch(x, ref)
    lum_x, lum_r = luminance(x), luminance(ref)
    lap = _laplacian(lum_x)
    out["laplacian_var"] = lap.var(axis=(1, 2))
    out["hf_share"] = _hf_share_batch(lum_x, cutoff, hf_window)
    zmap_x, zmap_r = _max_neighbour_diff(lum_x), _max_neighbour_diff(lum_r)
    out["blur_percent"] = _blur_percent(zmap_r.mean(axis=(1, 2)), zmap_x.mean(axis=(1, 2)))
    if m is not None:
        spix = smap.mean(axis=3)
        sq_pix = sq.mean(axis=3)
        for region, sel in damage_regions(m).items():
            wgt = sel.astype(np.float64)
            w_in = _interior(wgt)
            out[f"psnr_{region}"] = np.where(
                wgt.sum(axis=(1, 2)) > 0, _psnr_from_mse(_region_mean(sq_pix, wgt)), np.nan
            )
            out[f"ssim_{region}"] = _region_mean(spix, wgt)
            out[f"laplacian_var_{region}"] = _weighted_var(lap, w_in)
            out[f"blur_percent_{region}"] = _blur_percent(
                _region_mean(zmap_r, w_in), _region_mean(zmap_x, w_in)
            )
    return out


# ---------------------------------------------------------------------- public API
def batch_metrics(
    restored: Any,
    clean: Any,
    masks: Any = None,
    hf_cutoff: float = 0.25,
    hf_window: str = "hann",
    chunk: int | None = None,
) -> dict[str, np.ndarray]:
    """Every metric for each image of a batch: ``{name: float64 array (N,)}``.

    ``restored`` and ``clean`` are ``(N, H, W, C)`` (float in [0, 1] or uint8). With ``masks``
    (``(N, H, W, K)``, one channel per damage kind, or a local-blur mask ``(N, H, W)`` /
    ``(N, H, W, 1)``; uint8 0..255 or float [0, 1]), the region metrics ``<m>_<region>`` for
    ``m`` in :data:`REGION_METRICS` and ``region`` in :data:`REGIONS` are added; a region
    without pixels gives ``nan``. Vectorised over ``chunk`` images at a time (default: about
    16k pixels' worth, 4 images of 64x64, which keeps the intermediates in cache: ~4 ms per
    64x64 RGB image with a mask on one core). See the module docstring for the definitions.
    """
    x = as_float_images(restored, "restored")
    ref = as_float_images(clean, "clean")
    if x.shape != ref.shape:
        raise ValueError(f"restored {x.shape} and clean {ref.shape} differ in shape")
    _check_ssim_size(x.shape)
    m = None if masks is None else _as_masks(masks, x.shape)
    if not 0 <= hf_cutoff:
        raise ValueError(f"hf_cutoff must be >= 0, got {hf_cutoff}")
    if hf_window not in HF_WINDOWS:
        raise ValueError(f"hf_window must be one of {HF_WINDOWS}, got {hf_window!r}")
    n = x.shape[0]
    if chunk is None:
        chunk = _CHUNK_PIXELS // (x.shape[1] * x.shape[2])
    chunk = max(1, int(chunk))
    keys = list(METRICS)
    if m is not None:
        keys += region_keys()
    result = {k: np.empty(n, dtype=np.float64) for k in keys}
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        part = _chunk_metrics(x[sl], ref[sl], None if m is None else m[sl], hf_cutoff, hf_window)
        for k in keys:
            result[k][sl] = part[k]
    return result


def _none_if_nan(v: float) -> float | None:
    return None if math.isnan(v) else v


def image_metrics(
    x: Any, ref: Any, mask: Any = None, hf_cutoff: float = 0.25, hf_window: str = "hann"
) -> dict[str, float | None]:
    """Every metric of one image ``(H, W, C)`` against its reference, as floats.

    With ``mask`` ``(H, W, K)`` (one channel per damage kind; or a local-blur mask ``(H, W)`` /
    ``(H, W, 1)``), adds ``<m>_<region>`` for ``m`` in :data:`REGION_METRICS` and ``region`` in
    :data:`REGIONS`; ``None`` for a region with no pixels. ``blur_percent`` is ``nan`` for a
    flat reference.
    """
    xb, rb = _pair(x, ref)
    mb = None
    if mask is not None:
        mk = np.asarray(mask)
        mb = mk[None]
    res = batch_metrics(xb, rb, mb, hf_cutoff=hf_cutoff, hf_window=hf_window)
    regional = set(region_keys())
    out: dict[str, float | None] = {}
    for k, v in res.items():
        val = float(v[0])
        out[k] = _none_if_nan(val) if k in regional else val
    return out


def psnr(x: Any, ref: Any) -> float:
    """PSNR in dB with data range 1: ``10 log10(1 / MSE)``; ``inf`` for identical images.

    Equals ``skimage.metrics.peak_signal_noise_ratio(ref, x, data_range=1)``.
    """
    xb, rb = _pair(x, ref)
    return float(_psnr_from_mse(((xb - rb) ** 2).mean(axis=(1, 2, 3)))[0])


def ssim_map(x: Any, ref: Any) -> np.ndarray:
    """The full SSIM map ``(H, W, C)`` (skimage's ``full=True`` map, borders included)."""
    xb, rb = _pair(x, ref)
    return _ssim_maps(xb, rb)[0]


def ssim(x: Any, ref: Any) -> float:
    """Mean SSIM (Gaussian window sigma 1.5 / 11 taps, K1 0.01, K2 0.03, data range 1,
    population covariance), averaged over the pixels >= 5 px from the border and the channels:
    skimage's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=-1)``."""
    xb, rb = _pair(x, ref)
    _check_ssim_size(xb.shape)
    p = SSIM_PAD
    return float(_ssim_maps(xb, rb)[0, p:-p, p:-p, :].mean())


def uqi(x: Any, ref: Any) -> float:
    """Universal quality index (Wang & Bovik 2002), 8x8 sliding windows, mean over windows and
    channels; degenerate windows as in the module docstring."""
    xb, rb = _pair(x, ref)
    return float(_uqi_batch(xb, rb)[0])


def laplacian_variance(x: Any) -> float:
    """Variance of the 3x3 Laplacian (0 1 0 / 1 -4 1 / 0 1 0) of the luminance over the interior
    pixels. Higher = sharper (or noisier)."""
    xb = as_float_images(x, "x", ndim=3)[None]
    if min(xb.shape[1], xb.shape[2]) < 3:
        raise ValueError(f"laplacian_variance needs at least 3x3 pixels, got {xb.shape[1:3]}")
    return float(_laplacian(luminance(xb)).var(axis=(1, 2))[0])


def hf_share(x: Any, cutoff: float = 0.25, window: str = "hann") -> float:
    """Share of the luminance's AC spectral energy above ``cutoff`` x Nyquist (radially), after
    removing the mean and applying a 2-D Hann window (``window="none"``: plain FFT).
    In [0, 1]; 0 for a flat image. Higher = sharper (or noisier)."""
    xb = as_float_images(x, "x", ndim=3)[None]
    if not cutoff >= 0:
        raise ValueError(f"cutoff must be >= 0, got {cutoff}")
    return float(_hf_share_batch(luminance(xb), cutoff, window)[0])


def blur_percent(x: Any, ref: Any) -> float:
    """``100 (Z1 - Z2) / Z1``, Z = mean over interior pixels of the largest absolute luminance
    difference to the 8 neighbours; Z1 of ``ref`` (sharp), Z2 of ``x``. Positive = blurrier than
    the reference, negative = more local contrast; ``nan`` if ``ref`` is flat."""
    xb, rb = _pair(x, ref)
    if min(xb.shape[1], xb.shape[2]) < 3:
        raise ValueError(f"blur_percent needs at least 3x3 pixels, got {xb.shape[1:3]}")
    z1 = _max_neighbour_diff(luminance(rb)).mean(axis=(1, 2))
    z2 = _max_neighbour_diff(luminance(xb)).mean(axis=(1, 2))
    return float(_blur_percent(z1, z2)[0])
