"""``peer@<name>``: train a deep peer (DnCNN, DRUNet, NAFNet: :mod:`aerestore.models.peers`,
docs/peers.md) as ``train@unet_ae`` trains unet_ae, for ``evaluate``'s row ``peer: <name>``.

The same crop trainer (:mod:`aerestore.tracks.images`), the same data and fresh-damage
stream, the same seed (so the same crops and damage, draw for draw), and unet_ae's train
settings (:meth:`aerestore.params.Params.peer_train`): the comparison is at the same steps,
or at ``peers.steps`` (e.g. the steps that cost unet_ae's CPU seconds, measured by
``benchmarks/bench_peers.py``). What the stage writes is what ``train@<arch>`` writes, by the
same code; its MLflow run is named ``peer@<name>`` and its machine record is
``metrics/machine/train_<name>.json``.
"""

from __future__ import annotations

from .train import TrainPaths, _train


def run_peer(params, name: str, paths: TrainPaths) -> None:
    """Train the peer ``name`` with :meth:`~aerestore.params.Params.peer_train` and write
    ``paths.model``, its metrics and its curve (one process: peers are not trained under
    torchrun)."""
    _train(params, name, params.peer_train(name), paths, stage="peer")
