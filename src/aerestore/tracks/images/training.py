"""``train@<arch>`` on the images track (:mod:`aerestore.tracks.training`)."""

from __future__ import annotations

import sys

import numpy as np

from ...params import TrainParams
from ...stage import seed_everything
from .dataset import ImageData


class CropTraining:
    """``train@<arch>`` of a fully convolutional network: random crops of ``data/prepared``,
    whole validation images (:func:`aerestore.tracks.images.train.fit_crops`)."""

    def __init__(self, params, arch: str, cfg: TrainParams, paths):
        from ...data.degrade import crop_damage
        from ...losses import LossConfig
        from ...models import create_model

        train, val = crop_damage(ImageData.load(paths.prepared, "train"), ImageData.load(paths.prepared, "val"),
                                 params.prepare.degrade, params.seed, fresh=cfg.crops.fresh_damage,
                                 float_damage=cfg.crops.float_damage)
        self.train, self.val = train, val
        seed_everything(params.seed)
        self.model = create_model(arch, latent=params.latent_for(arch), block=cfg.crops.size, channels=train.channels,
                                  loss=LossConfig.from_train(cfg), **params.arch_params(arch).model)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        print(f"train@{arch}: {self.n_params:,} parameters, {cfg.crops.steps} steps of {cfg.batch_size} random "
              f"{cfg.crops.size} px crops from {len(train):,} training images"
              + (", each degraded anew" if cfg.crops.fresh_damage else "")
              + (" (in float, unclipped)" if cfg.crops.float_damage else ""), file=sys.stderr)

    def fit(self, cfg: TrainParams, seed: int, log, *, runtime):
        from .train import fit_crops

        return fit_crops(self.model, self.train, self.val, cfg, seed, on_eval=lambda row: log(row, step=int(row["step"])),
                         runtime=runtime)

    def save(self, path, result) -> None:
        from ...models import save_model

        save_model(self.model, path, extra={"best_epoch": result.best_epoch})

    def example(self) -> np.ndarray:
        val, train = self.val, self.train
        return (val.degraded[:2] if len(val) else train.degraded[:2]).numpy().astype(np.float32) / 255
