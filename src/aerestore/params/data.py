"""The sections of the data side: ``data``, ``prepare`` (its ``degrade`` ops) and ``blocks``.

Defaults equal ``params.yaml``'s values (``tests/test_params.py`` checks it); the ops of
``prepare.degrade`` have defaults of their own, for a key an op leaves out.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from .base import IntRange, Range, _check_range, _Strict


# --------------------------------------------------------------------------- data
class SplitParams(_Strict):
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitParams":
        for name in ("train", "val", "test"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        if self.train <= 0 or self.test <= 0:
            raise ValueError("train and test shares must be > 0")
        return self


class DataParams(_Strict):
    source: Literal["sample", "folder", "url", "lfw", "mnist", "celeba"] = "sample"
    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    image_size: int = Field(64, ge=8, le=4096)
    limit: int = Field(0, ge=0)
    split: SplitParams = SplitParams()
    max_pixels: int = Field(89_478_485, ge=1)

    @model_validator(mode="after")
    def _source_needs(self) -> "DataParams":
        if self.source == "folder" and not self.path:
            raise ValueError("source 'folder' needs data.path")
        if self.source == "url":
            if not self.url:
                raise ValueError("source 'url' needs data.url")
            if not self.sha256:
                raise ValueError("source 'url' needs data.sha256 (the archive's SHA-256)")
        if self.source == "celeba" and not self.path:
            raise ValueError(
                "source 'celeba' needs data.path: a local copy of img_align_celeba.zip "
                "(its host needs a browser)"
            )
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256):
            raise ValueError(f"data.sha256 must be 64 hex digits, got {self.sha256!r}")
        return self


# ------------------------------------------------------------------------ prepare
class AugmentParams(_Strict):
    rotate: float = Field(10.0, ge=0, le=180)  # degrees, +-
    shift: float = Field(0.05, ge=0, le=0.5)  # fraction of the side, +-
    scale: float = Field(0.1, ge=0, le=0.9)  # zoom, +- fraction
    shear: float = Field(5.0, ge=0, le=45)  # degrees, +-
    hflip: float = Field(0.5, ge=0, le=1)  # probability


class _Op(_Strict):
    prob: float = Field(1.0, ge=0, le=1)  # probability that the op is applied to an image


class GaussianBlurOp(_Op):
    op: Literal["gaussian_blur"]
    sigma: Range = [0.5, 2.0]  # pixels

    _v = field_validator("sigma")(lambda v: _check_range(v, 0.01, 50))


class MotionBlurOp(_Op):
    op: Literal["motion_blur"]
    length: IntRange = [3, 9]  # kernel length in pixels
    angle: Range = [0.0, 180.0]  # degrees

    _v = field_validator("length")(lambda v: _check_range(v, 1, 101))


class DefocusOp(_Op):
    op: Literal["defocus"]
    radius: Range = [1.0, 3.0]  # disc radius in pixels

    _v = field_validator("radius")(lambda v: _check_range(v, 0.5, 50))


class BilateralOp(_Op):
    op: Literal["bilateral"]
    diameter: int = Field(9, ge=1, le=51)  # OpenCV's d
    sigma_color: float = Field(75.0, gt=0)  # in 0..255 intensity units
    sigma_space: float = Field(75.0, gt=0)  # pixels


class GaussianNoiseOp(_Op):
    op: Literal["gaussian_noise"]
    std: Range = 0.05  # fraction of the intensity range
    # whose code draws the noise: aerestore (NumPy; the default damage's, kept byte-identical)
    # or albumentations' GaussNoise (the bottleneck study's library); see data/degrade.py
    impl: Literal["aerestore", "albumentations"] = "aerestore"

    _v = field_validator("std")(lambda v: _check_range(v, 0, 1))


class SaltPepperOp(_Op):
    op: Literal["salt_pepper"]
    amount: Range = 0.02  # fraction of the channel values (channel-wise: each value is hit alone)
    salt_ratio: float = Field(0.5, ge=0, le=1)

    _v = field_validator("amount")(lambda v: _check_range(v, 0, 1))


class CoarseDropoutOp(_Op):
    op: Literal["coarse_dropout"]
    holes: IntRange = [1, 4]  # albumentations' CoarseDropout wants at least one
    size: Range = [0.05, 0.15]  # hole side as a fraction of the image side (< 1: CoarseDropout reads 1 as pixels)
    fill: int = Field(0, ge=0, le=255)

    _v1 = field_validator("holes")(lambda v: _check_range(v, 1, 1000))
    _v2 = field_validator("size")(lambda v: _check_range(v, 0, 0.99))


class GrayscaleOp(_Op):
    op: Literal["grayscale"]


class JpegOp(_Op):
    op: Literal["jpeg"]
    quality: IntRange = [20, 60]

    _v = field_validator("quality")(lambda v: _check_range(v, 1, 100))


class LocalBlurOp(_Op):
    """Blur only some soft-edged regions of the image; the blend weight is saved as the mask."""

    op: Literal["local_blur"]
    kernel: Literal["gaussian", "motion", "defocus"] = "gaussian"
    regions: IntRange = [1, 3]  # number of blurred blobs per image
    radius: Range = [0.15, 0.35]  # blob radius, fraction of the image side
    strength: Range = [1.0, 3.0]  # sigma (gaussian), length/4 (motion), radius (defocus) at the blob centre
    feather: float = Field(0.5, ge=0, le=1)  # share of the radius over which the edge fades

    _v1 = field_validator("regions")(lambda v: _check_range(v, 0, 64))
    _v2 = field_validator("radius")(lambda v: _check_range(v, 0.01, 1))
    _v3 = field_validator("strength")(lambda v: _check_range(v, 0.01, 50))


class LocalNoiseOp(_Op):
    """Gaussian noise only in some soft-edged regions; its weight map is the noise mask."""

    op: Literal["local_noise"]
    regions: IntRange = [1, 2]  # number of noisy blobs per image
    radius: Range = [0.15, 0.35]  # blob radius, fraction of the image side
    std: Range = [0.1, 0.2]  # noise standard deviation at the blob centre, fraction of the range
    feather: float = Field(0.5, ge=0, le=1)  # share of the radius over which the edge fades
    exclusive: bool = True  # keep off pixels that an earlier local op (e.g. local_blur) damaged

    _v1 = field_validator("regions")(lambda v: _check_range(v, 0, 64))
    _v2 = field_validator("radius")(lambda v: _check_range(v, 0.01, 1))
    _v3 = field_validator("std")(lambda v: _check_range(v, 0, 1))


DegradeOp = Annotated[
    Union[
        GaussianBlurOp,
        MotionBlurOp,
        DefocusOp,
        BilateralOp,
        GaussianNoiseOp,
        SaltPepperOp,
        CoarseDropoutOp,
        GrayscaleOp,
        JpegOp,
        LocalBlurOp,
        LocalNoiseOp,
    ],
    Field(discriminator="op"),
]
DEGRADE_OPS = (
    "gaussian_blur", "motion_blur", "defocus", "bilateral", "gaussian_noise",
    "salt_pepper", "coarse_dropout", "grayscale", "jpeg", "local_blur", "local_noise",
)


class PrepareParams(_Strict):
    resize: Literal["area", "bilinear", "bicubic", "lanczos", "nearest"] = "area"
    channels: Literal[1, 3] = 3
    augment_copies: int = Field(0, ge=0, le=64)
    augment: AugmentParams = AugmentParams()
    degrade: list[DegradeOp] = []  # no damage (params.yaml writes the default task)
    workers: int = Field(2, ge=1, le=256)
    chunk: int = Field(256, ge=1)  # images held in memory at once


# ------------------------------------------------------------------------- blocks
class BlocksParams(_Strict):
    size: int = Field(18, ge=4, le=1024)
    overlap: int = Field(4, ge=0)


