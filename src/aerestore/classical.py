"""Classical (non-learned) restorers, the baselines of the ``evaluate`` stage.

Each restorer takes one float image ``(H, W, C)`` in [0, 1] (C = 1 or 3) and returns a float64
image of the same shape, clipped to [0, 1]. The settings are fixed (stated in ``settings`` and in
the README), the same for every image and every degradation, and deterministic.

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
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from skimage import restoration
from tqdm import tqdm

from aerestore.metrics import as_float_images
from aerestore.params import CLASSICAL

__all__ = [
    "Restorer",
    "RestorerUnavailable",
    "RESTORERS",
    "restore_all",
    "gaussian_psf",
    "dropout_mask",
    "noise_sigma",
]


class RestorerUnavailable(RuntimeError):
    """A restorer's optional package is not installed (see :meth:`Restorer.missing`)."""


@dataclass(frozen=True)
class Restorer:
    """A named classical restorer; calling it checks the input and clips the output."""

    name: str
    settings: dict[str, Any]
    fn: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    # slow: the evaluate stage runs it on the fixed subset of test images only
    # (evaluate.anchor_images) and compares every row on that subset
    slow: bool = False
    # the optional package it needs (imported lazily) and the pyproject extra that installs it
    requires: str | None = None
    extra: str | None = None

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
        y = np.asarray(self.fn(x), dtype=np.float64)
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


def _nlmeans(x: np.ndarray) -> np.ndarray:
    s = NLMEANS
    sigma = noise_sigma(x)
    return restoration.denoise_nl_means(
        x,
        h=max(s["h_factor"] * sigma, s["h_min"]),
        sigma=sigma,
        fast_mode=s["fast_mode"],
        patch_size=s["patch_size"],
        patch_distance=s["patch_distance"],
        channel_axis=-1,
    )


def _bm3d(x: np.ndarray) -> np.ndarray:
    import bm3d  # optional (non-commercial licence): imported only when used

    if min(x.shape[0], x.shape[1]) < BM3D_MIN_SIDE:
        raise ValueError(f"bm3d: needs images of at least {BM3D_MIN_SIDE}x{BM3D_MIN_SIDE} pixels, "
                         f"got {x.shape[0]}x{x.shape[1]} (8x8 crashes the package's C library)")
    if float(x.max() - x.min()) <= _BM3D_RANGE_MIN:
        return x.copy()  # a flat image: nothing to denoise (and the package returns NaN or fails)
    s = BM3D
    sigma = max(noise_sigma(x), s["sigma_min"])
    profile = bm3d.BM3DProfile()  # = profile "np"
    profile.num_threads = s["num_threads"]
    if x.shape[-1] == 1:
        return bm3d.bm3d(x[..., 0], sigma, profile=profile)
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


def _tv(x: np.ndarray) -> np.ndarray:
    return restoration.denoise_tv_chambolle(x, **TV, channel_axis=-1)


def _bilateral(x: np.ndarray) -> np.ndarray:
    s = BILATERAL
    src = np.ascontiguousarray(x if x.shape[-1] == 3 else x[..., 0], dtype=np.float32)
    y = cv2.bilateralFilter(src, s["d"], s["sigma_color"], s["sigma_space"])
    return y.reshape(x.shape)


def _wiener(x: np.ndarray) -> np.ndarray:
    psf = gaussian_psf(WIENER["psf_sigma"])
    return _per_channel_padded(
        x, WIENER["pad"], lambda c: restoration.wiener(c, psf, WIENER["balance"], clip=True)
    )


def _richardson_lucy(x: np.ndarray) -> np.ndarray:
    psf = gaussian_psf(RICHARDSON_LUCY["psf_sigma"])
    return _per_channel_padded(
        x,
        RICHARDSON_LUCY["pad"],
        lambda c: restoration.richardson_lucy(c, psf, num_iter=RICHARDSON_LUCY["num_iter"], clip=True),
    )


def _biharmonic(x: np.ndarray) -> np.ndarray:
    mask = dropout_mask(x)
    if not mask.any():
        return x.copy()
    return restoration.inpaint_biharmonic(x, mask, channel_axis=-1)


RESTORERS: dict[str, Restorer] = {
    r.name: r
    for r in (
        Restorer("nlmeans", dict(NLMEANS, h="h_factor * estimate_sigma(image)"), _nlmeans),
        Restorer("bm3d", dict(BM3D, sigma="estimate_sigma(image)"), _bm3d, slow=True,
                 requires="bm3d", extra="bm3d"),
        Restorer("tv", dict(TV, per_channel=True), _tv),
        Restorer("bilateral", dict(BILATERAL, intensity_scale="[0, 1]", dtype="float32"), _bilateral),
        Restorer("wiener", dict(WIENER, per_channel=True, regulariser="laplacian"), _wiener),
        Restorer("richardson_lucy", dict(RICHARDSON_LUCY, per_channel=True), _richardson_lucy),
        Restorer("biharmonic", dict(BIHARMONIC), _biharmonic),
    )
}
if tuple(RESTORERS) != CLASSICAL:  # the params schema and this module must name the same set
    raise RuntimeError(f"RESTORERS {tuple(RESTORERS)} differ from params.CLASSICAL {CLASSICAL}")


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
