"""What the commands of :mod:`aerestore.cli` share: their error, the PNG writer and the
restorer loader (also :func:`aerestore.benchmark_sets.restorer_method`'s)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from aerestore.restore import Restorer

IMAGE_SUFFIX = ".png"


class CliError(Exception):
    """A problem with the command's arguments; printed as one line, exit code 2."""


# ------------------------------------------------------------------------- images
# A user's image is read by aerestore.data.images.read_image (which names the file and why
# it cannot be used); the commands' outputs are written here.
def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write uint8 (H, W[, 1|3|4]) as PNG atomically (temp file, then rename): the bytes of
    :func:`aerestore.data.images.encode_png`."""
    from aerestore.data.images import encode_png
    from aerestore.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(encode_png(np.asarray(image)))


# ------------------------------------------------------------------------- models
def _is_uri(model: str) -> bool:
    return "://" in model or model.startswith(("models:/", "runs:/"))


def load_any_restorer(model: str, routing: str | None = None) -> "Restorer":
    """A restorer from a registry URI (``models:/aerestore-conv_ae/latest``), a run
    URI, an MLflow model folder (holding ``MLmodel``) or a ``models/<arch>`` folder."""
    from aerestore.restore import Restorer

    if _is_uri(model):
        import mlflow
        from mlflow.exceptions import MlflowException

        from aerestore.mlflow_model import load_restorer
        from aerestore.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())
        try:
            return load_restorer(model, routing=routing)
        except MlflowException as exc:
            raise CliError(f"--model {model}: {exc.message} (tracking URI {tracking_uri()})") from None
    folder = Path(model)
    if (folder / "MLmodel").is_file():
        from aerestore.mlflow_model import load_restorer

        return load_restorer(str(folder.resolve()), routing=routing)
    if (folder / "model.pt").is_file():
        return Restorer.load(folder, routing=routing)
    raise CliError(
        f"--model {model}: not a models:/ or runs:/ URI, nor a folder holding model.pt "
        "(models/<arch>) or MLmodel"
    )

