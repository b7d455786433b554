"""What a served restorer takes and gives (:mod:`aerestore.mlflow_model`): the checks of the
one input image (:func:`as_image`; anything else is refused with :class:`BadInput`, HTTP 400
from ``mlflow models serve``), the size limit (:func:`max_pixels_of`), the model's signature
and its input example."""

from __future__ import annotations

from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

__all__ = ["CHANNELS", "BadInput", "max_pixels_of", "as_image", "example_image", "INPUT", "signature"]

CHANNELS = (1, 3, 4)


class BadInput(MlflowException, ValueError):
    """An input the restorer refuses: HTTP 400 with this message from ``mlflow models serve``
    (MLflow's convention for an ``MlflowException`` with ``INVALID_PARAMETER_VALUE``), a
    ``ValueError`` in Python."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def max_pixels_of(value: Any) -> int:
    """``model_config``'s ``max_pixels``, else ``aerestore restore --max-pixels``'s default:
    one definition of the limit for both."""
    from aerestore.data.images import READ_MAX_PIXELS

    if value is None:
        return READ_MAX_PIXELS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model_config max_pixels must be an integer >= 1, got {value!r}")
    return value


def as_image(model_input: Any, max_pixels: int | None = None) -> np.ndarray:
    """The one image in ``model_input`` as uint8 (H, W[, C]); anything else is refused with
    :class:`BadInput` naming what is wrong. The size is checked before the values, so that
    an image over ``max_pixels`` costs no pass over its pixels."""
    if hasattr(model_input, "to_numpy"):  # a DataFrame or Series
        model_input = model_input.to_numpy()
    if isinstance(model_input, dict):
        if len(model_input) != 1:
            raise BadInput(f"expected one image, got inputs {sorted(model_input)}")
        model_input = next(iter(model_input.values()))
    try:
        arr = np.asarray(model_input)
    except ValueError as exc:  # ragged rows
        raise BadInput(f"expected one image, rows of equal length: {exc}") from None
    if arr.ndim == 4 and arr.shape[0] == 1:  # a batch of one
        arr = arr[0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in CHANNELS):
        raise BadInput(f"expected one image (H, W) or (H, W, C) with C in {CHANNELS}, got shape {arr.shape}")
    h, w = arr.shape[:2]
    if h == 0 or w == 0:
        raise BadInput(f"empty image: shape {arr.shape}")
    limit = max_pixels_of(None) if max_pixels is None else max_pixels
    if h * w > limit:
        raise BadInput(f"image too large: {w}x{h} = {h * w:,} pixels > max_pixels = {limit:,} "
                       "(the limit of aerestore restore --max-pixels; model_config max_pixels sets it)")
    if arr.dtype != np.uint8:
        arr = _as_uint8(arr)
    return arr


def _as_uint8(arr: np.ndarray) -> np.ndarray:
    """Integer pixel values 0..255 of any numeric dtype (JSON gives int64 or float64) as
    uint8; NaN, infinities, fractions, values out of range, booleans, strings are refused,
    naming the first such pixel."""
    def first(bad: np.ndarray) -> str:
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        return f"{arr[at]!r} at {list(at)}"

    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        kind = {"U": "strings", "S": "bytes", "O": "objects (null or mixed types)", "b": "booleans"}.get(
            arr.dtype.kind, str(arr.dtype))
        raise BadInput(f"expected uint8 pixel values 0..255, got {kind} ({arr.dtype})")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise BadInput(f"expected uint8 pixel values 0..255, got NaN or infinity: {first(~np.isfinite(arr))}")
        if (arr != np.round(arr)).any():
            raise BadInput(f"expected uint8 pixel values 0..255, got fractions: {first(arr != np.round(arr))} "
                           "(send integers 0..255, not an image scaled to 0..1)")
    out_of_range = (arr < 0) | (arr > 255)
    if out_of_range.any():
        raise BadInput(f"expected uint8 pixel values 0..255, got {arr.dtype} in [{arr.min()}, {arr.max()}]: "
                       f"{first(out_of_range)}")
    return arr.astype(np.uint8)


def example_image(channels: int, size: int = 24) -> np.ndarray:
    """A small deterministic uint8 test card (gradients and a checkerboard)."""
    y, x = np.mgrid[0:size, 0:size]
    chans = [
        (x * 255 // max(size - 1, 1)),
        (y * 255 // max(size - 1, 1)),
        ((x // 4 + y // 4) % 2) * 200 + 25,
    ]
    img = np.stack(chans[: 3 if channels != 1 else 1], axis=-1).astype(np.uint8)
    return img


#: What the model takes, in its metadata (``input``): the signature has no input schema.
INPUT = "one uint8 image (H, W) or (H, W, C), C in 1, 3, 4, at most max_pixels pixels"


def signature(channels: int):
    """Output: uint8 (H, W, channels); inference param ``mode``. No input schema: MLflow
    casts a JSON payload to the input schema's dtype (``np.array(data, dtype=uint8)``)
    before ``predict`` sees it, which turns 0.5 into 0 and ``true`` into 1 without a
    word, so an image sent as floats in 0..1 would come back restored from black. Without
    one, ``predict`` gets the values as JSON gave them and refuses such input with HTTP
    400 (:func:`_as_uint8`); the input is described in the metadata (:data:`INPUT`) and
    the input example."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=None,
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, channels), name="restored")]),
        params=ParamSchema([ParamSpec("mode", "string", "multi")]),
    )
