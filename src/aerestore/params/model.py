"""The whole of ``params.yaml``: its sections, the checks across them, and the
per-architecture resolution (``arch.<name>`` applied)."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import Field, ValidationError, model_validator

from .base import ParamsError, _Strict
from .data import BlocksParams, DataParams, PrepareParams
from .errors import _format
from .stages import ClusterParams, DecodersParams, EvaluateParams, ExploreParams, MlflowParams, PeersParams
from .training import ArchParams, RuntimeParams, TrainParams, moved_keys


def deep_update(base: dict, override: dict) -> dict:
    """``base`` updated in place by ``override`` and returned: nested mappings merged key by key
    (``arch.<name>.train`` on ``train``; a study preset or a claims-report arm on params.yaml),
    any other value, and an empty mapping, replaces the old one by a copy."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and value:
            deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


# The network whose train settings and budget the deep peers get (``peers``, ``peer@<name>``).
PEER_REFERENCE = "unet_ae"


class Params(_Strict):
    """The whole file. A default is params.yaml's value (``tests/test_params.py``), but for two
    empty collections: ``arch`` (no overrides) and ``prepare.degrade`` (no damage)."""

    seed: int = 42
    latent: int = Field(64, ge=1)
    architectures: list[str] = ["conv_ae", "vae", "unet_ae"]
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    blocks: BlocksParams = BlocksParams()
    runtime: RuntimeParams = RuntimeParams()
    train: TrainParams = TrainParams()
    cluster: ClusterParams = ClusterParams()
    decoders: DecodersParams = DecodersParams()
    evaluate: EvaluateParams = EvaluateParams()
    explore: ExploreParams = ExploreParams()
    peers: PeersParams = PeersParams()
    mlflow: MlflowParams = MlflowParams()
    arch: dict[str, ArchParams] = {}  # no overrides (params.yaml writes every architecture's)

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
                loss = self.train_for(name).loss
                if loss.ncut_weight <= 0:
                    raise ValueError(
                        f"cluster.method 'ncut_head' needs the n-cut head: set train.loss.ncut_weight "
                        f"> 0 (it is {loss.ncut_weight} for {name})"
                    )
                if loss.ncut_k != self.cluster.k:
                    raise ValueError(
                        f"cluster.k ({self.cluster.k}) must equal train.loss.ncut_k ({loss.ncut_k}) "
                        f"when cluster.method is 'ncut_head'"
                    )
        clash = [n for n in self.peers.names if n in self.architectures]
        if clash:
            raise ValueError(f"peers.names: {clash[0]!r} is also in architectures; a peer is trained by "
                             f"peer@{clash[0]} and scored as 'peer: {clash[0]}', so list it in one of them")
        from aerestore.models.peers import PEERS

        # every peer's arch section, listed in peers.names or not (benchmarks/bench_peers.py reads them too)
        peers = [*self.peers.names, *(n for n in self.arch if n in PEERS and n not in self.peers.names)]
        own = [f"{n}.train.{k}" for n in peers for k in self.arch_params(n).train if k != "lr"]
        if own:
            raise ValueError(f"arch.{own[0]}: a peer trains with {PEER_REFERENCE}'s settings (the same budget), "
                             f"so its own train keys other than lr would be ignored; remove it (peers.steps sets "
                             f"the steps, arch.<peer>.train.lr its learning rate)")
        for n in peers:
            lr = self.arch_params(n).train.get("lr")
            if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0):
                raise ValueError(f"arch.{n}.train.lr: a positive learning rate expected, got {lr!r}")
        if self.evaluate.draws > 1 and not self.prepare.degrade:
            raise ValueError(f"evaluate.draws ({self.evaluate.draws}) degrades the test images anew, "
                             f"but prepare.degrade is empty: set evaluate.draws=1")
        if self.decoders.method == "gate":
            from aerestore.models import model_class

            blocky = [name for name in self.architectures if model_class(name).track == "blocks"]
            if blocky:
                raise ValueError(
                    f"decoders.method 'gate' is built for fully convolutional models (unet_ae) only; "
                    f"architectures holds {blocky}: set architectures=[unet_ae]"
                )
        if self.cluster.method == "damage_head":
            from aerestore.damage import DAMAGE_CLASSES

            if self.cluster.k != len(DAMAGE_CLASSES):
                raise ValueError(
                    f"cluster.k ({self.cluster.k}) must be {len(DAMAGE_CLASSES)} when cluster.method is "
                    f"'damage_head': one cluster per damage class {list(DAMAGE_CLASSES)}"
                )
            for name in self.architectures:
                if self.train_for(name).loss.damage_weight <= 0:
                    raise ValueError(
                        f"cluster.method 'damage_head' needs the damage head: set train.loss.damage_weight "
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
        """The train section with ``arch.<name>.train`` merged in key by key (validated)."""
        overrides = self.arch_params(name).train
        if not overrides:
            return self.train
        moved = moved_keys(overrides, f"arch.{name}.train")
        if moved:
            raise ParamsError("\n".join(moved))
        merged = deep_update(self.train.model_dump(), overrides)
        try:
            return TrainParams.model_validate(merged)
        except ValidationError as exc:
            raise ParamsError(_format(exc, prefix=f"arch.{name}.train", source=merged)) from None

    def peer_train(self, name: str) -> TrainParams:
        """The train settings of the deep peer ``name`` (``peer@<name>``): exactly
        :data:`PEER_REFERENCE`'s (``train`` with ``arch.unet_ae.train``: crops, fresh damage,
        batch, lr, warm-up and schedule, validation, loss), with ``peers.steps`` steps when
        it is set (0: the same steps), and the peer's own learning rate where
        ``arch.<name>.train.lr`` sets one. The learning rate is the one setting a peer has of
        its own: it is chosen per network on the validation split (docs/peers.md, "Learning
        rates chosen on validation"), and a rate chosen for unet_ae can handicap another network
        (NAFNet at unet_ae's 0.001 is 1.3 dB below its own 0.002 on validation). Every other
        key of ``arch.<name>.train`` is refused, so that the comparison is at the same budget
        and settings (``tests/test_peer_stage.py`` fails if they differ)."""
        cfg = self.train_for(PEER_REFERENCE)
        update = {}
        if self.peers.steps:
            update["crops"] = cfg.crops.model_copy(update={"steps": self.peers.steps})
        own_lr = self.arch_params(name).train.get("lr")
        if own_lr is not None:
            update["lr"] = float(own_lr)
        return cfg.model_copy(update=update) if update else cfg


def check_moved(raw: Any) -> list[str]:
    """The moved keys a raw params mapping still sets (``train`` and ``arch.<name>.train``)."""
    lines = moved_keys(raw.get("train"), "train")
    arch = raw.get("arch")
    if isinstance(arch, dict):
        for name, section in arch.items():
            if isinstance(section, dict):
                lines += moved_keys(section.get("train"), f"arch.{name}.train")
    return lines
