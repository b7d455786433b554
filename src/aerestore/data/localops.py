"""The building blocks of :mod:`aerestore.data.degrade`: the per-image draws of a "number or
``[lo, hi]``" param, the blur kernels and filters (borders reflect without repeating the edge
pixel: OpenCV ``BORDER_REFLECT_101``), and the local, masked damage (``local_blur``,
``local_noise``) with its weight maps. The conventions are that module's."""

from __future__ import annotations

import math

import cv2
import numpy as np

from aerestore.params import LocalBlurOp, LocalNoiseOp, as_range

BORDER = cv2.BORDER_REFLECT_101
# Blurred copies blended by the local-blur weight map (besides the unblurred image).
LOCAL_BLUR_LEVELS = 4


# ------------------------------------------------------------------- draws
def draw_float(rng: np.random.Generator, value: float | list[float]) -> float:
    """A float drawn uniformly in ``as_range(value)`` (a fixed value if lo == hi)."""
    lo, hi = as_range(value)
    return lo if lo == hi else float(rng.uniform(lo, hi))


def draw_int(rng: np.random.Generator, value: int | list[int]) -> int:
    """An integer drawn uniformly in ``{lo, ..., hi}`` (inclusive)."""
    lo, hi = as_range(value)
    return int(lo) if lo == hi else int(rng.integers(int(lo), int(hi) + 1))


# ----------------------------------------------------------------- kernels
def motion_kernel(length: float, angle: float) -> np.ndarray:
    """Normalised linear motion-blur kernel: a segment of ``length`` px at ``angle`` deg.

    The segment ``[-length/2, length/2]`` is drawn on the centre row of an odd
    ``k x k`` kernel (``k = 2 ceil(length/2) + 1``) with each pixel weighted by its
    overlap with the segment (so fractional and even lengths stay centred), then
    rotated by ``angle`` degrees counter-clockwise (``cv2.warpAffine``, bilinear)
    and normalised to sum 1. ``length <= 1`` is the identity.
    """
    if length <= 1.0:
        return np.ones((1, 1), np.float32)
    half = length / 2.0
    r = int(math.ceil(half))
    k = 2 * r + 1
    x = np.arange(k, dtype=np.float64) - r
    row = np.clip(np.minimum(x + 0.5, half) - np.maximum(x - 0.5, -half), 0.0, None)
    kernel = np.zeros((k, k), np.float32)
    kernel[r] = row
    rot = cv2.getRotationMatrix2D((float(r), float(r)), float(angle), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (k, k), flags=cv2.INTER_LINEAR)
    total = float(kernel.sum())
    if total <= 0:  # cannot happen for length > 1, kept as a guard
        return np.ones((1, 1), np.float32)
    return kernel / np.float32(total)


def disc_kernel(radius: float) -> np.ndarray:
    """Normalised anti-aliased disc (defocus / pill-box) kernel of ``radius`` px.

    Weight of the pixel at distance ``d`` from the centre: ``clip(radius + 0.5 - d, 0, 1)``
    (a one-pixel linear ramp approximating the pixel's coverage), then normalised.
    """
    r = int(math.ceil(radius + 0.5))
    y, x = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    kernel = np.clip(np.float32(radius) + 0.5 - np.hypot(x, y), 0.0, 1.0)
    return (kernel / kernel.sum()).astype(np.float32)


def _hwc(out: np.ndarray, channels: int) -> np.ndarray:
    # OpenCV drops a single channel axis; put it back.
    return out.reshape(out.shape[0], out.shape[1], channels)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma`` px (float32 HWC in, HWC out)."""
    if sigma <= 0:
        return img
    out = cv2.GaussianBlur(img, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma), borderType=BORDER)
    return _hwc(out, img.shape[2])


def filter_image(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate every channel with ``kernel`` (all kernels here are point-symmetric,
    so this is also the convolution)."""
    if kernel.shape == (1, 1):
        return img
    return _hwc(cv2.filter2D(img, -1, kernel, borderType=BORDER), img.shape[2])


def blur(img: np.ndarray, kind: str, strength: float, angle: float = 0.0) -> np.ndarray:
    """Blur of one of the local-blur kinds at ``strength``: gaussian sigma = strength;
    motion length = 4 * strength at ``angle``; defocus disc radius = strength."""
    if kind == "gaussian":
        return gaussian_blur(img, strength)
    if kind == "motion":
        return filter_image(img, motion_kernel(4.0 * strength, angle))
    if kind == "defocus":
        return filter_image(img, disc_kernel(strength))
    raise ValueError(f"unknown blur kernel {kind!r}")


# --------------------------------------------------------------- local blur
def blob_weights(
    height: int,
    width: int,
    rng: np.random.Generator,
    regions: int | list[int],
    radius: float | list[float],
    feather: float,
) -> np.ndarray:
    """Weight map in ``[0, 1]`` (float32, ``H x W``) of ``regions`` soft round blobs.

    Each blob has its centre uniform in the image and radius ``R = r * min(H, W)``
    with ``r`` drawn from ``radius``. With ``d`` = distance to the centre / ``R`` and
    ``t = clip((1 - d) / feather, 0, 1)``, the blob's weight is the smoothstep
    ``t^2 (3 - 2t)``: 1 inside ``d <= 1 - feather``, fading smoothly to 0 at ``d = 1``
    (``feather = 0``: a hard-edged disc; ``feather = 1``: the weight rises all the way
    to the centre). Overlapping blobs combine by maximum.
    """
    n = draw_int(rng, regions)
    weights = np.zeros((height, width), np.float32)
    if n <= 0:
        return weights
    yy = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    xx = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    side = float(min(height, width))
    for _ in range(n):
        cy = float(rng.uniform(0.0, height))
        cx = float(rng.uniform(0.0, width))
        r = max(draw_float(rng, radius) * side, 1e-6)
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / np.float32(r)
        if feather > 0:
            t = np.clip((1.0 - d) / np.float32(feather), 0.0, 1.0)
            w = t * t * (3.0 - 2.0 * t)
        else:
            w = (d <= 1.0).astype(np.float32)
        np.maximum(weights, w, out=weights)
    return weights


def local_blur(
    img: np.ndarray, op: LocalBlurOp, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Blur only soft-edged regions, with a strength that rises towards their centres.

    ``w(x)`` = :func:`blob_weights`; ``S`` = strength drawn from ``op.strength``. The
    blur strength wanted at ``x`` is ``w(x) * S``. It is rendered by blending the image
    ``B_0`` and ``L`` = 4 blurred copies ``B_k`` at strengths ``S k / L`` with hat
    weights: ``out(x) = sum_k max(0, 1 - |L w(x) - k|) B_k(x)`` — a piecewise-linear
    interpolation of the blur stack, the usual way to render a spatially varying blur
    (e.g. depth-of-field) with shift-invariant filters. ``w`` is first rounded to
    multiples of 1/255, so the saved mask is exactly the weight used; where ``w = 0``
    the pixel is untouched. Returns ``(image, w)``.
    """
    h, w_, _ = img.shape
    weights = blob_weights(h, w_, rng, op.regions, op.radius, op.feather)
    # quantise to the mask's 1/255 steps, so the saved mask is exactly the blend weight
    # (mask 0 <=> pixel untouched by this op)
    weights = np.rint(weights * np.float32(255.0)) / np.float32(255.0)
    strength = draw_float(rng, op.strength)
    angle = float(rng.uniform(0.0, 180.0))
    if not weights.any():
        return img, weights
    pos = weights * np.float32(LOCAL_BLUR_LEVELS)
    out = img * np.clip(1.0 - pos, 0.0, 1.0)[..., None]
    for k in range(1, LOCAL_BLUR_LEVELS + 1):
        hat = np.clip(1.0 - np.abs(pos - np.float32(k)), 0.0, 1.0)
        if not hat.any():
            continue
        blurred = blur(img, op.kernel, strength * k / LOCAL_BLUR_LEVELS, angle)
        out += blurred * hat[..., None]
    return out, weights


def local_noise(
    img: np.ndarray, op: LocalNoiseOp, rng: np.random.Generator, free: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian noise only in soft-edged regions: ``out = img + w(x) * S * 255 * n(x)``,
    ``n ~ N(0, 1)`` per pixel and channel, ``S`` drawn from ``op.std``, ``w`` =
    :func:`blob_weights` rounded to 1/255 steps (so the saved mask is exactly the weight).

    ``free`` (``H x W`` in [0, 1]), when given, multiplies ``w``: with ``op.exclusive`` the
    caller passes ``1 - `` the other local masks, so noisy regions keep off blurred ones
    and every pixel has one kind of damage. Returns ``(image, w)``.
    """
    h, w_, c = img.shape
    weights = blob_weights(h, w_, rng, op.regions, op.radius, op.feather)
    if free is not None:
        weights = weights * free
    weights = np.rint(weights * np.float32(255.0)) / np.float32(255.0)
    std = draw_float(rng, op.std) * 255.0
    noise = rng.standard_normal((h, w_, c), dtype=np.float32)
    if not weights.any() or std <= 0:
        return img, weights
    return img + noise * (weights * np.float32(std))[..., None], weights
