"""The classical restorers' methods, one image at a time, and their default settings: the
functions behind :data:`aerestore.classical.RESTORERS` (the table of settings and the
references are in that module's docstring).

``bm3d_rgb`` itself divides by the range of each opponent colour channel, which is 0 for a grey
image stored as RGB (R = G = B: the two chroma channels are constant) and gives NaN; the
transform is therefore done here (:func:`_bm3d_at`), the same as the package's except that a
channel with a range below 1e-6 is only shifted to 0, not scaled (identical output otherwise).
The noise-map rows run BM3D at their levels in worker processes (:mod:`aerestore.workers`:
the current thread setting), with the same results as one after the other.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from skimage import restoration

from aerestore.noisemap import by_map, map_levels, noise_map, noise_sigma

__all__ = ["gaussian_psf", "dropout_mask", "NLMEANS", "BM3D", "BM3D_MIN_SIDE", "TV", "BILATERAL", "WIENER",
           "RICHARDSON_LUCY", "MAP_LEVELS", "BIHARMONIC"]



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
    return by_map(x, m, map_levels(m, MAP_LEVELS["bm3d_map"]), _bm3d_at, workers=None)


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
