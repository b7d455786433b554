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

The draws, the blur kernels and filters and the local ops are in :mod:`aerestore.data.localops`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import cv2
import numpy as np

from aerestore.damage import DAMAGE_KINDS
from aerestore.data.localops import (BORDER, _hwc, disc_kernel, draw_float, draw_int, filter_image, gaussian_blur,
                                     local_blur, local_noise, motion_kernel)
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

# ITU-R BT.601 luma weights (the ones Pillow's "L" mode and OpenCV's RGB2GRAY use).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


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
    clean: np.ndarray, ops: Sequence[object], rng: np.random.Generator, *, quantise: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Degrade ``clean`` (uint8 ``H x W x C``, C = 1 or 3) by ``ops`` in order.

    Op ``i`` runs with probability ``ops[i].prob`` and draws from its own child of
    ``rng``. Returns ``(degraded uint8 H x W x C, mask uint8 H x W x K)``, ``K =
    len(DAMAGE_KINDS)``: channel ``k`` is ``round(255 * max_i w_i(x))`` over the applied
    local ops of kind ``k`` (see :func:`~aerestore.data.localops.local_blur`, :func:`~aerestore.data.localops.local_noise`). An exclusive
    ``local_noise`` only reaches pixels that no earlier local op damaged (its weight is
    multiplied by ``1 -`` the largest weight so far). ``clean`` is never modified.

    ``quantise=False`` (``train.crops.float_damage``) returns the degraded image as float32
    in the 0..255 scale, neither clipped after each op nor rounded: ``clean + N(0, s^2)`` as
    the denoising literature's synthetic noise (and the CBSD68 protocol, docs/cbsd68.md).
    The draws are the same as with ``quantise=True``, whose output is this one clipped and
    rounded wherever no later op depends on the clipping. JPEG still quantises (its codec
    takes 8 bits).
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
        if quantise:
            img = np.clip(img, 0.0, 255.0)
        img = img.astype(np.float32, copy=False)
        if op_weights is not None:
            kind = DAMAGE_KINDS.index("noise" if isinstance(op, LocalNoiseOp) else "blur")
            np.maximum(weights[kind], op_weights, out=weights[kind])
    mask = np.clip(np.rint(weights * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return (_to_uint8(img) if quantise else np.ascontiguousarray(img)), np.ascontiguousarray(mask)


def degrader(ops: Sequence[object], *, quantise: bool = True):
    """``(clean, rng) -> (degraded, mask)``: :func:`degrade_image` with ``ops`` (e.g.
    ``prepare.degrade``) and ``quantise``, as :meth:`aerestore.tracks.images.dataset.ImageData.fresh`
    takes it."""
    if not ops:
        raise ValueError("fresh damage needs degradation ops: prepare.degrade is empty")
    ops = tuple(ops)

    def degrade(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return degrade_image(clean, ops, rng, quantise=quantise)

    return degrade


def crop_damage(train, val, degrade_ops: Sequence[object], seed: int, *, fresh: bool, float_damage: bool):
    """The training and validation images (:class:`aerestore.tracks.images.dataset.ImageData`)
    as ``train.crops`` asks: with ``fresh`` (``train.crops.fresh_damage``) the training crops
    are degraded anew at every draw by ``degrade_ops`` (``prepare.degrade``); with
    ``float_damage`` (``train.crops.float_damage``) that damage stays float and unclipped, and
    the validation images are degraded once in float with ``seed`` as well, so that the best
    weights are chosen on the damage they were trained on (the prepared copies are 8-bit).
    Otherwise both come back unchanged. One function for ``train@<arch>`` and
    ``decoders@<arch>``, so that the shared decoder, the per-cluster decoders and the control
    see the same stream. (The flags come as arguments, not the params object, so that each
    stage's reads of ``train.crops`` stay where tests/test_stage_deps.py looks for them.)"""
    if not fresh:
        return train, val
    degrade = degrader(degrade_ops, quantise=not float_damage)
    return train.fresh(degrade), (val.degraded_once(degrade, seed) if float_damage else val)
