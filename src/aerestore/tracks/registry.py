"""Which track a network is on (:mod:`aerestore.tracks`), and what a track provides.

A model class declares its track (``track = "images"``; the default of
:class:`aerestore.models.base.RestorationModel` is ``"blocks"``); :func:`track_of` reads and
checks it. Each job of the pipeline has a registry keyed by the track, in a module of its
own so that a stage depends on the code of its job only (``dvc.yaml`` deps); job, registry
(track -> implementation) and protocol:

- ``train@<arch>``: :data:`aerestore.tracks.training.TRAINING`, protocol :class:`Training`
- ``cluster@<arch>``: :data:`aerestore.tracks.clustering.CODES`, protocol :class:`Codes`
- ``decoders@<arch>``: :data:`aerestore.tracks.decoding.DECODER_METHODS`, protocol
  :class:`DecoderJob`
- restoring (:meth:`aerestore.restore.Restorer.load`):
  :data:`aerestore.tracks.restoring.RESTORERS`, a function returning a restorer

A new track is a name in :data:`TRACKS` and one entry in each registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

TRACKS = ("blocks", "images")
# whether a code is one latent vector per block (aerestore.explore.LatentCodec explores those);
# on the images track it is a feature map of the whole image
VECTOR_CODES = {"blocks": True, "images": False}


def track_of(model_or_class) -> str:
    """The track of a model, or of a model class (:func:`aerestore.models.model_class`)."""
    name = getattr(model_or_class, "track", "blocks")
    if name not in TRACKS:
        raise ValueError(f"{getattr(model_or_class, 'name', model_or_class)!r} declares track {name!r}; "
                         f"known tracks: {list(TRACKS)}")
    return name


class Training(Protocol):
    """``TRAINING[track](params, arch, cfg, paths)`` (``cfg``: the architecture's train section,
    :meth:`aerestore.params.Params.train_for`): the data loaded, the model built and seeded."""

    model: Any
    n_params: int

    def fit(self, cfg, seed: int, log: Callable[..., None], *, runtime) -> Any:
        """Train the model on ``runtime``'s device and threads (``params.runtime``), restoring its
        best weights; ``log(row, step=...)`` per validation point ->
        :class:`aerestore.tracks.blocks.train.TrainResult`."""

    def save(self, path: Path, result) -> None:
        """Write the trained model (:func:`aerestore.models.save_model`)."""

    def example(self) -> np.ndarray:
        """An input example for the MLflow model signature."""


class Codes(Protocol):
    """``CODES[track](params, arch, model, paths)``: the samples whose codes are clustered."""

    samples: str  # what one code is of, for messages: "training blocks", "code locations"

    def encode(self) -> np.ndarray:
        """The codes to cluster, float32 (N, D)."""

    def head_labels(self, z: np.ndarray, head: str) -> np.ndarray:
        """The argmax of the model's ``head`` (``ncut_head``, ``damage_head``) per sample."""

    def head_scale(self, z: np.ndarray, fit_idx: np.ndarray) -> float:
        """The latent scale a head's clusters are saved with."""

    def describe(self, z, labels: np.ndarray, fitted, cp, seed: int) -> tuple[list[dict], dict, Any]:
        """-> (a row per cluster with its ``label`` and ``size``, the metrics, the damage shares or None)."""

    def plot_title(self, arch: str, method: str, k: int) -> str: ...

    def log(self, info: list[dict], metrics: dict, mlrun) -> None:
        """Print the clusters and log them to MLflow."""


class DecoderJob(Protocol):
    """``DECODER_METHODS[track][decoders.method](params, arch, restorer, paths)``."""

    title: str  # the curves plot's title

    def fit(self, mlrun) -> Any:
        """Fine-tune -> :class:`aerestore.tracks.blocks.decoders.DecodersResult`."""

    def log(self, result, mlrun) -> None:
        """Log the curves and losses to MLflow."""
