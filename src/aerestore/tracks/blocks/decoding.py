"""``decoders@<arch>`` on the blocks track (:mod:`aerestore.tracks.decoding`)."""

from __future__ import annotations

import sys

from ...models import check_model
from ...models.device import autocast, resolve_device
from ...stage import StageError
from .dataset import BlockData


class ClusterDecoders:
    """``decoders@<arch>``, method ``clusters``: a decoder per cluster, the control and the
    ensemble control on blocks (:func:`aerestore.tracks.blocks.decoders.train_decoders`)."""

    def __init__(self, params, arch: str, restorer, paths):
        self.params, self.restorer = params, restorer
        self.train = BlockData.load(paths.blocks, "train")
        self.val = BlockData.load(paths.blocks, "val")
        check_model(restorer.model, paths.model_dir / "model.pt", block=self.train.degraded.shape[-1],
                    where=str(paths.blocks))
        if restorer.centroids is None:
            raise StageError(f"{paths.model_dir / 'clusters.npz'}: not found (run cluster@{arch} first)")
        self.k = len(restorer.centroids)
        rt = params.runtime  # where and how the networks run
        self.device, self.amp = resolve_device(rt.device), rt.amp
        restorer.to(self.device, rt.amp)
        self.title = f"{arch}: per-cluster decoders and the controls"

    def fit(self, mlrun):
        from .decoders import train_decoders

        dp, restorer = self.params.decoders, self.restorer
        with autocast(self.device, self.amp):
            return train_decoders(restorer.model, restorer.route, self.k, self.train, self.val, dp.epochs, dp.lr,
                                  dp.batch_size, dp.min_blocks, self.params.seed, eval_every=dp.eval_every,
                                  ensemble=dp.ensemble)

    def log(self, result, mlrun) -> None:
        for name, hist in result.histories.items():
            for row in hist:  # step = block updates of that decoder so far
                mlrun.log_metrics({f"{name}.{k}": v for k, v in row.items() if k != "step"}, step=row["step"])
        mlrun.log_metrics({"val_loss": result.summary["val_loss"]})
        mlrun.log_metrics({f"val_loss_by_cluster.{c}": row for c, row in enumerate(result.summary["val_loss_by_cluster"])})
        for c, fb in enumerate(result.fallback):
            if fb:
                print(f"  cluster {c}: too few blocks, uses the control decoder", file=sys.stderr)
