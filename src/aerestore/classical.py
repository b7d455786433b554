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
:class:`RestorerUnavailable`.

The methods themselves are in :mod:`aerestore.classical_methods`, the noise estimates and the
blending by a noise map in :mod:`aerestore.noisemap`. The slow rows (BM3D) run their images
(:meth:`Restorer.batch`) and their noise-map levels in worker processes
(:mod:`aerestore.workers`), with the same results as one after the other.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from aerestore.classical_methods import (BIHARMONIC, BILATERAL, BM3D, NLMEANS, RICHARDSON_LUCY, TV, WIENER,
                                         _bilateral, _biharmonic, _bm3d, _bm3d_at, _bm3d_map, _nlmeans,
                                         _nlmeans_at, _nlmeans_map, _richardson_lucy, _tv, _wiener)
from aerestore.metrics import as_float_images, psnr
from aerestore.noisemap import NOISE_MAP, blend_by_map, by_map, noise_sigma
from aerestore.params import CLASSICAL, CLASSICAL_TUNABLE
from aerestore.workers import run_all

__all__ = [
    "Restorer",
    "RestorerUnavailable",
    "RESTORERS",
    "restore_all",
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

    def batch(self, images: Any, workers: int | None = None) -> np.ndarray:
        """This restorer on each image of ``images`` (``(N, H, W, C)``), stacked: for a slow
        restorer in ``workers`` processes (:func:`aerestore.workers.run_all`; None: the current
        thread setting), else here; the same numbers as calling it on each image in turn."""
        return np.stack(run_all(self, [(img,) for img in images], workers if self.slow else 1))


# --------------------------------------------------------------------------- the table
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
    images: Any, names: Iterable[str] = CLASSICAL, progress: bool = True, workers: int | None = None
) -> dict[str, np.ndarray]:
    """Run each named restorer on every image: ``{name: float64 (N, H, W, C)}``.

    ``images`` is ``(N, H, W, C)``, float in [0, 1] or uint8. Unknown names raise ``KeyError``
    and a restorer whose optional package is missing :class:`RestorerUnavailable`, before any
    work. A tqdm bar (stderr) counts images over all restorers. The slow restorers run in
    ``workers`` processes (:meth:`Restorer.batch`).
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
            if restorer.slow and x.shape[0] > 1:
                res[:] = restorer.batch(x, workers)
                bar.update(x.shape[0])
            else:
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
                   denoiser: str = "bm3d", workers: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
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
    was told. The BM3D runs at the two levels go to ``workers`` processes
    (:func:`aerestore.workers.run_all`; None: the current thread setting)."""
    from aerestore.damage import DAMAGE_KINDS

    w = np.asarray(mask, dtype=np.float64) / 255.0
    nw = w[..., DAMAGE_KINDS.index("noise")] if "noise" in DAMAGE_KINDS else np.zeros(degraded.shape[:2])
    bw = w[..., DAMAGE_KINDS.index("blur")] if "blur" in DAMAGE_KINDS else np.zeros(degraded.shape[:2])
    cam, hi = true_sigmas(degraded, clean, nw, w.max(-1) > 0)
    s_r = np.sqrt(max(hi * hi - cam * cam, 0.0))
    levels = np.array([cam]) if hi < 1.05 * cam else np.array([cam, hi])
    true_map = np.sqrt((nw * s_r) ** 2 + cam * cam)
    if denoiser == "bm3d":
        den = by_map(degraded, true_map, levels, _bm3d_at, workers)
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
