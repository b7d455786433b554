"""The training side, grouped by who reads it.

* ``runtime``: where and how every stage that runs networks computes (train, cluster,
  decoders, evaluate, explore) and how ``train@<arch>`` starts its processes (torchrun);
* ``train``: the keys both training loops read (``lr``, ``batch_size``), then one section per
  reader: ``train.blocks`` (:func:`aerestore.tracks.blocks.train.fit`: block networks, epochs),
  ``train.crops`` (:func:`aerestore.tracks.images.train.fit_crops`: fully convolutional networks on
  random crops, steps) and ``train.loss`` (:class:`aerestore.losses.LossConfig`: the
  objective, both loops);
* ``arch.<name>``: per-architecture overrides, ``arch.<name>.train`` merged key by key into
  ``train`` (:meth:`aerestore.params.Params.train_for`).

Defaults equal ``params.yaml``'s values (``tests/test_params.py`` checks it). The keys that
moved out of the flat ``train`` section are in :data:`MOVED`: a params.yaml (or an ``-S``)
that still sets one gets a :class:`~aerestore.params.ParamsError` naming the new key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator, field_validator

from .base import _Strict


class RuntimeParams(_Strict):
    """Where and how the networks run; the torchrun rendezvous of ``train@<arch>``."""

    device: Literal["auto", "cpu", "cuda"] = "auto"  # every stage that runs networks
    amp: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast (mixed precision) in every such stage
    threads: int = Field(2, ge=0)  # CPU threads, fixed: the results do not depend on the cores (0 = every core)
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


class BlockTrainParams(_Strict):
    """Block networks (:func:`aerestore.tracks.blocks.train.fit`): epochs over the blocks of data/blocks."""

    epochs: int = Field(6, ge=1)
    lr_decay: float = Field(0.9, gt=0, le=1)  # lr * lr_decay ** epoch
    patience: int = Field(3, ge=0)  # early stopping on val loss; 0 = off
    per_epoch: int = Field(16384, ge=0)  # blocks drawn per epoch; 0 = every training block


class CropTrainParams(_Strict):
    """Fully convolutional networks (:func:`aerestore.tracks.images.train.fit_crops`): random crops of
    data/prepared, whole validation images."""

    size: int = Field(48, ge=8)  # crop side in pixels (random position, random flips)
    steps: int = Field(2000, ge=1)  # updates of batch_size crops
    warmup: float = Field(0.05, ge=0, lt=1)  # share of the steps with a linear warm-up, then cosine to 0
    eval_every: int = Field(250, ge=1)  # steps between two validations on whole val images
    fresh_damage: bool = True  # each crop's image degraded anew by prepare.degrade (False: the prepared copy)
    # fresh damage kept in float: not clipped to 0..255 nor rounded to 8 bits (data/degrade.py, quantise=False)
    float_damage: bool = False

    @model_validator(mode="after")
    def _float_needs_fresh(self) -> "CropTrainParams":
        if self.float_damage and not self.fresh_damage:
            raise ValueError("float_damage needs fresh_damage: the prepared copies are 8-bit images")
        return self


class LossParams(_Strict):
    """The objective (:class:`aerestore.losses.LossConfig`, the same fields), both loops."""

    recon: Literal["mse", "rmse", "charbonnier", "psnr"] = "mse"  # aerestore.losses.reconstruction
    alpha: float = Field(1.0, ge=0)  # reconstruction weight (VAEs)
    beta: float = Field(0.001, ge=0)  # KL weight (VAEs)
    l1: float = Field(0.0, ge=0)  # weight penalties
    l2: float = Field(0.0, ge=0)
    sharpness_weight: float = Field(0.0, ge=0)  # 0 = off
    sharpness_variant: Literal["mean_max", "max", "mean_sq"] = "max"
    sharpness_start_epoch: int = Field(0, ge=0)
    ncut_weight: float = Field(0.0, ge=0)  # 0 = off (no cluster head)
    ncut_k: int = Field(2, ge=2)
    ncut_sigma: float = Field(1.0, gt=0)  # w(u, v) = exp(-|u - v|^2 / (sigma^2 * latent))
    pixel_kl: float = Field(0.0, ge=0)  # the CelebA study's pixel-wise KL t*log(t/y) (0 = off)
    damage_weight: float = Field(0.001, ge=0)  # weight of the damage head's cross entropy (0 = off)


class TrainParams(_Strict):
    """The ``train`` section (with an architecture's overrides: :meth:`Params.train_for`)."""

    lr: float = Field(1e-3, gt=0)  # both loops: the start of the decay / the peak after the warm-up
    batch_size: int = Field(128, ge=1)  # blocks, or crops, per update
    blocks: BlockTrainParams = BlockTrainParams()
    crops: CropTrainParams = CropTrainParams()
    loss: LossParams = LossParams()


class ArchParams(_Strict):
    latent: int | None = Field(None, ge=1)  # overrides the top-level latent
    model: dict[str, Any] = {}  # keyword arguments of the architecture
    train: dict[str, Any] = {}  # overrides of the train section for this architecture (nested as train)


# The keys of the flat train section that moved (old key under train -> new dotted key).
MOVED: dict[str, str] = {
    **{k: f"train.blocks.{k}" for k in ("epochs", "lr_decay", "patience")},
    "blocks_per_epoch": "train.blocks.per_epoch",
    "crop": "train.crops.size",
    **{k: f"train.crops.{k}" for k in ("steps", "warmup", "eval_every", "fresh_damage")},
    **{k: f"train.loss.{k}" for k in LossParams.model_fields},
    **{k: f"runtime.{k}" for k in RuntimeParams.model_fields},
}


def moved_keys(section: Any, where: str) -> list[str]:
    """One line per key of the ``train`` mapping ``section`` (found at ``where``: ``train`` or
    ``arch.<name>.train``) that moved, naming where it is now."""
    if not isinstance(section, dict):
        return []
    lines = []
    for key in section:
        new = MOVED.get(key)
        if new is None:
            continue
        if new.startswith("runtime."):
            lines.append(f"{where}.{key} moved to {new}"
                         + ("" if where == "train" else " (the runtime is the same for every architecture)"))
        else:
            lines.append(f"{where}.{key} moved to {where}{new.removeprefix('train')}")
    return lines
