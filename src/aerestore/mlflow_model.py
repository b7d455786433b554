"""A trained restorer as an MLflow pyfunc model (``aerestore-<arch>`` in the registry).

The model's artifacts are the restorer's files (``model.pt``, ``clusters.npz``,
``decoders.pt``); loading it builds an :class:`aerestore.restore.Restorer`, so a
registered model restores an image exactly as the restorer in ``models/<arch>/`` does.

Input: one uint8 image ``(H, W, C)`` of any size, ``C`` in 1, 3 or 4 (converted to the
model's channels as :meth:`Restorer.to_model_channels` does). Output: the restored
uint8 image ``(H, W, channels)``. Inference param ``mode``: ``multi`` (default),
``single`` or ``base``. Load-time option ``routing`` (``hard``/``soft``) through
``mlflow.pyfunc.load_model(uri, model_config={"routing": "soft"})``.

``mlflow models predict`` reads JSON of the form ``{"inputs": [[[r, g, b], ...], ...]}``
(rows of pixels; ``aerestore to-json IMAGE`` writes it) and answers
``{"predictions": ...}`` in the same layout (``aerestore from-json`` makes a PNG of it).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np

if TYPE_CHECKING:
    from aerestore.restore import Restorer

MODEL_PREFIX = "aerestore-"
#: Artifact keys of the pyfunc model -> file names Restorer.load expects.
ARTIFACT_FILES = {"model": "model.pt", "clusters": "clusters.npz", "decoders": "decoders.pt"}
MODES = ("multi", "single", "base")


def registered_name(arch: str) -> str:
    """The registry name of an architecture's restorer: ``aerestore-<arch>``."""
    return f"{MODEL_PREFIX}{arch}"


class RestorerModel(mlflow.pyfunc.PythonModel):
    """``predict(image) -> restored image`` around :class:`aerestore.restore.Restorer`."""

    restorer: "Restorer"

    def load_context(self, context: Any) -> None:
        from aerestore.restore import Restorer

        config = dict(getattr(context, "model_config", None) or {})
        files = {key: Path(path) for key, path in context.artifacts.items()}
        folders = {p.parent for p in files.values()}
        if len(folders) == 1 and all(files[k].name == ARTIFACT_FILES[k] for k in files):
            model_dir = folders.pop()
        else:  # artifacts scattered or renamed: gather them under the expected names
            model_dir = Path(tempfile.mkdtemp(prefix="aerestore-model-"))
            for key, path in files.items():
                shutil.copy2(path, model_dir / ARTIFACT_FILES[key])
        self.restorer = Restorer.load(model_dir, routing=config.get("routing"))

    # np.ndarray is a hint MLflow accepts without deriving a schema from it (the
    # signature given at logging time applies); other hints make it warn.
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        mode = (params or {}).get("mode") or "multi"
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        image = _as_image(model_input)
        return self.restorer.restore(image, mode=mode)


def _as_image(model_input: Any) -> np.ndarray:
    """The one image in ``model_input`` as uint8 (H, W[, C]); refuses anything else."""
    if hasattr(model_input, "to_numpy"):  # a DataFrame or Series
        model_input = model_input.to_numpy()
    if isinstance(model_input, dict):
        if len(model_input) != 1:
            raise ValueError(f"expected one image, got inputs {sorted(model_input)}")
        model_input = next(iter(model_input.values()))
    arr = np.asarray(model_input)
    if arr.ndim == 4 and arr.shape[0] == 1:  # a batch of one
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected one image (H, W) or (H, W, C), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"expected uint8 pixel values 0..255, got {arr.dtype} "
                             f"in [{arr.min()}, {arr.max()}]")
        arr = arr.astype(np.uint8)
    return arr


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


def signature(channels: int):
    """Input: uint8 (H, W, C) with any H, W, C; output: uint8 (H, W, channels);
    inference param ``mode``."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1), name="image")]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, channels), name="restored")]),
        params=ParamSchema([ParamSpec("mode", "string", "multi")]),
    )


def pip_requirements() -> list[str]:
    """Pinned from this environment. ``aerestore`` itself is not on PyPI: install it
    from the repository (``pip install -e .``) where the model is served."""
    import cloudpickle
    import torch

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={np.__version__}",
        f"cloudpickle=={cloudpickle.__version__}",
    ]


def log_restorer(
    model_dir: str | Path,
    arch: str,
    register: bool,
    name: str | None = None,
    routing: str | None = None,
) -> Any:
    """Log ``model_dir``'s restorer to the active run as a pyfunc model.

    ``name`` defaults to ``restorer-<arch>``; with ``register`` the model is also
    registered as ``aerestore-<arch>`` (a new version each time). ``routing`` is the
    default routing stored with the model (``hard`` when None). Returns MLflow's
    ``ModelInfo``.
    """
    from aerestore.restore import Restorer

    model_dir = Path(model_dir)
    restorer = Restorer.load(model_dir, routing=routing)
    files = {p.name: p for p in restorer.files()}
    artifacts = {key: str(files[fname]) for key, fname in ARTIFACT_FILES.items() if fname in files}
    return mlflow.pyfunc.log_model(
        name=name or f"restorer-{arch}",
        python_model=RestorerModel(),
        artifacts=artifacts,
        signature=signature(restorer.channels),
        input_example=(example_image(restorer.channels), {"mode": "multi"}),
        model_config={"routing": restorer.routing},
        pip_requirements=pip_requirements(),
        registered_model_name=registered_name(arch) if register else None,
        metadata={
            "arch": arch,
            "block": restorer.block,
            "overlap": restorer.overlap,
            "channels": restorer.channels,
            "routing": restorer.routing,
        },
    )


def load_restorer(model_uri: str, routing: str | None = None) -> "Restorer":
    """The :class:`Restorer` behind a logged model (``models:/aerestore-conv_ae/latest``,
    ``runs:/<id>/...``, a local MLmodel folder)."""
    config = {"routing": routing} if routing else None
    model = mlflow.pyfunc.load_model(model_uri, model_config=config)
    python_model = model.unwrap_python_model()
    if not isinstance(python_model, RestorerModel):
        raise ValueError(f"{model_uri} is not an aerestore restorer ({type(python_model).__name__})")
    return python_model.restorer
