"""Classical (non-learned) restorers, the baselines of the ``evaluate`` stage.

Each restorer takes one float image ``(H, W, C)`` in [0, 1] (C = 1 or 3) and returns a float64
image of the same shape, clipped to [0, 1]. The settings below are the defaults (stated in
``settings`` and in the README), the same for every image, and deterministic. Those in
``Restorer.tunable`` (params.CLASSICAL_TUNABLE) are chosen per task on the validation split by
the evaluate stage (``evaluate.classical_grid``, :func:`choose_settings`), as the networks'
settings are: a change from the fixed constants this module had, which left the anchors tuned
for no task (TV weight 0.1, a deconvolution PSF sigma 1 against blur sigma 1.5..3).

=================  ========================================================================
name               method and settings
=================  ========================================================================
nlmeans            Non-local means (Buades et al. 2005; ``skimage.restoration.denoise_nl_means``,
                   fast mode), patch 5x5, search distance 6 (13x13 area), noise sigma estimated
                   per image with ``estimate_sigma`` (wavelet MAD, Donoho & Johnstone 1994;
                   averaged over channels, a channel without an estimate left out:
                   :func:`noise_sigma`),
                   ``h = 0.6 sigma`` (floored at 1e-3), ``sigma``
                   passed to the fast mode; colour patches compared jointly.
bm3d               BM3D (Dabov et al. 2007; Makinen, Azzari & Foi 2020), the authors' reference
                   implementation, the ``bm3d`` package 4.0.3 (an OPTIONAL dependency, free for
                   non-commercial use only: ``pip install -e '.[bm3d]'``), profile ``np``, all
                   stages (hard thresholding, then Wiener); noise sigma estimated per image as
                   for nlmeans (floored at 1e-3); colour images via ``bm3d_rgb``'s opponent
                   colour transform, grey ones via ``bm3d``; one thread, so the output is
                   reproducible bit for bit (with more threads the C library's float32
                   aggregation order varies, ~1e-7). A flat image is returned unchanged;
                   images under 11x11 px are refused. Slow: ~0.7 s per 64 px RGB image, so the
                   evaluate stage runs it on a fixed subset of the test images only
                   (``Restorer.slow``; ``evaluate.anchor_images``).
nlmeans_map        The same NL-means run at the local noise level: :func:`noise_map` (a
                   sigma per pixel from the degraded image alone: Immerkaer's high-pass, local
                   MAD in 7 px windows), NL-means at 3 sigmas from the map's 2nd to its 98th
                   percentile (geometric; one run when they are within 25 %), the outputs
                   blended per pixel linearly in log sigma (:func:`by_map`). A change
                   from one sigma per image: on the default task the noisy regions are a
                   minority, the global estimate is the camera noise's and they were left noisy.
bm3d_map           BM3D run the same way at 3 sigmas of the noise map (slow: 3 times bm3d).
tv                 Total-variation denoising (Chambolle 2004; ``denoise_tv_chambolle``),
                   weight 0.1, eps 2e-4, at most 200 iterations, each channel separately.
bilateral          OpenCV ``cv2.bilateralFilter`` on float32: diameter 5, sigma_color 0.2 (in
                   [0, 1] intensity units, i.e. 51 on the 0..255 scale), sigma_space 2 px,
                   border reflect-101.
wiener             Wiener-Hunt deconvolution (``skimage.restoration.wiener``, Laplacian
                   regulariser) with a Gaussian PSF sigma 1.0 px (7x7), balance 0.01, each
                   channel separately, after reflect-padding 12 px (removed afterwards) so that
                   the FFT's periodic boundary does not ring.
richardson_lucy    Richardson-Lucy deconvolution (``skimage.restoration.richardson_lucy``),
                   the same Gaussian PSF (sigma 1.0 px, 7x7), 10 iterations, each channel
                   separately, after the same 12 px reflect padding.
biharmonic         Biharmonic inpainting (``skimage.restoration.inpaint_biharmonic``) of the
                   dropout holes: the pixels that are exactly 0 in every channel (the
                   ``coarse_dropout`` fill 0); an image without such a pixel is returned
                   unchanged.
=================  ========================================================================

The deconvolution PSF sigma 1.0 is the middle of the default ``gaussian_blur`` range [0.5, 2];
a PSF narrower than the true blur under-sharpens, a wider one rings, so the narrower is the safer
error. The biharmonic mask is a heuristic: after later ops (noise, JPEG) the holes are no longer
exactly 0 and are not found, and a genuinely black pixel of the clean image is filled too.

The oracle (:func:`oracle_restore`) is not a restorer of this table: it is told the true masks
and damage levels (measured from the clean image), an upper bound that the evaluate stage
reports apart from the classical rows.

A restorer whose optional package is missing stays listed: :meth:`Restorer.missing` says why it
cannot run (the evaluate stage then skips its row with that note) and calling it raises
:class:`RestorerUnavailable`. ``bm3d_rgb`` itself divides by the range of each opponent colour
channel, which is 0 for a grey image stored as RGB (R = G = B: the two chroma channels are
constant) and gives NaN; the transform is therefore done here, the same as the package's except
that a channel with a range below 1e-6 is only shifted to 0, not scaled (identical output
otherwise).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from scipy import ndimage
from skimage import restoration
from tqdm import tqdm

from aerestore.metrics import as_float_images, psnr
from aerestore.params import CLASSICAL, CLASSICAL_TUNABLE

__all__ = [
    "Restorer",
    "RestorerUnavailable",
    "RESTORERS",
    "restore_all",
    "gaussian_psf",
    "dropout_mask",
    "noise_sigma",
    "noise_map",
    "map_levels",
    "blend_by_map",
    "by_map",
    "choose_settings",
    "true_sigmas",
    "true_blur_strength",
    "oracle_restore",
]


class RestorerUnavailable(RuntimeError):
    """A restorer's optional package is not installed (see :meth:`Restorer.missing`)."""


@dataclass(frozen=True)
class Restorer:
    """A named classical restorer; calling it checks the input and clips the output."""

    name: str
    settings: dict[str, Any]
    fn: Callable[..., np.ndarray] = field(repr=False)  # fn(image, **tunable)
    # slow: the evaluate stage runs it on the fixed subset of test images only
    # (evaluate.anchor_images) and compares every row on that subset
    slow: bool = False
    # the optional package it needs (imported lazily) and the pyproject extra that installs it
    requires: str | None = None
    extra: str | None = None
    # the settings evaluate.classical_grid may choose (params.CLASSICAL_TUNABLE), passed to fn
    tunable: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # the name in tables ("" = name)

    def with_settings(self, **values: Any) -> "Restorer":
        """This restorer with some tunable settings changed (the same type as the default: a
        whole number for ``num_iter``); an unknown setting raises ``KeyError`` naming it."""
        unknown = [k for k in values if k not in self.tunable]
        if unknown:
            raise KeyError(f"{self.name}: unknown setting(s) {unknown}; tunable: {list(self.tunable)}")
        typed = {}
        for k, v in values.items():
            kind = type(self.tunable[k])
            if kind is int and not float(v).is_integer():
                raise ValueError(f"{self.name}: {k} must be a whole number, got {v}")
            typed[k] = kind(v)
        return replace(self, tunable={**self.tunable, **typed}, settings={**self.settings, **typed})

    def missing(self) -> str | None:
        """Why this restorer cannot run here (its optional package does not import), or None."""
        if self.requires is None:
            return None
        try:
            importlib.import_module(self.requires)
        except (ImportError, OSError) as e:  # OSError: the package's C library fails to load
            how = f"pip install -e '.[{self.extra}]'" if self.extra else f"pip install {self.requires}"
            return (f"the optional package {self.requires!r} is not installed or does not import "
                    f"({type(e).__name__}: {e}); install it with {how}")
        return None

    def __call__(self, image: Any) -> np.ndarray:
        why = self.missing()
        if why is not None:
            raise RestorerUnavailable(f"{self.name}: {why}")
        x = as_float_images(image, f"{self.name}: image", ndim=3)
        y = np.asarray(self.fn(x, **self.tunable), dtype=np.float64)
        if y.size == x.size and y.shape != x.shape:
            y = y.reshape(x.shape)  # e.g. skimage drops a single channel axis
        if y.shape != x.shape:
            raise RuntimeError(f"{self.name}: returned shape {y.shape} for an input of {x.shape}")
        return np.clip(y, 0.0, 1.0)


# ---------------------------------------------------------------------------- helpers
def gaussian_psf(sigma: float) -> np.ndarray:
    """Normalised 2-D Gaussian kernel, side ``2 ceil(3 sigma) + 1``."""
    if not sigma > 0:
        raise ValueError(f"PSF sigma must be > 0, got {sigma}")
    r = int(np.ceil(3 * sigma))
    a = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(a * a) / (2 * sigma * sigma))
    k = np.outer(g, g)
    return k / k.sum()


def dropout_mask(image: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)``: the pixels that are exactly 0 in every channel."""
    return np.all(image == 0, axis=-1)


def _per_channel_padded(
    image: np.ndarray, pad: int, f: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    out = np.empty_like(image)
    for c in range(image.shape[-1]):
        ch = np.pad(image[..., c], pad, mode="reflect") if pad else image[..., c]
        y = f(ch)
        out[..., c] = y[pad:-pad, pad:-pad] if pad else y
    return out


# --------------------------------------------------------------------------- restorers
NLMEANS = {"patch_size": 5, "patch_distance": 6, "h_factor": 0.6, "h_min": 1e-3, "fast_mode": True}
BM3D = {"profile": "np", "colorspace": "opp", "sigma_min": 1e-3, "num_threads": 1}
_BM3D_RANGE_MIN = 1e-6
BM3D_MIN_SIDE = 11  # 8x8 images crash the C library (segfault); 9..16 px tested fine
# bm3d_rgb's opponent colour transform ('opp') and its inverse
_OPP = np.array([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.0, -0.5], [0.25, -0.5, 0.25]])
_OPP_INV = np.array([[1.0, 1.0, 2 / 3], [1.0, 0.0, -4 / 3], [1.0, -1.0, 2 / 3]])
TV = {"weight": 0.1, "eps": 2e-4, "max_num_iter": 200}
BILATERAL = {"d": 5, "sigma_color": 0.2, "sigma_space": 2.0}
PSF_SIGMA = 1.0
PAD = 12
WIENER = {"psf_sigma": PSF_SIGMA, "balance": 0.01, "pad": PAD}
RICHARDSON_LUCY = {"psf_sigma": PSF_SIGMA, "num_iter": 10, "pad": PAD}
MAP_LEVELS = {"nlmeans_map": 3, "bm3d_map": 3}  # sigmas each noise-map row runs at
BIHARMONIC = {"mask": "pixels equal to 0 in every channel"}


def noise_sigma(x: np.ndarray) -> float:
    """The noise sigma of nlmeans and bm3d: ``estimate_sigma`` (wavelet MAD) per channel,
    averaged over the channels that give one. skimage's ``average_sigmas=True`` is the same
    mean but gives NaN when a channel has no non-zero wavelet detail coefficient (e.g. a channel
    that is 0 everywhere: a pure red image); such a channel is left out here, and an image
    without any estimate gets 0 (then floored by the caller)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice" of a flat channel
        sigmas = np.asarray(restoration.estimate_sigma(x, channel_axis=-1), dtype=np.float64)
    sigmas = sigmas[np.isfinite(sigmas)]
    return float(sigmas.mean()) if sigmas.size else 0.0


# ------------------------------------------------------------------- the noise map
NOISE_MAP = {"window": 7, "highpass": "Immerkaer 3x3 (1 -2 1 / -2 4 -2 / 1 -2 1) / 6", "mad": 0.6745}
# Immerkaer's kernel divided by 6 = sqrt(sum of its squared taps): on white Gaussian noise of
# sigma s its output is Gaussian with sigma s exactly, so no empirical calibration is needed
_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]) / 6.0
_MAD_TO_SIGMA = 1.0 / 0.6744897501960817  # median |N(0, 1)|


def noise_map(x: np.ndarray, window: int = NOISE_MAP["window"]) -> np.ndarray:
    """The noise sigma at every pixel, ``(H, W)``, from the degraded image alone.

    The high-pass residual of Immerkaer's operator (Immerkaer 1996, "Fast noise variance
    estimation": the 3x3 difference of two Laplacians, which cancels linear ramps, divided by 6
    so that white Gaussian noise of sigma s comes out with sigma s), then the robust scale of the
    residual in a ``window`` x ``window`` px sliding window pooled over the channels: median
    ``|r|`` / 0.6745 (the MAD estimator of Donoho & Johnstone 1994, made local). Borders reflect.

    Error (tests/test_classical.py, ``test_noise_map_on_synthetic_local_noise``): on pure
    Gaussian noise (sigma 0.02, 0.1, 0.2; 64 px RGB) the map's mean is within 8 % of the true
    sigma on every image and within 4 % averaged over images; on a photograph with
    a noisy disc of sigma 0.15 on camera noise 0.02, the median estimate inside the disc is within
    15 % of 0.15 and outside it within 50 % of 0.02 (image texture leaks into the residual and
    biases low levels up). On the default task's validation split (median inside each noisy region
    against the residual degraded - clean): 0.88 +- 0.09 of the true level inside the noisy
    regions (feathered rims and clipping at 0/1), 1.24 +- 0.30 in the clean pixels (texture).
    A 7 px window: 16 px smeared the noisy regions' edges (0.71 of the true level inside).
    """
    if window < 3:
        raise ValueError(f"noise_map: window must be >= 3 px, got {window}")
    r = np.stack([ndimage.convolve(x[..., c], _IMMERKAER, mode="reflect") for c in range(x.shape[-1])], -1)
    med = ndimage.median_filter(np.abs(r), size=(window, window, x.shape[-1]), mode="reflect")
    return med[..., 0] * _MAD_TO_SIGMA


def map_levels(sigma_map: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` sigmas a map-driven denoiser runs at: geometrically spaced from the map's
    2nd to its 98th percentile (floored at 1e-3); one level when they differ by under 25 %."""
    lo, hi = (max(float(v), 1e-3) for v in np.percentile(sigma_map, [2, 98]))
    if hi < 1.25 * lo or count == 1:
        return np.array([float(np.median(np.maximum(sigma_map, 1e-3)))])
    return np.geomspace(lo, hi, count)


def blend_by_map(value_map: np.ndarray, levels: np.ndarray, outputs: list[np.ndarray]) -> np.ndarray:
    """Per pixel, the outputs of runs at ``levels`` (ascending) interpolated linearly at the
    pixel's value in ``value_map``, clamped to the first and last run."""
    if len(outputs) == 1:
        return outputs[0]
    v = np.clip(value_map, levels[0], levels[-1])
    out = np.zeros_like(outputs[0])
    for k, y in enumerate(outputs):
        lo = levels[k - 1] if k else None
        hi = levels[k + 1] if k + 1 < len(levels) else None
        w = np.zeros_like(v)
        if lo is not None:  # rising side
            sel = (v >= lo) & (v <= levels[k])
            w[sel] = (v[sel] - lo) / (levels[k] - lo)
        if hi is not None:  # falling side
            sel = (v >= levels[k]) & (v <= hi)
            w[sel] = (hi - v[sel]) / (hi - levels[k])
        if lo is None:
            w[v <= levels[k]] = 1.0
        if hi is None:
            w[v >= levels[k]] = 1.0
        out += w[..., None] * y
    return out


def by_map(x: np.ndarray, sigma_map: np.ndarray, levels: np.ndarray,
           denoise: Callable[[np.ndarray, float], np.ndarray]) -> np.ndarray:
    """``denoise(x, sigma)`` at each of ``levels``, blended per pixel by ``sigma_map``,
    linearly in log sigma: the levels are geometric, and a pixel a little above the camera
    noise should not take a share of the strongest run in proportion to sigma (linear in sigma
    with 2 levels: 30.9 dB for bm3d_map on 8 validation images of the default task; in log
    sigma 32.0; with 3 levels in log sigma 32.5, the setting used)."""
    floor = 1e-3
    return blend_by_map(np.log(np.maximum(sigma_map, floor)), np.log(np.maximum(levels, floor)),
                        [denoise(x, float(s)) for s in levels])


# --------------------------------------------------------------------------- restorers
def _nlmeans_at(x: np.ndarray, sigma: float, h_factor: float) -> np.ndarray:
    s = NLMEANS
    return restoration.denoise_nl_means(
        x,
        h=max(h_factor * sigma, s["h_min"]),
        sigma=sigma,
        fast_mode=s["fast_mode"],
        patch_size=s["patch_size"],
        patch_distance=s["patch_distance"],
        channel_axis=-1,
    ).reshape(x.shape)  # a single channel comes back without its axis


def _nlmeans(x: np.ndarray, h_factor: float = NLMEANS["h_factor"]) -> np.ndarray:
    return _nlmeans_at(x, noise_sigma(x), h_factor)


def _nlmeans_map(x: np.ndarray, h_factor: float = NLMEANS["h_factor"]) -> np.ndarray:
    m = noise_map(x)
    return by_map(x, m, map_levels(m, MAP_LEVELS["nlmeans_map"]), lambda y, s: _nlmeans_at(y, s, h_factor))


def _bm3d_at(x: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d  # optional (non-commercial licence): imported only when used

    if min(x.shape[0], x.shape[1]) < BM3D_MIN_SIDE:
        raise ValueError(f"bm3d: needs images of at least {BM3D_MIN_SIDE}x{BM3D_MIN_SIDE} pixels, "
                         f"got {x.shape[0]}x{x.shape[1]} (8x8 crashes the package's C library)")
    if float(x.max() - x.min()) <= _BM3D_RANGE_MIN:
        return x.copy()  # a flat image: nothing to denoise (and the package returns NaN or fails)
    s = BM3D
    sigma = max(sigma, s["sigma_min"])
    profile = bm3d.BM3DProfile()  # = profile "np"
    profile.num_threads = s["num_threads"]
    if x.shape[-1] == 1:
        return bm3d.bm3d(x[..., 0], sigma, profile=profile)[..., None]
    # bm3d_rgb(x, sigma, profile, colorspace="opp") with each channel's range floored (module doc)
    h, w, _ = x.shape
    o = x.reshape(-1, 3) @ _OPP.T
    lo = o.min(axis=0)
    span = o.max(axis=0) - lo
    span = np.where(span > _BM3D_RANGE_MIN, span, 1.0)  # a constant channel: left at 0, not scaled
    z = ((o - lo) / span).reshape(h, w, 3)
    scale = np.sum(_OPP.T**2, axis=0) / span**2
    y = bm3d.bm3d(z, sigma * np.sqrt(scale).reshape(1, 1, 3), profile=profile)
    return ((np.asarray(y, dtype=np.float64).reshape(-1, 3) * span + lo) @ _OPP_INV.T).reshape(h, w, 3)


def _bm3d(x: np.ndarray) -> np.ndarray:
    return _bm3d_at(x, noise_sigma(x))


def _bm3d_map(x: np.ndarray) -> np.ndarray:
    m = noise_map(x)
    return by_map(x, m, map_levels(m, MAP_LEVELS["bm3d_map"]), _bm3d_at)


def _tv(x: np.ndarray, weight: float = TV["weight"]) -> np.ndarray:
    return restoration.denoise_tv_chambolle(x, **dict(TV, weight=weight), channel_axis=-1)


def _bilateral(x: np.ndarray, sigma_color: float = BILATERAL["sigma_color"],
               sigma_space: float = BILATERAL["sigma_space"]) -> np.ndarray:
    src = np.ascontiguousarray(x if x.shape[-1] == 3 else x[..., 0], dtype=np.float32)
    y = cv2.bilateralFilter(src, BILATERAL["d"], sigma_color, sigma_space)
    return y.reshape(x.shape)


def _wiener(x: np.ndarray, psf_sigma: float = WIENER["psf_sigma"], balance: float = WIENER["balance"]) -> np.ndarray:
    psf = gaussian_psf(psf_sigma)
    return _per_channel_padded(x, WIENER["pad"], lambda c: restoration.wiener(c, psf, balance, clip=True))


def _richardson_lucy(x: np.ndarray, psf_sigma: float = RICHARDSON_LUCY["psf_sigma"],
                     num_iter: int = RICHARDSON_LUCY["num_iter"]) -> np.ndarray:
    psf = gaussian_psf(psf_sigma)
    return _per_channel_padded(
        x, RICHARDSON_LUCY["pad"], lambda c: restoration.richardson_lucy(c, psf, num_iter=num_iter, clip=True))


def _biharmonic(x: np.ndarray) -> np.ndarray:
    mask = dropout_mask(x)
    if not mask.any():
        return x.copy()
    return restoration.inpaint_biharmonic(x, mask, channel_axis=-1)


def _tunable(d: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: d[k] for k in keys}


_MAP = dict(NOISE_MAP, blend="linear in log sigma between runs at map_levels (2nd..98th percentile, geometric)")
RESTORERS: dict[str, Restorer] = {
    r.name: r
    for r in (
        Restorer("nlmeans", dict(NLMEANS, h="h_factor * estimate_sigma(image)"), _nlmeans,
                 tunable=_tunable(NLMEANS, ["h_factor"])),
        Restorer("nlmeans_map", dict(NLMEANS, h="h_factor * sigma", sigma="noise map", levels=3, **_MAP),
                 _nlmeans_map, tunable=_tunable(NLMEANS, ["h_factor"]), label="nlmeans (noise map)"),
        Restorer("bm3d", dict(BM3D, sigma="estimate_sigma(image)"), _bm3d, slow=True,
                 requires="bm3d", extra="bm3d"),
        Restorer("bm3d_map", dict(BM3D, sigma="noise map", levels=3, **_MAP), _bm3d_map, slow=True,
                 requires="bm3d", extra="bm3d", label="bm3d (noise map)"),
        Restorer("tv", dict(TV, per_channel=True), _tv, tunable=_tunable(TV, ["weight"])),
        Restorer("bilateral", dict(BILATERAL, intensity_scale="[0, 1]", dtype="float32"), _bilateral,
                 tunable=_tunable(BILATERAL, ["sigma_color", "sigma_space"])),
        Restorer("wiener", dict(WIENER, per_channel=True, regulariser="laplacian"), _wiener,
                 tunable=_tunable(WIENER, ["psf_sigma", "balance"])),
        Restorer("richardson_lucy", dict(RICHARDSON_LUCY, per_channel=True), _richardson_lucy,
                 tunable=_tunable(RICHARDSON_LUCY, ["psf_sigma", "num_iter"])),
        Restorer("biharmonic", dict(BIHARMONIC), _biharmonic),
    )
}
if tuple(RESTORERS) != CLASSICAL:  # the params schema and this module must name the same set
    raise RuntimeError(f"RESTORERS {tuple(RESTORERS)} differ from params.CLASSICAL {CLASSICAL}")
if {n: tuple(r.tunable) for n, r in RESTORERS.items() if r.tunable} != CLASSICAL_TUNABLE:
    raise RuntimeError("RESTORERS' tunable settings differ from params.CLASSICAL_TUNABLE")


def restore_all(
    images: Any, names: Iterable[str] = CLASSICAL, progress: bool = True
) -> dict[str, np.ndarray]:
    """Run each named restorer on every image: ``{name: float64 (N, H, W, C)}``.

    ``images`` is ``(N, H, W, C)``, float in [0, 1] or uint8. Unknown names raise ``KeyError``
    and a restorer whose optional package is missing :class:`RestorerUnavailable`, before any
    work. A tqdm bar (stderr) counts images over all restorers.
    """
    x = as_float_images(images, "images")
    names = list(names)
    unknown = [n for n in names if n not in RESTORERS]
    if unknown:
        raise KeyError(f"unknown classical restorer(s) {unknown}; known: {list(RESTORERS)}")
    for name in names:
        why = RESTORERS[name].missing()
        if why is not None:
            raise RestorerUnavailable(f"{name}: {why}")
    out: dict[str, np.ndarray] = {}
    with tqdm(total=len(names) * x.shape[0], desc="classical", disable=not progress) as bar:
        for name in names:
            restorer = RESTORERS[name]
            res = np.empty_like(x)
            bar.set_postfix_str(name)
            for i in range(x.shape[0]):
                res[i] = restorer(x[i])
                bar.update(1)
            out[name] = res
    return out


# ------------------------------------------------------------- settings chosen on validation
def choose_settings(
    restorer: Restorer, grid: dict[str, list[float]], clean: np.ndarray, degraded: np.ndarray,
    bar: tqdm | None = None,
) -> tuple[Restorer, dict[str, Any]]:
    """The restorer with the combination of ``grid`` (``{setting: [values]}``, every
    combination) that gives the highest mean PSNR over the validation images ``clean`` /
    ``degraded`` (float ``(N, H, W, C)`` in [0, 1]); ties go to the first combination in grid
    order. Returns it and a record ``{"chosen", "val_psnr", "grid", "images"}``. Only the
    images given are read: the caller passes the validation split, never the test split."""
    from itertools import product

    keys = list(grid)
    best: tuple[float, dict[str, Any]] | None = None
    for combo in product(*(grid[k] for k in keys)):
        r = restorer.with_settings(**dict(zip(keys, combo)))
        score = float(np.mean([psnr(r(d), c) for d, c in zip(degraded, clean)]))
        if bar is not None:
            bar.update(len(clean))
        if best is None or score > best[0]:
            best = (score, {k: r.tunable[k] for k in keys})
    if best is None:
        return restorer, {"chosen": {}, "val_psnr": None, "grid": grid, "images": len(clean)}
    return (restorer.with_settings(**best[1]),
            {"chosen": best[1], "val_psnr": best[0], "grid": {k: list(v) for k, v in grid.items()},
             "images": len(clean)})


# ------------------------------------------------------------------------- the oracle
ORACLE = {"blur_levels": 4, "balances": (0.003, 0.01, 0.03, 0.1), "blur_strengths": (1.0, 3.5, 0.125)}


def true_sigmas(degraded: np.ndarray, clean: np.ndarray, noise_weight: np.ndarray,
                damaged: np.ndarray) -> tuple[float, float]:
    """The oracle's noise levels, measured (the prepared data stores the masks, not the sigmas):
    the camera noise = the RMS of degraded - clean over the pixels without any local damage
    (``damaged`` False; none: the wavelet estimate :func:`noise_sigma`), and the noisy regions'
    full level = the RMS over the pixels whose noise weight is >= 250/255 (fewer than 16 of those:
    > 127/255; none: the camera level). Both include the uint8 rounding and the clipping at 0/1."""
    r = degraded - clean
    calm = ~damaged
    cam = float(np.sqrt(np.mean(r[calm] ** 2))) if calm.any() else noise_sigma(degraded)
    core = noise_weight >= 250 / 255
    if core.sum() < 16:
        core = noise_weight > 127 / 255
    hi = float(np.sqrt(np.mean(r[core] ** 2))) if core.any() else cam
    return max(cam, 1e-3), max(hi, cam, 1e-3)


def _render_blur(clean: np.ndarray, weight: np.ndarray, strength: float, levels: int) -> np.ndarray:
    # the local_blur op's forward model: hat-weighted blend of Gaussian blurs at strength k/L
    pos = weight * levels
    out = clean * np.clip(1.0 - pos, 0.0, 1.0)[..., None]
    for k in range(1, levels + 1):
        hat = np.clip(1.0 - np.abs(pos - k), 0.0, 1.0)
        if hat.any():
            out += ndimage.gaussian_filter(clean, (strength * k / levels,) * 2 + (0,), mode="reflect") * hat[..., None]
    return out


def true_blur_strength(degraded: np.ndarray, clean: np.ndarray, blur_weight: np.ndarray) -> float | None:
    """The oracle's blur strength: the Gaussian sigma S (on a grid 1..3.5 step 0.125) whose
    rendering of the clean image, blurred at ``weight * S`` as ``local_blur`` does, is closest to
    the degraded image inside the blur mask (``None`` without blurred pixels)."""
    inside = blur_weight > 0
    if not inside.any():
        return None
    lo, hi, step = ORACLE["blur_strengths"]
    grid = np.arange(lo, hi + step / 2, step)
    err = [float(np.mean((_render_blur(clean, blur_weight, s, ORACLE["blur_levels"]) - degraded)[inside] ** 2))
           for s in grid]
    return float(grid[int(np.argmin(err))])


def oracle_restore(degraded: np.ndarray, clean: np.ndarray, mask: np.ndarray,
                   denoiser: str = "bm3d") -> tuple[np.ndarray, dict[str, Any]]:
    """The upper bound of the classical side for one image: told where the damage is and how
    strong it is (from the clean image and the true masks, which no competitor sees).

    1. Denoise: ``denoiser`` (``bm3d`` or ``nlmeans``, its default h) at the true camera level and
       at the true noisy-region level (:func:`true_sigmas`), blended per pixel (in log sigma) at the true level
       sqrt((w s_r)^2 + s_cam^2) (w: the noise mask's weight; the local_noise op scales its noise
       by w), as the noise-map rows blend at an estimated level.
    2. Deblur: Wiener deconvolution (Laplacian regulariser) of the denoised image with Gaussian
       PSFs at the true blur strength S (:func:`true_blur_strength`) times k/4, k = 1..4,
       blended per pixel by the blur mask's weight w at w S (the identity at w = 0), exactly as
       local_blur rendered the blur; the balance per image the best of 0.003..0.1 inside the
       blur mask against the clean image.

    ``mask``: uint8 ``(H, W, K)``, channels :data:`DAMAGE_KINDS`. Returns the image and what it
    was told."""
    from aerestore.damage import DAMAGE_KINDS

    w = np.asarray(mask, dtype=np.float64) / 255.0
    nw = w[..., DAMAGE_KINDS.index("noise")] if "noise" in DAMAGE_KINDS else np.zeros(degraded.shape[:2])
    bw = w[..., DAMAGE_KINDS.index("blur")] if "blur" in DAMAGE_KINDS else np.zeros(degraded.shape[:2])
    cam, hi = true_sigmas(degraded, clean, nw, w.max(-1) > 0)
    s_r = np.sqrt(max(hi * hi - cam * cam, 0.0))
    levels = np.array([cam]) if hi < 1.05 * cam else np.array([cam, hi])
    true_map = np.sqrt((nw * s_r) ** 2 + cam * cam)
    if denoiser == "bm3d":
        den = by_map(degraded, true_map, levels, _bm3d_at)
    elif denoiser == "nlmeans":
        den = by_map(degraded, true_map, levels, lambda y, s: _nlmeans_at(y, s, NLMEANS["h_factor"]))
    else:
        raise ValueError(f"oracle: denoiser must be bm3d or nlmeans, got {denoiser!r}")
    info: dict[str, Any] = {"sigma_camera": cam, "sigma_noise": hi, "blur_strength": None, "balance": None}
    strength = true_blur_strength(degraded, clean, bw)
    if strength is None:
        return np.clip(den, 0.0, 1.0), info
    n = ORACLE["blur_levels"]
    best = None
    inside = bw > 0
    for balance in ORACLE["balances"]:
        outs = [den] + [_wiener(den, strength * k / n, balance) for k in range(1, n + 1)]
        y = blend_by_map(bw * n, np.arange(n + 1, dtype=np.float64), outs)
        err = float(np.mean((y - clean)[inside] ** 2))
        if best is None or err < best[0]:
            best = (err, y, balance)
    info.update(blur_strength=strength, balance=best[2])
    return np.clip(best[1], 0.0, 1.0), info
