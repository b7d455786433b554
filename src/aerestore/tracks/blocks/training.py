"""``train@<arch>`` on the blocks track (:mod:`aerestore.tracks.training`)."""

from __future__ import annotations

import sys

import numpy as np

from ... import distributed
from ...params import TrainParams
from ...stage import seed_everything
from .dataset import BlockData


class BlockTraining:
    """``train@<arch>`` of a block network: epochs over ``data/blocks`` (:func:`aerestore.tracks.blocks.train.fit`)."""

    def __init__(self, params, arch: str, cfg: TrainParams, paths):
        from ...losses import LossConfig
        from ...models import create_model

        self.blocks = paths.blocks
        self.train = BlockData.load(paths.blocks, "train")
        self.val = BlockData.load(paths.blocks, "val")
        _, channels, block, _ = self.train.degraded.shape
        seed_everything(params.seed)
        self.model = create_model(arch, latent=params.latent_for(arch), block=block, channels=channels,
                                  loss=LossConfig.from_train(cfg), **params.arch_params(arch).model)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        if distributed.is_main():
            print(f"train@{arch}: {self.n_params:,} parameters, {len(self.train):,} training blocks of {block} px",
                  file=sys.stderr)

    def fit(self, cfg: TrainParams, seed: int, log, *, runtime):
        from .train import fit

        return fit(self.model, self.train, self.val, cfg, seed, on_epoch=lambda row: log(row, step=int(row["epoch"])),
                   runtime=runtime)

    def save(self, path, result) -> None:
        from ...blocks import read_geometry
        from ...models import save_model

        geometry = read_geometry(self.blocks)  # as the blocks stage cut them
        save_model(self.model, path, overlap=geometry.overlap,
                   image_size=geometry.image_size,  # what `aerestore interpolate` resizes to
                   extra={"best_epoch": result.best_epoch})

    def example(self) -> np.ndarray:
        val, train = self.val, self.train
        return np.ascontiguousarray(val.degraded[:2] if len(val) else train.degraded[:2]).astype(np.float32) / 255
