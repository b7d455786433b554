"""Geometric augmentation of the training images (albumentations 2.0.8).

``prepare.augment_copies`` extra copies are made of every TRAIN image; the original
is always kept. Each copy goes through

* ``A.Affine``: rotation uniform in ``[-rotate, rotate]`` degrees, translation uniform
  in ``[-shift, shift]`` of the side (x and y drawn independently), zoom uniform in
  ``[1 - scale, 1 + scale]``, shear uniform in ``[-shear, shear]`` degrees (x and y),
  bilinear interpolation, borders filled by reflection (``BORDER_REFLECT_101``) so no
  black corners appear;
* ``A.HorizontalFlip`` with probability ``hflip``.

Determinism: the pipeline is re-seeded before every call (``Compose.set_random_seed``,
albumentations 2.x), with a seed derived from the image, so a copy does not depend on
which images were processed before it or in which process.
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from aerestore.params import AugmentParams


def build_augment(params: AugmentParams) -> Any:
    """The albumentations pipeline (``A.Compose``) for ``prepare.augment``.

    albumentations is imported here, not at module level: it pulls in torch, which
    the prepare stage does not otherwise need (seconds of start-up per process).
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    return A.Compose(
        [
            A.Affine(
                rotate=(-params.rotate, params.rotate),
                translate_percent=(-params.shift, params.shift),
                scale=(1.0 - params.scale, 1.0 + params.scale),
                shear=(-params.shear, params.shear),
                interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_REFLECT_101,
                p=1.0,
            ),
            A.HorizontalFlip(p=params.hflip),
        ],
        seed=0,
    )


class Augmenter:
    """Callable ``(image uint8 HWC, seed) -> augmented uint8 HWC`` (same shape)."""

    def __init__(self, params: AugmentParams):
        self.params = params
        self.transform = build_augment(params)

    def __call__(self, image: np.ndarray, seed: int) -> np.ndarray:
        self.transform.set_random_seed(int(seed))
        out = self.transform(image=image)["image"]
        out = np.asarray(out, dtype=np.uint8)
        if out.ndim == 2:
            out = out[..., None]
        if out.shape != image.shape:
            raise RuntimeError(f"augmentation changed the shape {image.shape} -> {out.shape}")
        return np.ascontiguousarray(out)
