"""Typed, validated ``params.yaml``.

Every stage calls :func:`load_params` before it writes anything. A wrong type, an
unknown key or an impossible combination raises :class:`ParamsError`, whose message
names the key (dotted, as in ``params.yaml``) and the offending value.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PARAMS_FILE = "params.yaml"


class ParamsError(ValueError):
    """A bad value in params.yaml; the message names the key and the value."""


class _Strict(BaseModel):
    # strict: YAML already gives typed values, so "1" is not silently an int.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# A value drawn per image from [lo, hi]; a single number means a fixed value.
Range = Union[float, list[float]]
IntRange = Union[int, list[int]]


def _check_range(value: Any, lo: float | None = None, hi: float | None = None) -> Any:
    vals = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) != 2:
        raise ValueError(f"a range is [low, high], got {value!r}")
    if isinstance(value, list) and value[0] > value[1]:
        raise ValueError(f"range low > high: {value!r}")
    for v in vals:
        if lo is not None and v < lo:
            raise ValueError(f"must be >= {lo}, got {value!r}")
        if hi is not None and v > hi:
            raise ValueError(f"must be <= {hi}, got {value!r}")
    return value


def as_range(value: float | list[float]) -> tuple[float, float]:
    """Normalise a param that is a number or ``[lo, hi]`` to ``(lo, hi)``."""
    if isinstance(value, list):
        return float(value[0]), float(value[1])
    return float(value), float(value)


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
    degrade: list[DegradeOp] = []
    workers: int = Field(1, ge=1, le=256)
    chunk: int = Field(256, ge=1)  # images held in memory at once


# ------------------------------------------------------------------------- blocks
class BlocksParams(_Strict):
    size: int = Field(18, ge=4, le=1024)
    overlap: int = Field(4, ge=0)


# -------------------------------------------------------------------------- train
class TrainParams(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_decay: float = Field(0.9, gt=0, le=1)  # lr * lr_decay ** epoch
    patience: int = Field(3, ge=0)  # early stopping on val loss; 0 = off
    blocks_per_epoch: int = Field(0, ge=0)  # 0 = every training block each epoch
    recon: Literal["mse", "rmse", "charbonnier", "psnr"] = "mse"  # aerestore.losses.reconstruction
    alpha: float = Field(1.0, ge=0)  # reconstruction weight (VAEs)
    beta: float = Field(1.0, ge=0)  # KL weight (VAEs)
    l1: float = Field(0.0, ge=0)  # weight penalties
    l2: float = Field(0.0, ge=0)
    sharpness_weight: float = Field(0.0, ge=0)  # 0 = off
    sharpness_variant: Literal["mean_max", "max", "mean_sq"] = "max"
    sharpness_start_epoch: int = Field(0, ge=0)
    ncut_weight: float = Field(0.0, ge=0)  # 0 = off (no cluster head)
    ncut_k: int = Field(2, ge=2)
    ncut_sigma: float = Field(1.0, gt=0)  # w(u, v) = exp(-|u - v|^2 / (sigma^2 * latent))
    pixel_kl: float = Field(0.0, ge=0)  # the CelebA study's pixel-wise KL t*log(t/y) (0 = off)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # every stage that runs networks
    amp: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast (mixed precision) in every such stage
    threads: int = Field(2, ge=0)  # CPU threads, fixed: the results do not depend on the cores (0 = every core)
    # fully convolutional models (unet_ae) train on random crops of data/prepared instead:
    crop: int = Field(48, ge=8)  # crop side in pixels (random position, random flips)
    steps: int = Field(2000, ge=1)  # updates of batch_size crops
    warmup: float = Field(0.05, ge=0, lt=1)  # share of the steps with a linear warm-up, then cosine to 0
    eval_every: int = Field(250, ge=1)  # steps between two validations on whole val images
    damage_weight: float = Field(0.1, ge=0)  # weight of the damage head's cross entropy (0 = off)
    fresh_damage: bool = True  # each crop's image degraded anew by prepare.degrade (False: the prepared copy)
    # data-parallel training (torchrun; aerestore.distributed): processes per machine and
    # machines; the rendezvous keys are not DVC params (AERESTORE_<KEY> env vars override them)
    nproc: int = Field(1, ge=1)
    nnodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    master_addr: str = "127.0.0.1"
    master_port: int = Field(29500, ge=1, le=65535)

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, v: Any) -> Any:
        # the value was once `off`, which YAML 1.1 reads as false once `dvc exp run -S` has
        # rewritten params.yaml without quotes, so that DVC saw the param change (every
        # stage out of date); `fp32` has no such reading. `off` and false still mean fp32.
        return "fp32" if v is False or v == "off" else v


class ArchParams(_Strict):
    latent: int | None = Field(None, ge=1)  # overrides the top-level latent
    model: dict[str, Any] = {}  # keyword arguments of the architecture
    train: dict[str, Any] = {}  # overrides of the train section for this architecture


# ------------------------------------------------------------------------ cluster
class ClusterParams(_Strict):
    method: Literal["soft_kmeans", "ncut_head", "damage_head"] = "soft_kmeans"
    k: int = Field(2, ge=1)
    beta: float = Field(5.0, gt=0)  # responsibilities ~ exp(-beta * d^2 / s^2), s^2 = latent total variance
    tol: float = Field(1e-4, gt=0)
    max_iter: int = Field(100, ge=1)
    max_blocks: int = Field(50_000, ge=1)  # blocks used to fit the centroids (all are labelled)


class DecodersParams(_Strict):
    # clusters: one decoder per cluster of cluster@<arch>; gate: K decoders and a learned gate
    # trained end to end (a mixture of experts, aerestore.gate; fully convolutional models only)
    method: Literal["clusters", "gate"] = "clusters"
    balance: float = Field(0.01, ge=0)  # gate: weight of the load-balancing term CV(importance)^2
    gate_lr: float = Field(1e-3, gt=0)  # gate: Adam learning rate of the gate (the decoders: lr)
    epochs: int = Field(2, ge=1)
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(128, ge=1)
    min_blocks: int = Field(256, ge=1)  # smaller clusters fall back to the control decoder
    # fully convolutional models (unet_ae): decoders fine-tuned on crops of data/prepared
    steps: int = Field(300, ge=1)  # updates of each cluster decoder (the control: their sum)
    crop_batch: int = Field(16, ge=1)  # crops per update (side: the arch's train.crop)
    eval_every: int = Field(2048, ge=1)  # block updates between two points of the fine-tuning curves
    # the ensemble control (third arm): as many decoders, same budget, damage-blind routes and
    # weights (aerestore.decoders); method 'clusters' only
    ensemble: bool = True


CLASSICAL = ("nlmeans", "nlmeans_map", "bm3d", "bm3d_map", "tv", "bilateral", "wiener", "richardson_lucy",
             "biharmonic")
# The settings of each classical restorer that evaluate.classical_grid may choose on the validation
# split (aerestore.classical checks that its restorers take exactly these).
CLASSICAL_TUNABLE = {
    "nlmeans": ("h_factor",),
    "nlmeans_map": ("h_factor",),
    "tv": ("weight",),
    "bilateral": ("sigma_color", "sigma_space"),
    "wiener": ("psf_sigma", "balance"),
    "richardson_lucy": ("psf_sigma", "num_iter"),
}
CLASSICAL_GRID = {  # the default grid (= params.yaml)
    "nlmeans": {"h_factor": [0.4, 0.6, 0.8, 1.0, 1.2]},
    "nlmeans_map": {"h_factor": [0.6, 0.8, 1.0, 1.2, 1.5, 2.0]},
    "tv": {"weight": [0.02, 0.05, 0.1, 0.15, 0.2]},
    "bilateral": {"sigma_color": [0.1, 0.2, 0.4, 0.8], "sigma_space": [1.0, 2.0, 3.0, 5.0]},
    "wiener": {"psf_sigma": [1.0, 1.5, 2.0, 2.5], "balance": [0.03, 0.1, 0.3, 1.0, 3.0]},
    "richardson_lucy": {"psf_sigma": [1.0, 1.5, 2.0, 2.5], "num_iter": [2, 3, 5, 10]},
}


class EvaluateParams(_Strict):
    routing: Literal["hard", "soft"] = "hard"
    max_images: int = Field(0, ge=0)  # 0 = the whole test split
    # the slow classical restorers (bm3d) run on this many evenly spaced test images, on
    # which every row is also compared; 0 = all
    anchor_images: int = Field(48, ge=0)
    classical: list[Literal[CLASSICAL]] = list(CLASSICAL)  # type: ignore[valid-type]
    grid_images: int = Field(6, ge=1, le=64)
    batch_size: int = Field(2048, ge=1)  # blocks per forward pass
    # unet_ae's restorer on the CPU: OpenVINO where it applies (auto), or torch / openvino
    runtime: Literal["auto", "torch", "openvino"] = "auto"
    # the classical restorers' settings chosen on the validation split (mean PSNR), per restorer
    # a grid {setting: [values]} (every combination tried); a restorer left out keeps its defaults
    classical_grid: dict[str, dict[str, list[float]]] = CLASSICAL_GRID
    tune_images: int = Field(0, ge=0)  # validation images the grid is scored on (evenly spaced; 0 = all)
    # the upper bound (never a competitor): the classical denoisers and deconvolution given the true
    # damage masks and noise levels (README "Classical restorers")
    oracle: bool = True

    @field_validator("classical_grid")
    @classmethod
    def _known_settings(cls, v: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list[float]]]:
        for name, grid in v.items():
            if name not in CLASSICAL_TUNABLE:
                raise ValueError(f"evaluate.classical_grid.{name}: not a tunable classical restorer "
                                 f"({', '.join(CLASSICAL_TUNABLE)})")
            for key, values in grid.items():
                where = f"evaluate.classical_grid.{name}.{key}"
                if key not in CLASSICAL_TUNABLE[name]:
                    raise ValueError(f"{where}: unknown setting; {name} takes {list(CLASSICAL_TUNABLE[name])}")
                if not values or not all(math.isfinite(x) and x > 0 for x in values):
                    raise ValueError(f"{where}: a non-empty list of numbers > 0, got {values}")
                if key == "num_iter" and not all(float(x).is_integer() for x in values):
                    raise ValueError(f"{where}: whole numbers of iterations, got {values}")
        return v


class ExploreParams(_Strict):
    """The generative side (``explore@<arch>``, docs/generative.md)."""

    architectures: list[str] = []  # one explore@<arch> stage each (trained block models; VAEs also sample)
    pairs: int = Field(4, ge=1, le=32)  # test-image pairs interpolated (one grid row each)
    steps: int = Field(8, ge=2, le=32)  # frames per interpolation, endpoints included
    interpolation: Literal["auto", "linear", "spherical"] = "auto"  # auto: spherical for VAEs
    samples: int = Field(16, ge=0, le=256)  # images decoded from N(0, I) (VAEs; 0 = none)
    max_train_images: int = Field(512, ge=1)  # training images searched for each frame's nearest
    # VAE -> AE chaining (the blur study): a registered architecture trained on whole images to
    # map the explored model's reconstructions to the clean images (null = off)
    chain: str | None = None
    chain_epochs: int = Field(10, ge=1, le=1000)  # the sharpening AE's epochs (the rest: train, arch.<chain>)

    # attribute directions (CelebA's list_attr_celeba.txt): one grid per name, code + t * direction
    attributes: list[str] = []  # attribute names, e.g. [Smiling, Eyeglasses]; [] = off
    attributes_file: str | None = None  # the attribute file (CelebA's format), needed by `attributes`
    attribute_scales: list[float] = [-2.0, -1.0, 0.0, 1.0, 2.0]  # the t of each grid column

    @model_validator(mode="after")
    def _attributes_need_a_file(self) -> "ExploreParams":
        if self.attributes and not self.attributes_file:
            raise ValueError("explore.attributes needs explore.attributes_file (e.g. list_attr_celeba.txt)")
        if len(set(self.attributes)) != len(self.attributes):
            raise ValueError(f"explore.attributes: names repeat in {self.attributes}")
        if not self.attribute_scales or not all(math.isfinite(t) for t in self.attribute_scales):
            raise ValueError(f"explore.attribute_scales: a non-empty list of numbers, got {self.attribute_scales}")
        return self

    @field_validator("chain")
    @classmethod
    def _known_chain(cls, v: str | None) -> str | None:
        if v is not None:
            from aerestore.models import list_models

            if v not in list_models():
                raise ValueError(f"explore.chain {v!r} is not a registered architecture ({', '.join(list_models())})")
        return v


class MlflowParams(_Strict):
    enabled: bool = True
    experiment: str = Field("aerestore", min_length=1)
    register_models: bool = True  # register each restorer as aerestore-<arch>


class Params(_Strict):
    seed: int = 42
    latent: int = Field(64, ge=1)
    architectures: list[str] = ["conv_ae"]
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    blocks: BlocksParams = BlocksParams()
    train: TrainParams = TrainParams()
    cluster: ClusterParams = ClusterParams()
    decoders: DecodersParams = DecodersParams()
    evaluate: EvaluateParams = EvaluateParams()
    explore: ExploreParams = ExploreParams()
    mlflow: MlflowParams = MlflowParams()
    arch: dict[str, ArchParams] = {}

    @model_validator(mode="after")
    def _combinations(self) -> "Params":
        if not self.architectures:
            raise ValueError("architectures: the list is empty")
        if len(set(self.architectures)) != len(self.architectures):
            raise ValueError(f"architectures: names repeat in {self.architectures!r}")
        if self.blocks.overlap >= self.blocks.size:
            raise ValueError(
                f"blocks.overlap ({self.blocks.overlap}) must be smaller than "
                f"blocks.size ({self.blocks.size})"
            )
        if self.blocks.size > self.data.image_size:
            raise ValueError(
                f"blocks.size ({self.blocks.size}) is larger than data.image_size "
                f"({self.data.image_size})"
            )
        if self.cluster.method == "ncut_head":
            for name in self.architectures:
                t = self.train_for(name)
                if t.ncut_weight <= 0:
                    raise ValueError(
                        f"cluster.method 'ncut_head' needs the n-cut head: set train.ncut_weight "
                        f"> 0 (it is {t.ncut_weight} for {name})"
                    )
                if t.ncut_k != self.cluster.k:
                    raise ValueError(
                        f"cluster.k ({self.cluster.k}) must equal train.ncut_k ({t.ncut_k}) "
                        f"when cluster.method is 'ncut_head'"
                    )
        if self.decoders.method == "gate":
            from aerestore.models import model_class

            blocky = [name for name in self.architectures if model_class(name).track == "blocks"]
            if blocky:
                raise ValueError(
                    f"decoders.method 'gate' is built for fully convolutional models (unet_ae) only; "
                    f"architectures holds {blocky}: set architectures=[unet_ae]"
                )
        if self.cluster.method == "damage_head":
            from aerestore.data.layout import DAMAGE_CLASSES

            if self.cluster.k != len(DAMAGE_CLASSES):
                raise ValueError(
                    f"cluster.k ({self.cluster.k}) must be {len(DAMAGE_CLASSES)} when cluster.method is "
                    f"'damage_head': one cluster per damage class {list(DAMAGE_CLASSES)}"
                )
            for name in self.architectures:
                if self.train_for(name).damage_weight <= 0:
                    raise ValueError(
                        f"cluster.method 'damage_head' needs the damage head: set train.damage_weight "
                        f"> 0 (it is 0 for {name})"
                    )
        return self

    # ---- per-architecture resolution
    def arch_params(self, name: str) -> ArchParams:
        return self.arch.get(name, ArchParams())

    def latent_for(self, name: str) -> int:
        a = self.arch_params(name)
        return a.latent if a.latent is not None else self.latent

    def train_for(self, name: str) -> TrainParams:
        """The train section with ``arch.<name>.train`` overrides applied (validated)."""
        overrides = self.arch_params(name).train
        if not overrides:
            return self.train
        merged = {**self.train.model_dump(), **overrides}
        try:
            return TrainParams.model_validate(merged)
        except ValidationError as exc:
            raise ParamsError(_format(exc, prefix=f"arch.{name}.train", source=merged)) from None


def _get(source: Any, loc: tuple) -> Any:
    cur = source
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def _format(exc: ValidationError, prefix: str = "", source: Any = None) -> str:
    lines = []
    for err in exc.errors():
        # drop pydantic's union-tag segments (e.g. 'gaussian_blur' inside a list item)
        loc = []
        for i, part in enumerate(err["loc"]):
            if isinstance(part, int):
                loc[-1:] = [f"{loc[-1]}[{part}]"] if loc else [f"[{part}]"]
            elif i > 0 and isinstance(err["loc"][i - 1], int) and part in DEGRADE_OPS:
                continue  # pydantic's union tag, not a key of params.yaml
            else:
                loc.append(str(part))
        key = ".".join(([prefix] if prefix else []) + loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        value = err.get("input")
        if err["type"] == "missing":
            lines.append(f"{key}: missing")
        elif err["type"] in ("value_error", "assertion_error") and not loc:
            lines.append(f"{prefix + ': ' if prefix else ''}{msg.removeprefix('Value error, ')}")
        else:
            lines.append(f"{key}: {msg.removeprefix('Value error, ')} (got {value!r})")
    return "\n".join(lines)


def parse_params(raw: Any, source: str = PARAMS_FILE) -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(f"{source}: invalid params\n" + _format(exc, source=raw)) from None
    # resolve per-arch train overrides now so a bad one fails before any stage writes
    for name in params.architectures:
        params.train_for(name)
    return params


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml (raises ParamsError naming the key and the value)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, source=str(path))


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{'train': {'lr': 1e-3}}`` -> ``{'train.lr': 1e-3}`` (lists stay values)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump()
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    else:
        out[prefix] = obj
    return out


def deep_update(base: dict, new: dict) -> dict:
    """``base`` updated in place by ``new``, nested mappings merged key by key (the overrides
    of a study preset or a claims-report arm on params.yaml)."""
    import copy

    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and v:
            deep_update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def load_base(path: str | Path = PARAMS_FILE) -> dict:
    """params.yaml as a plain mapping, not validated: the base that :func:`deep_update` applies
    overrides to (a study preset, a claims-report arm) before :func:`parse_params`."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return raw
