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

from aerestore import metric_ops as K
from aerestore.damage import DAMAGE_KINDS

__all__ = [
    "METRICS",
    "REGION_METRICS",
    "REGIONS",
    "region_keys",
    "HIGHER_IS_BETTER",
    "CLOSER_TO_ZERO_IS_BETTER",
    "base_metric",
    "direction",
    "compared_values",
    "as_float_images",
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
# Direction of "better" of each metric: the one definition, used by every paired comparison of
# restorers (the evaluate stage's per-cluster vs control, ``aerestore seeds``). True: higher is
# better; False: lower is better; None: no direction by itself (laplacian_var and hf_share
# measure sharpness without a reference, and noise raises them too: they are not compared).
# A metric of CLOSER_TO_ZERO_IS_BETTER is compared as |value| and its entry is the direction
# of |value|: blur_percent is 0 for an image as sharp as the clean one, positive when blurrier,
# negative when over-sharpened or noisy, so a lower |blur %| (closer to the clean image's
# sharpness) is better. A region metric ``<metric>_<region>`` takes its metric's direction.
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "psnr": True,
    "ssim": True,
    "uqi": True,
    "laplacian_var": None,
    "hf_share": None,
    "blur_percent": False,
}
CLOSER_TO_ZERO_IS_BETTER = ("blur_percent",)
_RANGE_TOL = 1e-6
_CHUNK_PIXELS = 16_384  # pixels per vectorised step in batch_metrics: arrays stay in cache


# ------------------------------------------------------------------ directions
def base_metric(key: str) -> str:
    """The metric a key measures: ``psnr_blur`` -> ``psnr``, ``blur_percent_clean`` ->
    ``blur_percent`` (the longest metric of :data:`HIGHER_IS_BETTER` that the key is or begins
    with, then ``_``); other names as they are."""
    for base in sorted(HIGHER_IS_BETTER, key=len, reverse=True):
        if key == base or key.startswith(base + "_"):
            return base
    return key


def direction(key: str) -> bool | None:
    """Whether a higher compared value (:func:`compared_values`) of ``key`` is better: True,
    False (lower is better), or None (no direction, or not a metric of this module)."""
    return HIGHER_IS_BETTER.get(base_metric(key))


def compared_values(key: str, values: Any) -> Any:
    """The values of ``key`` that a comparison ranks: ``|values|`` for a metric of
    :data:`CLOSER_TO_ZERO_IS_BETTER`, else ``values`` themselves."""
    return np.abs(values) if base_metric(key) in CLOSER_TO_ZERO_IS_BETTER else values


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
    K.check_ssim_size(x.shape)
    m = None if masks is None else _as_masks(masks, x.shape)
    if not 0 <= hf_cutoff:
        raise ValueError(f"hf_cutoff must be >= 0, got {hf_cutoff}")
    if hf_window not in K.HF_WINDOWS:
        raise ValueError(f"hf_window must be one of {K.HF_WINDOWS}, got {hf_window!r}")
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
        part = K.chunk_metrics(x[sl], ref[sl], None if m is None else m[sl], hf_cutoff, hf_window)
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
    return float(K.psnr_from_mse(((xb - rb) ** 2).mean(axis=(1, 2, 3)))[0])


def ssim_map(x: Any, ref: Any) -> np.ndarray:
    """The full SSIM map ``(H, W, C)`` (skimage's ``full=True`` map, borders included)."""
    xb, rb = _pair(x, ref)
    return K.ssim_maps(xb, rb)[0]


def ssim(x: Any, ref: Any) -> float:
    """Mean SSIM (Gaussian window sigma 1.5 / 11 taps, K1 0.01, K2 0.03, data range 1,
    population covariance), averaged over the pixels >= 5 px from the border and the channels:
    skimage's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=-1)``."""
    xb, rb = _pair(x, ref)
    K.check_ssim_size(xb.shape)
    p = K.SSIM_PAD
    return float(K.ssim_maps(xb, rb)[0, p:-p, p:-p, :].mean())


def uqi(x: Any, ref: Any) -> float:
    """Universal quality index (Wang & Bovik 2002), 8x8 sliding windows, mean over windows and
    channels; degenerate windows as in the module docstring."""
    xb, rb = _pair(x, ref)
    return float(K.uqi_batch(xb, rb)[0])


def laplacian_variance(x: Any) -> float:
    """Variance of the 3x3 Laplacian (0 1 0 / 1 -4 1 / 0 1 0) of the luminance over the interior
    pixels. Higher = sharper (or noisier)."""
    xb = as_float_images(x, "x", ndim=3)[None]
    if min(xb.shape[1], xb.shape[2]) < 3:
        raise ValueError(f"laplacian_variance needs at least 3x3 pixels, got {xb.shape[1:3]}")
    return float(K.laplacian(K.luminance(xb)).var(axis=(1, 2))[0])


def hf_share(x: Any, cutoff: float = 0.25, window: str = "hann") -> float:
    """Share of the luminance's AC spectral energy above ``cutoff`` x Nyquist (radially), after
    removing the mean and applying a 2-D Hann window (``window="none"``: plain FFT).
    In [0, 1]; 0 for a flat image. Higher = sharper (or noisier)."""
    xb = as_float_images(x, "x", ndim=3)[None]
    if not cutoff >= 0:
        raise ValueError(f"cutoff must be >= 0, got {cutoff}")
    return float(K.hf_share_batch(K.luminance(xb), cutoff, window)[0])


def blur_percent(x: Any, ref: Any) -> float:
    """``100 (Z1 - Z2) / Z1``, Z = mean over interior pixels of the largest absolute luminance
    difference to the 8 neighbours; Z1 of ``ref`` (sharp), Z2 of ``x``. Positive = blurrier than
    the reference, negative = more local contrast; ``nan`` if ``ref`` is flat."""
    xb, rb = _pair(x, ref)
    if min(xb.shape[1], xb.shape[2]) < 3:
        raise ValueError(f"blur_percent needs at least 3x3 pixels, got {xb.shape[1:3]}")
    z1 = K.max_neighbour_diff(K.luminance(rb)).mean(axis=(1, 2))
    z2 = K.max_neighbour_diff(K.luminance(xb)).mean(axis=(1, 2))
    return float(K.blur_percent_from_z(z1, z2)[0])
