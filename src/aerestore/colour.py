"""Colour: grey conversion (the colourisation task's input), a colourfulness measure and a
colour-cast measure.

* :func:`to_grey` is the ``grayscale`` degradation op's conversion (ITU-R BT.601 luma in
  all three channels), so what ``aerestore colourise`` feeds a model is what the model
  was trained on.
* :func:`colourfulness` is Hasler & Süsstrunk's measure ("Measuring colourfulness in
  natural images", SPIE Human Vision and Electronic Imaging VIII, 2003, eq. 2 / M^(3)):
  with ``rg = R - G`` and ``yb = (R + G) / 2 - B`` over the pixels of an image (0..255
  units), ``M = sqrt(sd_rg^2 + sd_yb^2) + 0.3 * sqrt(mean_rg^2 + mean_yb^2)``. 0 for a
  grey image; the paper's scale puts "not colourful" at 0, "moderately" at about 33,
  "highly" at about 59 and "extremely" above 82. A colourisation that outputs grey-ish
  images scores low on it even when its PSNR is good, which is why it is reported beside
  PSNR/SSIM.
* :func:`colour_bias` is the colour cast of a restored image against its clean one: the
  mean over channels of the absolute difference of the channel means, output - clean, in
  1/255 steps (the blur study's "background color change", measured by the claims report
  and the VAE -> AE chain).
"""

from __future__ import annotations

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # as data/degrade.py's grayscale op


def _as_rgb255(images: np.ndarray) -> np.ndarray:
    """uint8 or float images ``(..., H, W, 3)`` -> float64 in 0..255 (floats are taken as 0..1)."""
    a = np.asarray(images)
    if a.ndim < 3 or a.shape[-1] != 3:
        raise ValueError(f"expected RGB images (..., H, W, 3), got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float64)
    return a.astype(np.float64) * 255.0


def colourfulness(images: np.ndarray) -> np.ndarray:
    """Hasler & Süsstrunk's colourfulness M of each image: ``(H, W, 3)`` -> a float,
    ``(N, H, W, 3)`` -> ``(N,)``. uint8 images are 0..255, float images 0..1."""
    a = _as_rgb255(images)
    single = a.ndim == 3
    a = a[None] if single else a.reshape(-1, *a.shape[-3:])
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    rg = (r - g).reshape(len(a), -1)
    yb = (0.5 * (r + g) - b).reshape(len(a), -1)
    m = np.sqrt(rg.std(1) ** 2 + yb.std(1) ** 2) + 0.3 * np.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return float(m[0]) if single else m


def colour_bias(restored: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Per image ``(N, H, W, C)``: the mean over channels of the absolute difference of the
    channel means, ``restored - clean``, in 1/255 steps (0 = no colour cast; a uniform shift
    of every pixel by d steps gives d). uint8 images are 0..255, float images 0..1."""
    a, b = np.asarray(restored), np.asarray(clean)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"colour_bias: expected two (N, H, W, C) stacks of one shape, got {a.shape} and {b.shape}")
    a = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a
    b = b.astype(np.float64) / 255.0 if b.dtype == np.uint8 else b
    return np.abs((a - b).mean(axis=(1, 2))).mean(axis=1) * 255.0


def to_grey(images: np.ndarray) -> np.ndarray:
    """uint8 ``(..., H, W, 3)`` -> uint8 ``(..., H, W, 3)`` with the BT.601 luma in every
    channel (the ``grayscale`` degradation); ``(..., H, W)`` or one channel is repeated."""
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {a.dtype}")
    if a.ndim == 2 or a.shape[-1] == 1:
        grey = a if a.ndim == 2 else a[..., 0]
    else:
        if a.shape[-1] == 4:
            a = a[..., :3]
        grey = np.clip(np.rint(a.astype(np.float32) @ LUMA), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
