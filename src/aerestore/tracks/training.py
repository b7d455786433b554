"""``train@<arch>`` per track (:mod:`aerestore.tracks.registry`)."""

from __future__ import annotations

from .blocks.training import BlockTraining
from .images.training import CropTraining
from ..params import TrainParams
from .registry import track_of

# track -> Training (aerestore.tracks.registry.Training)
TRAINING = {"blocks": BlockTraining, "images": CropTraining}


def training(params, arch: str, cfg: TrainParams, paths):
    """The data of ``arch``'s track loaded and its model built (seeded), ready to ``fit``."""
    from ..models import model_class

    return TRAINING[track_of(model_class(arch))](params, arch, cfg, paths)
