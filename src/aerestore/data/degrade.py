"""Degradations applied to the network's INPUT (the clean image stays the target).

:func:`degrade_image` applies the ops of ``prepare.degrade`` in order, each with
probability ``op.prob``. Every "number or ``[lo, hi]``" param is drawn per image:
floats uniformly in ``[lo, hi]``, integers uniformly in ``{lo, ..., hi}``.

Conventions
-----------
* Images are ``uint8`` arrays ``(H, W, C)``, ``C`` = 1 or 3 (RGB). Internally every op
  works on ``float32`` in the 0..255 scale; values are clipped to ``[0, 255]`` after each
  op (a sensor saturates) and rounded to ``uint8`` once, at the end. JPEG is the only op
  that quantises in between (the codec needs 8-bit input).
* Borders: every spatial filter reflects the image without repeating the edge pixel
  (OpenCV ``BORDER_REFLECT_101``).
* Randomness: each op of the list gets its own child generator
  (``rng.spawn(len(ops))``), so switching one op on or off, or changing its
  probability, does not change what the other ops draw.
* The returned mask has one channel per kind of local damage
  (:data:`aerestore.damage.DAMAGE_KINDS`: ``blur``, ``noise``), 0..255: channel
  ``blur`` is the maximum, over the ``local_blur`` ops that were applied, of the weight
  ``w(x)`` in ``[0, 1]`` with which the blurred copies were blended in at pixel ``x``;
  channel ``noise`` the same for ``local_noise`` (the noise amplitude's share of its
  peak). All zero where no local op touched the pixel ("clean", though a global op such
  as ``gaussian_noise`` may still have).

Whose code
----------
The uniform ops that albumentations 2.0.8 has are its transforms, as the bottleneck study
(004) made its distortions: "we added controlled distortions using the Albumentations [1]
library". ``salt_pepper`` (``SaltAndPepper``, channel-wise), ``coarse_dropout``
(``CoarseDropout``) and ``grayscale`` (``ToGray``) always are; ``gaussian_noise`` is
``GaussNoise`` with ``impl: albumentations`` (the animal presets). Each runs in
albumentations' float convention (0..1), seeded from the op's child generator
(:func:`albumentations_op`). Our own code stays for what albumentations lacks: the local,
masked damage (``local_blur``, ``local_noise``), the spatially uniform blurs with our kernels
and OpenCV's bilateral filter and JPEG codec.

Why ``gaussian_noise`` keeps our NumPy draw by default: it is the project's default
damage (params.yaml), not a study's, and its prepared images must stay byte-identical.
``GaussNoise`` cannot reproduce it: it draws the std from Python's ``random`` and the noise
with OpenCV's ``cv2.randn`` in the 0..1 scale, OpenCV's generator seeded with one of 2**16
values drawn from its NumPy generator, while ours draws the std and float32
``standard_normal`` noise from the op's NumPy generator in the 0..255 scale: the same seed
gives other noise (``tests/test_degrade.py`` pins the default's hash).
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import cv2
import numpy as np

from aerestore.damage import DAMAGE_KINDS
from aerestore.params import (
    BilateralOp,
    CoarseDropoutOp,
    DefocusOp,
    GaussianBlurOp,
    GaussianNoiseOp,
    GrayscaleOp,
    JpegOp,
    LocalBlurOp,
    LocalNoiseOp,
    MotionBlurOp,
    SaltPepperOp,
    as_range,
)

BORDER = cv2.BORDER_REFLECT_101
# ITU-R BT.601 luma weights (the ones Pillow's "L" mode and OpenCV's RGB2GRAY use).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
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


# ------------------------------------------------------------ albumentations
def albumentations_op(transform: Any, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``transform`` (an albumentations 2.0.8 transform built with ``p=1``: ``op.prob`` is
    decided by :func:`degrade_image`) applied to a float32 0..255 image.

    It runs on ``img / 255`` (albumentations' float images are 0..1; float keeps the
    pipeline's one rounding, at the end) and is seeded with ``set_random_seed`` (its NumPy
    and Python generators) from a number drawn from ``rng``, the op's own child generator:
    the same generator gives the same output, and the op stays independent of the others.
    """
    transform.set_random_seed(int(rng.integers(2**32)))
    out = transform(image=img / np.float32(255.0))["image"]
    return np.asarray(out, np.float32).reshape(img.shape) * np.float32(255.0)


def _albumentations():
    # imported here, not at module level (as data/augment.py): it pulls in torch, which the
    # default damage does not need
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def salt_pepper(img: np.ndarray, op: SaltPepperOp, rng: np.random.Generator) -> np.ndarray:
    """Channel-wise salt and pepper, the bottleneck study's "Channel-wise salt and pepper
    noise" (section 3.1.3), with albumentations' ``SaltAndPepper``.

    ``SaltAndPepper`` sets all channels of a hit pixel (one mask for the channels), so it is
    given the image as ``H x (W C) x 1``: every channel value is a pixel of its own, and a
    hit sets one channel of a pixel to 255 (salt) or 0 (pepper). ``amount`` (drawn per
    image) is the share of the ``H W C`` values hit, exactly ``floor(H W C amount)`` of them
    (drawn without replacement), ``salt_ratio`` the share of those that are salt.
    """
    h, w, c = img.shape
    transform = _albumentations().SaltAndPepper(
        amount=as_range(op.amount), salt_vs_pepper=(op.salt_ratio, op.salt_ratio), p=1.0)
    return albumentations_op(transform, img.reshape(h, w * c, 1), rng).reshape(h, w, c)


def coarse_dropout(img: np.ndarray, op: CoarseDropoutOp, rng: np.random.Generator) -> np.ndarray:
    """albumentations' ``CoarseDropout``: ``holes`` (drawn per image) holes filled with
    ``fill``, each ``floor(size * H)`` high and ``floor(size * W)`` wide at a uniform
    position (holes may overlap). With a fixed ``size`` the holes are squares on a square
    image (the study's "three 12x12 black squares": 3 holes of 0.1875 at 64 px); with a
    ``[lo, hi]`` range, albumentations draws each hole's height and width apart.
    """
    lo, hi = as_range(op.holes)
    transform = _albumentations().CoarseDropout(
        num_holes_range=(int(lo), int(hi)), hole_height_range=as_range(op.size),
        hole_width_range=as_range(op.size), fill=op.fill / 255.0, p=1.0)
    return albumentations_op(transform, img, rng)


# ---------------------------------------------------------------- the ops
def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip at ``quality`` (1..100) with OpenCV's codec (4:2:0 chroma)."""
    channels = img.shape[2]
    u8 = _to_uint8(img)
    src = cv2.cvtColor(u8, cv2.COLOR_RGB2BGR) if channels == 3 else u8[..., 0]
    ok, buf = cv2.imencode(".jpg", src, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the image")
    if channels == 3:
        dec = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    else:
        dec = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return _hwc(dec, channels).astype(np.float32)


def apply_op(
    img: np.ndarray, op: object, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply one op (unconditionally) to a float32 HWC image in the 0..255 scale.

    Returns ``(image, weights)``; ``weights`` is the local-blur map or None
    (``local_noise`` is applied by :func:`degrade_image`, which knows the other masks).
    """
    h, w, c = img.shape
    if isinstance(op, GaussianBlurOp):
        return gaussian_blur(img, draw_float(rng, op.sigma)), None
    if isinstance(op, MotionBlurOp):
        length = draw_int(rng, op.length)
        angle = draw_float(rng, op.angle)
        return filter_image(img, motion_kernel(length, angle)), None
    if isinstance(op, DefocusOp):
        return filter_image(img, disc_kernel(draw_float(rng, op.radius))), None
    if isinstance(op, BilateralOp):
        out = cv2.bilateralFilter(img, op.diameter, op.sigma_color, op.sigma_space, borderType=BORDER)
        return _hwc(out, c), None
    if isinstance(op, GaussianNoiseOp):
        if op.impl == "albumentations":  # per channel, std drawn per image (module docstring)
            transform = _albumentations().GaussNoise(std_range=as_range(op.std), per_channel=True, p=1.0)
            return albumentations_op(transform, img, rng), None
        std = draw_float(rng, op.std) * 255.0
        noise = rng.standard_normal((h, w, c), dtype=np.float32) * np.float32(std)
        return img + noise, None
    if isinstance(op, SaltPepperOp):
        return salt_pepper(img, op, rng), None
    if isinstance(op, CoarseDropoutOp):
        return coarse_dropout(img, op, rng), None
    if isinstance(op, GrayscaleOp):
        if c == 1:
            return img, None  # already single channel: nothing to remove
        # ToGray's weighted_average is OpenCV's RGB2GRAY: the BT.601 weights of LUMA
        transform = _albumentations().ToGray(num_output_channels=3, method="weighted_average", p=1.0)
        return albumentations_op(transform, img, rng), None
    if isinstance(op, JpegOp):
        return jpeg(img, draw_int(rng, op.quality)), None
    if isinstance(op, LocalBlurOp):
        return local_blur(img, op, rng)
    if isinstance(op, LocalNoiseOp):
        return local_noise(img, op, rng)
    raise TypeError(f"unknown degradation op {op!r}")


def degrade_image(
    clean: np.ndarray, ops: Sequence[object], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Degrade ``clean`` (uint8 ``H x W x C``, C = 1 or 3) by ``ops`` in order.

    Op ``i`` runs with probability ``ops[i].prob`` and draws from its own child of
    ``rng``. Returns ``(degraded uint8 H x W x C, mask uint8 H x W x K)``, ``K =
    len(DAMAGE_KINDS)``: channel ``k`` is ``round(255 * max_i w_i(x))`` over the applied
    local ops of kind ``k`` (see :func:`local_blur`, :func:`local_noise`). An exclusive
    ``local_noise`` only reaches pixels that no earlier local op damaged (its weight is
    multiplied by ``1 -`` the largest weight so far). ``clean`` is never modified.
    """
    if clean.dtype != np.uint8 or clean.ndim != 3 or clean.shape[2] not in (1, 3):
        raise ValueError(f"expected a uint8 (H, W, 1|3) image, got {clean.dtype} {clean.shape}")
    h, w, _ = clean.shape
    img = clean.astype(np.float32)
    weights = np.zeros((len(DAMAGE_KINDS), h, w), np.float32)
    for op, op_rng in zip(ops, rng.spawn(len(ops))):
        if op_rng.random() >= op.prob:
            continue
        if isinstance(op, LocalNoiseOp):
            free = 1.0 - weights.max(0) if op.exclusive else None
            img, op_weights = local_noise(img, op, op_rng, free)
        else:
            img, op_weights = apply_op(img, op, op_rng)
        img = np.clip(img, 0.0, 255.0).astype(np.float32, copy=False)
        if op_weights is not None:
            kind = DAMAGE_KINDS.index("noise" if isinstance(op, LocalNoiseOp) else "blur")
            np.maximum(weights[kind], op_weights, out=weights[kind])
    mask = np.clip(np.rint(weights * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return _to_uint8(img), np.ascontiguousarray(mask)


def degrader(ops: Sequence[object]):
    """``(clean, rng) -> (degraded, mask)``: :func:`degrade_image` with ``ops`` (e.g.
    ``prepare.degrade``), as :meth:`aerestore.cropdata.ImageData.fresh` takes it."""
    if not ops:
        raise ValueError("fresh damage needs degradation ops: prepare.degrade is empty")
    ops = tuple(ops)

    def degrade(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return degrade_image(clean, ops, rng)

    return degrade
