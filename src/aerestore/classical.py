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
                   averaged over channels), ``h = 0.6 sigma`` (floored at 1e-3), ``sigma``
                   passed to the fast mode; colour patches compared jointly.
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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from skimage import restoration
from tqdm import tqdm

from aerestore.metrics import as_float_images
from aerestore.params import CLASSICAL

__all__ = ["Restorer", "RESTORERS", "restore_all", "gaussian_psf", "dropout_mask"]


@dataclass(frozen=True)
class Restorer:
    """A named classical restorer; calling it checks the input and clips the output."""

    name: str
    settings: dict[str, Any]
    fn: Callable[[np.ndarray], np.ndarray] = field(repr=False)

    def __call__(self, image: Any) -> np.ndarray:
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
TV = {"weight": 0.1, "eps": 2e-4, "max_num_iter": 200}
BILATERAL = {"d": 5, "sigma_color": 0.2, "sigma_space": 2.0}
PSF_SIGMA = 1.0
PAD = 12
WIENER = {"psf_sigma": PSF_SIGMA, "balance": 0.01, "pad": PAD}
RICHARDSON_LUCY = {"psf_sigma": PSF_SIGMA, "num_iter": 10, "pad": PAD}
BIHARMONIC = {"mask": "pixels equal to 0 in every channel"}


def _nlmeans(x: np.ndarray) -> np.ndarray:
    s = NLMEANS
    sigma = float(restoration.estimate_sigma(x, channel_axis=-1, average_sigmas=True))
    return restoration.denoise_nl_means(
        x,
        h=max(s["h_factor"] * sigma, s["h_min"]),
        sigma=sigma,
        fast_mode=s["fast_mode"],
        patch_size=s["patch_size"],
        patch_distance=s["patch_distance"],
        channel_axis=-1,
    )


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
    before any work. A tqdm bar (stderr) counts images over all restorers.
    """
    x = as_float_images(images, "images")
    names = list(names)
    unknown = [n for n in names if n not in RESTORERS]
    if unknown:
        raise KeyError(f"unknown classical restorer(s) {unknown}; known: {list(RESTORERS)}")
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
