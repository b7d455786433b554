"""Typed, validated ``params.yaml``.

Every stage calls :func:`load_params` before it writes anything. A wrong type, an
unknown key or an impossible combination raises :class:`ParamsError`, whose message
names the key (dotted, as in ``params.yaml``) and the offending value; a key that moved
(:data:`MOVED`, e.g. ``train.steps`` -> ``train.crops.steps``) names its new place.

The schema is split by section: :mod:`~aerestore.params.data` (data, prepare, blocks),
:mod:`~aerestore.params.training` (runtime, train, arch), :mod:`~aerestore.params.stages`
(cluster, decoders, evaluate, explore, peers, mlflow), :mod:`~aerestore.params.model` (the whole
file and the per-architecture resolution) and :mod:`~aerestore.params.loading`.
"""

from .base import ParamsError, as_range
from .data import (
    DEGRADE_OPS, AugmentParams, BilateralOp, BlocksParams, CoarseDropoutOp, DataParams, DefocusOp, DegradeOp,
    GaussianBlurOp, GaussianNoiseOp, GrayscaleOp, JpegOp, LocalBlurOp, LocalNoiseOp, MotionBlurOp, PrepareParams,
    SaltPepperOp, SplitParams,
)
from .loading import PARAMS_FILE, flatten, load_base, load_params, parse_params
from .model import PEER_REFERENCE, Params, deep_update
from .stages import (
    CLASSICAL, CLASSICAL_GRID, CLASSICAL_TUNABLE, ClusterParams, DecodersParams, EvaluateParams,
    ExploreParams, MlflowParams, PeersParams,
)
from .training import (
    MOVED, ArchParams, BlockTrainParams, CropTrainParams, LossParams, RuntimeParams, TrainParams,
)

__all__ = [
    "ParamsError", "as_range", "DEGRADE_OPS", "AugmentParams", "BilateralOp", "BlocksParams", "CoarseDropoutOp",
    "DataParams", "DefocusOp", "DegradeOp", "GaussianBlurOp", "GaussianNoiseOp", "GrayscaleOp", "JpegOp",
    "LocalBlurOp", "LocalNoiseOp", "MotionBlurOp", "PrepareParams", "SaltPepperOp", "SplitParams", "PARAMS_FILE", "flatten",
    "load_base", "load_params", "parse_params", "Params", "deep_update", "CLASSICAL", "CLASSICAL_GRID", "CLASSICAL_TUNABLE",
    "ClusterParams", "DecodersParams", "EvaluateParams", "ExploreParams", "MlflowParams", "PeersParams", "PEER_REFERENCE", "MOVED", "ArchParams",
    "BlockTrainParams", "CropTrainParams", "LossParams", "RuntimeParams", "TrainParams",
]
