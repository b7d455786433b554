"""A trained restorer as an MLflow pyfunc model (``aerestore-<arch>`` in the registry).

The model's artifacts are the restorer's files (``model.pt``, ``clusters.npz``,
``decoders.pt``); loading it builds an :class:`aerestore.restore.Restorer`, so a
registered model restores an image exactly as the restorer in ``models/<arch>/`` does.

Input: one uint8 image ``(H, W, C)`` of any size up to ``max_pixels`` pixels, ``C`` in 1, 3
or 4 (converted to the model's channels as :meth:`Restorer.to_model_channels` does); integer
values 0..255 of another dtype (as JSON gives) are accepted. Output: the restored uint8
image ``(H, W, channels)``. Inference param ``mode``: ``multi`` (default), ``single`` or
``base``. Load-time options through ``mlflow.pyfunc.load_model(uri, model_config={...})``
(for ``mlflow models serve``: the environment variable ``SERVING_MODEL_CONFIG``, JSON):
``routing`` (``hard``/``soft``) and ``max_pixels`` (default: ``aerestore restore
--max-pixels``'s, :data:`aerestore.data.images.READ_MAX_PIXELS`).

Anything else is refused with :class:`~aerestore.model_input.BadInput` (the checks are in
:mod:`aerestore.model_input`), an ``MlflowException`` with error code
``INVALID_PARAMETER_VALUE``, which MLflow's scoring server answers with HTTP 400 and its
message, naming what is wrong (shape, dtype, NaN, range, size, mode).

``mlflow models predict`` reads JSON of the form ``{"inputs": [[[r, g, b], ...], ...]}``
(rows of pixels; ``aerestore to-json IMAGE`` writes it) and answers
``{"predictions": ...}`` in the same layout (``aerestore from-json`` makes a PNG of it).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np

from aerestore.model_input import INPUT, BadInput, as_image, example_image, max_pixels_of, signature

if TYPE_CHECKING:
    from aerestore.restore import Restorer

MODEL_PREFIX = "aerestore-"
#: Artifact keys of the pyfunc model -> file names Restorer.load expects.
ARTIFACT_FILES = {"model": "model.pt", "clusters": "clusters.npz", "decoders": "decoders.pt"}
MODES = ("multi", "single", "base", "ensemble")  # ensemble: the ensemble control, where decoders.pt has one


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
        self.max_pixels = max_pixels_of(config.get("max_pixels"))

    # np.ndarray is a hint MLflow accepts without deriving a schema from it (the
    # signature given at logging time applies); other hints make it warn.
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        mode = (params or {}).get("mode") or "multi"
        if mode not in MODES:
            raise BadInput(f"mode must be one of {MODES}, got {mode!r}")
        image = as_image(model_input, getattr(self, "max_pixels", None) or max_pixels_of(None))
        return self.restorer.restore(image, mode=mode)


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
        *openvino_requirement(),
    ]


def openvino_requirement() -> list[str]:
    """OpenVINO, which compiles the unet_ae restorer on the CPU (aerestore.ovruntime), pinned
    when installed; without it the served restorer runs in PyTorch."""
    try:
        import openvino
    except ImportError:
        return []
    return [f"openvino=={openvino.__version__.split('-')[0]}"]


def _model_arguments(model_dir: str | Path, arch: str, routing: str | None) -> dict[str, Any]:
    """What ``mlflow.pyfunc.log_model`` and ``save_model`` are given for ``model_dir``'s
    restorer: the artifacts, signature, input example, model config and metadata."""
    from aerestore.restore import Restorer

    restorer = Restorer.load(Path(model_dir), routing=routing)
    files = {p.name: p for p in restorer.files()}
    artifacts = {key: str(files[fname]) for key, fname in ARTIFACT_FILES.items() if fname in files}
    return dict(
        python_model=RestorerModel(),
        artifacts=artifacts,
        signature=signature(restorer.channels),
        input_example=(example_image(restorer.channels), {"mode": "multi"}),
        # every key a server may set (SERVING_MODEL_CONFIG) must be here: MLflow ignores others
        model_config={"routing": restorer.routing, "max_pixels": max_pixels_of(None)},
        pip_requirements=pip_requirements(),
        metadata={
            "arch": arch,
            "block": restorer.block,
            "overlap": restorer.overlap,
            "channels": restorer.channels,
            "routing": restorer.routing,
            "input": INPUT,
        },
    )


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
    return mlflow.pyfunc.log_model(
        name=name or f"restorer-{arch}",
        registered_model_name=registered_name(arch) if register else None,
        **_model_arguments(model_dir, arch, routing),
    )


def save_restorer(model_dir: str | Path, path: str | Path, arch: str, routing: str | None = None) -> Path:
    """The same pyfunc model as :func:`log_restorer`, saved to the folder ``path`` (no
    tracking store needed): ``mlflow models serve -m PATH`` serves it."""
    mlflow.pyfunc.save_model(str(path), **_model_arguments(model_dir, arch, routing))
    return Path(path)


def load_restorer(model_uri: str, routing: str | None = None) -> "Restorer":
    """The :class:`Restorer` behind a logged model (``models:/aerestore-conv_ae/latest``,
    ``runs:/<id>/...``, a local MLmodel folder)."""
    config = {"routing": routing} if routing else None
    model = mlflow.pyfunc.load_model(model_uri, model_config=config)
    python_model = model.unwrap_python_model()
    if not isinstance(python_model, RestorerModel):
        raise ValueError(f"{model_uri} is not an aerestore restorer ({type(python_model).__name__})")
    return python_model.restorer


# ----------------------------------------------------------------------- the registry
#: The alias of an architecture's best version by **validation** PSNR
#: (``models:/aerestore-<arch>@champion``; the test split only reports, issue 23).
CHAMPION = "champion"
#: Registered-model tag on the one ``aerestore-<arch>`` whose champion is best across architectures.
BEST_OVERALL_TAG = "best_overall"
#: Version tags: ``evaluate.json``'s figures of the restorer in its default mode (``multi``).
TEST_TAGS = ("psnr", "ssim", "psnr_blur", "psnr_noise", "psnr_clean", "ssim_blur", "ssim_noise", "ssim_clean")
#: The mode a registered restorer restores in by default (``predict`` without params).
DEFAULT_MODE = "multi"


def _model_description(arch: str) -> str:
    return (
        f"The complete `{arch}` restorer of the aerestore pipeline: encoder, cluster centroids, "
        "per-cluster decoders, block split and merge. Input: one uint8 image (H, W, C) of any "
        "size; output: the restored image (inference param `mode`: multi, single, base or ensemble: the ensemble control).\n\n"
        f"A new version per run of the `evaluate` stage, tagged with its test figures (`test.psnr`, "
        f"`test.ssim`, ...) and its validation PSNR (`val.psnr`). Alias `{CHAMPION}`: the best version "
        f"by validation PSNR among those evaluated on the same data (the test figures only report). "
        f"Load it with `models:/{registered_name(arch)}@{CHAMPION}`."
    )


def validation_figures(model_dir: str | Path, prepared_dir: str | Path, routing: str | None = None,
                       max_images: int = 0, mode: str = DEFAULT_MODE) -> dict[str, Any] | None:
    """The restorer in ``model_dir`` on the **validation** split (``<prepared_dir>/val``, its
    first ``max_images``; 0 = all) in ``mode``: ``{"psnr": mean PSNR, "images": n, "mode":
    mode}``, scored as the evaluate stage scores the test split
    (:func:`aerestore.evaluate.score_rows`). ``None`` without a validation split.

    Deliberate (issue 23): the ``champion`` alias is chosen on this figure, so the test split
    informs no choice; it was the best test PSNR."""
    from .evaluate import restorer_row, score_rows
    from .io import open_array
    from .restore import Restorer
    from .stats import mean_finite

    d = Path(prepared_dir) / "val"
    if not ((d / "clean.npy").is_file() and (d / "degraded.npy").is_file()):
        return None
    clean, degraded = open_array(d / "clean.npy"), open_array(d / "degraded.npy")
    if max_images:
        clean, degraded = clean[:max_images], degraded[:max_images]
    if len(clean) == 0:
        return None
    restorer = Restorer.load(model_dir, routing=routing)
    per_image, _, _ = score_rows(clean, degraded, None, {mode: restorer_row(restorer, mode)}, progress=False,
                                 regions=False)
    return {"psnr": float(mean_finite(per_image[mode]["psnr"])), "images": int(len(clean)), "mode": mode}


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def tag_version(
    arch: str,
    version: str,
    metrics: dict[str, Any],
    run_id: str | None = None,
    test_data: str | None = None,
    uri: str | None = None,
) -> bool:
    """Tag and describe version ``version`` of ``aerestore-<arch>`` with its test and
    validation figures, and move the alias ``champion`` to it if it is the architecture's
    best by **validation** PSNR.

    ``metrics`` is the architecture's section of ``evaluate.json`` (``{"multi": {"psnr":
    ..., ...}, "single": ..., "images": n, "degraded": {...}}``) plus ``"validation"``
    (:func:`validation_figures`); the figures of the default mode become the tags
    ``test.psnr``, ``test.ssim``, ..., the validation ones ``val.psnr``, ``val.images``.
    ``test_data`` is DVC's md5 of ``data/prepared`` (which holds the validation and test
    splits), tagged ``test.data``: PSNRs are compared only between versions evaluated on
    the same data, so a champion measured on other data gives way to the new version.
    A version without a validation PSNR becomes the champion only when there is none yet;
    a champion without one (chosen before issue 23) gives way to one with. Returns
    whether the new version is the champion.

    Deliberate (issue 23): the champion was the best by test PSNR, so the test split
    informed a choice; the test tags now only report.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    name = registered_name(arch)
    mode = DEFAULT_MODE if DEFAULT_MODE in metrics else next(
        (m for m in MODES if isinstance(metrics.get(m), dict)), None)
    figures = metrics.get(mode, {}) if mode else {}
    tags = {f"test.{k}": _fmt(figures[k]) for k in TEST_TAGS if isinstance(figures.get(k), (int, float))}
    if mode:
        tags["test.mode"] = mode
    if metrics.get("images") is not None:
        tags["test.images"] = str(metrics["images"])
    degraded = metrics.get("degraded") or {}
    if isinstance(degraded.get("psnr"), (int, float)):
        tags["test.degraded_psnr"] = _fmt(degraded["psnr"])
    if test_data:
        tags["test.data"] = test_data
    validation = metrics.get("validation") or {}
    val_psnr = validation.get("psnr")
    if isinstance(val_psnr, (int, float)) and math.isfinite(val_psnr):
        tags["val.psnr"] = _fmt(float(val_psnr))
        tags["val.images"] = str(validation.get("images", "?"))
    else:
        val_psnr = None
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)

    psnr = figures.get("psnr")
    lines = [f"The {arch} restorer" + (f" from evaluate run {run_id}" if run_id else "") + "."]
    if isinstance(psnr, (int, float)):
        lines.append(f"Test ({mode} mode, {metrics.get('images', '?')} images): PSNR {psnr:.2f} dB, "
                     f"SSIM {figures.get('ssim', float('nan')):.3f}"
                     # undamaged inputs (a run with no degradation) have no finite PSNR: None
                     + (f"; the degraded input: {degraded['psnr']:.2f} dB."
                        if isinstance(degraded.get("psnr"), (int, float)) else "."))
    if val_psnr is not None:
        lines.append(f"Validation ({validation.get('images', '?')} images, the champion's criterion): "
                     f"PSNR {val_psnr:.2f} dB.")
    client.update_model_version(name, version, description=" ".join(lines))
    model = client.get_registered_model(name)
    if not model.description:
        client.update_registered_model(name, description=_model_description(arch))

    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no champion yet
        current = None
    if current is None:
        if val_psnr is None and not isinstance(psnr, (int, float)):
            return False  # nothing measured
    elif str(current.version) != str(version):
        if val_psnr is None:
            return False  # not measured on validation: it takes no champion's place
        current_val = current.tags.get("val.psnr")
        if current.tags.get("test.data") == test_data and current_val is not None:
            try:
                if float(current_val) >= float(tags["val.psnr"]):  # as tagged: a tie keeps it
                    return False
            except ValueError:
                pass
    client.set_registered_model_alias(name, CHAMPION, version)
    return True


def mark_best_overall(archs: list[str], test_data: str | None = None, uri: str | None = None) -> str | None:
    """Tag ``best_overall`` = ``true`` on the ``aerestore-<arch>`` whose champion has the
    highest validation PSNR (``val.psnr``; issue 23: it was the test PSNR) among ``archs``
    (champions evaluated on ``test_data`` only; one without ``val.psnr`` is left out) and
    remove the tag from the others. An alias belongs to one registered model, so the
    best across architectures is this tag (and the registered model's description).
    Returns the best architecture, or None."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    scores: dict[str, tuple[float, str]] = {}
    for arch in archs:
        try:
            champion = client.get_model_version_by_alias(registered_name(arch), CHAMPION)
        except MlflowException:
            continue
        if test_data and champion.tags.get("test.data") != test_data:
            continue
        try:
            scores[arch] = (float(champion.tags["val.psnr"]), champion.version)
        except (KeyError, ValueError):
            continue
    best = max(scores, key=lambda a: scores[a][0]) if scores else None
    for arch in archs:
        name = registered_name(arch)
        try:
            model = client.get_registered_model(name)
        except MlflowException:
            continue
        if arch == best:
            psnr, version = scores[arch]
            client.set_registered_model_tag(name, BEST_OVERALL_TAG, "true")
            client.set_registered_model_tag(
                name, "champion.summary", f"version {version}, validation PSNR {psnr:.2f} dB: the best of "
                + ", ".join(f"{a} {scores[a][0]:.2f}" for a in sorted(scores, key=lambda a: -scores[a][0])))
        else:
            if BEST_OVERALL_TAG in model.tags:
                client.delete_registered_model_tag(name, BEST_OVERALL_TAG)
            if arch in scores:
                psnr, version = scores[arch]
                client.set_registered_model_tag(name, "champion.summary",
                                                f"version {version}, validation PSNR {psnr:.2f} dB")
    return best
