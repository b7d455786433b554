"""The sections of the stages after training: ``cluster``, ``decoders``, ``evaluate``,
``explore`` and ``mlflow``. Defaults equal ``params.yaml``'s values (``tests/test_params.py``)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import _Strict

# what explore's chained AE is trained to map to the clean image (aerestore.chain)
ChainTrainedOn = Literal["vae", "clean"]

# ------------------------------------------------------------------------ cluster
class ClusterParams(_Strict):
    method: Literal["soft_kmeans", "ncut_head", "damage_head"] = "damage_head"
    k: int = Field(3, ge=1)
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
    epochs: int = Field(1, ge=1)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(128, ge=1)
    min_blocks: int = Field(256, ge=1)  # smaller clusters fall back to the control decoder
    # fully convolutional models (unet_ae): decoders fine-tuned on crops of data/prepared
    steps: int = Field(300, ge=1)  # updates of each cluster decoder (the control: their sum)
    crop_batch: int = Field(16, ge=1)  # crops per update (side: the arch's train.crops.size)
    eval_every: int = Field(2048, ge=1)  # block updates between two points of the fine-tuning curves
    # the ensemble control (third arm): as many decoders, same budget, damage-blind routes and
    # weights (aerestore.tracks.blocks.decoders); method 'clusters' only
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
    routing: Literal["hard", "soft"] = "soft"
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
    # damage draws per test image: draw 0 is the prepared split's, each other one every test
    # image degraded anew by prepare.degrade (seeded by seed, draw, image); more images to compare
    draws: int = Field(1, ge=1, le=16)
    # every row's restore speed on one image of this many px (README "Results"; 0 = off)
    speed_size: int = Field(256, ge=0, le=512)

    @field_validator("speed_size")
    @classmethod
    def _speed_size(cls, v: int) -> int:
        if v and v < 16:
            raise ValueError(f"0 (off) or 16..512 px, got {v}")
        return v

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
    chain_epochs: int = Field(10, ge=1, le=1000)  # the sharpening AE's epochs (the rest: train, arch.<chain>.train)
    # its training input: the model's reconstructions (vae) or the clean images (clean: the
    # blur study's AE "to only reconstruct images from the dataset"); the target is the clean image
    chain_trained_on: ChainTrainedOn = "vae"
    chain_passes: int = Field(1, ge=1, le=10)  # the AE run on its own output again (the study: "multiple times")

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


class PeersParams(_Strict):
    """The deep peers in the pipeline (``peer@<name>``, docs/peers.md): each trained with
    unet_ae's train settings (``train`` with ``arch.unet_ae.train`` applied: the same crops,
    fresh damage, batch, schedule and loss) but its own learning rate where
    ``arch.<name>.train.lr`` sets one (chosen on validation), and scored by ``evaluate`` as a
    row ``peer: <name>`` beside the project's restorers."""

    names: list[str] = []  # dncnn | drunet | nafnet (aerestore.models.peers.PEERS); [] = none
    # 0 = unet_ae's steps (equal steps); N = N steps each (e.g. the equal-CPU-seconds steps of docs/peers.md)
    steps: int = Field(0, ge=0)

    @field_validator("names")
    @classmethod
    def _known_peers(cls, v: list[str]) -> list[str]:
        from aerestore.models.peers import PEERS

        unknown = [n for n in v if n not in PEERS]
        if unknown:
            raise ValueError(f"unknown peer {unknown[0]!r}; the peers are {list(PEERS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"names repeat in {v!r}")
        return v


class MlflowParams(_Strict):
    enabled: bool = True
    experiment: str = Field("aerestore", min_length=1)
    register_models: bool = True  # register each restorer as aerestore-<arch>


